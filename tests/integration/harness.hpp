#pragma once
// Test plumbing for integration tests: everything talks over real sockets on 127.0.0.1.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config.hpp"
#include "server/gateway.hpp"

namespace sluice::test {

using namespace std::chrono_literals;

/// A deadline-bounded wait for a condition (tests never sleep for a fixed time to "let things happen").
bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds limit = 10s);

// ---- a scripted upstream: raw sockets, one thread per connection ----

/// One accepted connection of a ScriptedUpstream.
class UpstreamConn {
 public:
  explicit UpstreamConn(int fd) : fd_(fd) {}
  ~UpstreamConn();
  /// Reads one HTTP request (header + Content-Length body); empty on EOF/timeout.
  std::string read_request(std::chrono::milliseconds limit = 10s);
  bool write(std::string_view bytes);
  /// Writes a chunked response header.
  bool write_sse_header();
  /// Writes one HTTP chunk holding `bytes`.
  bool write_chunk(std::string_view bytes);
  /// Waits up to `limit` for the peer to close; true when it did.
  bool wait_closed(std::chrono::milliseconds limit);
  void reset();  // RST
  int fd() const { return fd_; }

 private:
  int fd_;
  std::string buffered_;
};

/// A 127.0.0.1 port that refuses connections for as long as this lives: a socket bound to it that never
/// listens. Held, not closed and then named: the kernel could hand a closed port to the next listener (the
/// gateway's own admin port, say), and the "dead" backend would answer.
class RefusedPort {
 public:
  RefusedPort();
  ~RefusedPort();
  RefusedPort(const RefusedPort&) = delete;
  RefusedPort& operator=(const RefusedPort&) = delete;
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

/// A 127.0.0.1 port whose listener's queue is full (a connection of the test's own waits in it), so a connect
/// to it is neither accepted nor refused: the kernel drops its SYN and retries after 1 s, then 3 s. release()
/// makes room, and the next retry is accepted. A backend that is slow to answer connects.
class StalledPort {
 public:
  StalledPort();
  ~StalledPort();
  StalledPort(const StalledPort&) = delete;
  StalledPort& operator=(const StalledPort&) = delete;
  std::uint16_t port() const { return port_; }
  /// True once a socket on this host waits in SYN_SENT for this port (read from /proc/net/tcp), within `limit`.
  bool wait_for_waiting_connect(std::chrono::milliseconds limit) const;
  /// Takes the test's own connection off the queue: the next retry of a waiting connect gets in.
  void release();
  /// The next connection accepted within `limit`, or -1.
  int accept(std::chrono::milliseconds limit);

 private:
  int listen_fd_ = -1;
  int filler_fd_ = -1;
  std::uint16_t port_ = 0;
};

/// A backend played by the test: each connection runs `handler` on its own thread.
class ScriptedUpstream {
 public:
  using Handler = std::function<void(UpstreamConn&)>;
  explicit ScriptedUpstream(Handler handler);
  ~ScriptedUpstream();
  std::uint16_t port() const { return port_; }
  std::string url(const std::string& prefix = "/v1") const;
  int connections() const { return accepted_.load(); }
  /// Raw requests received, in order.
  std::vector<std::string> requests() const;
  void record(const std::string& req);

 private:
  Handler handler_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<int> accepted_{0};
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::vector<std::thread> conns_;
  mutable std::mutex mutex_;
  std::vector<std::string> requests_;
};

/// Body of an HTTP request (after the blank line).
std::string body_of(const std::string& raw_request);
/// Value of a header in a raw request or response (case-insensitive name); empty when absent.
std::string header_of(const std::string& raw, const std::string& name);

// ---- a blocking HTTP/1.1 client ----

struct HttpResponse {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;                            // de-chunked
  std::string header(const std::string& name) const;
};

/// A client connection (keep-alive capable) with receive timeouts.
class HttpClient {
 public:
  explicit HttpClient(std::uint16_t port);
  ~HttpClient();
  bool connected() const { return fd_ >= 0; }
  /// Sends a request and reads the whole response (status 0 on failure).
  HttpResponse request(const std::string& method, const std::string& target, const std::string& body = "",
                       const std::map<std::string, std::string>& headers = {});
  bool send_raw(std::string_view bytes);
  /// Reads a response header only; then read_some() gives raw body bytes as they come.
  HttpResponse read_head();
  std::string read_some(std::chrono::milliseconds limit = 10s);
  /// Reads a response after send_raw().
  HttpResponse read_response();
  void close();
  int fd() const { return fd_; }

 private:
  bool fill(std::chrono::milliseconds limit);
  int fd_ = -1;
  std::string buf_;
};

/// POST a JSON body with the given bearer key on a fresh connection.
HttpResponse post_json(std::uint16_t port, const std::string& path, const std::string& body,
                       const std::string& key = "sk-test",
                       const std::map<std::string, std::string>& headers = {});

/// The bytes of a POST with a JSON body and a bearer key, for tests that drive a connection by hand.
std::string raw_post(const std::string& path, const std::string& body, const std::string& key = "sk-test",
                     const std::string& extra_headers = "");

/// The value of one series (name and labels exactly as exported) scraped from an admin port; -1 when absent.
double metric_value(std::uint16_t admin_port, const std::string& series);

/// The `data:` payloads of an SSE body, in order.
std::vector<std::string> sse_data(const std::string& body);

// ---- the gateway under test ----

/// A YAML config around the given backends/models sections, listening on 127.0.0.1:0, key sk-test for every
/// model.
std::string test_config_yaml(const std::string& backends_and_models, const std::string& extra = "");

/// An in-process Sluice on ephemeral ports.
class TestGateway {
 public:
  explicit TestGateway(const std::string& yaml);
  ~TestGateway();
  std::uint16_t port() const { return gw_->port(); }
  std::uint16_t admin_port() const { return gw_->admin_port(); }
  server::Gateway& gateway() { return *gw_; }

 private:
  std::unique_ptr<server::Gateway> gw_;
};

// ---- the real binary ----

/// A child process with captured stdout/stderr.
class Child {
 public:
  Child(const std::vector<std::string>& argv);
  ~Child();
  /// Waits for a line on stderr containing `needle` and returns it (empty on timeout or exit).
  std::string wait_for_stderr(const std::string& needle, std::chrono::milliseconds limit = 20s);
  /// Waits for exit; returns the exit code, or -1 on timeout (the child is then killed).
  int wait_exit(std::chrono::milliseconds limit = 20s);
  void signal(int sig);
  pid_t pid() const { return pid_; }
  std::string out() {
    drain();
    return out_;
  }
  std::string err() {
    drain();
    return err_;
  }

 private:
  void drain();
  pid_t pid_ = -1;
  int out_fd_ = -1, err_fd_ = -1;
  std::string out_, err_;
  bool exited_ = false;
  int status_ = 0;
};

/// The real `sluice` binary serving `config`, with the ports it bound (read from its start-up line, so the
/// config must log at info level); both 0 when it did not start.
struct RunningGateway {
  explicit RunningGateway(const std::string& config);
  Child child;
  std::uint16_t port = 0, admin = 0;
};

/// The gateway binary the tests start: this build's, or the one the environment's SLUICE_BINARY names
/// (`make test-release` runs the suite against the release build).
const std::string& sluice_binary();

/// Runs a command to completion; returns {exit code, stdout + stderr}.
std::pair<int, std::string> run_command(const std::vector<std::string>& argv);

/// A temp directory removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string write(const std::string& name, const std::string& content) const;

 private:
  std::string path_;
};

// ---- a real Redis ----

/// A real redis-server (Debian's /usr/bin/redis-server) on a free 127.0.0.1 port, no persistence.
class RedisServer {
 public:
  /// `extra_args` are whitespace-separated (e.g. "--requirepass s3cret"); throws if it cannot start.
  explicit RedisServer(const std::string& extra_args = "");
  ~RedisServer();
  std::uint16_t port() const { return port_; }
  std::string url() const;  // redis://127.0.0.1:PORT/0
  void stop();              // SIGKILL and wait
  void start();             // again on the same port (waits until it answers PING)

 private:
  bool launch(std::string& why);  // spawns and waits until ready; false (and the child reaped) on failure
  TempDir dir_;
  std::vector<std::string> extra_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace sluice::test
