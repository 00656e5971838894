#pragma once
// One hexadecimal digit's value: key digests, %XX escapes in Redis URLs, chunk sizes.

namespace sluice {

/// The value of hex digit `c` (either case), or -1 when it is not one.
constexpr int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace sluice
