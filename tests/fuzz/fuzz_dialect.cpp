// Fuzzes what Sluice does with backend answers: error bodies, usage and telemetry, Qubrid's reshaping,
// and the conversions between a stream and a whole completion. Backends are not trusted to be
// well-formed, so none of this may crash, and everything Sluice writes to a client must be JSON (UTF-8
// when the backend sent UTF-8).
//
// Input: one byte of parameters, then the backend's body.
//   bits 0-3: the HTTP status (from kStatuses), bit 4: the client asked for usage in streams,
//   bits 5-6: the endpoint (chat, completions, embeddings, chat).
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "openai/dialect.hpp"
#include "openai/errors.hpp"
#include "openai/json.hpp"
#include "openai/sse_parser.hpp"
#include "openai/stream_convert.hpp"
#include "openai/usage.hpp"

namespace {

using namespace sluice::openai;
namespace fz = sluice::fuzz;

constexpr int kStatuses[16] = {400, 401, 403, 404, 408, 413, 422, 424, 429, 500, 502, 503, 504, 200, 0, 599};

bool same_usage(const std::optional<Usage>& a, const std::optional<Usage>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->prompt_tokens == b->prompt_tokens && a->completion_tokens == b->completion_tokens);
}

bool same_telemetry(const BackendTelemetry& a, const BackendTelemetry& b) {
  auto eq = [](const std::optional<double>& x, const std::optional<double>& y) {
    return x.has_value() == y.has_value() && (!x || *x == *y || (*x != *x && *y != *y));
  };
  return eq(a.tokens_per_second, b.tokens_per_second) && eq(a.ttft_ms, b.ttft_ms);
}

// The `data:` payloads of an SSE stream.
std::vector<std::string> payloads_of(std::string_view sse, std::uint64_t* boundary = nullptr) {
  SseParser p;
  std::vector<SseEvent> events;
  p.feed(sse, events);
  if (boundary) *boundary = p.boundary();
  std::vector<std::string> out;
  for (auto& e : events) out.push_back(std::move(e.data));
  return out;
}

// A stream Sluice made from a whole answer: well-framed SSE, JSON chunks, [DONE] last.
std::vector<std::string> check_replay(const std::string& sse, bool utf8, bool include_usage) {
  std::uint64_t boundary = 0;
  auto payloads = payloads_of(sse, &boundary);
  SLUICE_FUZZ_CHECK(boundary == sse.size(), "a replayed stream ends on an event boundary");
  SLUICE_FUZZ_CHECK(payloads.size() >= 3, "a replay has the content, the finish and [DONE]");
  SLUICE_FUZZ_CHECK(payloads.back() == "[DONE]", "a replay ends with [DONE]");
  for (std::size_t i = 0; i + 1 < payloads.size(); ++i) {
    rapidjson::Document d;
    fz::parse_output(d, payloads[i], utf8, "a replayed chunk");
    SLUICE_FUZZ_CHECK(d.IsObject(), "a replayed chunk is an object");
    auto info = inspect_chunk(payloads[i]);
    if (!include_usage) SLUICE_FUZZ_CHECK(!info.usage_only, "no usage chunk unless the client asked");
  }
  return payloads;
}

// A completion Sluice made (joined or reshaped): JSON with a choices array.
void check_completion(const std::string& body, bool utf8, const char* what) {
  rapidjson::Document d;
  fz::parse_output(d, body, utf8, what);
  SLUICE_FUZZ_CHECK(d.IsObject(), what);
  const auto* choices = member(d, "choices");
  SLUICE_FUZZ_CHECK(choices && choices->IsArray(), what);
}

void check_stream_conversions(Endpoint endpoint, std::string_view body, bool utf8, bool include_usage) {
  // The body as a stream (Qubrid's legacy endpoint may stream when asked not to): join it.
  auto payloads = payloads_of(body);
  StreamJoiner joiner(endpoint);
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    joiner.add(payloads[i]);
    if (i == payloads.size() / 2)
      if (auto partial = joiner.result()) check_completion(*partial, utf8, "a partly joined stream");
    auto info = inspect_chunk(payloads[i]);
    SLUICE_FUZZ_CHECK(!info.usage_only || info.usage, "a usage-only chunk has usage");
  }
  auto joined = joiner.result();
  SLUICE_FUZZ_CHECK(joined == completion_from_stream(endpoint, payloads), "joining is deterministic");
  if (joined) {
    check_completion(*joined, utf8, "a joined stream");
    // A joined answer replayed as a stream and joined again is the same answer (a cached stream is
    // served to both kinds of clients).
    auto replay = stream_from_completion(endpoint, *joined, true);
    SLUICE_FUZZ_CHECK(replay.has_value(), "a joined answer can be replayed");
    auto again = completion_from_stream(endpoint, check_replay(*replay, utf8, true));
    SLUICE_FUZZ_CHECK(again.has_value(), "a replay joins again");
    // All but the usage, which is passed through as the backend wrote it: a number like 1.1111111111111109e65
    // comes back from RapidJSON's (not correctly rounded) parser a few ulps off.
    auto without_usage = [](const std::string& s) {
      auto p = s.find(",\"usage\":");
      return p == std::string::npos ? s : s.substr(0, p);
    };
    if (without_usage(*again) != without_usage(*joined)) {  // both are written in the same member order
      std::fprintf(stderr, "joined:\n%s\nreplayed and joined again:\n%s\n", joined->c_str(), again->c_str());
      SLUICE_FUZZ_CHECK(false, "replaying a joined answer and joining it again changes nothing");
    }
  }

  // The body as a whole completion (a backend that answered whole to a streaming client, a cache hit).
  if (auto replay = stream_from_completion(endpoint, body, include_usage)) {
    auto replayed = check_replay(*replay, utf8, include_usage);
    auto again = completion_from_stream(endpoint, replayed);
    SLUICE_FUZZ_CHECK(again.has_value(), "a replay joins again");
    check_completion(*again, utf8, "a replayed answer joined again");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const int status = kStatuses[data[0] & 15];
  const bool include_usage = data[0] & 16;
  const Endpoint endpoint = ((data[0] >> 5) & 3) == 1   ? Endpoint::completions
                            : ((data[0] >> 5) & 3) == 2 ? Endpoint::embeddings
                                                        : Endpoint::chat_completions;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool utf8 = fz::must_stay_utf8(body);

  // Error bodies: whatever the backend said becomes OpenAI's error shape.
  {
    ApiError e = normalize_backend_error(status, body);
    SLUICE_FUZZ_CHECK(e.status == status, "the status is kept");
    SLUICE_FUZZ_CHECK(!e.message.empty(), "an error always has a message");
    rapidjson::Document d;
    fz::parse_output(d, error_json(e), utf8, "the error sent to the client");
    SLUICE_FUZZ_CHECK(d.IsObject() && member(d, "error") && member(d, "error")->IsObject(),
                      "the error is {\"error\":{...}}");
  }

  // Usage and telemetry: the cheap pre-checks never hide what a full parse finds.
  auto usage = usage_from_json(body);
  auto info = inspect_chunk(body);
  SLUICE_FUZZ_CHECK(same_usage(usage, info.usage), "usage_from_json and inspect_chunk agree");
  SLUICE_FUZZ_CHECK(!info.usage_only || info.usage, "a usage-only chunk has usage");
  SLUICE_FUZZ_CHECK(same_telemetry(read_telemetry(body), info.telemetry),
                    "read_telemetry and inspect_chunk agree");
  // The relay's one-pass check: the same verdict as is_json_object, and the same usage and telemetry.
  if (auto relayed = inspect_stream_chunk(body); relayed) {
    SLUICE_FUZZ_CHECK(is_json_object(body), "inspect_stream_chunk accepts only JSON objects");
    SLUICE_FUZZ_CHECK(same_usage(relayed->usage, info.usage), "inspect_stream_chunk finds the same usage");
    SLUICE_FUZZ_CHECK(relayed->usage_only == info.usage_only, "inspect_stream_chunk: the same usage-only verdict");
    SLUICE_FUZZ_CHECK(same_telemetry(relayed->telemetry, info.telemetry),
                      "inspect_stream_chunk finds the same telemetry");
    // The relay skips normalize_completion for an answer the scan found top-level "choices" in.
    SLUICE_FUZZ_CHECK(!relayed->has_choices || !normalize_completion(body, "public-model"),
                      "an answer with top-level choices is one normalize_completion leaves alone");
  } else {
    SLUICE_FUZZ_CHECK(!is_json_object(body), "inspect_stream_chunk refuses only what is not a JSON object");
  }
  // A stream's checker, over the lines of the input as one stream's events (each twice, so the second is
  // resumed where it can be, then with a space after a colon): every verdict is the one the event gets alone.
  {
    StreamChunkChecker check;
    std::size_t from = 0;
    while (from <= body.size()) {
      std::size_t nl = body.find('\n', from);
      if (nl == std::string_view::npos) nl = body.size();
      const std::string_view line = body.substr(from, nl - from);
      // Then the same event with a space after a member's colon: a checkpoint's value may start later.
      std::vector<std::string> variants{std::string(line), std::string(line)};
      for (std::size_t at = line.find("\":"), k = 0; at != std::string_view::npos && k < 4;
           at = line.find("\":", at + 2), ++k)
        variants.push_back(std::string(line.substr(0, at + 2)) + " " + std::string(line.substr(at + 2)));
      for (const std::string& event : variants) {
        const auto alone = inspect_stream_chunk(event);
        const auto streamed = check(event);
        SLUICE_FUZZ_CHECK(streamed.has_value() == alone.has_value(), "a stream's checker: the same verdict");
        if (alone) {
          SLUICE_FUZZ_CHECK(streamed->generated == alone->generated && streamed->finished == alone->finished &&
                                streamed->usage_only == alone->usage_only,
                            "a stream's checker: the same accounting");
          SLUICE_FUZZ_CHECK(same_usage(streamed->usage, alone->usage), "a stream's checker: the same usage");
          SLUICE_FUZZ_CHECK(same_telemetry(streamed->telemetry, alone->telemetry),
                            "a stream's checker: the same telemetry");
        }
      }
      from = nl + 1;
    }
  }
  {
    rapidjson::Document d;
    d.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
    // Keys spelled with \u escapes are not worth a second pass; backends do not write them.
    if (!d.HasParseError() && body.find("\\u") == std::string_view::npos) {
      SLUICE_FUZZ_CHECK(same_usage(usage_from_doc(d), usage), "the usage pre-check finds every usage");
      const auto* choices = member(d, "choices");
      if (choices && choices->IsArray())
        for (const auto& c : choices->GetArray()) {
          const auto* f = member(c, "finish_reason");
          if (f && !f->IsNull())
            SLUICE_FUZZ_CHECK(info.finished, "the finish pre-check finds every finish_reason");
          for (const char* part : {"delta", "message"}) {
            const auto* text = member(c, part) ? member(*member(c, part), "content") : nullptr;
            if (text && text->IsString() && text->GetStringLength() > 0)
              SLUICE_FUZZ_CHECK(info.generated, "the text pre-check finds every generated text");
          }
        }
    }
  }

  // Qubrid's top-level shape becomes a chat.completion with the same usage.
  if (auto reshaped = normalize_completion(body, "public-model")) {
    check_completion(*reshaped, utf8, "a reshaped completion");
    SLUICE_FUZZ_CHECK(same_usage(usage_from_json(*reshaped), usage_from_json(body)) || !usage,
                      "reshaping keeps the usage");
    auto replay = stream_from_completion(Endpoint::chat_completions, *reshaped, include_usage);
    SLUICE_FUZZ_CHECK(replay.has_value(), "a reshaped completion can be replayed as a stream");
    check_replay(*replay, utf8, include_usage);
  }

  check_stream_conversions(endpoint, body, utf8, include_usage);
  return 0;
}
