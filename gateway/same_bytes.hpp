#pragma once
// Whether two short runs of bytes are the same, compared in place: member names in the answer scan, label values
// in the metrics' last-child check. GCC calls memcmp for most lengths, and for a few bytes the call costs more
// than the compare.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace sluice {

/// The `n` bytes at `a` and at `b` are the same: compared in eight-byte words, the last one overlapping the one
/// before, under eight bytes in two overlapping four-byte words, under four byte by byte; nothing is read past
/// either run. With `n` a constant (a literal's length) the branches fold away.
[[gnu::always_inline]] inline bool same_bytes(const char* a, const char* b, std::size_t n) {
  auto word = [](const char* p, auto w) {
    std::memcpy(&w, p, sizeof w);
    return w;
  };
  if (n >= 8) {
    for (std::size_t at = 0; at + 8 <= n; at += 8)
      if (word(a + at, std::uint64_t{}) != word(b + at, std::uint64_t{})) return false;
    return n % 8 == 0 || word(a + n - 8, std::uint64_t{}) == word(b + n - 8, std::uint64_t{});
  }
  if (n >= 4)
    return word(a, std::uint32_t{}) == word(b, std::uint32_t{}) &&
           word(a + n - 4, std::uint32_t{}) == word(b + n - 4, std::uint32_t{});
  for (std::size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

/// `a` and `b` hold the same text.
[[gnu::always_inline]] inline bool same_text(std::string_view a, std::string_view b) {
  return a.size() == b.size() && same_bytes(a.data(), b.data(), a.size());
}

}  // namespace sluice
