#pragma once
// Small RapidJSON helpers shared by the wire-protocol code.
#include <rapidjson/document.h>

#include <cmath>
#include <cstdint>
#include <string_view>

namespace sluice::openai {

/// The member `name` of `obj`, or nullptr when `obj` is not an object or lacks it.
inline const rapidjson::Value* member(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return nullptr;
  auto it = obj.FindMember(name);
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

/// Eight bytes of a JSON string (little-endian): the high bit of each byte that is a quote, a backslash or below
/// 0x20, the bytes a string scan stops at; exact up to the first one (a later bit may be a borrow's).
inline std::uint64_t json_special_bytes(std::uint64_t v) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ull, kHighs = 0x8080808080808080ull;
  const std::uint64_t quote = v ^ (kOnes * '"'), backslash = v ^ (kOnes * '\\');
  return (((quote - kOnes) & ~quote) | ((backslash - kOnes) & ~backslash) | ((v - kOnes * 0x20) & ~v)) & kHighs;
}

/// A cheap pre-check that needs no parse: true when, at some place `"field"` (given with its quotes) is
/// followed by a colon, `accept` takes the text after it (JSON whitespace around the colon skipped, so a
/// pretty-printed body is read like a compact one).
template <class Accept>
bool any_member_value(std::string_view json, std::string_view quoted_field, Accept accept) {
  auto skip_space = [&](std::size_t q) {
    while (q < json.size() && (json[q] == ' ' || json[q] == '\n' || json[q] == '\r' || json[q] == '\t')) ++q;
    return q;
  };
  for (auto p = json.find(quoted_field); p != std::string_view::npos; p = json.find(quoted_field, p + 1)) {
    auto q = skip_space(p + quoted_field.size());
    if (q < json.size() && json[q] == ':' && accept(json.substr(skip_space(q + 1)))) return true;
  }
  return false;
}

/// False when a number in `v` is not finite. RapidJSON 1.1 reads a literal just above DBL_MAX
/// (1.7976934348623157e308) as inf or NaN, and its Writer then stops at that number, leaving the output
/// cut short. Recursive: callers bound the depth first (json_depth_within).
inline bool finite_numbers(const rapidjson::Value& v) {
  if (v.IsDouble()) return std::isfinite(v.GetDouble());
  if (v.IsArray()) {
    for (const auto& e : v.GetArray())
      if (!finite_numbers(e)) return false;
  } else if (v.IsObject()) {
    for (const auto& m : v.GetObject())
      if (!finite_numbers(m.value)) return false;
  }
  return true;
}

}  // namespace sluice::openai
