#pragma once
// The running gateway: worker threads, client and admin listeners, graceful drain.
#include <cstdint>
#include <memory>

#include "config.hpp"

namespace sluice::server {

/// Owns every thread and socket of one Sluice process. Construct, start(), then wait().
class Gateway {
 public:
  explicit Gateway(Config config);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  /// Binds the listeners and starts the workers. Throws std::runtime_error with a one-line reason.
  void start();
  /// Stops accepting, answers /readyz with 503, lets in-flight requests finish up to drain_timeout, then
  /// stops.
  void drain();
  /// Blocks until the gateway has stopped (after drain() or stop()).
  void wait();
  /// Stops at once, cutting open connections.
  void stop();
  /// Makes SIGTERM and SIGINT call drain(), and SIGHUP reload(). Call before start(): the handlers are in
  /// place before the gateway says it is listening, so a signal sent on that line is never the default's.
  void drain_on_signals();
  /// The file reload() reads (SIGHUP, POST /admin/reload). Call before start().
  void reload_from(std::string config_path);
  /// Re-reads the config file and swaps in its keys and limits at once; requests in flight keep theirs.
  /// Returns "" when applied, else why not (the running config is kept, and the reason logged).
  std::string reload();

  std::uint16_t port() const;        // the bound client port (useful with port 0)
  std::uint16_t admin_port() const;  // the bound admin port

 private:
  void watch_signals();
  void wait_for_hangup();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::server
