#pragma once
// Token usage as backends report it: OpenAI's `usage`, or Qubrid's `metrics` {input_tokens, output_tokens}.
#include <rapidjson/document.h>

#include <cstdint>
#include <optional>
#include <string_view>

namespace sluice::openai {

struct Usage {
  std::uint64_t prompt_tokens = 0;
  std::uint64_t completion_tokens = 0;
};

/// Reads usage from a completion body or a stream chunk; nullopt when it carries none (or "usage": null).
std::optional<Usage> usage_from_json(std::string_view json);

/// Reads usage from an already parsed body or chunk (so callers that parse anyway parse once).
std::optional<Usage> usage_from_doc(const rapidjson::Value& doc);

/// True when `json` may hold a usage object: `"usage"` followed by `{`, or Qubrid's `"metrics"`.
/// Most stream chunks fail this cheap test and need no parse ("usage":null included).
bool may_carry_usage(std::string_view json);

}  // namespace sluice::openai
