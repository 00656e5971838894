#pragma once
// Small RapidJSON helpers shared by the wire-protocol code.
#include <rapidjson/document.h>

namespace sluice::openai {

/// The member `name` of `obj`, or nullptr when `obj` is not an object or lacks it.
inline const rapidjson::Value* member(const rapidjson::Value& obj, const char* name) {
  if (!obj.IsObject()) return nullptr;
  auto it = obj.FindMember(name);
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

}  // namespace sluice::openai
