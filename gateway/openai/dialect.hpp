#pragma once
// Where backends differ from OpenAI's wire format, in one place. Pure functions over bytes.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config.hpp"
#include "openai/usage.hpp"

namespace sluice::openai {

/// The path a health probe GETs, relative to the backend's origin, when the config names none.
/// `base_path` is the base URL's path prefix (e.g. "/v1").
std::string default_health_path(Dialect d, std::string_view base_path);

/// Turns a non-stream reply that is not OpenAI-shaped into a `chat.completion`: Qubrid's top-level
/// {"content","metrics":{input_tokens,output_tokens},"model","usage"}, or {"message":{...}}.
/// nullopt when the body already has `choices` (or is not JSON): it then goes to the client as it is.
std::optional<std::string> normalize_completion(std::string_view body, std::string_view model);

/// What a backend says about its own speed, read from `x_metrics` (Qubrid), `metrics` (Qubrid, vLLM
/// per-request metrics) or `timings` (llama.cpp). Telemetry only: never used to bill tokens.
struct BackendTelemetry {
  std::optional<double> tokens_per_second;
  std::optional<double> ttft_ms;
};
BackendTelemetry read_telemetry(std::string_view json);

/// What one SSE data payload (or a whole non-stream answer) means to the relay's accounting.
struct ChunkInfo {
  std::optional<Usage> usage;
  bool usage_only =
      false;  // an include_usage chunk: usage and "choices":[] (dropped when the client did not ask)
  bool generated = false;  // carries generated text, reasoning or a tool call (counted when no usage comes)
  bool finished = false;   // a choice ends here (a non-null finish_reason)
  // The object has a top-level "choices" member: an answer already in OpenAI's shape, which
  // normalize_completion would leave alone. Only inspect_stream_chunk's one-pass scan sets it.
  bool has_choices = false;
  BackendTelemetry telemetry;
};
ChunkInfo inspect_chunk(std::string_view data);

/// True when `json` is one well-formed JSON object (validated without building a document, nesting bounded).
bool is_json_object(std::string_view json);

/// The relay's check of one stream chunk or whole answer: nullopt when it is not a JSON object
/// (is_json_object), else what inspect_chunk tells. One pass over the bytes (no document, no copy, no
/// allocation), which also reads the usual top-level usage object's counts; telemetry and unusual usage
/// shapes are still read with RapidJSON, and a chunk with a \u escape, an exponent or a long number is
/// checked by RapidJSON as well, so the verdict is always the same as is_json_object's.
std::optional<ChunkInfo> inspect_stream_chunk(std::string_view data);

namespace detail {
// What one scan of a chunk found (dialect.cpp).
struct ChunkScan {
  enum class Verdict { valid, invalid, unsure } verdict = Verdict::invalid;
  bool generated = false, finished = false, usage = false, telemetry = false;
  // The top-level "usage" object's token counts, read as usage_from_doc reads them (the first of each member;
  // 0 for a value that is not a number). `counts_plain` is false when a count is not a plain integer (a
  // fraction, a sign, an exponent, many digits): RapidJSON then reads the chunk.
  bool top_usage = false, counts_plain = true;
  std::optional<std::uint64_t> prompt_tokens, completion_tokens;
  std::optional<bool> choices_empty;  // the top-level "choices" is [] (an include_usage chunk)
};

// The scan's state where a chunk's first generated-text value begins, with the bytes before it.
struct ScanCheckpoint {
  static constexpr std::size_t kMaxPrefix = 224;  // room for OpenAI's and vLLM's envelopes (about 150-200 bytes)
  static constexpr int kMaxDepth = 8;
  std::size_t offset = 0;  // the value's first byte; 0: no checkpoint yet
  char prefix[kMaxPrefix];
  ChunkScan out;
  bool in_object[kMaxDepth + 1];
  int depth = 0, usage_depth = 0;
  bool usage_keyed = false, unsure = false;
  // After that value (a string): the rest of the chunk, and what the scan concluded from there.
  static constexpr std::size_t kMaxSuffix = 96;
  std::size_t suffix_size = 0;  // 0: none
  char suffix[kMaxSuffix];
  ChunkScan final_out;            // the whole chunk's verdict and accounting, but for `generated`
  bool suffix_generated = false;  // the rest set `generated` itself
  bool unsure_after_text = false;
};
}  // namespace detail

/// inspect_stream_chunk for the events of one stream, in order, with the same verdicts. A backend repeats
/// each token event's envelope byte for byte ({"id":…,"choices":[{"index":0,"delta":{"content": and only
/// the text differs): where an event starts with the bytes the previous one had before its text, the scan
/// resumes from the state it had there instead of reading them again, and where it also ends with the bytes
/// the previous one had after its text, the previous verdict stands. No allocation.
class StreamChunkChecker {
 public:
  std::optional<ChunkInfo> operator()(std::string_view data);

 private:
  detail::ScanCheckpoint checkpoint_;
};

}  // namespace sluice::openai
