#include "server/gateway.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <climits>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <utility>
#include <unordered_set>

#include "duration.hpp"
#include "observe/logging.hpp"
#include "openai/dialect.hpp"
#include "server/routes.hpp"
#include "simulator/simulator.hpp"
#include "store/redis.hpp"
#include "store/redis_limiter.hpp"
#include "upstream/proxy.hpp"

namespace sluice::server {

namespace {

using Clock = std::chrono::steady_clock;

/// Makes room for every descriptor the gateway may hold, before its threads start.
///
/// The soft RLIMIT_NOFILE is raised to the hard one (as Go's runtime does; systemd's soft default of 1024
/// would otherwise cap a gateway at about 500 streams, each holding a client and a backend socket), with a
/// warning when even that is short of what the config needs: a client and a backend socket per connection,
/// every worker's idle pooled backend connections, and room for listeners, refusals, probes, Redis and logs.
///
/// Then the descriptor table is grown to that size at once. The kernel grows it by doubling when a new
/// descriptor does not fit, and in a process with more than one thread each growth waits for an RCU grace
/// period (synchronize_rcu in expand_files): about 10 ms here, during which the worker that accepted stalls
/// with every stream it relays. Growing it once, while the process is still single-threaded, waits for
/// nothing. The table is kernel memory (8 bytes a slot and two bitmaps; charged to the process's memory
/// cgroup), not resident memory: 256 KiB for the default 10,000 connections.
void prepare_descriptors(const Config& config, unsigned workers) {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur < lim.rlim_max) {
    rlimit raised = lim;
    raised.rlim_cur = lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) lim = raised;
  }
  rlim_t idle = 0;
  for (const auto& b : config.backends) idle += b.max_idle_connections;
  const rlim_t needed = 2 * static_cast<rlim_t>(config.server.max_connections) + workers * idle + 256;
  if (lim.rlim_cur < needed)
    spdlog::warn(
        "server.max_connections {} with {} worker(s) may need at least {} file descriptors; the limit "
        "(RLIMIT_NOFILE) is {}",
        config.server.max_connections, workers, static_cast<unsigned long long>(needed),
        static_cast<unsigned long long>(lim.rlim_cur));
  const rlim_t slots = std::min(lim.rlim_cur, needed);
  const int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (probe < 0) return;
  // The lowest free descriptor at or above the last slot: never one in use.
  const int high = ::fcntl(probe, F_DUPFD_CLOEXEC, static_cast<int>(std::min<rlim_t>(slots - 1, INT_MAX)));
  if (high >= 0) ::close(high);
  ::close(probe);
}

/// What a worker's first request would otherwise set up while clients wait, done before it serves any:
/// OpenSSL's configuration and SHA-256 (a key's digest) and this thread's random generator (request ids). On
/// the first request they took about 2.5 ms, and every connection that came meanwhile waited too.
void warm_up_worker_thread() {
  (void)policy::sha256_hex("");
  (void)new_request_id();
}

/// A client connection as the drain logic sees it.
struct SessionHandle {
  beast::tcp_stream* stream;
  // In the keep-alive wait for the next request (else serving one), whose deadline the worker's sweep
  // (sweep_idle) keeps: no timer per connection.
  bool waiting = false;
  bool expired = false;  // the sweep ended the wait
  Clock::time_point waiting_since{};
};

/// One thread running one io_context; every connection accepted for it stays on it.
struct Worker {
  // Declared before ctx, so destroyed after it: session frames torn down with ctx still erase themselves.
  std::unordered_set<SessionHandle*> sessions;
  upstream::LiveExchanges live;  // outlives the pools and the session frames that refer to it
  asio::io_context ctx{1};
  // Declared after ctx, so destroyed before it: pooled sockets must close while their io_context lives.
  WorkerLocal local;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
};

tcp::endpoint resolve_listen(const ListenAddress& a, const char* path) {
  error_code ec;
  auto addr = asio::ip::make_address(a.host == "localhost" ? "127.0.0.1" : a.host, ec);
  if (ec) throw std::runtime_error(std::string(path) + ": '" + a.host + "' is not an IP address");
  return {addr, a.port};
}

void open_acceptor(tcp::acceptor& acc, const tcp::endpoint& ep, const char* path) {
  error_code ec;
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error(std::string("cannot listen on ") + ep.address().to_string() + ":" +
                             std::to_string(ep.port()) + " (" + path + "): " + ec.message());
}

// The client's address as accept(2) gave it (no getpeername(2) of its own), as Asio writes it. An IPv4 address is
// written here: Asio's to_string goes through inet_ntop(3), which formats each byte with sprintf(3), about 1,800
// instructions for every client connection.
std::string peer_of(const tcp::endpoint& ep) {
  const auto a = ep.address();
  if (a.is_unspecified()) return "?";
  if (!a.is_v4()) return a.to_string() + ":" + std::to_string(ep.port());
  char text[sizeof "255.255.255.255:65535"];
  char* end = text + sizeof text;
  char* at = text;
  const auto bytes = a.to_v4().to_bytes();
  for (std::size_t i = 0; i < bytes.size(); ++i) {
    at = write_decimal(at, end, bytes[i]);
    *at++ = i + 1 < bytes.size() ? '.' : ':';
  }
  at = write_decimal(at, end, ep.port());
  return std::string(text, at);
}

// Where a connection's idle wait after a request starts: the request's end, the clock reading it was
// finished with (a plain function: its temporaries take no place in the session's frame).
Clock::time_point idle_from(const RequestContext& ctx) {
  return ctx.ended != Clock::time_point{} ? ctx.ended : Clock::now();
}

// Gathered access lines reach stdout within `every`, however quiet the worker is.
asio::awaitable<void> flush_access_lines(asio::io_context& ctx, Millis every) {
  asio::steady_timer t(ctx);
  for (;;) {
    t.expires_after(every);
    auto [ec] = co_await t.async_wait(use_nothrow);
    observe::flush_access_log();
    if (ec) co_return;
  }
}

// Ends the keep-alive waits that passed `idle`, looking every quarter of it (but at most every 10 ms and at least
// every second): a keep-alive connection's deadline is kept by this one timer per worker, not by a timer set and
// cancelled around each request's wait. A connection is closed between `idle` and `idle` plus that period after
// its last request.
asio::awaitable<void> sweep_idle(asio::io_context& ctx, std::unordered_set<SessionHandle*>& sessions, Millis idle) {
  const auto every = std::clamp<Millis>(idle / 4, Millis(10), Millis(1000));
  asio::steady_timer t(ctx);
  for (;;) {
    t.expires_after(every);
    auto [ec] = co_await t.async_wait(use_nothrow);
    if (ec) co_return;
    const auto now = Clock::now();
    for (auto* h : sessions)
      if (h->waiting && !h->expired && now - h->waiting_since >= idle) {
        h->expired = true;
        error_code ignored;
        h->stream->socket().cancel(ignored);  // ends the wait
      }
  }
}

// After an error reply on a connection that may still carry unread request bytes, read and discard
// them briefly before closing, so the client sees the reply instead of a reset.
asio::awaitable<void> lingering_close(beast::tcp_stream& stream) {
  error_code ec;
  stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream.expires_after(std::chrono::seconds(2));
  std::array<char, 16384> sink;
  std::size_t total = 0;
  while (total < (16u << 20)) {
    auto [rec, n] = co_await stream.async_read_some(asio::buffer(sink), use_nothrow);
    if (rec) break;
    total += n;
  }
  stream.close();
}

}  // namespace

WorkerLocal::WorkerLocal() = default;
WorkerLocal::~WorkerLocal() {
  if (redis) redis->stop();
}

// What a reload cannot apply: everything but keys and limits, compared by what it does (never by secrets'
// values, which are not logged).
std::vector<std::string> changes_needing_restart(const Config& was, const Config& now) {
  std::vector<std::string> out;
  auto backend_shape = [](const BackendConfig& b) {
    std::string s = std::string(to_string(b.dialect)) + "|" + b.url + "|" + b.ca_file + "|" +
                    std::to_string(b.max_inflight) + "|" + std::to_string(b.max_queue) + "|" +
                    std::to_string(b.queue_timeout.count()) + "|" + std::to_string(b.timeouts.connect.count()) + "|" +
                    std::to_string(b.timeouts.first_token.count()) + "|" + std::to_string(b.timeouts.idle.count()) +
                    "|" + std::to_string(b.timeouts.total.count()) + "|" + (b.enabled ? "on" : "off") + "|" +
                    std::to_string(std::hash<std::string>{}(b.api_key));
    return s;
  };
  auto model_shape = [](const ModelConfig& m) {
    std::string s = m.strategy + "|" + std::to_string(m.max_attempts) + "|" + std::to_string(m.max_tokens_cap);
    for (const auto& a : m.aliases) s += "|a:" + a;
    for (const auto& t : m.targets) s += "|t:" + t.backend + "/" + t.model + "/" + std::to_string(t.weight);
    for (const auto& [k, v] : m.defaults) s += "|d:" + k + "=" + v;
    return s;
  };
  auto compare = [&](const auto& before, const auto& after, const char* what, auto shape) {
    for (const auto& b : before) {
      auto it = std::find_if(after.begin(), after.end(), [&](const auto& a) { return a.name == b.name; });
      if (it == after.end())
        out.push_back(std::string(what) + " " + b.name + " removed");
      else if (shape(*it) != shape(b))
        out.push_back(std::string(what) + " " + b.name + " changed");
    }
    for (const auto& a : after)
      if (std::none_of(before.begin(), before.end(), [&](const auto& b) { return b.name == a.name; }))
        out.push_back(std::string(what) + " " + a.name + " added");
  };
  compare(was.backends, now.backends, "backend", backend_shape);
  compare(was.models, now.models, "model", model_shape);
  if (was.server.listen.to_string() != now.server.listen.to_string() ||
      was.server.admin_listen.to_string() != now.server.admin_listen.to_string() ||
      was.server.workers != now.server.workers)
    out.push_back("server listeners or workers changed");
  if (was.store != now.store || was.redis.url != now.redis.url || was.redis.key_prefix != now.redis.key_prefix)
    out.push_back("store or redis changed");
  return out;
}

struct Gateway::Impl {
  Config config;
  Config loaded_at_start;  // as read from the file (before simulator URLs are filled in), for reload's diff
  std::string config_path;  // what reload() reads
  Snapshots snapshots{nullptr};  // set in start(), once simulator URLs are known
  observe::Metrics metrics;
  policy::LocalLimiter limiter{[this](const std::string& key, std::uint64_t left) {
    metrics.budget_remaining(key, left);
  }};
  policy::MemoryCache cache{config.cache.max_bytes};
  upstream::Flights flights;
  store::RedisHealth redis_health;
  std::atomic<bool> draining{false};
  std::atomic<bool> stopping{false};
  std::atomic<int> inflight{0};
  std::atomic<int> background{0};  // Redis settlements in flight
  std::atomic<unsigned> connections{0};
  std::atomic<unsigned> refusing{0};          // connections being told "503 too many connections"
  static constexpr unsigned kMaxRefusing = 64;  // beyond this, refused connections are reset instead
  static constexpr int kAcceptBatch = 64;       // connections accepted at once after a wake-up
  Fleet fleet;
  Services services{
      config,
      snapshots,
      metrics,
      draining,
      fleet,
      limiter,
      background,
      cache,
      flights,
      [this] { return reload(); },
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count()};
  std::map<std::string, upstream::BaseUrl> urls;
  std::map<std::string, std::shared_ptr<upstream::ssl::context>> tls;

  std::mutex mutex;
  std::condition_variable stopped_cv;
  bool stopped = false;

  // In-process simulator backends run on their own thread so they do not compete with the workers.
  asio::io_context sim_ctx{1};
  std::vector<std::unique_ptr<simulator::SimulatorServer>> sims;
  std::thread sim_thread;

  std::vector<std::unique_ptr<Worker>> workers;  // last: torn down first
  std::optional<tcp::acceptor> acceptor;
  std::optional<tcp::acceptor> admin_acceptor;
  std::optional<asio::signal_set> signals;
  std::optional<asio::signal_set> hangups;
  bool on_signals = false;  // drain_on_signals() was asked for: start() installs the handlers
  std::uint16_t port = 0, admin_port = 0;
  std::size_t next_worker = 0;

  explicit Impl(Config c) : config(std::move(c)), loaded_at_start(config) {}

  void start_simulators() {
    for (auto& b : config.backends) {
      if (b.dialect != Dialect::simulator || !b.enabled) continue;
      auto sim = std::make_unique<simulator::SimulatorServer>(sim_ctx, b.simulator);
      auto p = sim->listen("127.0.0.1", 0);
      b.url = "http://127.0.0.1:" + std::to_string(p) + "/v1";
      sims.push_back(std::move(sim));
    }
    if (!sims.empty()) sim_thread = std::thread([this] { sim_ctx.run(); });
  }

  void prepare_backends() {
    for (std::size_t i = 0; i < config.backends.size(); ++i) {
      const auto& b = config.backends[i];
      if (!b.enabled) continue;
      auto path = "backends[" + std::to_string(i) + "]";
      auto url = upstream::parse_base_url(b.url);
      if (!url) throw std::runtime_error(path + ".url: not a valid http(s) URL");
      if (url->tls) {
        try {
          tls[b.name] = upstream::make_client_tls_context(b);
        } catch (const std::exception& e) {
          throw std::runtime_error(path + ".ca_file: " + e.what());
        }
      }
      urls[b.name] = *url;
      // A trial's exchange ends by its total deadline, and its last client write within an idle timeout after.
      fleet.backends[b.name] = std::make_unique<upstream::BackendState>(
          b.outlier, b.timeouts.total + b.timeouts.idle + std::chrono::seconds(1));
      fleet.queues[b.name] = std::make_unique<SlotQueue>(b.max_queue);
      metrics.backend_up(b.name, true);
    }
  }

  asio::awaitable<void> accept_loop() {
    error_code nb;
    acceptor->non_blocking(true, nb);  // the accepts after the first of a wake-up answer would_block, never wait
    // A connection reset while it waited is an error to skip, not one Asio's synchronous accept waits out.
    error_code opt;
    acceptor->set_option(asio::socket_base::enable_connection_aborted(true), opt);
    tcp::endpoint peer;  // each accepted client's address, from accept(2) itself
    for (;;) {
      auto& w = *workers[next_worker];
      next_worker = (next_worker + 1) % workers.size();
      auto [ec, accepted] = co_await acceptor->async_accept(w.ctx, peer, use_nothrow);
      if (ec == asio::error::connection_aborted) continue;  // the client gave up while it waited
      if (ec) {
        if (!acceptor->is_open() || draining) co_return;
        {  // EMFILE, ENFILE, ENOBUFS...: back off instead of spinning
          asio::steady_timer t(acceptor->get_executor(), std::chrono::milliseconds(50));
          co_await t.async_wait(use_nothrow);
        }
        continue;
      }
      admit(w, std::move(accepted), peer);
      // Then every connection already waiting (up to a batch), as nginx's multi_accept: one per trip through a
      // busy event loop would leave new clients queued behind every stream's events.
      for (int i = 0; !nb && i < kAcceptBatch && acceptor->is_open(); ++i) {
        auto& next = *workers[next_worker];
        error_code aec;
        tcp::socket sock = acceptor->accept(next.ctx, peer, aec);
        if (aec) break;  // would_block: none waiting (any other error, the next async accept sees too)
        next_worker = (next_worker + 1) % workers.size();
        admit(next, std::move(sock), peer);
      }
    }
  }

  // One place in `connections`, taken when a connection is accepted and given back when its session's frame
  // goes, whether the session ran, ended by an exception, or never started (its io_context stopped first).
  class Slot {
   public:
    explicit Slot(std::atomic<unsigned>& n) : n_(&n) { ++*n_; }
    Slot(Slot&& o) noexcept : n_(std::exchange(o.n_, nullptr)) {}
    Slot& operator=(Slot&&) = delete;
    ~Slot() {
      if (n_) --*n_;
    }

   private:
    std::atomic<unsigned>* n_;
  };

  // A connection just accepted for worker `w`: its session, or a refusal when over max_connections.
  void admit(Worker& w, tcp::socket sock, const tcp::endpoint& peer) {
    if (connections.load() >= config.server.max_connections) {
      metrics.client_rejected("max_connections");
      // Told why with a 503, unless so many are being refused at once that even that would cost too much.
      if (refusing.load() < kMaxRefusing) {
        ++refusing;  // counted here, not when the worker gets to it, so a burst cannot overshoot the cap
        asio::co_spawn(w.ctx, refuse_session(std::move(sock), peer), asio::detached);
      } else {
        reset_socket(sock);
      }
      return;
    }
    // Counted here, not when the session starts: a batch of accepts cannot overshoot the cap.
    asio::co_spawn(w.ctx, client_session(w, std::move(sock), peer, Slot(connections)), asio::detached);
  }

  // A connection over max_connections: a 503 before its request is read, then a brief lingering close.
  asio::awaitable<void> refuse_session(tcp::socket sock, tcp::endpoint peer) {
    struct Done {
      std::atomic<unsigned>& n;
      ~Done() { --n; }
    } done{refusing};
    RequestContext ctx;
    ctx.started = Clock::now();
    ctx.client = peer_of(peer);
    beast::tcp_stream stream(std::move(sock));
    openai::ApiError err{503,
                         "Sluice is at its limit of " + std::to_string(config.server.max_connections) +
                             " client connections; retry shortly.",
                         "server_error", std::nullopt, "too_many_connections"};
    err.retry_after = "1";
    stream.expires_after(std::chrono::seconds(2));
    co_await reply_unroutable(stream, err, ctx, services);
    co_await lingering_close(stream);
  }

  asio::awaitable<void> client_session(Worker& w, tcp::socket sock, tcp::endpoint peer,
                                       [[maybe_unused]] Slot slot) {
    metrics.client_connections(1);
    error_code ec;
    sock.set_option(tcp::no_delay(true), ec);
    // Set once, before the first read: Asio's reads and Sluice's writes then make no ioctl(2) of their own.
    sock.non_blocking(true, ec);
    std::string client = peer_of(peer);
    enable_drained_reads(sock);  // the keep-alive wait is a drained read (below)
    beast::tcp_stream stream(std::move(sock));
    beast::flat_buffer buffer;
    policy::KeyMemo key_memo;  // the key this connection's last request was let in with
    upstream::ClientWatch watch;  // its requests' exchange watchdog (cancelled before the stream goes)
    SessionHandle handle{&stream};
    w.sessions.insert(&handle);
    // However the session ends (even by an exception), it leaves the registry and the counts.
    struct Leave {
      Worker& w;
      SessionHandle& h;
      observe::Metrics& metrics;
      ~Leave() {
        w.sessions.erase(&h);
        metrics.client_connections(-1);
      }
    } leave{w, handle, metrics};
    const auto& sc = config.server;
    bool lingering = false;
    handle.waiting_since = Clock::now();  // then the end of each request (below): the idle wait starts there

    while (!draining) {
      if (buffer.size() == 0) {  // idle keep-alive: wait for the first byte of the next request
        // On the socket itself, as a drained read: the last read of a request nearly always emptied it, and a
        // plain read would ask the kernel once more before it waits (one recv(2) per request answering EAGAIN).
        // Its deadline is kept by the worker's sweep_idle, not by the stream's per-operation timer.
        handle.waiting = true;
        auto [rec, n] = co_await async_read_drained(stream.socket(), buffer.prepare(4096), use_nothrow);
        handle.waiting = false;
        // Ended by the sweep: a timeout. (A request that arrived just before the sweep's cancel is kept.)
        if (std::exchange(handle.expired, false) && rec) rec = beast::error::timeout;
        if (rec) break;
        buffer.commit(n);
      }
      // In flight from its first byte, so a drain also waits for requests still being read.
      struct InFlight {
        std::atomic<int>& n;
        explicit InFlight(std::atomic<int>& c) : n(c) { ++n; }
        ~InFlight() { --n; }
      } counted{inflight};
      RequestContext ctx;
      ctx.started = Clock::now();
      ctx.client = client;
      IncomingParser parser;
      parser.header_limit(sc.max_header_bytes);
      parser.body_limit(sc.max_body_bytes);
      // What the wait for the request read is parsed at once; the stream is read (in read_buffered's frame),
      // under a deadline, only when that is not all of it. (Every operation on the stream through Beast sets its
      // own deadline first; one that is not started needs none.)
      error_code hec;
      std::size_t hn = 0;
      if (!parse_buffered(buffer, parser, true, hec, hn)) {
        stream.expires_after(sc.header_timeout);
        const bool held_offered = true;
        auto [read_ec, n] = co_await read_buffered(stream, buffer, parser, true, held_offered);
        hec = read_ec;
        hn += n;
      }
      ctx.bytes_in = hn;
      if (!hec && beast::iequals(parser.get()[IncomingRequest::Field::expect], "100-continue")) {
        static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
        stream.expires_after(sc.header_timeout);
        auto [cec, cn] = co_await asio::async_write(stream, asio::buffer(cont), use_nothrow);
        hec = cec;
      }
      error_code rec = hec;
      if (!rec) {
        std::size_t bn = 0;
        if (!parse_buffered(buffer, parser, false, rec, bn)) {
          stream.expires_after(sc.body_timeout);  // a large body on a slow link gets longer than a header
          const bool held_offered = true;
          auto [read_ec, n] = co_await read_buffered(stream, buffer, parser, false, held_offered);
          rec = read_ec;
          bn += n;
        }
        ctx.bytes_in += bn;
      }
      if (rec) {
        if (parser.is_header_done()) {  // for the access line of a request refused before it is routed
          ctx.method = std::string(parser.get().method_string());
          auto target = parser.get().target();
          ctx.path = std::string(target.substr(0, std::min<std::size_t>(target.find('?'), 256)));
        }
        std::optional<openai::ApiError> err;
        if (rec == http::error::body_limit)
          err = openai::ApiError{
              413, "The request body exceeds the limit of " + std::to_string(sc.max_body_bytes) + " bytes.",
              "invalid_request_error", std::nullopt, "request_too_large"};
        else if (rec == http::error::header_limit)
          err = openai::ApiError{431, "The request headers are too large.", "invalid_request_error",
                                 std::nullopt, "headers_too_large"};
        else if (rec.category() == http::make_error_code(http::error::end_of_stream).category() &&
                 rec != http::error::end_of_stream && rec != http::error::partial_message)
          err = openai::ApiError{400, "Malformed HTTP request: " + rec.message(), "invalid_request_error",
                                 std::nullopt, "bad_request"};
        // A timeout has already closed the socket (Beast's deadline): nothing can be answered then.
        else if (rec == beast::error::timeout)
          metrics.client_rejected(parser.is_header_done() ? "body_timeout" : "header_timeout");
        if (err) {
          co_await reply_unroutable(stream, *err, ctx, services);
          lingering = true;
        }
        break;
      }
      ctx.read_buffer = &buffer;
      ctx.key_memo = &key_memo;
      ctx.watch = &watch;
      bool keep = co_await handle_client_request(stream, parser.get(), ctx, services, w.local);
      handle.waiting_since = idle_from(ctx);
      if (!keep) break;
    }
    if (lingering)
      co_await lingering_close(stream);
    else
      stream.close();  // its FIN follows the last answer's bytes, as a shutdown(2) first would send it
  }

  asio::awaitable<void> admin_accept_loop() {
    for (;;) {
      auto [ec, sock] = co_await admin_acceptor->async_accept(use_nothrow);
      if (ec) {
        if (!admin_acceptor->is_open()) co_return;
        continue;
      }
      asio::co_spawn(admin_acceptor->get_executor(), admin_session(std::move(sock)), asio::detached);
    }
  }

  asio::awaitable<void> admin_session(tcp::socket sock) {
    beast::tcp_stream stream(std::move(sock));
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64 * 1024);
      stream.expires_after(std::chrono::seconds(30));
      auto [ec, n] = co_await http::async_read(stream, buffer, parser, use_nothrow);
      if (ec) break;
      auto res = handle_admin_request(parser.get(), services,
                                      !draining && fleet.any_up(std::chrono::steady_clock::now()));
      error_code wec;
      if (parser.get().method() == http::verb::head) {  // the header (with its Content-Length) and no body
        http::response_serializer<http::string_body> sr{res};
        std::tie(wec, std::ignore) = co_await http::async_write_header(stream, sr, use_nothrow);
      } else {
        std::tie(wec, std::ignore) = co_await http::async_write(stream, res, use_nothrow);
      }
      if (wec || !res.keep_alive()) break;
    }
    error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  // Active health checks for one backend, on worker 0, for the life of the gateway.
  asio::awaitable<void> probe_loop(const BackendConfig& b, upstream::BackendPool& pool) {
    auto& state = *fleet.backends.at(b.name);
    const std::string path =
        b.health.path.empty() ? openai::default_health_path(b.dialect, pool.url().path) : b.health.path;
    asio::steady_timer timer(pool.executor());
    for (;;) {
      std::string why;
      bool ok = co_await upstream::probe(pool, path, b.health.timeout, why);
      if (ok != state.probe_up()) {
        if (ok)
          spdlog::info("backend {} passes its health check again", b.name);
        else
          spdlog::warn("backend {} failed its health check ({} {}): {}", b.name, "GET", path, why);
      }
      state.set_probe_result(ok);
      metrics.backend_up(b.name, state.up(Clock::now()));
      timer.expires_after(b.health.interval);
      co_await timer.async_wait(use_nothrow);
    }
  }

  asio::awaitable<void> drain_then_stop() {
    auto deadline = Clock::now() + config.server.drain_timeout;
    asio::steady_timer t(workers[0]->ctx);
    while (inflight.load() > 0 && Clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(20));
      co_await t.async_wait(use_nothrow);
    }
    if (inflight.load() > 0) {
      // Out of time: end what is left cleanly. Closing their upstream connections makes every relay
      // send its client an error event and [DONE] (or a 503) instead of the connection just dying.
      spdlog::warn("drain timeout reached with {} request(s) still in flight; ending them", inflight.load());
      for (auto& w : workers)
        asio::post(w->ctx, [wp = w.get()] {
          wp->live.cutting = true;
          wp->live.close_all();
        });
      auto grace = Clock::now() + std::chrono::seconds(2);
      while (inflight.load() > 0 && Clock::now() < grace) {
        t.expires_after(std::chrono::milliseconds(20));
        co_await t.async_wait(use_nothrow);
      }
    }
    // Settlements still on their way to Redis (a few ms normally; bounded when Redis is away).
    auto settle_by = Clock::now() + std::chrono::seconds(3);
    while (background.load() > 0 && Clock::now() < settle_by) {
      t.expires_after(std::chrono::milliseconds(10));
      co_await t.async_wait(use_nothrow);
    }
    spdlog::info("drained; stopping");
    stop_all();
  }

  // Swaps in the keys and limits of the config file. Backends, models, listeners and the store are fixed for
  // the life of the process (their connections and state are built from them), so changes there are reported
  // and wait for a restart.
  std::string reload() {
    if (config_path.empty()) return "this gateway was not started from a config file";
    auto loaded = load_config_file(config_path);
    if (!loaded.config) {
      std::string why;
      for (const auto& e : loaded.errors) why += (why.empty() ? "" : "; ") + e.to_string();
      spdlog::error("config reload rejected, keeping the running config: {}", why);
      return why;
    }
    const auto& fresh = *loaded.config;
    auto current = snapshots.get();
    Config next = current->config;
    next.keys = fresh.keys;
    next.auth_required = fresh.auth_required;
    next.limits = fresh.limits;
    for (auto& m : next.models)
      for (const auto& f : fresh.models)
        if (f.name == m.name) m.limits = f.limits;
    auto fixed = changes_needing_restart(loaded_at_start, fresh);
    for (const auto& change : fixed)
      spdlog::warn("config reload: {} (takes effect at the next restart)", change);
    metrics.declare(next);
    std::size_t keys = next.keys.size();
    snapshots.set(std::make_shared<const Snapshot>(std::move(next), &limiter));
    spdlog::info("config reloaded: {} key(s); keys and limits swapped, requests in flight unchanged", keys);
    return "";
  }

  void stop_all() {
    if (stopping.exchange(true)) return;
    for (auto& w : workers) {
      w->guard.reset();
      w->ctx.stop();
    }
    sim_ctx.stop();
    std::lock_guard lock(mutex);
    stopped = true;
    stopped_cv.notify_all();
  }
};

Gateway::Gateway(Config config) : impl_(std::make_unique<Impl>(std::move(config))) {}

Gateway::~Gateway() {
  impl_->stop_all();
  wait();
}

void Gateway::start() {
  auto& d = *impl_;
  const unsigned n =
      d.config.server.workers ? d.config.server.workers : std::max(1u, std::thread::hardware_concurrency());
  prepare_descriptors(d.config, n);
  d.start_simulators();
  d.prepare_backends();
  d.metrics.declare(d.config);
  d.snapshots.set(std::make_shared<const Snapshot>(d.config, &d.limiter));
  std::optional<store::RedisUrl> redis_url;
  if (d.config.store == "redis") {
    redis_url = store::parse_redis_url(d.config.redis.url);
    if (!redis_url) throw std::runtime_error("redis.url: not a valid redis:// URL");
    // From the shared health itself (not the transition reported), so reports racing across workers
    // cannot leave the gauge or the outage count wrong.
    d.redis_health.on_change = [&d](bool) { d.metrics.redis_state(d.redis_health.up(), d.redis_health.outages()); };
  }
  // A concurrency slot in Redis outlives a replica that died holding it by at most this long.
  Millis lease{60'000};
  for (const auto& b : d.config.backends) lease = std::max(lease, b.timeouts.total + b.queue_timeout + Millis{60'000});
  for (const auto& m : d.config.models) d.fleet.budgets[m.name] = std::make_unique<upstream::RetryBudget>();
  for (unsigned i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>();
    w->guard.emplace(w->ctx.get_executor());
    for (const auto& b : d.config.backends) {
      auto it = d.urls.find(b.name);
      if (it == d.urls.end()) continue;
      auto tls = d.tls.count(b.name) ? d.tls[b.name] : nullptr;
      w->local.pools.emplace(b.name, std::make_unique<upstream::BackendPool>(w->ctx.get_executor(), b,
                                                                             it->second, tls, &w->live));
    }
    if (redis_url) {
      w->local.redis =
          std::make_unique<store::RedisClient>(w->ctx.get_executor(), *redis_url, d.config.redis.timeout, d.redis_health);
      w->local.limiter = std::make_unique<store::RedisLimiter>(*w->local.redis, d.config.redis.key_prefix, lease.count());
    }
    d.workers.push_back(std::move(w));
  }
  auto& home = d.workers[0]->ctx;
  d.acceptor.emplace(home);
  open_acceptor(*d.acceptor, resolve_listen(d.config.server.listen, "server.listen"), "server.listen");
  d.admin_acceptor.emplace(home);
  open_acceptor(*d.admin_acceptor, resolve_listen(d.config.server.admin_listen, "server.admin_listen"),
                "server.admin_listen");
  d.port = d.acceptor->local_endpoint().port();
  d.admin_port = d.admin_acceptor->local_endpoint().port();
  asio::co_spawn(home, d.accept_loop(), asio::detached);
  for (const auto& b : d.config.backends)
    if (d.urls.count(b.name) && b.health.enabled)
      asio::co_spawn(home, d.probe_loop(b, *d.workers[0]->local.pools.at(b.name)), asio::detached);
  for (auto& w : d.workers)
    if (w->local.redis) asio::post(w->ctx, [r = w->local.redis.get()] { r->start(); });
  asio::co_spawn(home, d.admin_accept_loop(), asio::detached);
  if (d.config.log.access_log && d.config.log.access_buffer > 0)
    for (auto& w : d.workers) asio::co_spawn(w->ctx, flush_access_lines(w->ctx, d.config.log.access_flush), asio::detached);
  for (auto& w : d.workers)
    asio::co_spawn(w->ctx, sweep_idle(w->ctx, w->sessions, d.config.server.idle_timeout), asio::detached);
  if (d.on_signals) watch_signals();  // before the workers run and before "listening on"
  for (auto& w : d.workers)
    w->thread = std::thread([&ctx = w->ctx] {
      warm_up_worker_thread();
      ctx.run();
      observe::flush_access_log();  // what this worker gathered last
    });
  spdlog::info("sluice {} listening on {}:{} (admin {}:{}), {} worker(s), {} backend(s), {} model(s)",
               SLUICE_VERSION, d.config.server.listen.host, d.port, d.config.server.admin_listen.host,
               d.admin_port, n, d.urls.size(), d.config.models.size());
}

void Gateway::drain() {
  auto& d = *impl_;
  if (d.workers.empty() || d.draining.exchange(true)) return;
  spdlog::info("draining: no new connections; {} request(s) in flight may finish within {} ms",
               d.inflight.load(), d.config.server.drain_timeout.count());
  asio::post(d.workers[0]->ctx, [&d] {
    error_code ec;
    d.acceptor->close(ec);
  });
  for (auto& w : d.workers)
    asio::post(w->ctx, [wp = w.get()] {
      for (auto* h : wp->sessions)
        if (h->waiting) {
          error_code ec;
          h->stream->socket().cancel(ec);  // ends the idle wait of keep-alive connections
        }
    });
  asio::co_spawn(d.workers[0]->ctx, d.drain_then_stop(), asio::detached);
}

void Gateway::stop() {
  impl_->stop_all();
}

void Gateway::wait() {
  auto& d = *impl_;
  {
    std::unique_lock lock(d.mutex);
    d.stopped_cv.wait(lock, [&] { return d.stopped; });
  }
  for (auto& w : d.workers)
    if (w->thread.joinable()) w->thread.join();
  if (d.sim_thread.joinable()) d.sim_thread.join();
}

void Gateway::drain_on_signals() {
  impl_->on_signals = true;
}

void Gateway::watch_signals() {
  auto& d = *impl_;
  d.signals.emplace(d.workers[0]->ctx, SIGTERM, SIGINT);
  d.signals->async_wait([this](error_code ec, int sig) {
    if (ec) return;
    spdlog::info("received signal {}", sig);
    drain();
    // A second signal stops at once.
    impl_->signals->async_wait([this](error_code ec2, int) {
      if (!ec2) stop();
    });
  });
  d.hangups.emplace(d.workers[0]->ctx, SIGHUP);
  wait_for_hangup();
}

void Gateway::wait_for_hangup() {
  impl_->hangups->async_wait([this](error_code ec, int) {
    if (ec) return;
    spdlog::info("received SIGHUP: reloading {}", impl_->config_path);
    impl_->reload();
    wait_for_hangup();
  });
}

void Gateway::reload_from(std::string config_path) {
  impl_->config_path = std::move(config_path);
}

std::string Gateway::reload() {
  // On worker 0, like SIGHUP and /admin/reload, so reloads never run at the same time.
  std::promise<std::string> done;
  auto result = done.get_future();
  asio::post(impl_->workers[0]->ctx, [&] { done.set_value(impl_->reload()); });
  return result.get();
}

std::uint16_t Gateway::port() const {
  return impl_->port;
}
std::uint16_t Gateway::admin_port() const {
  return impl_->admin_port;
}

}  // namespace sluice::server
