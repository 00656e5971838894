#include "store/redis.hpp"

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <charconv>
#include <deque>
#include <unordered_map>
#include <utility>

#include "hex.hpp"
#include "server/http_io.hpp"

namespace sluice::store {

namespace {

using Clock = std::chrono::steady_clock;
using Millis = std::chrono::milliseconds;

constexpr Millis kFirstBackoff{50};
constexpr Millis kMaxBackoff{5000};
constexpr std::size_t kMaxInFlight = 10000;        // calls waiting on one connection; more fail at once
constexpr std::size_t kMaxReplyBytes = 64u << 20;  // a reply growing past this breaks the connection
constexpr std::size_t kReadChunk = 16u << 10;

template <class T>
bool parse_number(std::string_view s, T& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

// A URL's user or password with %XX escapes undone; nullopt on a broken escape.
std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int hi = hex_value(s[i + 1]), lo = hex_value(s[i + 2]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

bool host_char(char c, bool bracketed) {
  if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-') return true;
  return bracketed ? c == ':' : c == '_';
}

RedisReply convert(const redisReply& r) {
  RedisReply out;
  switch (r.type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::string;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::status;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::error;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::integer;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::array;
      out.elements.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i) out.elements.push_back(convert(*r.element[i]));
      break;
    default:
      out.type = RedisReply::Type::nil;
  }
  return out;
}

// The RESP bytes of one command (binary-safe); empty when hiredis cannot build them.
std::string encode(const std::vector<std::string>& argv) {
  if (argv.empty()) return {};
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (const auto& a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  int n = redisFormatCommandArgv(&cmd, static_cast<int>(argv.size()), ptrs.data(), lens.data());
  if (n < 0 || cmd == nullptr) return {};
  std::string out(cmd, static_cast<std::size_t>(n));
  redisFreeCommand(cmd);
  return out;
}

std::string sha1_hex(std::string_view text) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(text.data()), text.size(), md);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * sizeof md);
  for (unsigned char b : md) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

using ReaderPtr = std::unique_ptr<redisReader, decltype(&redisReaderFree)>;

}  // namespace

std::optional<RedisUrl> parse_redis_url(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.size() < kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), url.begin(),
                  [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); }))
    return std::nullopt;
  std::string_view rest = url.substr(kScheme.size());
  RedisUrl out;

  // The last '@' ends the user part: a password may hold '@' or '/', the host and db never do.
  if (auto at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    auto colon = userinfo.find(':');
    if (colon == std::string_view::npos) return std::nullopt;  // "x@host": user or password? refused
    auto user = percent_decode(userinfo.substr(0, colon));
    auto password = percent_decode(userinfo.substr(colon + 1));
    if (!user || !password) return std::nullopt;
    out.username = std::move(*user);
    out.password = std::move(*password);
  }

  std::string_view hostport = rest;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && (!parse_number(db, out.db) || out.db < 0)) return std::nullopt;
  }

  std::string_view host = hostport, port;
  bool has_port = false, bracketed = false;
  if (!hostport.empty() && hostport.front() == '[') {  // [IPv6]
    auto close = hostport.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = hostport.substr(1, close - 1);
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
      has_port = true;
    }
    bracketed = true;
  } else if (auto colon = hostport.find(':'); colon != std::string_view::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
    has_port = true;
  }
  if (host.empty() || !std::all_of(host.begin(), host.end(), [&](char c) { return host_char(c, bracketed); }))
    return std::nullopt;
  out.host = std::string(host);
  if (has_port && (!parse_number(port, out.port) || out.port == 0)) return std::nullopt;
  return out;
}

// ---- RedisHealth ----

void RedisHealth::report_up() {
  int before = state_.exchange(kUp);
  if (before == kUp) return;
  spdlog::info(before == kDown ? "redis reachable again" : "redis reachable");
  if (on_change) on_change(true);
}

void RedisHealth::report_down(std::string_view why) {
  int before = state_.exchange(kDown);
  if (before == kDown) return;
  outages_.fetch_add(1);
  spdlog::warn("redis unreachable: {}", why);
  if (on_change) on_change(false);
}

// ---- RedisClient ----

struct RedisClient::State {
  enum class Phase { idle, connecting, connected, backoff, stopped };

  /// One command waiting for its reply (or for the connection it will be sent on).
  struct Call {
    explicit Call(const asio::any_io_executor& ex) : wake(ex) {}
    asio::steady_timer wake;  // expires at the caller's deadline; cancelled to wake the caller sooner
    std::optional<RedisReply> reply;
    bool done = false;

    void finish(RedisReply r) {
      reply.emplace(std::move(r));
      done = true;
      wake.cancel();
    }
    void fail() {  // reply stays empty
      done = true;
      wake.cancel();
    }
  };
  using CallPtr = std::shared_ptr<Call>;

  State(asio::any_io_executor executor, RedisUrl u, Millis t, RedisHealth& h)
      : ex(std::move(executor)),
        url(std::move(u)),
        timeout(t),
        health(h),
        socket(ex),
        resolver(ex),
        backoff_timer(ex) {}

  asio::any_io_executor ex;
  const RedisUrl url;
  const Millis timeout;
  RedisHealth& health;  // not touched once stopped

  Phase phase = Phase::idle;
  std::atomic<bool> up{false};   // connected(), readable from any thread
  std::uint64_t generation = 0;  // bumped per connection attempt and per drop, so stale handlers keep off
  bool attempt_timed_out = false;
  tcp::socket socket;
  tcp::resolver resolver;
  asio::steady_timer backoff_timer;
  ReaderPtr reader{nullptr, &redisReaderFree};
  std::array<char, kReadChunk> rbuf;
  std::string outbox;                    // encoded commands not yet handed to the socket
  bool writing = false;                  // one write in flight at a time, so commands never interleave
  std::deque<CallPtr> pending;           // sent or queued, in the order their replies will come
  std::vector<CallPtr> connect_waiters;  // calls made while a connection attempt runs
  std::string lost_reason;               // why the last connection broke
  std::unordered_map<std::string, std::string> script_sha;  // script text → SHA-1 (a few fixed scripts)

  void close_socket() {
    error_code ignored;
    socket.close(ignored);
  }

  void fail_all() {
    outbox.clear();
    writing = false;
    auto calls = std::exchange(pending, {});
    for (auto& c : calls) c->fail();
    wake_connect_waiters();
  }

  void wake_connect_waiters() {
    auto waiters = std::exchange(connect_waiters, {});
    for (auto& c : waiters) c->wake.cancel();
  }

  // The connection broke (or can no longer be trusted): every call on it fails, the run loop reconnects.
  void drop(std::string why) {
    if (phase != Phase::connected) return;
    phase = Phase::backoff;  // calls fail at once from here until the next attempt
    up = false;
    lost_reason = std::move(why);
    ++generation;
    close_socket();
    fail_all();
  }

  void shutdown() {
    if (phase == Phase::stopped) return;
    phase = Phase::stopped;
    up = false;
    ++generation;
    resolver.cancel();
    backoff_timer.cancel();
    close_socket();
    fail_all();
  }

  // Decodes the next complete reply the reader holds into `out` (left empty when none); false on bad bytes.
  bool take_reply(std::optional<RedisReply>& out) {
    void* raw = nullptr;
    if (redisReaderGetReply(reader.get(), &raw) != REDIS_OK) return false;
    if (raw) {
      out = convert(*static_cast<redisReply*>(raw));
      freeReplyObject(raw);
    }
    return true;
  }

  static void send(const std::shared_ptr<State>& self, const std::string& bytes, CallPtr call) {
    auto& st = *self;
    st.outbox += bytes;
    st.pending.push_back(std::move(call));
    if (!st.writing) {
      st.writing = true;
      asio::co_spawn(st.ex, write_loop(self, st.generation), asio::detached);
    }
  }

  // Writes whatever queued up while the previous write was in flight, as one write.
  static asio::awaitable<void> write_loop(std::shared_ptr<State> self, std::uint64_t gen) {
    auto& st = *self;
    std::string chunk;
    while (st.generation == gen && !st.outbox.empty()) {
      chunk.clear();
      chunk.swap(st.outbox);
      auto [ec, n] = co_await asio::async_write(st.socket, asio::buffer(chunk), use_nothrow);
      if (st.generation != gen) co_return;  // dropped meanwhile; a new connection has its own writer
      if (ec) {
        st.drop("write failed: " + ec.message());
        co_return;
      }
    }
    if (st.generation == gen) st.writing = false;
  }

  // Opens a connection and logs in within `timeout`; `why` says what failed.
  static asio::awaitable<bool> connect(std::shared_ptr<State> self, std::string& why) {
    auto& st = *self;
    const auto gen = ++st.generation;
    st.attempt_timed_out = false;
    // One deadline for the whole attempt: the watchdog cancels whatever step is in progress.
    asio::steady_timer watchdog(st.ex, st.timeout);
    watchdog.async_wait([self, gen](error_code ec) {
      if (ec || self->generation != gen || self->phase != Phase::connecting) return;
      self->attempt_timed_out = true;
      self->resolver.cancel();
      self->close_socket();
    });
    const std::string where = st.url.host + ":" + std::to_string(st.url.port);

    std::vector<tcp::endpoint> endpoints;
    error_code aec;
    auto address = asio::ip::make_address(st.url.host, aec);
    if (!aec) {
      endpoints.emplace_back(address, st.url.port);
    } else {
      const std::string port = std::to_string(st.url.port);  // named: GCC 12 mishandles co_await temporaries
      auto [rec, results] =
          co_await st.resolver.async_resolve(st.url.host, port, tcp::resolver::numeric_service, use_nothrow);
      if (st.phase == Phase::stopped) co_return false;
      if (rec) {
        why = st.attempt_timed_out ? "resolving " + st.url.host + " timed out"
                                   : "cannot resolve " + st.url.host + ": " + rec.message();
        co_return false;
      }
      for (const auto& r : results) endpoints.push_back(r.endpoint());
    }

    auto [cec, ep] = co_await asio::async_connect(st.socket, endpoints, use_nothrow);
    if (st.phase == Phase::stopped) co_return false;
    if (cec) {
      why = st.attempt_timed_out ? "connecting to " + where + " timed out"
                                 : "cannot connect to " + where + ": " + cec.message();
      co_return false;
    }
    error_code ignored;
    // With nothing listening, a loopback connect can land on its own source port and talk to itself.
    if (st.socket.local_endpoint(ignored) == ep) {
      why = "cannot connect to " + where + ": nothing listens there";
      co_return false;
    }
    st.socket.set_option(tcp::no_delay(true), ignored);
    st.socket.set_option(asio::socket_base::keep_alive(true), ignored);

    // Login, database and a PING in one write: a server that cannot answer them in time counts as down.
    std::vector<std::vector<std::string>> hello;
    if (!st.url.password.empty()) {
      if (st.url.username.empty())
        hello.push_back({"AUTH", st.url.password});
      else
        hello.push_back({"AUTH", st.url.username, st.url.password});
    }
    if (st.url.db != 0) hello.push_back({"SELECT", std::to_string(st.url.db)});
    hello.push_back({"PING"});
    std::string bytes;
    for (const auto& c : hello) bytes += encode(c);
    auto [wec, wn] = co_await asio::async_write(st.socket, asio::buffer(bytes), use_nothrow);
    if (st.phase == Phase::stopped) co_return false;
    if (wec) {
      why = st.attempt_timed_out ? "logging in to " + where + " timed out"
                                 : "writing to " + where + " failed: " + wec.message();
      co_return false;
    }
    st.reader = ReaderPtr(redisReaderCreate(), &redisReaderFree);
    std::size_t answered = 0;
    while (answered < hello.size()) {
      auto [rec, n] = co_await st.socket.async_read_some(asio::buffer(st.rbuf), use_nothrow);
      if (st.phase == Phase::stopped) co_return false;
      if (rec) {
        why = st.attempt_timed_out ? where + " did not answer " + hello[answered][0] + " within " +
                                         std::to_string(st.timeout.count()) + " ms"
                                   : "connection to " + where + " lost while logging in: " + rec.message();
        co_return false;
      }
      redisReaderFeed(st.reader.get(), st.rbuf.data(), n);
      while (answered < hello.size()) {
        std::optional<RedisReply> r;
        if (!st.take_reply(r)) {
          why = where + " does not speak RESP";
          co_return false;
        }
        if (!r) break;
        const std::string& name = hello[answered++][0];
        if (r->type == RedisReply::Type::error) {
          why = name + " failed: " + r->str;  // Redis's text, which never repeats the password
          co_return false;
        }
        if (name == "PING" && (r->type != RedisReply::Type::status || r->str != "PONG")) {
          why = where + " answered PING oddly";
          co_return false;
        }
      }
    }
    co_return true;
  }

  // Hands replies to waiting calls in FIFO order until the connection breaks.
  static asio::awaitable<void> read_loop(std::shared_ptr<State> self) {
    auto& st = *self;
    const auto gen = st.generation;
    for (;;) {
      auto [ec, n] = co_await st.socket.async_read_some(asio::buffer(st.rbuf), use_nothrow);
      if (st.generation != gen) co_return;  // dropped or stopped meanwhile
      if (ec) {
        st.drop(ec == asio::error::eof ? std::string("redis closed the connection")
                                       : "reading from redis failed: " + ec.message());
        co_return;
      }
      redisReaderFeed(st.reader.get(), st.rbuf.data(), n);
      for (;;) {
        std::optional<RedisReply> r;
        if (!st.take_reply(r)) {
          st.drop("redis sent bytes that are not RESP");
          co_return;
        }
        if (!r) break;
        if (st.pending.empty()) {
          st.drop("redis sent a reply nobody asked for");
          co_return;
        }
        auto call = std::move(st.pending.front());
        st.pending.pop_front();
        call->finish(std::move(*r));
      }
      if (st.reader->len - st.reader->pos > kMaxReplyBytes) {
        st.drop("a reply from redis is too large");
        co_return;
      }
    }
  }

  // Connects, serves, and after a failure pauses (doubling) before the next attempt, until stopped.
  static asio::awaitable<void> run(std::shared_ptr<State> self) {
    auto& st = *self;
    auto backoff = kFirstBackoff;
    for (;;) {
      st.phase = Phase::connecting;
      std::string why;
      const bool ok = co_await connect(self, why);
      if (st.phase == Phase::stopped) co_return;
      if (ok) {
        st.phase = Phase::connected;
        st.up = true;
        backoff = kFirstBackoff;
        st.health.report_up();
        st.wake_connect_waiters();
        co_await read_loop(self);
        if (st.phase == Phase::stopped) co_return;
        why = st.lost_reason;
      } else {
        st.close_socket();
        st.phase = Phase::backoff;  // calls fail at once until the next attempt
        st.wake_connect_waiters();
      }
      spdlog::debug("redis: {}; retrying in {} ms", why, backoff.count());
      st.health.report_down(why);
      st.backoff_timer.expires_after(backoff);
      co_await st.backoff_timer.async_wait(use_nothrow);
      if (st.phase == Phase::stopped) co_return;
      backoff = std::min(backoff * 2, kMaxBackoff);
    }
  }

  static asio::awaitable<std::optional<RedisReply>> execute(std::shared_ptr<State> self,
                                                            const std::vector<std::string>& argv) {
    auto& st = *self;
    // Down, or pausing after a failure: the caller falls back at once instead of waiting on Redis.
    if (st.phase != Phase::connected && st.phase != Phase::connecting) co_return std::nullopt;
    if (st.pending.size() + st.connect_waiters.size() >= kMaxInFlight) co_return std::nullopt;
    const std::string bytes = encode(argv);
    if (bytes.empty()) co_return std::nullopt;
    const auto deadline = Clock::now() + st.timeout;
    auto call = std::make_shared<Call>(st.ex);
    call->wake.expires_at(deadline);
    if (st.phase == Phase::connecting) {
      st.connect_waiters.push_back(call);
      co_await call->wake.async_wait(use_nothrow);
      std::erase(st.connect_waiters, call);
      if (st.phase != Phase::connected || Clock::now() >= deadline) co_return std::nullopt;
      call->wake.expires_at(deadline);
    }
    send(self, bytes, call);
    for (;;) {
      co_await call->wake.async_wait(use_nothrow);
      if (call->done) co_return std::move(call->reply);
      if (st.phase == Phase::stopped) co_return std::nullopt;
      if (Clock::now() >= deadline) break;
    }
    // A late reply would be taken for the next call's: the connection can no longer be trusted.
    st.drop("no reply within " + std::to_string(st.timeout.count()) + " ms");
    co_return std::nullopt;
  }
};

RedisClient::RedisClient(asio::any_io_executor ex, RedisUrl url, std::chrono::milliseconds timeout,
                         RedisHealth& health)
    : state_(std::make_shared<State>(std::move(ex), std::move(url), timeout, health)) {}

RedisClient::~RedisClient() {
  stop();
}

void RedisClient::start() {
  asio::dispatch(state_->ex, [self = state_] {
    if (self->phase != State::Phase::idle) return;
    self->phase = State::Phase::connecting;  // calls made from now on wait for the first attempt
    asio::co_spawn(self->ex, State::run(self), asio::detached);
  });
}

void RedisClient::stop() {
  // Inline on the client's own thread; elsewhere queued to it, since the state is that thread's alone.
  asio::dispatch(state_->ex, [self = state_] { self->shutdown(); });
}

bool RedisClient::connected() const {
  return state_->up.load();
}

asio::awaitable<std::optional<RedisReply>> RedisClient::command(std::vector<std::string> argv) {
  auto self = state_;  // the client may be gone when this resumes; the state may not
  co_return co_await State::execute(self, argv);
}

asio::awaitable<std::optional<RedisReply>> RedisClient::eval(const std::string& script,
                                                             const std::vector<std::string>& keys,
                                                             const std::vector<std::string>& args) {
  auto self = state_;
  auto& sha = self->script_sha[script];
  if (sha.empty()) sha = sha1_hex(script);
  std::vector<std::string> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(sha);
  argv.push_back(std::to_string(keys.size()));
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  auto reply = co_await State::execute(self, argv);
  // Redis forgets scripts on restart and SCRIPT FLUSH; EVAL sends the text, which also caches it again.
  if (reply && reply->type == RedisReply::Type::error && reply->str.starts_with("NOSCRIPT")) {
    argv[0] = "EVAL";
    argv[1] = script;
    reply = co_await State::execute(self, argv);
  }
  co_return reply;
}

}  // namespace sluice::store
