// Fuzzes the relay's chunked-body decoder against Beast's: the input's first two bytes choose the read and
// body-buffer sizes, the rest is a backend's body after a "Transfer-Encoding: chunked" head. Whatever Beast
// decodes whole, ChunkedBody decodes whole to the same bytes, read in any pieces into any buffer; whatever it
// decodes, it decodes the same way however the reads split; it never writes past the buffer it was given.
//
// Beast is the oracle here, as the gateway builds it (NDEBUG): its own asserts are off in this file, since
// parse_chunk_header asserts on inputs it then refuses (a last chunk's line followed by a bad trailer).
#define BOOST_DISABLE_ASSERTS
#include <boost/beast/http.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "hex.hpp"
#include "upstream/chunked.hpp"

namespace {

namespace http = boost::beast::http;
using boost::system::error_code;
using sluice::upstream::ChunkedBody;

struct Decoded {
  std::string body;
  std::string left;  // what was not taken once done
  bool done = false;
  bool failed = false;
  char failed_on = 0;  // the byte refused
};

// As the relay feeds a parser: reads of up to `piece` bytes, each offered until the parser takes no more of
// it, into a body buffer of `room` bytes that is emptied when it fills. For ChunkedBody (`prompt`): a call
// that gave body bytes never asks for more input, and one that asks has taken everything it was given (what
// makes the relay forward events at once).
template <class Parser>
Decoded feed(Parser& parser, std::string_view wire, std::size_t piece, std::size_t room, bool prompt) {
  Decoded out;
  std::string held;
  std::string buffer(room + 1, '\x5a');  // one guard byte past the room
  std::size_t at = 0;
  for (;;) {
    if (at < wire.size()) {
      const std::size_t n = std::min(piece, wire.size() - at);
      held.append(wire.substr(at, n));
      at += n;
    }
    for (;;) {
      auto& body = parser.get().body();
      body.data = buffer.data();
      body.size = room;
      error_code ec;
      const std::size_t used = parser.put(boost::asio::buffer(held), ec);
      SLUICE_FUZZ_CHECK(used <= held.size(), "put() consumes at most what it was given");
      const std::size_t written = room - parser.get().body().size;
      SLUICE_FUZZ_CHECK(written <= room && buffer[room] == '\x5a', "nothing written past the body buffer");
      if (prompt && ec == http::error::need_more) {
        SLUICE_FUZZ_CHECK(written == 0, "no body bytes held back until more input comes");
        SLUICE_FUZZ_CHECK(used == held.size(), "asking for more input after taking all of it");
      }
      out.body.append(buffer.data(), written);
      if (ec && ec != http::error::need_more && ec != http::error::need_buffer) {
        out.failed = true;
        out.failed_on = used < held.size() ? held[used] : 0;
        return out;
      }
      held.erase(0, used);
      if (parser.is_done()) {
        out.done = true;
        out.left = held + std::string(wire.substr(at));
        return out;
      }
      if (ec == http::error::need_more || (used == 0 && written == 0) || held.empty()) break;
    }
    if (at == wire.size()) return out;  // the connection ended here
  }
}

// Whether some chunk-size line, as a reader that ends lines at CRLF frames them, holds a '"': there Beast's
// quoted-string reader runs on across CRLF (RFC 9112's qdtext has no CR or LF), and ChunkedBody does not.
bool quote_in_size_line(std::string_view w) {
  std::size_t at = 0;
  while (at < w.size()) {
    const std::size_t eol = w.find("\r\n", at);
    const std::string_view line = w.substr(at, eol == std::string_view::npos ? std::string_view::npos : eol - at);
    if (line.find('"') != std::string_view::npos) return true;
    if (eol == std::string_view::npos) return false;
    std::uint64_t size = 0;
    bool digits = false;
    for (char c : line) {
      const int v = sluice::hex_value(c);
      if (v < 0) break;
      size = size * 16 + static_cast<unsigned>(v);
      digits = true;
      if (size > w.size()) return false;  // runs past the input: no further size line
    }
    if (!digits || size == 0) return false;  // not a size line, or the last one (trailers follow)
    at = eol + 2 + size + 2;
  }
  return false;
}

Decoded with_beast(std::string_view wire, std::size_t piece, std::size_t room) {
  http::response_parser<http::buffer_body> parser;
  parser.body_limit(boost::none);
  const std::string head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  error_code ec;
  parser.put(boost::asio::buffer(head), ec);
  SLUICE_FUZZ_CHECK(!ec && parser.is_header_done(), "Beast takes the head");
  return feed(parser, wire, piece, room, false);
}

Decoded with_sluice(std::string_view wire, std::size_t piece, std::size_t room) {
  ChunkedBody parser(true);
  return feed(parser, wire, piece, room, true);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::size_t piece = 1 + data[0] * 8u;
  const std::size_t room = 1 + data[1] * 16u;
  const std::string_view wire(reinterpret_cast<const char*>(data) + 2, size - 2);

  const Decoded beast = with_beast(wire, piece, room);
  const Decoded ours = with_sluice(wire, piece, room);
  const Decoded whole = with_sluice(wire, wire.size() + 1, wire.size() + 1);
  const Decoded bytewise = with_sluice(wire, 1, 1);
  // Where the two differ on purpose: Beast's line reader skips a bare LF, reads a quoted extension value across
  // CRLF, and bounds no size line or trailer; ChunkedBody ends lines at CRLF only and bounds them. Anything else
  // Beast takes, it takes the same way.
  const bool lenient_beast =
      quote_in_size_line(wire) ||
      (ours.failed && (ours.failed_on == '\n' || wire.size() > sluice::upstream::ChunkedBody::kMaxLine));
  if (beast.done && !lenient_beast) {
    SLUICE_FUZZ_CHECK(ours.done && !ours.failed, "a body Beast decodes whole is decoded whole");
    SLUICE_FUZZ_CHECK(ours.body == beast.body, "the same body bytes as Beast");
    SLUICE_FUZZ_CHECK(ours.left == beast.left, "the same bytes left after the message");
  }
  // Cut short (Beast has neither finished nor refused it): what the relay forwards of it. Beast looks at a
  // line only once its end has come, so ChunkedBody may refuse earlier, having forwarded less, never more.
  if (!beast.done && !beast.failed && !lenient_beast) {
    if (ours.failed)
      SLUICE_FUZZ_CHECK(beast.body.compare(0, ours.body.size(), ours.body) == 0 && ours.body.size() <= beast.body.size(),
                        "a refused body forwards a prefix of what Beast gives");
    else
      SLUICE_FUZZ_CHECK(ours.body == beast.body, "the same bytes of a cut body as Beast");
  }
  // However the reads split, the same verdict and the same bytes.
  SLUICE_FUZZ_CHECK(ours.done == whole.done && ours.done == bytewise.done, "done does not depend on the reads");
  SLUICE_FUZZ_CHECK(ours.failed == whole.failed && ours.failed == bytewise.failed,
                    "a refusal does not depend on the reads");
  SLUICE_FUZZ_CHECK(ours.body == whole.body && ours.body == bytewise.body, "the body does not depend on the reads");
  return 0;
}
