#pragma once
// Beast/Asio vocabulary shared by the client edge, the upstream edge and the simulator.
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "openai/errors.hpp"

namespace sluice {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

/// Completion token for expected network failures: `auto [ec, n] = co_await op(..., use_nothrow);`
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

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

  WireHead& field(std::string_view name, std::string_view value);
  /// The Connection field a response needs when `keep_alive` differs from its version's default.
  WireHead& connection(unsigned version, bool keep_alive);
  /// Ends the head (with Content-Length when given) and hands over its bytes.
  std::string finish(std::optional<std::size_t> content_length);

 private:
  std::string text_;
};

/// Response headers Sluice adds (rate limits, cache): names are string literals, values are the request's own.
using ExtraHeaders = std::vector<std::pair<std::string_view, std::string>>;

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

/// Closes a socket with RST rather than FIN (what a crashed peer looks like).
void reset_socket(tcp::socket& s);

}  // namespace sluice
