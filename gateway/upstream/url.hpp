#pragma once
// Backend base URLs: scheme, host, port and the path prefix that upstream routes are appended to.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::upstream {

struct BaseUrl {
  bool tls = false;
  std::string host;  // without brackets for IPv6
  std::uint16_t port = 0;
  std::string path;                 // prefix without trailing slash, e.g. "/v1" or "/api/v1/qubridai"
  std::string host_header() const;  // "host" or "host:port" when the port is not the scheme's default
  bool host_is_ip() const;
  /// The request target for a route under the prefix: path + "/" + route.
  std::string target(std::string_view route) const { return path + "/" + std::string(route); }
};

/// Parses "http://127.0.0.1:8000/v1", "https://platform.qubrid.com/api/v1/qubridai"; nullopt when malformed.
std::optional<BaseUrl> parse_base_url(std::string_view url);

}  // namespace sluice::upstream
