#pragma once
// Beast/Asio vocabulary shared by the client edge, the upstream edge and the simulator.
#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <array>
#include <cerrno>
#include <charconv>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "openai/errors.hpp"
#include "server/drained_read.hpp"
#include "server/plain_calls.hpp"

namespace sluice {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

/// `ec == e`, with the common case (no error at all) decided without comparing error categories: the relay
/// asks this several times per event.
template <class E>
inline bool failed_with(const error_code& ec, E e) {
  return ec && ec == e;
}

/// Completion token for expected network failures: `auto [ec, n] = co_await op(..., use_nothrow);`
/// The operation is awaited directly (a deferred operation, which Asio's awaitable resumes with the result
/// in place); use_awaitable would wrap each one in a coroutine frame of its own.
inline constexpr auto use_nothrow = asio::as_tuple(asio::deferred);
/// The same for the few operations that cannot be deferred in Boost 1.81 (Beast's connect to a list of
/// endpoints), awaited through a coroutine frame of their own.
inline constexpr auto use_nothrow_awaitable = asio::as_tuple(asio::use_awaitable);

using StringRequest = http::request<http::string_body>;
using StringResponse = http::response<http::string_body>;

/// An HTTP/1.x message head built directly as the bytes that go on the wire. Beast's serializer walks its
/// list of fields through a chain of buffer views (about 30 pieces for a small answer); on Sluice's busiest
/// paths the head is built in one string and written with the body in one gathered write.
class WireHead {
 public:
  /// "HTTP/1.x <status> <reason>"
  static WireHead response(unsigned version, unsigned status);
  /// "<method> <target> HTTP/1.1"
  static WireHead request(std::string_view method, std::string_view target);
  /// A head that begins with `start` (its first line and some fields, as `text()` gave them).
  static WireHead starting(std::string_view start);

  WireHead& field(std::string_view name, std::string_view value);
  /// Whole header lines, each ending in CRLF.
  WireHead& lines(std::string_view wire) {
    text_.append(wire);
    return *this;
  }
  /// The Connection field a response needs when `keep_alive` differs from its version's default.
  WireHead& connection(unsigned version, bool keep_alive);
  /// The head so far.
  std::string_view text() const { return text_; }
  /// Ends the head (with Content-Length when given) and hands over its bytes.
  std::string finish(std::optional<std::size_t> content_length);

 private:
  std::string text_;
};

/// Response headers Sluice adds (rate limits, cache), kept as the wire lines they become ("name: value\r\n"),
/// so an answer's head takes them in one copy. Names are Sluice's own; values are the request's (numbers,
/// durations, words), never with a line break.
class ExtraHeaders {
 public:
  ExtraHeaders& add(std::string_view name, std::string_view value);
  ExtraHeaders& add(std::string_view name, std::uint64_t value);
  /// Whole header lines ("name: value\r\n" each), built by the caller: Sluice's own, never a client's.
  ExtraHeaders& add_lines(std::string_view lines);
  std::string_view wire() const { return text_; }
  bool empty() const { return text_.empty(); }
  /// A point to go back to: `rewind(mark())` drops what was added after it.
  std::size_t mark() const { return text_.size(); }
  void rewind(std::size_t mark) { text_.resize(mark); }
  /// Calls `f(name, value)` for each, in order (for responses Beast serializes).
  template <class F>
  void each(F&& f) const {
    std::string_view rest = text_;
    while (!rest.empty()) {
      const auto eol = rest.find("\r\n");
      const auto line = rest.substr(0, eol);
      const auto colon = line.find(": ");
      f(line.substr(0, colon), line.substr(colon + 2));
      rest.remove_prefix(eol + 2);
    }
  }

 private:
  std::string text_;
};

/// The head of a 200 answer Sluice sends a client: its id and overhead, the extra headers, and `length` for a
/// whole answer; without one, a relayed stream (chunked on HTTP/1.1, else delimited by closing the connection).
std::string answer_head(unsigned version, bool keep_alive, bool sse, std::string_view request_id,
                        std::string_view overhead_ms, const ExtraHeaders* extra, std::optional<std::size_t> length);

/// A Beast response's head exactly as Beast's serializer would write it.
std::string wire_head(const StringResponse& res);

/// A JSON response with the common headers; `keep_alive` and `version` follow the request.
StringResponse json_response(http::status status, std::string body, unsigned version, bool keep_alive);

/// An OpenAI-shaped error response.
StringResponse error_response(const openai::ApiError& e, unsigned version, bool keep_alive);

/// A fresh request id ("req_" + 24 hex digits).
std::string new_request_id();

/// A request id a client may supply: 1..128 visible ASCII characters; anything else is replaced.
bool acceptable_request_id(std::string_view id);

namespace detail {
inline tcp::socket& plain_socket(tcp::socket& s) { return s; }
inline tcp::socket& plain_socket(beast::tcp_stream& s) { return s.socket(); }
}  // namespace detail

/// The part of write_all that never suspends: sends what a plain socket takes at once. {error, bytes written}
/// when that ends the write (all of it sent, or an error); nullopt when the socket's buffer filled first, with
/// `sent` bytes gone (write_rest sends the others). A caller on a hot path uses it to skip write_all's frame.
/// The send is one sendmsg(2) of up to 16 of the buffers (plain_calls.hpp), as Asio's write_some would make it.
template <class Buffers>
std::optional<std::tuple<error_code, std::size_t>> write_now(tcp::socket& sock, const Buffers& buffers,
                                                             std::size_t& sent) {
  using Result = std::tuple<error_code, std::size_t>;
  error_code ec;
  sent = 0;
  if (!sock.non_blocking()) sock.non_blocking(true, ec);  // a full buffer answers EAGAIN, never waits
  if (ec) return Result{ec, 0};
  std::array<::iovec, 16> iov;
  std::size_t count = 0;
  for (auto it = asio::buffer_sequence_begin(buffers), end = asio::buffer_sequence_end(buffers);
       it != end && count < iov.size(); ++it) {
    const asio::const_buffer b(*it);
    if (b.size() != 0) iov[count++] = ::iovec{const_cast<void*>(b.data()), b.size()};
  }
  if (count == 0) return Result{ec, 0};  // every buffer empty: nothing to send
  ssize_t n;
  do n = plain::send_gather(sock.native_handle(), iov.data(), count);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
    return Result{error_code(errno, asio::error::get_system_category()), 0};
  }
  sent = static_cast<std::size_t>(n);
  if (sent == asio::buffer_size(buffers)) return Result{ec, sent};
  return std::nullopt;
}

/// What write_now left of `buffers` (all but its first `sent` bytes), written asynchronously. {error, bytes
/// written in all}.
template <class Stream, class Buffers>
asio::awaitable<std::tuple<error_code, std::size_t>> write_rest(Stream& s, const Buffers& buffers, std::size_t sent) {
  beast::buffers_suffix<Buffers> rest(buffers);
  rest.consume(sent);
  auto [ec, n] = co_await asio::async_write(s, rest, use_nothrow);
  co_return std::tuple<error_code, std::size_t>{ec, sent + n};
}

/// write_all's first step, which needs no wait: on a plain connection, write_now; on others (TLS) nothing
/// (nullopt, `sent` 0). Callers on the request path call it before write_rest, so a write the socket takes at
/// once makes no coroutine frame:
///   std::size_t sent = 0;
///   auto wrote = write_at_once(s, buffers, sent);
///   if (!wrote) wrote = co_await write_rest(s, buffers, sent);
template <class Stream, class Buffers>
std::optional<std::tuple<error_code, std::size_t>> write_at_once(Stream& s, const Buffers& buffers,
                                                                 std::size_t& sent) {
  if constexpr (!std::is_same_v<Stream, tcp::socket> && !std::is_same_v<Stream, beast::tcp_stream>) {
    sent = 0;
    return std::nullopt;
  } else {
    return write_now(detail::plain_socket(s), buffers, sent);
  }
}

/// Writes `buffers` to a connection. On a plain one (a socket, or a Beast stream whose timer then bounds the
/// wait) it first sends whatever the socket takes at once, without suspending the coroutine, and only when the
/// socket's buffer is full the rest asynchronously: a peer that reads leaves room, so the common write costs one
/// send(2) and no trip through the event loop. Other streams (TLS) get async_write. {error, bytes written}, as
/// async_write with use_nothrow gives.
template <class Stream, class Buffers>
asio::awaitable<std::tuple<error_code, std::size_t>> write_all(Stream& s, const Buffers& buffers) {
  std::size_t sent = 0;
  if (auto done = write_at_once(s, buffers, sent)) co_return *done;
  co_return co_await write_rest(s, buffers, sent);
}

// A head and a body to a client, the writes several files make: instantiated once, in http_io.cpp. GCC 12 names a
// coroutine frame's temporaries differently in each file that instantiates it, which link-time optimisation
// (the release build) reports as two definitions of one type (GCC bug 101118).
using HeadAndBody = std::array<asio::const_buffer, 2>;
extern template asio::awaitable<std::tuple<error_code, std::size_t>> write_rest(beast::tcp_stream&,
                                                                                const HeadAndBody&, std::size_t);
extern template asio::awaitable<std::tuple<error_code, std::size_t>> write_all(beast::tcp_stream&,
                                                                               const HeadAndBody&);

/// How a backend socket was last read (read_more): `more` when the last read took all the room it had (the
/// socket may hold the rest of a burst), and how many reads in a row went without giving the thread back.
struct ReadState {
  bool more = false;
  unsigned in_a_row = 0;
  static constexpr unsigned kMaxInARow = 16;  // then the relay yields once, so its worker's other work goes on
  static constexpr unsigned kMaxNow = 4;      // of those, how many read_now makes before read_more's turn
};

/// read_more's first step, which needs no read: offers what `buffer` holds to `parser`. True when that
/// ends the call, with `ec` and `parsed` as read_more gives them; false when the parser needs bytes not
/// read yet (`parsed` counts what it took). The relay calls it before read_more, so bytes that came with
/// an earlier read (a whole answer's body, read with its head) are parsed without starting a read.
template <class Parser>
bool parse_held(beast::flat_buffer& buffer, Parser& parser, error_code& ec, std::size_t& parsed) {
  if (buffer.size() == 0) return false;
  const std::size_t used = parser.put(buffer.data(), ec);
  buffer.consume(used);
  parsed += used;
  if (!failed_with(ec, http::error::need_more)) return true;
  ec = {};
  return false;
}

/// How many bytes the next read of `buffer` may take: as Beast sizes its reads. 0, with `ec` set to
/// buffer_overflow, when the buffer is full.
inline std::size_t read_room(beast::flat_buffer& buffer, error_code& ec) {
  const std::size_t room = beast::read_size(buffer, 65536);
  if (room == 0) ec = http::error::buffer_overflow;
  return room;
}

/// A read of `n` bytes that ended with `ec`, taken into `buffer`. True when the read ends the message, with `ec`
/// as the reader returns it: an error, or the end of the stream (as Beast: the end of a body delimited by the
/// close, else a cut message).
template <class Parser>
bool read_ended(beast::flat_buffer& buffer, Parser& parser, error_code& ec, std::size_t n) {
  buffer.commit(n);
  if (failed_with(ec, asio::error::eof)) {
    if (parser.got_some()) {
      ec = {};
      parser.put_eof(ec);
    } else {
      ec = http::error::end_of_stream;
    }
    return true;
  }
  return static_cast<bool>(ec);
}

/// A read's result, taken into `buffer` and offered to `parser` (read_more's and read_some_now's step after
/// every read of `n` bytes that ended with `ec`). True when that ends the call, with `ec` and `parsed` as they
/// return them: the read ended the message (read_ended), or the parser is done with what it needs.
template <class Parser>
bool take_read(beast::flat_buffer& buffer, Parser& parser, error_code& ec, std::size_t n, std::size_t& parsed) {
  return read_ended(buffer, parser, ec, n) || parse_held(buffer, parser, ec, parsed);
}

/// read_more's reads that need no wait: while the last read of the socket took all the room it had (a burst,
/// probably not all read yet), the next reads go to the socket at once, up to ReadState::kMaxInARow in a row
/// (then the read waits its turn behind the worker's other work). True when they end the call (take_read).
template <class Parser>
bool read_at_once(tcp::socket& s, beast::flat_buffer& buffer, Parser& parser, ReadState& state, error_code& ec,
                  std::size_t& parsed) {
  while (state.more && ++state.in_a_row < ReadState::kMaxInARow) {
    const std::size_t room = read_room(buffer, ec);
    if (room == 0) return true;
    if (!s.non_blocking()) {  // an empty socket answers would_block, never blocks
      s.non_blocking(true, ec);
      if (ec) return true;
    }
    const std::size_t n = s.read_some(buffer.prepare(room), ec);
    state.more = !ec && n == room;
    if (failed_with(ec, asio::error::would_block) || failed_with(ec, asio::error::try_again)) {
      ec = {};
      break;
    }
    if (take_read(buffer, parser, ec, n, parsed)) return true;
  }
  state.in_a_row = 0;
  return false;
}

/// read_more's reads that need no wait, for its caller to make before it starts read_more (with held_offered,
/// which then skips them): on a plain socket, read_at_once, but only for the first ReadState::kMaxNow reads in a
/// row. When these settle the call, the caller goes on at once: read_more would have completed through the
/// executor (an operation never completes inside the call that starts it), a trip through the event loop for
/// the rest of a burst that was already here. Past kMaxNow, and on other streams (TLS), it reads nothing.
template <class Parser>
bool read_now(tcp::socket& s, beast::flat_buffer& buffer, Parser& parser, ReadState& state, error_code& ec,
              std::size_t& parsed) {
  return state.in_a_row < ReadState::kMaxNow && read_at_once(s, buffer, parser, state, ec, parsed);
}

template <class Stream, class Parser>
bool read_now(Stream&, beast::flat_buffer&, Parser&, ReadState&, error_code&, std::size_t&) {
  return false;
}

namespace read_detail {

/// read_more on a plain socket: an asynchronous operation of its own, which Asio's awaitable resumes with the
/// result in place. A coroutine (read_some_now) costs a frame per call, and the relay reads once per event.
template <class Parser, class Handler>
class ReadMore {
 public:
  ReadMore(tcp::socket& s, beast::flat_buffer& buffer, Parser& parser, ReadState& state, Handler handler)
      : s_(&s), buffer_(&buffer), parser_(&parser), state_(&state), handler_(std::move(handler)) {}

  // The handler's executor, allocator and cancellation slot are the operation's (the read below is Asio's,
  // or async_read_drained's, with this object as its handler).
  using executor_type = asio::associated_executor_t<Handler, tcp::socket::executor_type>;
  executor_type get_executor() const noexcept { return asio::get_associated_executor(handler_, s_->get_executor()); }
  using allocator_type = asio::associated_allocator_t<Handler>;
  allocator_type get_allocator() const noexcept { return asio::get_associated_allocator(handler_); }
  using cancellation_slot_type = asio::associated_cancellation_slot_t<Handler>;
  cancellation_slot_type get_cancellation_slot() const noexcept {
    return asio::get_associated_cancellation_slot(handler_);
  }

  /// The first step, in the initiating call: what completes here is handed to the handler through the executor
  /// (an operation never completes inside the call that starts it). `held_offered`: the caller has made this
  /// step's parse and reads itself (parse_held, read_now), so it starts with the wait.
  void start(bool held_offered) {
    error_code ec;
    if ((!held_offered && (parse_held(*buffer_, *parser_, ec, parsed_) ||
                           read_at_once(*s_, *buffer_, *parser_, *state_, ec, parsed_))) ||
        !wait(ec)) {
      auto ex = get_executor();
      asio::post(ex, asio::append(std::move(handler_), ec, parsed_));
    }
  }

  /// A read through the reactor has ended.
  void operator()(error_code ec, std::size_t n) {
    state_->more = !ec && n == room_;
    if (failed_with(ec, asio::error::would_block) || failed_with(ec, asio::error::try_again))
      ec = {};
    else if (take_read(*buffer_, *parser_, ec, n, parsed_))
      return finish(ec);
    if (read_at_once(*s_, *buffer_, *parser_, *state_, ec, parsed_) || !wait(ec)) finish(ec);
  }

 private:
  /// Reads when the socket has bytes (async_read_drained: at once unless the last read emptied it). False, with
  /// `ec`, when there is no room to read into.
  bool wait(error_code& ec) {
    room_ = read_room(*buffer_, ec);
    if (room_ == 0) return false;
    state_->in_a_row = 0;
    async_read_drained(*s_, buffer_->prepare(room_), std::move(*this));
    return true;
  }

  void finish(error_code ec) {
    const std::size_t parsed = parsed_;
    Handler handler = std::move(handler_);
    std::move(handler)(ec, parsed);
  }

  tcp::socket* s_;
  beast::flat_buffer* buffer_;
  Parser* parser_;
  ReadState* state_;
  std::size_t parsed_ = 0;
  std::size_t room_ = 0;
  Handler handler_;
};

template <class Parser>
struct InitiateReadMore {
  template <class Handler>
  void operator()(Handler&& handler, tcp::socket* s, beast::flat_buffer* buffer, Parser* parser, ReadState* state,
                  bool held_offered) const {
    ReadMore<Parser, std::decay_t<Handler>>(*s, *buffer, *parser, *state, std::forward<Handler>(handler))
        .start(held_offered);
  }
};

}  // namespace read_detail

/// http::async_read_some, for a backend connection, without Beast's composed operation: parses what `buffer`
/// holds into `parser`, reading more while the parser needs more. `held_offered`: the caller has just offered
/// what `buffer` holds (parse_held) and made the reads that need no wait (read_now), so the first step is a
/// read through the reactor. Completes with {error, bytes parsed}, with
/// Beast's errors for the same cases: `auto [ec, n] = co_await read_more(...)`.
///
/// On a plain socket it reads through async_read_drained (Asio's read, except that after a read which emptied
/// the socket the next one waits for the reactor without first asking the kernel; a wait for readability
/// instead re-arms the descriptor with an epoll_ctl each time, which costs more), and when a read took all the
/// room it had, the next one reads the socket at once (read_at_once). It is an operation of its own, not a
/// coroutine: no frame per read. Other streams (TLS) are read by read_some_now, with their own async_read_some.
template <class Parser>
auto read_more(tcp::socket& s, beast::flat_buffer& buffer, Parser& parser, ReadState& state,
               bool held_offered = false) {
  auto token = use_nothrow;
  return asio::async_initiate<decltype(token), void(error_code, std::size_t)>(
      read_detail::InitiateReadMore<Parser>{}, token, &s, &buffer, &parser, &state, held_offered);
}

/// read_more for any other stream (TLS): the same steps in a coroutine, each read the stream's async_read_some.
template <class Stream, class Parser>
asio::awaitable<std::tuple<error_code, std::size_t>> read_some_now(Stream& s, beast::flat_buffer& buffer,
                                                                   Parser& parser, bool held_offered) {
  error_code ec;
  std::size_t parsed = 0;
  if (!held_offered && parse_held(buffer, parser, ec, parsed)) co_return std::tuple<error_code, std::size_t>{ec, parsed};
  for (;;) {
    const std::size_t room = read_room(buffer, ec);
    if (room == 0) break;
    auto [read_ec, n] = co_await s.async_read_some(buffer.prepare(room), use_nothrow);
    ec = read_ec;
    if (take_read(buffer, parser, ec, n, parsed)) break;
  }
  co_return std::tuple<error_code, std::size_t>{ec, parsed};
}

template <class Stream, class Parser>
auto read_more(Stream& s, beast::flat_buffer& buffer, Parser& parser, ReadState&, bool held_offered = false) {
  return read_some_now(s, buffer, parser, held_offered);
}

/// read_buffered's part that needs no read: parses what `buffer` holds (nearly always the whole request, read
/// by the session's wait for it). True when that settles the call (the header, or the whole request, parsed;
/// or an error in `ec`), false when the parser needs bytes not read yet; `parsed` counts the bytes it took.
/// The session calls it before read_buffered, so a request already here is read without a coroutine frame.
template <class Parser>
bool parse_buffered(beast::flat_buffer& buffer, Parser& parser, bool header_only, error_code& ec,
                    std::size_t& parsed) {
  if (!header_only) parser.eager(true);  // as http::async_read: the body in the same pass as the header
  while (header_only ? !parser.is_header_done() : !parser.is_done()) {
    if (buffer.size() == 0) return false;
    const std::size_t used = parser.put(buffer.data(), ec);
    buffer.consume(used);
    parsed += used;
    if (ec && ec != http::error::need_more) return true;
    if (!ec && used > 0) continue;
    ec = {};
    return false;
  }
  return true;
}

/// http::async_read_header (`header_only`) or http::async_read for a client request, without Beast's composed
/// operation and its trip through the event loop: what `buffer` holds is parsed at once (parse_buffered), and
/// the stream is read, under its own deadline, only while the parser needs more (`held_offered`: the caller has
/// just done the first parse_buffered). {error, bytes parsed}, with Beast's errors for the same cases.
template <class Stream, class Parser>
asio::awaitable<std::tuple<error_code, std::size_t>> read_buffered(Stream& s, beast::flat_buffer& buffer,
                                                                   Parser& parser, bool header_only,
                                                                   bool held_offered = false) {
  error_code ec;
  std::size_t parsed = 0;
  if (!held_offered && parse_buffered(buffer, parser, header_only, ec, parsed))
    co_return std::tuple<error_code, std::size_t>{ec, parsed};
  do {
    const std::size_t room = read_room(buffer, ec);
    if (room == 0) break;
    auto [read_ec, n] = co_await s.async_read_some(buffer.prepare(room), use_nothrow);
    ec = read_ec;
    if (read_ended(buffer, parser, ec, n)) break;
  } while (!parse_buffered(buffer, parser, header_only, ec, parsed));
  co_return std::tuple<error_code, std::size_t>{ec, parsed};
}

/// Closes a socket with RST rather than FIN (what a crashed peer looks like).
void reset_socket(tcp::socket& s);

}  // namespace sluice
