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
#include <string>
#include <string_view>

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
