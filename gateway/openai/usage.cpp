#include "openai/usage.hpp"

#include <rapidjson/document.h>

#include "openai/json.hpp"

namespace sluice::openai {
namespace {

std::uint64_t count(const rapidjson::Value& obj, const char* name) {
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsNumber()) return 0;
  if (it->value.IsUint64()) return it->value.GetUint64();
  double v = it->value.GetDouble();
  if (!(v > 0)) return 0;
  return v >= 1.8e19 ? UINT64_MAX : static_cast<std::uint64_t>(v);
}

}  // namespace

bool may_carry_usage(std::string_view json) {
  if (json.find("\"metrics\"") != std::string_view::npos) return true;
  return any_member_value(json, "\"usage\"", [](std::string_view v) { return !v.empty() && v[0] == '{'; });
}

std::optional<Usage> usage_from_json(std::string_view json) {
  if (!may_carry_usage(json)) return std::nullopt;  // the common stream chunk: no parse
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(json.data(), json.size());  // no recursion on hostile nesting
  if (doc.HasParseError()) return std::nullopt;
  return usage_from_doc(doc);
}

std::optional<Usage> usage_from_doc(const rapidjson::Value& doc) {
  if (!doc.IsObject()) return std::nullopt;
  if (auto u = doc.FindMember("usage"); u != doc.MemberEnd() && u->value.IsObject())
    return Usage{count(u->value, "prompt_tokens"), count(u->value, "completion_tokens")};
  if (auto m = doc.FindMember("metrics");
      m != doc.MemberEnd() && m->value.IsObject() && m->value.HasMember("input_tokens"))
    return Usage{count(m->value, "input_tokens"), count(m->value, "output_tokens")};
  return std::nullopt;
}

}  // namespace sluice::openai
