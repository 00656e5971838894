#pragma once
// Per-worker keep-alive connection pools toward one backend, over TCP or TLS.
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "config.hpp"
#include "server/http_io.hpp"
#include "upstream/url.hpp"

namespace sluice::upstream {

namespace ssl = boost::asio::ssl;

/// One connection to a backend. Lives on one worker; never shared between requests at once.
struct Connection {
  std::optional<beast::tcp_stream> plain;
  std::optional<ssl::stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;  // bytes read past the previous response (must be empty to reuse)
  ReadState reading;          // how the socket was last read (read_more)
  std::chrono::steady_clock::time_point idle_since;
  Connection* live_prev = nullptr;  // in its worker's LiveExchanges while an exchange uses it
  Connection* live_next = nullptr;

  beast::tcp_stream& lowest() { return secure ? secure->next_layer() : *plain; }
};

/// The upstream connections one worker's requests are using right now, so a drain that runs out of
/// time can end them cleanly (each relay then tells its client, instead of the connection just dying).
/// A list threaded through the connections themselves: joining and leaving it cost no allocation.
struct LiveExchanges {
  void add(Connection& c) {
    c.live_prev = nullptr;
    c.live_next = head_;
    if (head_) head_->live_prev = &c;
    head_ = &c;
  }
  void remove(Connection& c) {
    (c.live_prev ? c.live_prev->live_next : head_) = c.live_next;
    if (c.live_next) c.live_next->live_prev = c.live_prev;
    c.live_prev = c.live_next = nullptr;
  }
  /// Closes every connection in use (they stay listed until their exchanges end).
  void close_all() {
    for (Connection* c = head_; c; c = c->live_next) c->lowest().close();
  }

  bool cutting = false;  // the gateway is shutting down: exchanges in progress are being ended

 private:
  Connection* head_ = nullptr;
};

/// Builds the TLS context for a backend: peer verification against the system store (and `ca_file`).
std::shared_ptr<ssl::context> make_client_tls_context(const BackendConfig& backend);

/// Idle connections to one backend, owned by one worker.
class BackendPool {
 public:
  BackendPool(asio::any_io_executor ex, const BackendConfig& backend, BaseUrl url,
              std::shared_ptr<ssl::context> tls, LiveExchanges* live = nullptr);

  /// An idle connection that is still open, or nullptr. `now`: the caller's clock reading (one per request).
  std::unique_ptr<Connection> take_idle(std::chrono::steady_clock::time_point now);

  /// Opens a fresh connection within the backend's connect timeout (TCP connect and TLS handshake).
  /// On failure returns nullptr and sets `reason` ("connect", "tls", "resolve", "timeout").
  asio::awaitable<std::unique_ptr<Connection>> connect(std::string& reason, std::string& detail);

  /// Returns a connection whose last response was read completely, idle from `now` (the exchange's end).
  void release(std::unique_ptr<Connection> c, std::chrono::steady_clock::time_point now);

  const BackendConfig& backend() const { return backend_; }
  const asio::any_io_executor& executor() const { return ex_; }
  LiveExchanges* live() const { return live_; }
  const BaseUrl& url() const { return url_; }

  /// The start of every request head this pool sends on `route` ("chat/completions"): the request line and
  /// the fields that are the same on every request (Host, User-Agent, Content-Type, Accept, Accept-Encoding,
  /// the backend's Authorization). Built on a route's first request, kept for the pool's life.
  std::string_view head_start(std::string_view route);

 private:
  std::deque<std::pair<std::string, std::string>> head_starts_;  // route → head start (one per endpoint)
  asio::any_io_executor ex_;
  const BackendConfig& backend_;
  BaseUrl url_;
  std::shared_ptr<ssl::context> tls_;
  std::vector<std::unique_ptr<Connection>> idle_;
  LiveExchanges* live_;
  // Where new connections go: the URL's IP address, or its host name's addresses resolved at resolved_at_.
  std::vector<tcp::endpoint> endpoints_;
  std::chrono::steady_clock::time_point resolved_at_{};
  bool fixed_endpoints_ = false;  // the URL names an IP address: endpoints_ never change
};

}  // namespace sluice::upstream
