#pragma once
// Feeds a request to an IncomingParser as the gateway does, and records the outcome: shared by the unit test
// and fuzz_incoming, which hold the one-pass read to Beast's parser.
#include <boost/asio/buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <algorithm>
#include <ostream>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "server/incoming.hpp"

namespace sluice::incoming_drive {

namespace http = boost::beast::http;
using boost::system::error_code;
using Field = IncomingRequest::Field;

struct Outcome {
  error_code ec;
  std::size_t consumed = 0;
  bool header_done = false;
  bool done = false;
  bool by_beast = false;
  std::string request;  // everything read, printed

  bool operator==(const Outcome& o) const {
    return ec == o.ec && consumed == o.consumed && header_done == o.header_done && done == o.done &&
           request == o.request;
  }
};

inline std::ostream& operator<<(std::ostream& os, const Outcome& o) {
  return os << "ec=" << o.ec.message() << " consumed=" << o.consumed << " header_done=" << o.header_done
            << " done=" << o.done << " by_beast=" << o.by_beast << " request=[" << o.request << "]";
}

inline std::string print(const IncomingRequest& r) {
  std::ostringstream os;
  os << static_cast<int>(r.method()) << '|' << r.method_string() << '|' << r.target() << '|' << r.version() << '|'
     << r.keep_alive() << '|';
  for (auto f : {Field::authorization, Field::x_api_key, Field::x_request_id, Field::cache_control, Field::expect})
    os << r[f] << '|';
  os << r.body();
  return os.str();
}

/// Feeds `input` as the gateway does (read_buffered: the header first, then the body eagerly), `pieces` bytes
/// at a time arriving from the connection, and the end of the input as the connection's end.
inline Outcome drive(IncomingParser& parser, std::string_view input, const std::vector<std::size_t>& pieces,
              std::uint32_t header_limit, std::uint64_t body_limit) {
  parser.header_limit(header_limit);
  parser.body_limit(body_limit);
  Outcome out;
  std::string buffer;
  std::size_t fed = 0, piece = 0;
  auto arrive = [&]() -> bool {
    if (fed == input.size()) return false;
    std::size_t n = piece < pieces.size() ? pieces[piece++] : input.size();
    n = std::min(std::max<std::size_t>(n, 1), input.size() - fed);
    buffer.append(input.substr(fed, n));
    fed += n;
    return true;
  };
  arrive();
  for (bool header_only : {true, false}) {
    if (out.ec) break;
    if (!header_only) parser.eager(true);
    while (header_only ? !parser.is_header_done() : !parser.is_done()) {
      error_code ec;
      if (!buffer.empty()) {
        const std::size_t used = parser.put(boost::asio::buffer(buffer), ec);
        buffer.erase(0, used);
        out.consumed += used;
        if (ec && ec != http::error::need_more) {
          out.ec = ec;
          break;
        }
        if (!ec && used > 0) continue;
      }
      if (!arrive()) {
        if (parser.got_some()) {
          parser.put_eof(ec);
          out.ec = ec ? ec : error_code(http::error::end_of_stream);  // (a request is never ended by a close)
        } else {
          out.ec = http::error::end_of_stream;
        }
        break;
      }
    }
  }
  out.header_done = parser.is_header_done();
  out.done = parser.is_done();
  out.by_beast = parser.by_beast();
  if (out.header_done) out.request = print(parser.get());
  return out;
}

/// drive() on a fresh parser (`beast_only`: one that gives every request to Beast's parser).
inline Outcome run(std::string_view input, const std::vector<std::size_t>& pieces = {}, bool beast_only = false,
                   std::uint32_t header_limit = 8192, std::uint64_t body_limit = 1 << 20) {
  IncomingParser p;
  if (beast_only) p.use_beast_only();
  return drive(p, input, pieces, header_limit, body_limit);
}

}  // namespace sluice::incoming_drive
