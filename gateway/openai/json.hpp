#pragma once
// Small RapidJSON helpers shared by the wire-protocol code.
#include <rapidjson/document.h>

#include <cmath>

namespace sluice::openai {

/// The member `name` of `obj`, or nullptr when `obj` is not an object or lacks it.
inline const rapidjson::Value* member(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return nullptr;
  auto it = obj.FindMember(name);
  return it == obj.MemberEnd() ? nullptr : &it->value;
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
