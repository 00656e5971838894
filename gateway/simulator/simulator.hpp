#pragma once
// An OpenAI-compatible simulated backend: deterministic tokens at a set rate and TTFT, and faults on request.
#include <cstdint>
#include <memory>
#include <string>

#include "config.hpp"

namespace boost::asio {
class io_context;
}

namespace sluice::simulator {

/// Serves /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models and /health on one listener.
///
/// A request may steer it with an extra body field (which Sluice forwards untouched):
///   "simulator": {"tokens": 5, "ttft_ms": 0, "tokens_per_second": 1000,
///                 "fault": "reset" | "malformed" | "stall" | "status", "fault_after": 2,
///                 "status": 503, "delay_ms": 100}
class SimulatorServer {
 public:
  SimulatorServer(boost::asio::io_context& ctx, SimulatorConfig cfg);
  ~SimulatorServer();

  /// Binds host:port (port 0 picks one) and starts accepting. Throws std::runtime_error on failure.
  std::uint16_t listen(const std::string& host, std::uint16_t port);
  /// Closes the listener; open connections end on their own.
  void close();

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

/// The deterministic text of token `i` (what the simulator streams).
std::string simulated_token(std::uint64_t i);

}  // namespace sluice::simulator
