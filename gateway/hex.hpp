#pragma once
// One hexadecimal digit's value: key digests, %XX escapes in Redis URLs, chunk sizes.
#include <array>

namespace sluice {

namespace detail {
// Each byte's value as a hex digit, or -1: one load per digit on the relay's chunk-size path.
inline constexpr std::array<signed char, 256> kHexValues = [] {
  std::array<signed char, 256> t{};
  for (auto& v : t) v = -1;
  for (int c = '0'; c <= '9'; ++c) t[c] = static_cast<signed char>(c - '0');
  for (int c = 'a'; c <= 'f'; ++c) t[c] = static_cast<signed char>(c - 'a' + 10);
  for (int c = 'A'; c <= 'F'; ++c) t[c] = static_cast<signed char>(c - 'A' + 10);
  return t;
}();
}  // namespace detail

/// The value of hex digit `c` (either case), or -1 when it is not one.
constexpr int hex_value(char c) {
  return detail::kHexValues[static_cast<unsigned char>(c)];
}

}  // namespace sluice
