#include "upstream/pool.hpp"

#include "server/drained_read.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>

namespace sluice::upstream {

namespace {
// A pooled connection unused for longer than this is closed rather than reused: servers
// commonly drop idle keep-alive connections after 5–75 s.
constexpr auto kMaxIdle = std::chrono::seconds(30);
constexpr auto kTrustIdle = std::chrono::seconds(1);  // idle for less: reused without a liveness peek
// A host name's addresses are resolved again after this long (Envoy's default DNS refresh), and at once after
// a connect to them failed.
constexpr auto kResolvedFor = std::chrono::seconds(5);

// True when the peer has not closed (or reset) an idle connection: nothing must be readable.
bool still_open(tcp::socket& s) {
  if (!s.is_open()) return false;
  char c;
  ssize_t r = ::recv(s.native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

error_code socket_error(tcp::socket& s) {
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(s.native_handle(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  return err ? error_code(err, boost::system::system_category()) : error_code();
}

// Waits until a connect in progress on `s` ends, or `deadline` passes (beast::error::timeout). The timer's
// handler may run after this frame is gone (a cancelled wait): it reaches the socket only through `gate`.
asio::awaitable<error_code> connect_finished(tcp::socket& s, std::chrono::steady_clock::time_point deadline) {
  struct Gate {
    tcp::socket* socket;
    bool fired = false;
  };
  auto gate = std::make_shared<Gate>(Gate{&s});
  asio::steady_timer timer(s.get_executor(), deadline);
  timer.async_wait([gate](error_code ec) {
    if (ec || !gate->socket) return;
    gate->fired = true;
    error_code ignored;
    gate->socket->cancel(ignored);
  });
  auto [ec] = co_await s.async_wait(tcp::socket::wait_write, use_nothrow);
  gate->socket = nullptr;
  timer.cancel();
  if (gate->fired) co_return beast::error::timeout;
  co_return ec ? ec : socket_error(s);
}

// One TCP connect to `ep` on `s` (opened here). A backend on this host (a local vLLM or llama.cpp, a sidecar)
// has accepted or refused before connect(2) returns, since the kernel runs both ends of the handshake
// within the call: its answer is read at once (a poll(2) with no wait) rather than after a trip through the
// event loop, which under load is a wait behind every other ready socket. A remote one is waited for.
asio::awaitable<error_code> connect_one(tcp::socket& s, const tcp::endpoint& ep,
                                        std::chrono::steady_clock::time_point deadline) {
  error_code ec;
  s.open(ep.protocol(), ec);
  if (!ec) s.non_blocking(true, ec);  // set once: Asio's reads and writes then make no ioctl of their own
  if (ec) co_return ec;
  if (::connect(s.native_handle(), ep.data(), static_cast<socklen_t>(ep.size())) == 0) co_return error_code();
  if (errno != EINPROGRESS && errno != EINTR) co_return error_code(errno, boost::system::system_category());
  pollfd p{s.native_handle(), POLLOUT, 0};
  if (::poll(&p, 1, 0) > 0) co_return socket_error(s);
  co_return co_await connect_finished(s, deadline);
}

// The first of `endpoints` that accepts, tried in order within one deadline (as asio::async_connect does).
asio::awaitable<error_code> connect_any(tcp::socket& s, const std::vector<tcp::endpoint>& endpoints,
                                        std::chrono::steady_clock::time_point deadline) {
  error_code ec = asio::error::host_not_found;
  for (const auto& ep : endpoints) {
    error_code ignored;
    s.close(ignored);
    if (std::chrono::steady_clock::now() >= deadline) co_return beast::error::timeout;
    ec = co_await connect_one(s, ep, deadline);
    if (!ec || ec == beast::error::timeout) break;
  }
  co_return ec;
}
}  // namespace

std::shared_ptr<ssl::context> make_client_tls_context(const BackendConfig& backend) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                   ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  if (backend.tls_verify) {
    ctx->set_verify_mode(ssl::verify_peer);
    ctx->set_default_verify_paths();
    if (!backend.ca_file.empty()) ctx->load_verify_file(backend.ca_file);  // throws on unreadable file
  } else {
    ctx->set_verify_mode(ssl::verify_none);
  }
  return ctx;
}

BackendPool::BackendPool(asio::any_io_executor ex, const BackendConfig& backend, BaseUrl url,
                         std::shared_ptr<ssl::context> tls, LiveExchanges* live)
    : ex_(std::move(ex)), backend_(backend), url_(std::move(url)), tls_(std::move(tls)), live_(live) {
  // An IP address is taken as it is: no resolver, whose thread each new connection would otherwise wait on.
  if (url_.host_is_ip()) {
    fixed_endpoints_ = true;
    endpoints_ = {tcp::endpoint(asio::ip::make_address(url_.host), url_.port)};
  }
}

std::string_view BackendPool::head_start(std::string_view route) {
  for (const auto& [r, start] : head_starts_)
    if (r == route) return start;
  auto head = WireHead::request("POST", url_.target(route));
  head.field("Host", url_.host_header())
      .field("User-Agent", "sluice/" SLUICE_VERSION)
      .field("Content-Type", "application/json")
      .field("Accept", "application/json, text/event-stream")
      .field("Accept-Encoding", "identity");  // Sluice relays bytes; it does not decompress
  // The client's own key never goes upstream; the backend's key comes from config.
  if (!backend_.api_key.empty()) head.field("Authorization", "Bearer " + backend_.api_key);
  return head_starts_.emplace_back(std::string(route), std::string(head.text())).second;
}

std::unique_ptr<Connection> BackendPool::take_idle(std::chrono::steady_clock::time_point now) {
  while (!idle_.empty()) {
    auto c = std::move(idle_.back());  // most recently used first: it is the likeliest to be warm
    idle_.pop_back();
    if (now - c->idle_since >= kMaxIdle) continue;
    // A connection back in the pool a moment ago is taken as it is (a peek is a syscall on every request's
    // path; if the backend did close it meanwhile, the exchange finds it stale and retries on a fresh one).
    if (now - c->idle_since < kTrustIdle || still_open(c->lowest().socket())) return c;
  }
  return nullptr;
}

void BackendPool::release(std::unique_ptr<Connection> c, std::chrono::steady_clock::time_point now) {
  if (!c || c->buffer.size() != 0 || idle_.size() >= backend_.max_idle_connections) return;
  c->idle_since = now;
  idle_.push_back(std::move(c));
}

asio::awaitable<std::unique_ptr<Connection>> BackendPool::connect(std::string& reason, std::string& detail) {
  auto c = std::make_unique<Connection>();
  const auto now = std::chrono::steady_clock::now();
  auto deadline = now + backend_.timeouts.connect;
  if (!fixed_endpoints_ && (endpoints_.empty() || now - resolved_at_ >= kResolvedFor)) {
    // Resolution has no timeout of its own: a timer cancels it. The handler owns what it touches,
    // since it may run after this frame is gone.
    auto resolver = std::make_shared<tcp::resolver>(ex_);
    auto timed_out = std::make_shared<bool>(false);
    asio::steady_timer timer(ex_);
    timer.expires_at(deadline);
    timer.async_wait([resolver, timed_out](error_code ec) {
      if (!ec) {
        *timed_out = true;
        resolver->cancel();
      }
    });
    const std::string port = std::to_string(url_.port);  // named: GCC 12 mishandles temporaries in co_await
    auto [rec, results] =
        co_await resolver->async_resolve(url_.host, port, tcp::resolver::numeric_service, use_nothrow);
    timer.cancel();
    if (rec) {
      reason = *timed_out ? "timeout" : "resolve";
      detail = "cannot resolve " + url_.host + ": " + rec.message();
      co_return nullptr;
    }
    endpoints_.clear();
    for (const auto& entry : results) endpoints_.push_back(entry.endpoint());
    resolved_at_ = now;
  }
  const std::vector<tcp::endpoint> endpoints = endpoints_;  // a copy: another connect may refresh them meanwhile
  if (url_.tls)
    c->secure.emplace(ex_, *tls_);
  else
    c->plain.emplace(ex_);
  auto& tcp_layer = c->lowest();
  const error_code cec = co_await connect_any(tcp_layer.socket(), endpoints, deadline);
  if (cec) {
    if (!fixed_endpoints_) endpoints_.clear();  // the next connect asks DNS again
    reason = cec == beast::error::timeout ? "timeout" : "connect";
    detail = "cannot connect to " + url_.host_header() + ": " + cec.message();
    co_return nullptr;
  }
  tcp_layer.socket().set_option(tcp::no_delay(true));
  if (!c->secure) enable_drained_reads(tcp_layer.socket());  // TLS reads go through Beast and OpenSSL
  if (c->secure) {
    auto* ssl = c->secure->native_handle();
    if (!url_.host_is_ip()) SSL_set_tlsext_host_name(ssl, url_.host.c_str());  // SNI
    if (backend_.tls_verify) c->secure->set_verify_callback(ssl::host_name_verification(url_.host));
    tcp_layer.expires_at(deadline);  // the handshake ends within the connect timeout too
    auto [hec] = co_await c->secure->async_handshake(ssl::stream_base::client, use_nothrow);
    if (hec) {
      reason = hec == beast::error::timeout ? "timeout" : "tls";
      detail = "TLS handshake with " + url_.host_header() + " failed: " + hec.message();
      co_return nullptr;
    }
    tcp_layer.expires_never();
  }
  co_return c;
}

}  // namespace sluice::upstream
