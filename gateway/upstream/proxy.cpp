#include "upstream/proxy.hpp"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <array>
#include <charconv>
#include <boost/asio/write.hpp>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <tuple>
#include <vector>

#include "duration.hpp"
#include "openai/sse_parser.hpp"
#include "openai/stream_convert.hpp"
#include "upstream/answer_parser.hpp"
#include "upstream/chunked.hpp"

namespace sluice::upstream {

using Clock = std::chrono::steady_clock;

// When no deadline is set.
constexpr Clock::time_point kNever = Clock::time_point::max();

/// Shared between an exchange, its watchdog timer and the wait watching its client for a hang-up. A client
/// connection keeps one for its requests (ClientWatch) until its client is gone.
struct WatchState : std::enable_shared_from_this<WatchState> {
  explicit WatchState(const asio::any_io_executor& ex) : dog(ex) {}
  bool active = true;
  bool client_gone = false;
  tcp::socket* client = nullptr;
  beast::tcp_stream* upstream = nullptr;
  Flight* flight = nullptr;              // led by this request: followers may still need the upstream answer
  asio::steady_timer* wake = nullptr;    // a follower's wait, ended when its client leaves

  // One timer per exchange (and kept for the connection's next ones) instead of one per socket operation
  // (Beast's stream timeouts arm and cancel a timer around every read and write: two timer operations per SSE
  // event). Reads and writes only move
  // these deadlines; the timer wakes at the earliest of them and ends whatever is past its own.
  asio::steady_timer dog;
  Clock::time_point armed = kNever;        // when the timer is set to fire
  Clock::time_point upstream_by = kNever;  // the backend must answer (the current phase's deadline)
  Clock::time_point client_by = kNever;    // a client write in progress must finish
  Clock::time_point watch_from = kNever;   // start watching the client for a hang-up
  bool upstream_expired = false;           // the upstream connection was closed for its deadline
  bool watching = false;                   // watch_client's wait is pending for this exchange
  unsigned exchange = 0;                   // which of the connection's exchanges this is (a wait's own)
};

ClientWatch::~ClientWatch() {
  if (!state) return;
  state->active = false;
  state->dog.cancel();  // its handler holds the state until it has run
}

namespace {

constexpr std::size_t kMaxUpstreamBody = 64u << 20;  // a non-stream answer above this is refused
constexpr std::size_t kMaxPendingEvent = 16u << 20;  // an SSE event that never ends is refused
constexpr std::size_t kMaxCapture = 4u << 20;        // answers larger than this are not kept for the cache
constexpr Millis kDoneGrace{1000};  // after [DONE], how long the end of the HTTP body is waited for
constexpr std::size_t kReadChunk = 16u << 10;
// A stream's buffers start small (thousands of slow streams hold one each) and double, up to kBurstBuffer,
// while reads keep filling them (a fast backend's burst then takes one read, one parse, one client write).
constexpr std::size_t kStreamBufferStart = 1u << 10;
constexpr std::size_t kBurstBuffer = 64u << 10;

// A stream relay's bytes: grown by doubling, keeping only the bytes still in use, and never zero-filled (a
// vector's resize wrote every new byte: 31 KiB, for a 64-token burst, that the next read overwrote anyway).
class RelayBuffer {
 public:
  explicit RelayBuffer(std::size_t n) : bytes_(std::make_unique_for_overwrite<char[]>(n)), size_(n) {}
  char* data() { return bytes_.get(); }
  std::size_t size() const { return size_; }
  /// Twice the room, with the first `keep` bytes as they were.
  void grow(std::size_t keep) {
    auto bigger = std::make_unique_for_overwrite<char[]>(size_ * 2);
    std::memcpy(bigger.get(), bytes_.get(), keep);
    bytes_ = std::move(bigger);
    size_ *= 2;
  }

 private:
  std::unique_ptr<char[]> bytes_;
  std::size_t size_;
};

// A backend may quote the credentials it was sent ("Incorrect API key provided: …", an echoed header):
// they are cut out of its error before it reaches a client or a log line.
void redact(std::string& text, std::string_view secret) {
  if (secret.size() < 4) return;
  static constexpr std::string_view kMark = "[redacted]";
  for (auto at = text.find(secret); at != std::string::npos; at = text.find(secret, at + kMark.size()))
    text.replace(at, secret.size(), kMark);
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// A whole answer not served this long after its request went out gets its client watched for a hang-up. Most
// LLM requests last far longer; an answer served faster than this is done before a hang-up could matter. A
// stream is watched from the start (forward).
constexpr Millis kWatchClientAfter{50};

void watch_client(std::shared_ptr<WatchState> st);

void watchdog_fired(WatchState& st);

// Sets the timer for the earliest deadline, unless it already fires no later than that (it then looks again).
void rearm(WatchState& st) {
  const auto next = std::min({st.upstream_by, st.client_by, st.watch_from});
  if (!st.active || next == kNever || next >= st.armed) return;
  st.armed = next;
  st.dog.expires_at(next);
  st.dog.async_wait([self = st.shared_from_this()](error_code ec) {
    if (!ec) watchdog_fired(*self);
  });
}

void watchdog_fired(WatchState& st) {
  st.armed = kNever;
  if (!st.active) return;
  const auto now = Clock::now();
  if (now >= st.watch_from) {
    st.watch_from = kNever;
    st.watching = true;
    watch_client(st.shared_from_this());
  }
  if (now >= st.upstream_by) {
    st.upstream_by = kNever;
    if (st.upstream) {
      st.upstream_expired = true;
      st.upstream->close();  // the pending read or write ends; the exchange reports the phase's timeout
    }
  }
  if (now >= st.client_by) {
    st.client_by = kNever;
    error_code ignored;
    st.client->cancel(ignored);  // a client that stopped reading: its write ends, and so does its answer
  }
  rearm(st);
}

// What the client's socket had to say while its answer was pending. A hang-up (EOF or error, or the wait cut
// short while the exchange runs) closes the upstream connection at once, which is how backends learn to stop
// generating; unless identical requests are following this one's answer, which then goes on for them.
void client_heard(const std::shared_ptr<WatchState>& st, error_code ec, bool pending) {
  if (!st->active) return;      // the exchange has ended (its end cancels the wait; the caller checked it was
                                // this exchange's, not a cancelled one's of the connection's last exchange)
  if (!ec && pending) return;   // a pipelined request: the session reads it later
  st->client_gone = true;
  // Followed: the upstream request goes on until the last follower leaves too.
  const bool followed = st->flight && st->flight->abandon_when_alone(st->client->get_executor(), [st] {
    if (st->active && st->upstream) st->upstream->close();
  });
  if (!followed && st->upstream) st->upstream->close();
  if (st->wake) st->wake->cancel();
}

// Watches the client socket for a hang-up while its answer is pending: a wait on the reactor with no frame of
// its own, and (async_wait_hangup) no epoll_ctl(2) to start it.
void watch_client(std::shared_ptr<WatchState> st) {
  tcp::socket& s = *st->client;
  const unsigned exchange = st->exchange;
  if (async_wait_hangup(s, [st, exchange](error_code ec, std::size_t pending) {
        if (st->exchange == exchange) client_heard(st, ec, pending > 0);
      }))
    return;
  s.async_wait(tcp::socket::wait_read, [st, exchange](error_code ec) mutable {
    if (!st->active || st->exchange != exchange) return;
    if (!ec) {
      char c;
      const ssize_t r = ::recv(st->client->native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
      if (r > 0) return client_heard(st, ec, true);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return watch_client(std::move(st));
      ec = r == 0 ? error_code(asio::error::eof) : error_code(errno, boost::system::system_category());
    }
    client_heard(st, ec, false);
  });
}

std::string sse_error_event(const openai::ApiError& e) {
  return "data: " + openai::error_json(e) + "\n\ndata: [DONE]\n\n";
}

openai::ApiError gateway_error(int status, std::string message, std::string code) {
  return openai::ApiError{status, std::move(message), status >= 500 ? "server_error" : "", std::nullopt,
                          std::move(code)};
}

// A backend's error status as the client should see it: its 4xx as they are, 5xx as 502 unless
// they already say "unavailable" (503) or "timed out" (504).
int client_status_for_backend(int status) {
  if (status == 401 || status == 403) return 502;  // the backend refused Sluice's key: not the client's fault
  if (status >= 400 && status < 500) return status;
  if (status == 503 || status == 504) return status;
  return 502;
}

/// The response head of a relayed stream (chunked for HTTP/1.1 clients; HTTP/1.0 ones get it delimited by
/// closing the connection).
std::string stream_head(const ForwardRequest& fr, const std::string& overhead_ms) {
  return answer_head(fr.client_version, fr.client_keep_alive, true, fr.request_id, overhead_ms, fr.headers,
                     std::nullopt);
}

/// A whole JSON (or replayed SSE) answer for the client: its head and body, written together.
struct WholeAnswer {
  std::string head;
  std::string body;
};

WholeAnswer whole_answer(const ForwardRequest& fr, std::string body, bool sse, const std::string& overhead_ms) {
  auto head = answer_head(fr.client_version, fr.client_keep_alive, sse, fr.request_id, overhead_ms, fr.headers,
                          body.size());
  return {std::move(head), std::move(body)};
}

/// Writes a head and a body in one gathered write (a follower's answer, bounded by Beast's stream timer).
asio::awaitable<std::tuple<error_code, std::size_t>> write_answer(beast::tcp_stream& client, const WholeAnswer& a) {
  const std::array<asio::const_buffer, 2> out{asio::buffer(a.head), asio::buffer(a.body)};
  co_return co_await write_all(client, out);
}

/// The request as it goes upstream: its head, built for the backend, and the client's (rewritten) body.
struct UpstreamRequest {
  std::string head;
  const std::string* body;
};

/// Gathers into `out` what one client write sends: `head` (a response head not sent yet), then `data` (as one
/// chunk when `chunked`, its size line written into `size_line`), then, when `last`, the end of the chunked body.
/// `out` is the caller's, reused from write to write: no allocation per write once it has grown.
void gather_write(std::vector<asio::const_buffer>& out, char (&size_line)[24], std::string_view head,
                  const std::vector<asio::const_buffer>& data, bool chunked, bool last) {
  static constexpr std::string_view kCrlf = "\r\n", kLastChunk = "0\r\n\r\n";
  out.clear();
  if (!head.empty()) out.emplace_back(head.data(), head.size());
  std::size_t size = 0;
  for (const auto& b : data) size += b.size();
  if (chunked && size > 0) {
    char* end = std::to_chars(size_line, size_line + sizeof size_line - 2, size, 16).ptr;
    *end++ = '\r';
    *end++ = '\n';
    out.emplace_back(size_line, static_cast<std::size_t>(end - size_line));
  }
  if (size > 0) out.insert(out.end(), data.begin(), data.end());
  if (chunked && size > 0) out.emplace_back(kCrlf.data(), kCrlf.size());
  if (chunked && last) out.emplace_back(kLastChunk.data(), kLastChunk.size());
}

/// Writes gathered buffers to a client (as one chunk when `chunked`) in one write; the caller bounds how long
/// it may take. False when the write failed.
template <class Stream>
asio::awaitable<bool> write_gathered(Stream& client, std::vector<asio::const_buffer>& out,
                                     const std::vector<asio::const_buffer>& data, bool chunked, ForwardResult& r) {
  char size_line[24];
  gather_write(out, size_line, {}, data, chunked, false);
  auto [ec, n] = co_await write_all(client, out);
  r.bytes_out += n;
  co_return !ec;
}

/// Parses into the body buffer what is already read from the backend: async_read_some stops after one chunk
/// (one SSE event, for most backends), so without this a burst of events took one loop turn and one client
/// write each. Stops where the input or the body buffer runs out; an error is left for the next read to see.
/// Returns the bytes it parsed.
template <class Parser>
std::size_t drain_buffered(Connection& conn, Parser& p) {
  std::size_t parsed = 0;
  while (!p.is_done() && conn.buffer.size() > 0 && p.get().body().size > 0) {
    error_code ec;
    auto used = p.put(conn.buffer.data(), ec);
    conn.buffer.consume(used);
    parsed += used;
    if (ec || used == 0) break;
  }
  return parsed;
}

/// A stream does not need the client connection's read buffer while it runs: its memory goes back.
void release_read_buffer(const ForwardRequest& fr) {
  if (fr.client_read_buffer && fr.client_read_buffer->size() == 0) fr.client_read_buffer->shrink_to_fit();
}

/// Generated text reached the client at `now`: the first time is the time to first token.
void token_written(ForwardResult& r, Clock::time_point started, Clock::time_point now) {
  if (!r.first_token_at) {
    r.first_token_at = now;
    r.ttft_seconds = std::chrono::duration<double>(now - started).count();
  }
  r.last_token_at = now;
}

/// One request/response on one connection. `stale` is set when a reused connection turned out to be
/// closed before the backend saw the request (safe to retry on a fresh one).
class Exchange {
 public:
  Exchange(beast::tcp_stream& client, BackendPool& pool, const ForwardRequest& fr,
           const UpstreamRequest& upstream_req, WatchState& st, ForwardResult& result)
      : client_(client),
        pool_(pool),
        fr_(fr),
        req_(upstream_req),
        st_(st),
        r_(result),
        t_(pool.backend().timeouts),
        deadline_(fr.started + t_.total) {}

  // `now`: read just before, as the request goes to the backend; the backend's time counts from it.
  template <class Stream>
  asio::awaitable<void> run(Stream& up, Connection& conn, bool reused, bool& stale, bool& reusable,
                            Clock::time_point now);
  // When the last run ended (the backend's time stopped counting): the pool's idle mark for its connection.
  Clock::time_point ended_at() const { return ended_at_; }

 private:
  // Sets the upstream deadline for the next operation: the phase's timeout from `now`, capped by the total.
  // (Callers pass the clock reading they already hold: one per wake-up serves a deadline, a timing and the pool.)
  void arm(Millis phase, const char* name, Clock::time_point now) {
    if (now + phase >= deadline_) {
      st_.upstream_by = deadline_;
      phase_ = "total";
    } else {
      st_.upstream_by = now + phase;
      phase_ = name;
    }
    rearm(st_);
  }
  // The stream's deadline for its next read: first_token until the first event, then idle (briefly once [DONE]
  // came). From the clock reading taken when the last batch's generated text was written (`written_at`, which
  // this clears), else a fresh one: one reading per relayed batch.
  void arm_stream(bool first_event, bool seen_done, Clock::time_point& written_at) {
    const auto now =
        written_at != Clock::time_point{} ? std::exchange(written_at, Clock::time_point{}) : Clock::now();
    if (first_event)
      arm(t_.first_token, "first_token", now);
    else if (seen_done)  // the answer is whole: only the end of the HTTP body is awaited, briefly
      arm(std::min<Millis>(t_.idle, kDoneGrace), "idle", now);
    else
      arm(t_.idle, "idle", now);
  }
  // An upstream operation's error, as the timeout it is when the watchdog closed the connection.
  error_code upstream_error(error_code ec) const {
    return ec && st_.upstream_expired ? error_code(beast::error::timeout) : ec;
  }
  // The same after a read, which also ends the backend's deadline until the next read sets one: a slow
  // client write in between is the client's deadline, not the backend's.
  error_code upstream_read(error_code ec) {
    st_.upstream_by = kNever;
    return upstream_error(ec);
  }
  // Bounds a client write: a client that stops reading for the idle timeout is dropped.
  void client_write_begins() {
    st_.client_by = Clock::now() + t_.idle;
    rearm(st_);
  }
  void client_write_ends() { st_.client_by = kNever; }

  void fail(int status, std::string reason, std::string message) {
    r_.error = reason;
    r_.retryable = true;
    r_.backend_at_fault = true;
    r_.failure =
        gateway_error(status, std::move(message), status == 504 ? "upstream_timeout" : "upstream_error");
    if (status == 504) r_.failure->code = "upstream_timeout";
  }

  // True when the client has gone and nobody else needs the answer: the exchange stops. While followers
  // of this request's flight still read, it goes on for them without writing to the client.
  bool client_left(const char* phase) {
    if (!st_.client_gone) return false;
    if (!r_.client_gone) {
      r_.client_gone = true;
      r_.disconnect_phase = phase;
      r_.error = "client_disconnected";
    }
    return !(fr_.flight && fr_.flight->followers() > 0);
  }

  // The client's first response bytes went out (or failed to), handed over at `now`.
  void response_started(std::size_t bytes, Clock::time_point now) {
    r_.status = 200;
    r_.bytes_out += bytes;
    r_.ttfb_ms = std::chrono::duration<double, std::milli>(now - fr_.started).count();
  }
  // A write to the client failed: it is gone, and so is the point of reading on (unless followers read).
  bool client_write_failed() {
    st_.client_gone = true;
    return client_left("streaming");
  }

  // Writes to the client, after the stream's head when it is still waiting (`head_`); `last` ends the body.
  // False when the relay should stop.
  asio::awaitable<bool> write_client(const std::vector<asio::const_buffer>& data, bool chunked, bool last = false) {
    std::size_t sent = 0;
    if (auto done = write_client_now(data, chunked, last, sent)) co_return *done;
    co_return co_await write_client_rest(sent, last);
  }
  // write_client's steps that need no wait: its result when the socket took the whole write at once (or there
  // is no client); nullopt when the socket's buffer filled after `sent` bytes and write_client_rest sends the
  // rest. The relay's loop calls it directly, so a batch of events the socket takes at once (nearly every one)
  // costs no coroutine frame and no watchdog deadline.
  std::optional<bool> write_client_now(const std::vector<asio::const_buffer>& data, bool chunked, bool last,
                                       std::size_t& sent);
  asio::awaitable<bool> write_client_rest(std::size_t sent, bool last);
  // The bookkeeping after a write to the client.
  bool client_written(error_code ec, std::size_t n, bool last);
  asio::awaitable<bool> write_client(asio::const_buffer data, bool chunked) {
    const std::vector<asio::const_buffer> one{data};
    co_return co_await write_client(one, chunked);
  }
  template <class Stream, class Parser>
  asio::awaitable<void> relay_stream(Stream& up, Connection& conn, Parser& p, bool& reusable);
  template <class Stream, class Parser>
  asio::awaitable<void> relay_body(Stream& up, Connection& conn, Parser& p, bool& reusable, bool sse_answer);

  beast::tcp_stream& client_;
  BackendPool& pool_;
  const ForwardRequest& fr_;
  const UpstreamRequest& req_;
  WatchState& st_;
  ForwardResult& r_;
  const BackendTimeouts& t_;
  Clock::time_point deadline_;
  const char* phase_ = "first_token";
  Clock::time_point sent_at_;
  Clock::time_point ended_at_;
  std::string head_;    // a stream's response head, held to go out with its first events
  std::vector<asio::const_buffer> wire_;  // what each client write gathers
  char size_line_[24];                    // the chunk size line of the write in progress
  bool ended_ = false;  // the chunked body's end went out with the last events

 public:
  /// Time in Sluice from the request's arrival to `now`, less the time waiting on backends (this
  /// exchange until `upstream_done`, and earlier attempts). Sent as x-sluice-overhead-ms.
  std::string overhead_ms(Clock::time_point upstream_done, Clock::time_point now) const {
    double waited =
        fr_.backend_seconds_before + std::chrono::duration<double>(upstream_done - sent_at_).count();
    const double spent = std::chrono::duration<double, std::milli>(now - fr_.started).count();
    double ms = std::max(0.0, spent - waited * 1000.0);
    char buf[32];
    return std::string(fixed3(buf, ms));
  }
  std::string overhead_ms_until(Clock::time_point upstream_done) const {
    return overhead_ms(upstream_done, upstream_done);
  }
};

template <class Stream>
asio::awaitable<void> Exchange::run(Stream& up, Connection& conn, bool reused, bool& stale, bool& reusable,
                                    Clock::time_point now) {
  sent_at_ = now;
  struct Waited {  // however this exchange ends, its time counts as time waiting on the backend
    Exchange& x;
    ~Waited() {
      x.ended_at_ = Clock::now();
      x.r_.backend_seconds += std::chrono::duration<double>(x.ended_at_ - x.sent_at_).count();
      x.st_.upstream_by = kNever;  // the connection may go back to the pool: no deadline follows it there
    }
  } waited{*this};
  st_.upstream_expired = false;
  // A streamed answer sends its header with the first token; a whole answer only when generation is
  // done, so for it only the total deadline applies.
  if (fr_.stream)
    arm(t_.first_token, "first_token", now);
  else
    arm(t_.total, "total", now);
  const std::array<asio::const_buffer, 2> request{asio::buffer(req_.head), asio::buffer(*req_.body)};
  std::size_t sent = 0;
  auto wrote = write_at_once(up, request, sent);  // nearly always the whole request: no write_all frame
  if (!wrote) wrote = co_await write_rest(up, request, sent);
  auto [wec, wn] = *wrote;
  wec = upstream_error(wec);
  if (client_left("waiting")) co_return;
  if (wec) {
    if (reused && wec != beast::error::timeout)
      stale = true;
    else if (wec == beast::error::timeout)
      fail(504, phase_, "the backend did not accept the request in time");
    else
      fail(502, "reset", "the connection to the backend failed: " + wec.message());
    co_return;
  }

  AnswerParser p;  // (its body is bounded below: kMaxUpstreamBody, kMaxPendingEvent)
  // The backend has only just been asked. (Trying the socket at once here, since a backend on this machine often
  // answers before Sluice gets here, cost 3-4 us more kernel time per request than waiting: measured, dropped.)
  conn.reading.more = false;
  error_code hec;
  std::size_t hn = 0;
  while (!hec && !p.is_header_done()) {  // (usually once: the head comes whole)
    auto [read_ec, n] = co_await read_more(up, conn.buffer, p, conn.reading);
    hec = read_ec;
    hn += n;
  }
  hec = upstream_read(hec);
  if (client_left("waiting")) co_return;
  if (hec) {
    bool nothing_read = hn == 0 && conn.buffer.size() == 0;
    if (reused && nothing_read && hec != beast::error::timeout)
      stale = true;  // closed while idle in the pool
    else if (hec == beast::error::timeout)
      fail(504, phase_, "the backend did not answer in time");
    else if (hec == http::error::end_of_stream || hec == asio::error::connection_reset ||
             hec == asio::error::eof || hec == asio::error::broken_pipe)
      fail(502, "reset", "the backend closed the connection before answering");
    else
      fail(502, "protocol", "the backend sent an invalid HTTP response: " + hec.message());
    co_return;
  }
  const auto& head = p.get();
  // Sluice asked for identity: an encoded body could be neither inspected nor relayed under its own headers.
  if (auto enc = head[AnswerHead::Field::content_encoding]; !enc.empty() && !beast::iequals(enc, "identity")) {
    fail(502, "protocol",
         "the backend answered with Content-Encoding '" + std::string(enc.substr(0, 32)) +
             "' although Sluice asked for identity");
    co_return;
  }
  auto ctype = head[AnswerHead::Field::content_type];
  bool is_sse = ctype.size() >= 17 && beast::iequals(ctype.substr(0, 17), "text/event-stream");
  // How the backend answers is read from its Content-Type; the client gets the form it asked for.
  const bool sse_answer = is_sse && head.result_int() / 100 == 2;
  if (!(sse_answer && fr_.stream)) {
    co_await relay_body(up, conn, p, reusable, sse_answer);
    co_return;
  }
  // A chunked stream's body is decoded by ChunkedBody: every chunk a read brought in one call, where Beast's
  // parser returns after each. From a plain socket, a ChunkedBody of its own takes the body after any head (a
  // direct call per read, not one through the parser); from TLS, the parser's own does after a one-pass head.
  if constexpr (std::is_same_v<Stream, tcp::socket>) {
    if (p.chunked() && !p.is_done()) {  // (a 204 is done at its head, chunked or not)
      ChunkedBody body(p.keep_alive());
      co_await relay_stream(up, conn, body, reusable);
      co_return;
    }
  }
  co_await relay_stream(up, conn, p, reusable);
}

std::optional<bool> Exchange::write_client_now(const std::vector<asio::const_buffer>& data, bool chunked, bool last,
                                               std::size_t& sent) {
  // Nobody to write to; go on for followers.
  if (st_.client_gone) return !client_left(head_.empty() ? "streaming" : "waiting");
  gather_write(wire_, size_line_, head_, data, chunked, last);
  const auto done = write_now(client_.socket(), wire_, sent);  // (sets `sent`)
  if (!done) return std::nullopt;
  const auto [ec, n] = *done;
  return client_written(ec, n, last);
}

asio::awaitable<bool> Exchange::write_client_rest(std::size_t sent, bool last) {
  client_write_begins();  // a client that stops reading is cut off after the idle timeout
  auto [ec, n] = co_await write_rest(client_.socket(), wire_, sent);
  client_write_ends();
  co_return client_written(ec, n, last);
}

bool Exchange::client_written(error_code ec, std::size_t n, bool last) {
  r_.bytes_out += n;
  const bool written = !ec;
  if (!head_.empty()) {  // the head went with this write
    response_started(0, Clock::now());  // its bytes are counted with the rest of this write
    head_.clear();
    head_.shrink_to_fit();
  }
  if (written && last) ended_ = true;
  return written || !client_write_failed();
}

template <class Stream, class Parser>
asio::awaitable<void> Exchange::relay_stream(Stream& up, Connection& conn, Parser& p, bool& reusable) {
  // HTTP/1.0 clients get the stream unchunked, delimited by closing the connection.
  const bool chunked = fr_.client_version >= 11;
  r_.stream = true;
  release_read_buffer(fr_);
  if (!st_.client_gone) {
    head_ = stream_head(fr_, overhead_ms_until(Clock::now()));
    // When the first events came in with the backend's head they go out with this one, in one write; else the
    // head goes now (a backend may take seconds to its first token, and the client hears of it at once).
    if (conn.buffer.size() == 0) {
      const std::vector<asio::const_buffer> nothing;
      if (!co_await write_client(nothing, chunked)) co_return;
    }
  } else if (client_left("waiting")) {
    co_return;
  }

  struct StreamGauge {  // sluice_active_streams counts this relay while it runs
    observe::Metrics* m;
    explicit StreamGauge(observe::Metrics* mm) : m(mm) {
      if (m) m->active_streams(1);
    }
    ~StreamGauge() {
      if (m) m->active_streams(-1);
    }
  } gauge{fr_.metrics};
  openai::SseParser parser;
  openai::StreamChunkChecker check_chunk;
  // The events of one read: used between a read and the write after it, never across a suspension, so every
  // relay on this worker shares one vector (no growth per stream, and no room held by each idle stream). A relay
  // always resumes on its worker's one thread, so the address taken here stays that thread's vector.
  thread_local std::vector<openai::SseEventView> events;
  std::vector<asio::const_buffer> gather;  // the bytes to forward, around any event that is dropped
  RelayBuffer buf(kStreamBufferStart);
  bool filled = false;  // the last read filled the room it had: more is probably waiting
  std::size_t pending = 0;  // bytes in buf not yet forwarded
  bool seen_done = false;
  bool finished = false;  // a chunk carried a finish_reason: an answer without [DONE] is still whole
  // With capture (or followers): the answer joined into one completion as it streams.
  std::optional<openai::StreamJoiner> joiner;
  if (fr_.capture || fr_.flight) joiner.emplace(fr_.endpoint);
  std::size_t captured_bytes = 0;
  bool first_event = true;  // until the first event (not a comment): the first_token deadline applies
  Clock::time_point written_at{};  // when the last batch's generated text went out (a clock reading to reuse)
  std::string failure;      // set when the backend failed mid-stream

  while (!p.is_done()) {
    if (buf.size() - pending < kStreamBufferStart / 2 || (filled && buf.size() < kBurstBuffer)) {
      if (buf.size() >= kMaxPendingEvent) {
        failure = "the backend sent an SSE event larger than the relay accepts";
        r_.error = "protocol";
        break;
      }
      buf.grow(pending);
    }
    auto& body = p.get().body();
    body.data = buf.data() + pending;
    body.size = buf.size() - pending;
    arm_stream(first_event, seen_done, written_at);
    // Beast reads as much as the connection's buffer has room for: it grows with the bursts too.
    if (filled && conn.buffer.capacity() < kBurstBuffer) conn.buffer.reserve(conn.buffer.capacity() * 2);
    const std::size_t held = conn.buffer.size();
    const std::size_t room = std::max<std::size_t>(512, conn.buffer.capacity() - held);  // Beast's read size
    error_code ec;
    std::size_t n = 0;
    // Events that came with the head or with the last read, or the rest of a burst the socket already holds.
    if (!parse_held(conn.buffer, p, ec, n) && !read_now(up, conn.buffer, p, conn.reading, ec, n)) {
      const bool held_offered = true;
      auto [read_ec, read_n] = co_await read_more(up, conn.buffer, p, conn.reading, held_offered);
      ec = read_ec;
      n += read_n;
    }
    ec = upstream_read(ec);
    if (failed_with(ec, http::error::need_buffer)) ec = {};
    if (!ec) n += drain_buffered(conn, p);
    std::size_t got = (buf.size() - pending) - p.get().body().size;
    // Filled: the body buffer ran out of room, or the read took all the connection's buffer could hold.
    filled = p.get().body().size == 0 || n + conn.buffer.size() >= held + room;
    // A burst already read but larger than the body buffer: the buffer grows (up to kBurstBuffer) and takes
    // the rest now, so it goes to the client in one write instead of one per doubling.
    while (!ec && !p.is_done() && p.get().body().size == 0 && conn.buffer.size() > 0 && buf.size() < kBurstBuffer) {
      buf.grow(pending + got);
      auto& more = p.get().body();
      more.data = buf.data() + pending + got;
      more.size = buf.size() - pending - got;
      if (drain_buffered(conn, p) == 0) break;
      got = (buf.size() - pending) - p.get().body().size;
    }
    if (got > 0) {
      events.clear();
      parser.feed(std::string_view(buf.data() + pending, got), events);
      pending += got;
      const std::uint64_t base = parser.total() - pending;  // stream offset of buf[0]
      std::size_t from = 0;                                 // next byte of buf to forward
      gather.clear();
      bool generated = false;  // this batch carries the first generated text the client will see
      std::size_t cut = pending;  // an invalid event: only the bytes before it are forwarded
      if (!events.empty()) first_event = false;
      for (const auto& e : events) {
        if (e.data == "[DONE]") {
          seen_done = true;
          continue;
        }
        // A chunk a client's SDK could not parse ends the stream here, told in-band, instead of reaching it.
        auto checked = check_chunk(e.data);
        if (e.event.empty() && !checked) {
          failure = "the backend sent a stream event that is not a JSON object";
          r_.error = "protocol";
          cut = static_cast<std::size_t>(e.begin - base);
          break;
        }
        if (joiner && captured_bytes <= kMaxCapture) {
          captured_bytes += e.data.size();
          joiner->add(e.data);
        }
        const auto info = checked ? *checked : openai::inspect_chunk(e.data);  // a named event need not be JSON
        if (fr_.flight) fr_.flight->publish(std::string(e.data), info.usage_only, info.generated);
        if (info.generated) {
          ++r_.generated_chunks;
          generated = true;
        }
        if (info.finished) finished = true;
        if (info.usage) r_.usage = info.usage;
        if (info.telemetry.tokens_per_second) r_.telemetry = info.telemetry;
        if (info.usage_only && !fr_.client_wants_usage) {  // Sluice asked for it; the client did not
          auto b = static_cast<std::size_t>(e.begin - base), end = static_cast<std::size_t>(e.end - base);
          if (b > from) gather.emplace_back(buf.data() + from, b - from);
          from = end;
        }
      }
      // Forward every byte up to the end of the last complete event, in one write, unchanged.
      std::size_t ready =
          std::min(cut, pending - static_cast<std::size_t>(parser.total() - parser.boundary()));
      if (ready > from) gather.emplace_back(buf.data() + from, ready - from);
      if (ready > 0) {
        // The backend's body has ended with [DONE] in this read: the client's ends in the same write.
        const bool last = chunked && failure.empty() && !ec && p.is_done() && seen_done && ready == pending;
        if (!gather.empty() || last) {
          std::size_t sent = 0;
          auto written = write_client_now(gather, chunked, last, sent);
          if (!written) written = co_await write_client_rest(sent, last);
          if (!*written) break;
        }
        // Time to first token: request received → first generated text (content, reasoning, tool call)
        // written to the client; a keep-alive comment or a role-only chunk does not count.
        if (generated) token_written(r_, fr_.started, written_at = Clock::now());
        std::memmove(buf.data(), buf.data() + ready, pending - ready);
        pending -= ready;
      }
      if (!failure.empty()) {
        pending = 0;  // the invalid event and whatever followed it are not forwarded
        break;
      }
    }
    if (client_left("streaming")) break;
    if (ec && seen_done) {  // the answer is whole; only its HTTP ending is missing: not reused, not failed
      pending = 0;          // nor is a fragment that came after [DONE] forwarded
      break;
    }
    if (ec) {
      if (ec == beast::error::timeout) {
        r_.error = phase_;
        failure = std::string("the backend sent nothing for too long (") + phase_ + " timeout)";
      } else if (pool_.live() && pool_.live()->cutting) {
        r_.error = "shutting_down";
        failure = "Sluice is shutting down; the answer was cut short";
      } else {
        r_.error = "reset";
        failure = "the connection to the backend failed mid-stream: " + ec.message();
      }
      break;
    }
  }
  // A body that ended without [DONE] is whole when a choice finished (Sluice adds the [DONE] its clients
  // wait for); otherwise the backend stopped part-way, and the client is told so.
  bool add_done = false;
  if (failure.empty() && p.is_done() && !seen_done) {
    pending = 0;  // an event cut off by the end of the body is not forwarded
    if (finished) {
      add_done = seen_done = true;
    } else {
      failure = "the backend ended the stream before the answer was complete";
      r_.error = "truncated";
    }
  }
  r_.complete = failure.empty() && (p.is_done() || seen_done);
  if (r_.complete && joiner && seen_done && captured_bytes <= kMaxCapture) r_.completion = joiner->result();
  // Followers have every event: they end now, not after this client's last write.
  if (r_.complete && fr_.flight) fr_.flight->finish(Flight::Outcome{true, r_.completion, r_.usage, std::nullopt, true});
  if (r_.client_gone) co_return;
  if (failure.empty()) {
    if (pending > 0 && !co_await write_client(asio::const_buffer(buf.data(), pending), chunked)) co_return;
    if (r_.client_gone) co_return;
    if (add_done) {
      static constexpr std::string_view done = "data: [DONE]\n\n";
      if (!co_await write_client(asio::buffer(done), chunked)) co_return;
    }
    reusable = p.is_done() && p.keep_alive();
    // An idle pooled connection keeps a small buffer, however large the burst it last carried.
    if (conn.buffer.size() == 0 && conn.buffer.capacity() > kReadChunk) conn.buffer.shrink_to_fit();
  } else if (!seen_done) {
    // The stream has started, so the failure is told in-band: an error event, then [DONE].
    const bool broken = r_.error == "reset" || r_.error == "protocol" || r_.error == "truncated";
    const bool closing = r_.error == "shutting_down";
    auto msg = sse_error_event(gateway_error(closing  ? 503
                                             : broken ? 502
                                                      : 504,
                                             failure,
                                             closing  ? "shutting_down"
                                             : broken ? "upstream_error"
                                                      : "upstream_timeout"));
    if (!co_await write_client(asio::buffer(msg), chunked)) co_return;
  }
  if (chunked && !ended_) {
    const std::vector<asio::const_buffer> nothing;
    if (!co_await write_client(nothing, chunked, true)) co_return;
  } else if (!head_.empty()) {  // an HTTP/1.0 stream that ended before any event
    const std::vector<asio::const_buffer> nothing;
    if (!co_await write_client(nothing, chunked)) co_return;
  }
  r_.client_keep_alive = chunked && fr_.client_keep_alive && !r_.client_gone;
}

template <class Stream, class Parser>
asio::awaitable<void> Exchange::relay_body(Stream& up, Connection& conn, Parser& p, bool& reusable,
                                           bool sse_answer) {
  std::string body;
  std::size_t used = 0;  // bytes of `body` read so far; the rest is room, grown by doubling (zeroed once)
  // Sized by Content-Length when the backend sends one (the usual case): resize zero-fills, and a 64 KiB
  // fill for a 400-byte answer was the largest single cost of a non-stream request.
  const std::size_t expected = p.content_length() ? std::min<std::uint64_t>(*p.content_length(), kMaxUpstreamBody) : 0;
  // When the backend's answer was whole: the clock reading each piece's deadline is set from, taken as the
  // piece is looked for, stands for it when the piece was already here (nearly always: it came with the head);
  // a read that had to wait clears it, and it is read again.
  Clock::time_point body_done{};
  while (!p.is_done()) {
    if (used >= kMaxUpstreamBody) {
      fail(502, "protocol", "the backend's answer is larger than the gateway accepts");
      co_return;
    }
    if (body.size() - used < 512)
      body.resize(body.empty() && expected ? expected + 1 : std::max(body.size() * 2, used + kStreamBufferStart));
    p.get().body().data = body.data() + used;
    p.get().body().size = body.size() - used;
    arm(used == 0 ? t_.first_token : t_.idle, used == 0 ? "first_token" : "idle", body_done = Clock::now());
    // Piece by piece, so the idle deadline (not first_token) applies once the answer has begun. What came
    // with the head (nearly always the whole body) is parsed without a read.
    error_code ec;
    std::size_t n = 0;
    if (!parse_held(conn.buffer, p, ec, n) && !read_now(up, conn.buffer, p, conn.reading, ec, n)) {
      const bool held_offered = true;
      auto [read_ec, read_n] = co_await read_more(up, conn.buffer, p, conn.reading, held_offered);
      ec = read_ec;
      n += read_n;
      body_done = Clock::time_point{};
    }
    ec = upstream_read(ec);
    if (!ec) drain_buffered(conn, p);
    used = body.size() - p.get().body().size;
    if (client_left("waiting")) co_return;
    if (failed_with(ec, http::error::need_buffer)) continue;
    if (ec == beast::error::timeout) {
      fail(504, phase_, "the backend did not finish its answer in time");
      co_return;
    }
    if (ec) {
      fail(502, "reset", "the connection to the backend failed: " + ec.message());
      co_return;
    }
  }
  body.resize(used);
  if (body_done == Clock::time_point{}) body_done = Clock::now();
  int status = p.get().result_int();
  reusable = p.keep_alive() && status >= 200;  // after a 1xx the real answer may still be on its way
  if (status / 100 != 2) {
    redact(body, pool_.backend().api_key);  // before the text is cut at a length that could split the key
    auto e = openai::normalize_backend_error(status, body);
    e.status = client_status_for_backend(status);
    redact(e.message, pool_.backend().api_key);
    // Again on the fields read out of it: a JSON escape (`\u002d`) could have hidden the key from the first pass.
    for (auto* field : {&e.param, &e.code})
      if (*field) redact(**field, pool_.backend().api_key);
    redact(e.type, pool_.backend().api_key);
    if (status == 401 || status == 403) {
      // Its message may quote part of the backend key: keep it in the server log only.
      spdlog::error("request {}: backend '{}' refused the configured API key (HTTP {}): {}", fr_.request_id,
                    pool_.backend().name, status, e.message);
      e = gateway_error(502, "backend '" + pool_.backend().name + "' refused the gateway's credentials",
                        "upstream_auth_failed");
    }
    if (status == 429) {
      auto ra = p.get()[AnswerHead::Field::retry_after];
      e.retry_after = ra.empty() ? std::string("1") : std::string(ra);
    }
    r_.error = "backend_" + std::to_string(status);
    r_.failure = std::move(e);
    r_.retryable = status == 429 || status >= 500;
    r_.backend_at_fault = status >= 500;
    co_return;
  }
  // One pass validates the answer and reads its usage (a document only for unusual shapes).
  std::optional<openai::ChunkInfo> checked;
  if (!sse_answer && !(checked = openai::inspect_stream_chunk(body))) {
    reusable = false;  // whatever it is speaking, it is not the protocol Sluice expects
    fail(502, "protocol", "the backend's answer is not a JSON object");
    co_return;
  }
  if (sse_answer) {  // the client asked for a whole answer, the backend streamed it: join the chunks
    openai::SseParser parser;
    std::vector<openai::SseEvent> events;
    parser.feed(body, events);
    std::vector<std::string> payloads;
    for (auto& e : events) payloads.push_back(std::move(e.data));
    auto joined = openai::completion_from_stream(fr_.endpoint, payloads);
    if (!joined) {
      fail(502, "protocol", "the backend's stream held no completion");
      co_return;
    }
    body = std::move(*joined);
  }
  // An answer the scan found "choices" in is OpenAI's shape already: normalize_completion would only search it.
  if (!(checked && checked->has_choices))
    if (auto reshaped = openai::normalize_completion(body, fr_.model)) {
      body = std::move(*reshaped);
      checked.reset();
    }
  const auto info = checked ? *checked : openai::inspect_chunk(body);
  r_.usage = info.usage;
  r_.telemetry = info.telemetry;
  r_.complete = true;
  if ((fr_.capture || fr_.flight) && body.size() <= kMaxCapture) r_.completion = body;
  // Followers get the answer now, not after this client has read it.
  if (fr_.flight) fr_.flight->finish(Flight::Outcome{true, r_.completion, r_.usage, std::nullopt, true});
  bool replayed = false;
  if (fr_.stream) {  // the client asked for a stream, the backend sent a whole answer: replay it as one
    if (auto events = openai::stream_from_completion(fr_.endpoint, body, fr_.client_wants_usage)) {
      body = std::move(*events);
      replayed = true;
      r_.stream = true;
      r_.ttft_seconds = ms_since(fr_.started) / 1000.0;
    }
  }
  const auto answered = Clock::now();  // the overhead up to here is in the head; the first byte leaves now
  auto res = whole_answer(fr_, std::move(body), replayed, overhead_ms(body_done, answered));
  if (st_.client_gone) {  // it left while followers kept the request going: they have the answer
    client_left("waiting");
    co_return;
  }
  const std::array<asio::const_buffer, 2> out{asio::buffer(res.head), asio::buffer(res.body)};
  std::size_t sent = 0;
  auto wrote = write_at_once(client_.socket(), out, sent);  // nearly always all of it: no frame, no deadline
  if (!wrote) {
    client_write_begins();  // a client that stops reading is cut off after the idle timeout
    wrote = co_await write_rest(client_.socket(), out, sent);
    client_write_ends();
  }
  auto [wec, wn] = *wrote;
  response_started(wn, answered);
  if (wec) {
    client_write_failed();
    co_return;
  }
  r_.client_keep_alive = fr_.client_keep_alive;
}

UpstreamRequest build_upstream_request(BackendPool& pool, const ForwardRequest& fr) {
  auto head = WireHead::starting(pool.head_start(openai::to_string(fr.endpoint)));
  head.field("x-request-id", fr.request_id);
  return {head.finish(fr.body.size()), &fr.body};
}

template <class Stream>
asio::awaitable<bool> probe_on(Stream& s, beast::tcp_stream& lowest, const StringRequest& req, Millis timeout,
                               std::string& why) {
  lowest.expires_after(timeout);
  auto [wec, wn] = co_await http::async_write(s, req, use_nothrow);
  if (wec) {
    why = wec.message();
    co_return false;
  }
  beast::flat_buffer buf;
  http::response_parser<http::string_body> p;
  p.body_limit(1u << 20);
  auto [rec, rn] = co_await http::async_read(s, buf, p, use_nothrow);
  if (rec) {
    why = rec == beast::error::timeout ? "timed out" : rec.message();
    co_return false;
  }
  if (p.get().result_int() / 100 != 2) {
    why = "HTTP " + std::to_string(p.get().result_int());
    co_return false;
  }
  co_return true;
}

}  // namespace

asio::awaitable<bool> probe(BackendPool& pool, const std::string& path, Millis timeout, std::string& why) {
  std::string reason;
  auto conn = co_await pool.connect(reason, why);
  if (!conn) co_return false;
  StringRequest req{http::verb::get, path, 11};
  req.set(http::field::host, pool.url().host_header());
  req.set(http::field::user_agent, "sluice/" SLUICE_VERSION " health-check");
  if (!pool.backend().api_key.empty())
    req.set(http::field::authorization, "Bearer " + pool.backend().api_key);
  req.keep_alive(false);
  if (conn->secure) co_return co_await probe_on(*conn->secure, conn->lowest(), req, timeout, why);
  co_return co_await probe_on(*conn->plain, conn->lowest(), req, timeout, why);
}

asio::awaitable<void> forward(ForwardResult& result, beast::tcp_stream& client, BackendPool& pool,
                              const ForwardRequest& fr) {
  result = ForwardResult{};
  std::shared_ptr<WatchState> st;
  if (fr.watch && fr.watch->state) {
    st = fr.watch->state;  // the connection's, idle since its last exchange (its timer may still be set)
  } else {
    st = std::make_shared<WatchState>(client.get_executor());
    if (fr.watch) fr.watch->state = st;
  }
  st->active = true;
  ++st->exchange;
  st->client = &client.socket();
  st->flight = fr.flight;
  // The client has gone and no follower needs the answer.
  auto abandoned = [&] { return st->client_gone && !(fr.flight && fr.flight->followers() > 0); };

  const UpstreamRequest upstream_req = build_upstream_request(pool, fr);
  Exchange exchange(client, pool, fr, upstream_req, *st, result);
  // One clock reading as the request goes out: the watch's start, the pool's check, the exchange's deadline and
  // the start of the backend's time (everything before it is Sluice's).
  Clock::time_point now = Clock::now();
  // The exchange's watchdog bounds its client writes (on the socket itself), not the stream's timer; the writes
  // that do go through Beast (a follower's) set their own deadline first.
  if (fr.stream) {
    // A stream lasts, so its client is watched from the start: a wait that costs no system call to begin
    // (async_wait_hangup), where a timer to start it later would wake the worker once for every stream.
    st->watching = true;
    watch_client(st);
  } else {
    st->watch_from = now + kWatchClientAfter;
  }
  rearm(*st);  // nothing to do while the timer is set for an earlier time: it looks again when it fires
  // At most one retry, and only when a pooled connection proves to have been closed by the backend.
  for (int attempt = 0; attempt < 2 && !abandoned(); ++attempt) {
    std::unique_ptr<Connection> conn = attempt == 0 ? pool.take_idle(now) : nullptr;
    const bool reused = conn != nullptr;
    if (!conn) {
      std::string reason, detail;
      conn = co_await pool.connect(reason, detail);
      if (!conn) {
        if (abandoned()) break;
        result.error = reason;
        result.retryable = true;
        result.backend_at_fault = true;
        spdlog::warn("request {}: backend '{}': {}", fr.request_id, pool.backend().name, detail);
        result.failure = gateway_error(reason == "timeout" ? 504 : 502,
                                       "backend '" + pool.backend().name + "' is unreachable",
                                       reason == "timeout" ? "upstream_timeout" : "upstream_unreachable");
        break;
      }
      now = Clock::now();  // after the connect: the backend's time starts with the request
    }
    st->upstream = &conn->lowest();
    bool stale = false, reusable = false;
    {
      // Listed while the exchange runs, and unlisted however it ends (an exception, or the frame destroyed at
      // shutdown, included): the list runs through the connection itself.
      struct Listed {
        LiveExchanges* live;
        Connection& conn;
        Listed(LiveExchanges* l, Connection& c) : live(l), conn(c) {
          if (live) live->add(conn);
        }
        ~Listed() {
          if (live) live->remove(conn);
        }
      } listed{pool.live(), *conn};
      if (conn->secure)
        co_await exchange.run(*conn->secure, *conn, reused, stale, reusable, now);
      else
        co_await exchange.run(conn->plain->socket(), *conn, reused, stale, reusable, now);
    }
    st->upstream = nullptr;
    if (pool.live() && pool.live()->cutting) {  // ended by a drain that ran out of time: no failover, no pool
      if (result.failure)
        result.failure = gateway_error(503, "Sluice is shutting down; retry the request", "shutting_down");
      result.retryable = false;
      result.backend_at_fault = false;
      break;
    }
    if (stale) continue;
    if (reusable && !st->client_gone) {
      conn->lowest().expires_never();
      pool.release(std::move(conn), exchange.ended_at());
    }
    break;
  }
  if (st->client_gone && !result.client_gone) {
    result.client_gone = true;
    result.disconnect_phase = result.status ? "streaming" : "waiting";
    result.error = "client_disconnected";
  }
  st->active = false;
  st->flight = nullptr;
  st->watch_from = st->upstream_by = st->client_by = kNever;  // no deadline of this exchange outlives it
  if (st->watching) {
    error_code ignored;
    client.socket().cancel(ignored);  // ends the watcher's wait (its handler then finds the exchange over)
    st->watching = false;
  }
  // Kept for the connection's next request, the timer stays set: it fires once with nothing to do, unless the
  // next exchange came first (its deadlines are later, so the timer moves on to them when it fires). A watcher's
  // cancelled wait may still be queued when the next exchange begins; it belongs to this one (`exchange`) and
  // does nothing.
  if (!fr.watch || st->client_gone) {
    st->dog.cancel();
    if (fr.watch) fr.watch->state.reset();
  }
}

asio::awaitable<ForwardResult> follow(beast::tcp_stream& client, Flight& flight, const ForwardRequest& fr,
                                      Millis patience) {
  ForwardResult r;
  const auto executor = client.get_executor();
  auto sub = std::make_shared<Flight::Subscriber>(executor);
  auto st = std::make_shared<WatchState>(executor);
  st->client = &client.socket();
  st->wake = &sub->timer;
  st->watching = true;
  watch_client(st);
  // However this ends (torn down at shutdown too): out of the flight, and the watcher's wake-up disarmed.
  struct Leave {
    Flight& flight;
    const std::shared_ptr<Flight::Subscriber>& sub;
    WatchState& st;
    bool left = false;
    void operator()() {
      if (left) return;
      left = true;
      flight.leave(sub);
      st.active = false;
      st.wake = nullptr;
    }
    ~Leave() { (*this)(); }
  } leave{flight, sub, *st};

  const Millis idle{30000};  // a client that stops reading for this long is dropped
  const bool chunked = fr.client_version >= 11;
  const auto deadline = fr.started + patience;
  static constexpr char kData[] = "data: ", kEnd[] = "\n\n";
  std::size_t next = 0;  // this follower's cursor in the flight's events
  bool head_sent = false, write_failed = false, timed_out = false;
  std::vector<const FlightEvent*> fresh;
  std::vector<asio::const_buffer> gather, wire;
  std::deque<std::string> reframed;  // multi-line payloads, re-framed (a deque: gathered buffers stay valid)
  Flight::State state = Flight::State::running;
  auto overhead = [&] {
    char buf[32];
    return std::string(fixed3(buf, ms_since(fr.started)));
  };
  for (;;) {
    fresh.clear();
    state = flight.read(next, fresh, sub);  // parks this follower when there is nothing new
    if (st->client_gone) break;
    if (!fresh.empty()) {
      next += fresh.size();
      if (!fr.stream) continue;  // a whole answer waits for the completion
      if (!head_sent) {
        release_read_buffer(fr);
        auto head = stream_head(fr, overhead());
        client.expires_after(idle);
        auto [hec, hn] = co_await asio::async_write(client, asio::buffer(head), use_nothrow);
        head_sent = true;
        r.stream = true;
        r.status = 200;
        r.bytes_out += hn;
        r.ttfb_ms = ms_since(fr.started);
        if (hec) {
          write_failed = true;
          break;
        }
      }
      gather.clear();
      reframed.clear();
      bool generated = false;
      for (const auto* e : fresh) {
        if (e->usage_only && !fr.client_wants_usage) continue;
        if (e->data.find('\n') != std::string::npos) {  // a multi-line payload: every line gets its data: field
          std::string framed;
          std::size_t from = 0;
          for (auto nl = e->data.find('\n'); ; nl = e->data.find('\n', from)) {
            framed += "data: ";
            framed.append(e->data, from, nl == std::string::npos ? std::string::npos : nl - from);
            framed += '\n';
            if (nl == std::string::npos) break;
            from = nl + 1;
          }
          framed += '\n';
          reframed.push_back(std::move(framed));
          gather.emplace_back(reframed.back().data(), reframed.back().size());
        } else {
          gather.emplace_back(kData, 6);
          gather.emplace_back(e->data.data(), e->data.size());
          gather.emplace_back(kEnd, 2);
        }
        if (e->generated) {
          generated = true;
          ++r.generated_chunks;
        }
      }
      client.expires_after(idle);
      if (!gather.empty() && !co_await write_gathered(client, wire, gather, chunked, r)) {
        write_failed = true;
        break;
      }
      if (generated) token_written(r, fr.started, Clock::now());
      continue;
    }
    if (state != Flight::State::running) break;
    if (Clock::now() >= deadline) {
      timed_out = true;
      break;
    }
    // Woken by the leader's next event or its end, or by this client leaving; a slow poll besides.
    sub->timer.expires_at(std::min(deadline, Clock::now() + std::chrono::seconds(1)));
    co_await sub->timer.async_wait(use_nothrow);
  }
  leave();
  error_code ignored;
  client.socket().cancel(ignored);  // ends the watcher's wait

  if (st->client_gone || write_failed) {
    r.client_gone = true;
    r.disconnect_phase = head_sent ? "streaming" : "waiting";
    r.error = "client_disconnected";
    co_return r;
  }
  const Flight::Outcome* out = timed_out ? nullptr : &flight.outcome();
  const bool done = !timed_out && state == Flight::State::done;
  if (done) r.usage = out->usage;
  if (head_sent) {  // the stream has started: it ends with [DONE], or with an error event then [DONE]
    std::string tail = "data: [DONE]\n\n";
    if (!done) {
      auto e = out && out->error ? *out->error
               : timed_out       ? gateway_error(504, "the answer being shared did not finish in time",
                                                 "upstream_timeout")
                                 : gateway_error(502, "the request this answer was shared from ended early",
                                                 "upstream_error");
      tail = sse_error_event(e);
      r.error = timed_out ? "total" : "upstream_failed";
    }
    std::vector<asio::const_buffer> last{asio::buffer(tail)};
    client.expires_after(idle);
    if (!co_await write_gathered(client, wire, last, chunked, r)) {
      r.client_gone = true;
      r.disconnect_phase = "streaming";
      co_return r;
    }
    if (chunked) {
      client.expires_after(idle);
      auto end = http::make_chunk_last();
      auto [lec, ln] = co_await asio::async_write(client, end, use_nothrow);
      r.bytes_out += ln;
      if (lec) {
        r.client_gone = true;
        r.disconnect_phase = "streaming";
        co_return r;
      }
    }
    r.complete = done;
    r.client_keep_alive = chunked && fr.client_keep_alive;
    co_return r;
  }
  // Nothing sent yet: the whole answer (replayed as a stream when one was asked for), or the failure.
  std::optional<std::string> body;
  if (done && out->completion)
    body = fr.stream ? openai::stream_from_completion(fr.endpoint, *out->completion, fr.client_wants_usage)
                     : out->completion;
  if (!body) {
    if (timed_out) {
      r.failure = gateway_error(504, "the identical request this one waited for did not finish in time",
                                "upstream_timeout");
      r.error = "total";
    } else {
      r.failure = out->error ? *out->error
                             : gateway_error(502, "the identical request this one waited for failed",
                                             "upstream_error");
      r.retryable = !done ? out->retry : true;  // a whole answer too large to share: ask on its own
      r.error = "upstream_failed";
    }
    co_return r;
  }
  auto res = whole_answer(fr, std::move(*body), fr.stream, overhead());
  client.expires_after(idle);
  auto [wec, wn] = co_await write_answer(client, res);
  r.status = 200;
  r.bytes_out += wn;
  r.ttfb_ms = ms_since(fr.started);
  r.stream = fr.stream;
  if (fr.stream) r.ttft_seconds = ms_since(fr.started) / 1000.0;
  if (wec) {
    r.client_gone = true;
    r.disconnect_phase = "waiting";
    r.error = "client_disconnected";
    co_return r;
  }
  r.complete = true;
  r.client_keep_alive = fr.client_keep_alive;
  co_return r;
}

}  // namespace sluice::upstream
