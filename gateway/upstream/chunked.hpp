#pragma once
// The body of a chunked HTTP/1.1 answer, decoded as it is read: what the stream relay parses a backend's SSE
// body with once Beast has parsed the head.
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <cstdint>

namespace sluice::upstream {

/// Decodes a chunked body into the buffer the caller points body() at, with the parts of Beast's
/// `http::parser<false, http::buffer_body>` interface the relay and `read_more` use (put, is_done,
/// got_some, put_eof, keep_alive, get().body()), and the same errors: `need_buffer` when the body buffer is
/// full (or not set), `need_more` when the input ran out before a byte of body, `partial_message` at an early
/// end, `bad_chunk` for framing that is not chunked encoding, `stale_parser` once done.
///
/// Unlike Beast's parser, which returns after each chunk, one put() decodes every chunk its input holds: a
/// burst of SSE events read at once costs one call, not one per event. It returns with no error as soon as it
/// has given the body any bytes and its input runs out, so a reader relays them before it waits for more.
/// After a size's digits only white space, ';' or the line's end may follow; extensions are then skipped (not
/// checked, as nginx does) and trailers read and dropped (Sluice forwards neither). Lines end in CRLF. Size
/// lines and trailers are bounded (Beast bounds neither).
class ChunkedBody {
 public:
  /// What Beast's buffer_body calls its value: where the next body bytes go, and how many fit there.
  struct Value {
    void* data = nullptr;
    std::size_t size = 0;
  };

  /// `keep_alive`: whether the answer's head lets the connection be used again.
  explicit ChunkedBody(bool keep_alive) : keep_alive_(keep_alive) {}

  /// Decodes from `input`; returns the bytes of it consumed (those bytes need not be offered again).
  std::size_t put(boost::asio::const_buffer input, boost::system::error_code& ec);
  /// Called at the connection's end: an error unless the last chunk and the trailers were read.
  void put_eof(boost::system::error_code& ec) const;

  bool is_done() const { return state_ == State::done; }
  bool got_some() const { return true; }  // the head came before: an end now cuts a message short
  bool keep_alive() const { return keep_alive_; }
  ChunkedBody& get() { return *this; }
  Value& body() { return body_; }

  static constexpr std::size_t kMaxLine = 8192;       // a size line with its extensions, or one trailer
  static constexpr std::size_t kMaxTrailers = 65536;  // every trailer line together

 private:
  enum class State { size, extension, size_lf, data, data_cr, data_lf, trailer, trailer_lf, done };
  static constexpr int kFastDigits = 16;  // a size line read in one go has fewer digits (up to 60 bits)
  void start_size_line() {
    state_ = State::size;
    size_ = 0;
    digits_ = 0;
    line_ = 0;
  }
  State state_ = State::size;
  Value body_;
  std::uint64_t size_ = 0;     // the chunk size being read, then what is left of its data
  unsigned digits_ = 0;        // hex digits of the size read so far
  std::size_t line_ = 0;       // bytes of the current size or trailer line
  std::size_t trailers_ = 0;   // bytes of trailers so far
  bool keep_alive_;
};

}  // namespace sluice::upstream
