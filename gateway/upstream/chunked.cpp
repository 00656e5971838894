#include "upstream/chunked.hpp"

#include <boost/beast/http/error.hpp>
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "hex.hpp"

namespace sluice::upstream {

namespace http = boost::beast::http;

std::size_t ChunkedBody::put(boost::asio::const_buffer input, boost::system::error_code& ec) {
  const char* const begin = static_cast<const char*>(input.data());
  const char* const end = begin + input.size();
  const char* p = begin;
  bool delivered = false;  // body bytes given in this call
  ec = {};
  auto bad = [&] {
    ec = http::error::bad_chunk;
    return static_cast<std::size_t>(p - begin);
  };
  if (state_ == State::done) {  // as Beast: a finished parser takes nothing more
    ec = http::error::stale_parser;
    return 0;
  }
  while (p < end && state_ != State::done) {
    switch (state_) {
      case State::data: {
        if (body_.data == nullptr || body_.size == 0) {
          ec = http::error::need_buffer;
          return static_cast<std::size_t>(p - begin);
        }
        const std::size_t n =
            static_cast<std::size_t>(std::min<std::uint64_t>(size_, std::min<std::size_t>(end - p, body_.size)));
        std::memcpy(body_.data, p, n);
        body_.data = static_cast<char*>(body_.data) + n;
        body_.size -= n;
        size_ -= n;
        p += n;
        delivered = true;
        if (size_ == 0) {
          if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {  // the usual case: the chunk's CRLF is here too
            p += 2;
            start_size_line();
          } else {
            state_ = State::data_cr;
          }
        }
        break;
      }
      case State::data_cr:
        if (*p != '\r') return bad();
        ++p;
        state_ = State::data_lf;
        break;
      case State::data_lf:
        if (*p != '\n') return bad();
        ++p;
        start_size_line();
        break;
      case State::size: {
        if (digits_ == 0) {
          // The usual case: a whole size line of a few digits and its CRLF, read in one go. Anything else
          // (extensions, a line split across reads, many digits) takes the byte-by-byte path below.
          const char* q = p;
          std::uint64_t n = 0;
          for (int v; q < end && q - p < kFastDigits && (v = hex_value(*q)) >= 0; ++q) n = n * 16 + static_cast<unsigned>(v);
          if (q > p && q - p < kFastDigits && end - q >= 2 && q[0] == '\r' && q[1] == '\n') {
            p = q + 2;
            size_ = n;
            state_ = n == 0 ? State::trailer : State::data;
            break;
          }
        }
        const int v = hex_value(*p);
        if (v < 0) {
          // After the digits: the line's end, or extensions (";name=value", with optional white space first).
          if (digits_ == 0 || (*p != '\r' && *p != ';' && *p != ' ' && *p != '\t')) return bad();
          state_ = State::extension;
          break;
        }
        if (size_ > (UINT64_MAX >> 4) || ++line_ > kMaxLine) return bad();  // over 64 bits, or endless zeros
        size_ = size_ * 16 + static_cast<unsigned>(v);
        ++digits_;
        ++p;
        break;
      }
      case State::extension:  // skipped up to its CR, as a trailer line is
      case State::trailer: {
        const bool trailer = state_ == State::trailer;
        if (*p == '\r') {
          ++p;
          state_ = trailer ? State::trailer_lf : State::size_lf;
        } else if (*p == '\n' || ++line_ > kMaxLine || (trailer && ++trailers_ > kMaxTrailers)) {
          return bad();
        } else {
          ++p;
        }
        break;
      }
      case State::size_lf:
        if (*p != '\n') return bad();
        ++p;
        line_ = 0;
        state_ = size_ == 0 ? State::trailer : State::data;
        break;
      case State::trailer_lf:
        if (*p != '\n') return bad();
        ++p;
        if (line_ == 0) {
          state_ = State::done;  // the empty line after the last chunk (and its trailers)
        } else {
          line_ = 0;
          state_ = State::trailer;
        }
        break;
      case State::done:
        break;
    }
  }
  // Nothing for the body yet: the caller reads more before it looks (as Beast says of a partial line).
  if (!delivered && state_ != State::done) ec = http::error::need_more;
  return static_cast<std::size_t>(p - begin);
}

void ChunkedBody::put_eof(boost::system::error_code& ec) const {
  ec = is_done() ? boost::system::error_code{} : boost::system::error_code(http::error::partial_message);
}

}  // namespace sluice::upstream
