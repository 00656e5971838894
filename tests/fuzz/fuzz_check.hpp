#pragma once
// Shared by the fuzz targets: an invariant check that stops the run with a message libFuzzer keeps next
// to the crashing input, and the JSON/UTF-8 checks several targets make on what the gateway writes.
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace sluice::fuzz {

#define SLUICE_FUZZ_CHECK(cond, what)                                                                     \
  do {                                                                                                    \
    if (!(cond)) {                                                                                        \
      std::fprintf(stderr, "invariant violated at %s:%d: %s\n  (%s)\n", __FILE__, __LINE__, what, #cond); \
      std::abort();                                                                                       \
    }                                                                                                     \
  } while (0)

/// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
inline bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    std::size_t len;
    unsigned cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      len = 2, cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3, cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (std::size_t k = 1; k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

/// True when JSON the gateway writes from a backend's `input` must be UTF-8: the input is, and escapes no
/// UTF-16 surrogate. RapidJSON decodes a lone low surrogate (\udc00) to bytes that are not UTF-8; RFC 8259
/// leaves such strings unpredictable, and the client gets what the backend wrote.
inline bool must_stay_utf8(std::string_view input) {
  return valid_utf8(input) && input.find("\\ud") == std::string_view::npos &&
         input.find("\\uD") == std::string_view::npos;
}

/// Parses JSON the gateway produced; aborts when it is not JSON at all, or (for UTF-8 input) not UTF-8.
inline void parse_output(rapidjson::Document& d, std::string_view json, bool must_be_utf8, const char* what) {
  if (must_be_utf8)
    d.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(json.data(), json.size());
  else
    d.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());
  if (d.HasParseError()) {
    std::fprintf(stderr, "%s is not valid JSON (%s at offset %zu):\n%.*s\n", what,
                 rapidjson::GetParseError_En(d.GetParseError()), d.GetErrorOffset(),
                 static_cast<int>(json.size() > 4096 ? 4096 : json.size()), json.data());
    std::abort();
  }
}

}  // namespace sluice::fuzz
