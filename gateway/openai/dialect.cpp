#include "openai/dialect.hpp"

#include <rapidjson/document.h>
#include <rapidjson/reader.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "openai/json.hpp"
#include "openai/request.hpp"
#include "same_bytes.hpp"

namespace sluice::openai {

std::string default_health_path(Dialect d, std::string_view base_path) {
  switch (d) {
    case Dialect::vllm:
    case Dialect::sglang:
    case Dialect::llamacpp:
    case Dialect::tgi:
    case Dialect::simulator:
      return "/health";
    case Dialect::openai:
    case Dialect::qubrid:
      break;
  }
  return std::string(base_path) + "/models";
}

namespace {

using Value = rapidjson::Value;

std::optional<double> number(const Value* obj, const char* name) {
  if (!obj) return std::nullopt;
  const Value* v = member(*obj, name);
  if (!v || !v->IsNumber()) return std::nullopt;
  return v->GetDouble();
}

// True when `"field":"` occurs in `data` followed by at least one character of text.
bool has_text(std::string_view data, std::string_view field) {
  return any_member_value(data, field,
                          [](std::string_view v) { return v.size() > 1 && v[0] == '"' && v[1] != '"'; });
}

// True when `"field":` occurs in `data` with a value other than null.
bool has_non_null(std::string_view data, std::string_view field) {
  return any_member_value(data, field, [](std::string_view v) { return !v.empty() && v[0] != 'n'; });
}

void read_telemetry_from(const Value& doc, BackendTelemetry& t) {
  if (const Value* x = member(doc, "x_metrics")) {  // Qubrid (OpenAI-shaped replies)
    t.tokens_per_second = number(x, "tps");
    if (auto ttft = number(x, "ttft_seconds")) t.ttft_ms = *ttft * 1000;
  }
  if (const Value* m = member(doc, "metrics")) {  // Qubrid (top-level shape), vLLM per-request metrics
    if (auto tps = number(m, "tps")) t.tokens_per_second = tps;
    if (auto tps = number(m, "tokens_per_second")) t.tokens_per_second = tps;
    if (auto ttft = number(m, "time_to_first_token_ms")) t.ttft_ms = ttft;
  }
  if (const Value* tm = member(doc, "timings")) {  // llama.cpp
    if (auto tps = number(tm, "predicted_per_second")) t.tokens_per_second = tps;
    if (auto ms = number(tm, "prompt_ms")) t.ttft_ms = ms;
  }
}

}  // namespace

std::optional<std::string> normalize_completion(std::string_view body, std::string_view model) {
  if (body.find("\"choices\"") != std::string_view::npos) return std::nullopt;  // already OpenAI's shape
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
  const Value* content = member(doc, "content");
  const Value* message = member(doc, "message");
  if (message && message->IsObject()) content = member(*message, "content");
  if (!content || !(content->IsString() || content->IsNull())) return std::nullopt;

  const Value* reasoning = nullptr;
  for (const Value* src : {message, static_cast<const Value*>(&doc)})
    if (src && src->IsObject())
      for (const char* name : {"reasoning_content", "reasoning"})
        if (!reasoning)
          if (const Value* r = member(*src, name); r && r->IsString()) reasoning = r;

  auto usage = usage_from_doc(doc);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  auto str = [&](std::string_view s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); };
  w.StartObject();
  w.Key("id");
  if (const Value* id = member(doc, "id"); id && id->IsString())
    str(id->GetString());
  else
    str("chatcmpl-sluice");
  w.Key("object");
  str("chat.completion");
  w.Key("created");
  w.Int64(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  w.Key("model");
  if (const Value* m = member(doc, "model"); m && m->IsString())
    str(m->GetString());
  else
    str(model);
  w.Key("choices");
  w.StartArray();
  w.StartObject();
  w.Key("index");
  w.Int(0);
  w.Key("message");
  w.StartObject();
  w.Key("role");
  str("assistant");
  w.Key("content");
  if (content->IsString())
    str(std::string_view(content->GetString(), content->GetStringLength()));
  else
    w.Null();
  if (reasoning) {
    w.Key("reasoning_content");
    str(std::string_view(reasoning->GetString(), reasoning->GetStringLength()));
  }
  w.EndObject();
  w.Key("finish_reason");
  if (const Value* f = member(doc, "finish_reason"); f && f->IsString())
    str(f->GetString());
  else
    str("stop");
  w.EndObject();
  w.EndArray();
  if (usage) {
    w.Key("usage");
    w.StartObject();
    w.Key("prompt_tokens");
    w.Uint64(usage->prompt_tokens);
    w.Key("completion_tokens");
    w.Uint64(usage->completion_tokens);
    w.Key("total_tokens");
    w.Uint64(usage->prompt_tokens + usage->completion_tokens);
    w.EndObject();
  }
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

BackendTelemetry read_telemetry(std::string_view json) { return inspect_chunk(json).telemetry; }

namespace {

// Usage and telemetry, read from a document only when a chunk may carry them.
void read_usage_and_telemetry(std::string_view data, bool may_have_usage, ChunkInfo& info) {
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(data.data(), data.size());
  if (doc.HasParseError() || !doc.IsObject()) return;
  if (may_have_usage) {
    info.usage = usage_from_doc(doc);
    const Value* choices = member(doc, "choices");
    info.usage_only = info.usage && choices && choices->IsArray() && choices->Empty();
  }
  read_telemetry_from(doc, info.telemetry);
}

}  // namespace

ChunkInfo inspect_chunk(std::string_view data) {
  ChunkInfo info;
  info.generated = has_text(data, "\"content\"") || has_text(data, "\"reasoning_content\"") ||
                   has_text(data, "\"reasoning\"") || has_text(data, "\"text\"") ||
                   data.find("\"tool_calls\"") != std::string_view::npos;
  info.finished = has_non_null(data, "\"finish_reason\"");
  bool may_have_usage = may_carry_usage(data);
  bool may_have_telemetry =
      data.find("\"timings\"") != std::string_view::npos || data.find("metrics\"") != std::string_view::npos;
  if (!may_have_usage && !may_have_telemetry) return info;  // the common chunk: no parse at all
  read_usage_and_telemetry(data, may_have_usage, info);
  return info;
}

namespace {

// Accepts any value; only nesting is bounded (RapidJSON's iterative parser does not recurse).
struct Validator : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, Validator> {
  int depth = 0;
  bool Default() { return true; }
  bool StartObject() { return ++depth <= kMaxJsonDepth; }
  bool EndObject(rapidjson::SizeType) { return --depth >= 0; }
  bool StartArray() { return ++depth <= kMaxJsonDepth; }
  bool EndArray(rapidjson::SizeType) { return --depth >= 0; }
};

}  // namespace

bool is_json_object(std::string_view json) {
  std::size_t i = 0;
  while (i < json.size() && (json[i] == ' ' || json[i] == '\t' || json[i] == '\r' || json[i] == '\n')) ++i;
  if (i == json.size() || json[i] != '{') return false;
  if (json.find('\0') != std::string_view::npos) return false;  // RapidJSON would stop at it and accept the rest
  rapidjson::Reader reader;
  rapidjson::MemoryStream ms(json.data(), json.size());
  Validator v;
  return !reader.Parse<rapidjson::kParseIterativeFlag>(ms, v).IsError();
}

namespace {

// One pass over a chunk: validates it as a JSON object and notes the members the relay's accounting reads.
// `unsure` hands the chunk to RapidJSON (a \u escape, an exponent or a number of more than 15 digits, where
// RapidJSON's own limits decide); for every other input the verdict is the grammar's, which is RapidJSON's.
using detail::ChunkScan;
using detail::ScanCheckpoint;

bool is_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// `key` is `word`, a literal: a compare of a known length, made in place (same_bytes).
template <std::size_t N>
[[gnu::always_inline]] inline bool is(std::string_view key, const char (&word)[N]) {
  return key.size() == N - 1 && same_bytes(key.data(), word, N - 1);
}
template <std::size_t N>
[[gnu::always_inline]] inline bool ends_with(std::string_view key, const char (&word)[N]) {
  return key.size() >= N - 1 && same_bytes(key.data() + key.size() - (N - 1), word, N - 1);
}

// The first byte at or after p that is not JSON whitespace. Most places have none: one compare.
[[gnu::always_inline]] inline const char* skip_space(const char* p, const char* end) {
  while (p < end && static_cast<unsigned char>(*p) <= ' ' && is_space(*p)) ++p;
  return p;
}

static_assert(std::endian::native == std::endian::little, "scan_chunk reads strings as little-endian words");

// A string from its opening quote: the byte after its closing quote, or nullptr when malformed; `unsure`
// set for a \u escape. The cursor goes in and out by value so the caller keeps it in a register.
[[gnu::always_inline]] inline const char* scan_string(const char* p, const char* end, bool& unsure) {
  ++p;
  for (;;) {
    // To the next quote, backslash or control character: sixteen (SSE2) or eight bytes at a time, then the tail.
    bool found = false;
#if defined(__SSE2__)
    const __m128i quotes = _mm_set1_epi8('"'), backslashes = _mm_set1_epi8('\\'), controls = _mm_set1_epi8(0x1f);
    while (end - p >= 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      // A byte below 0x20 is one whose unsigned minimum with 0x1f is itself.
      const __m128i special = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quotes), _mm_cmpeq_epi8(v, backslashes)),
                                           _mm_cmpeq_epi8(_mm_min_epu8(v, controls), v));
      if (const auto mask = static_cast<unsigned>(_mm_movemask_epi8(special))) {
        p += std::countr_zero(mask);
        found = true;
        break;
      }
      p += 16;
    }
#endif
    while (!found && end - p >= 8) {
      std::uint64_t v;
      std::memcpy(&v, p, sizeof v);
      const std::uint64_t special = json_special_bytes(v);
      if (special) {
        p += std::countr_zero(special) / 8;  // little-endian: the lowest byte comes first in memory
        found = true;
        break;
      }
      p += 8;
    }
    if (!found) {
      while (p < end && static_cast<unsigned char>(*p) >= 0x20 && *p != '"' && *p != '\\') ++p;
      if (p == end) return nullptr;
    }
    const auto c = static_cast<unsigned char>(*p);
    if (c == '"') return p + 1;
    if (c < 0x20) return nullptr;
    // A backslash: one escape.
    if (++p == end) return nullptr;
    switch (*p) {
      case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
      case 'u': unsure = true; break;
      default: return nullptr;
    }
    ++p;
  }
}

// A number from its first byte: the byte after it, or nullptr when malformed; `unsure` set where
// RapidJSON's own limits decide (an exponent, more digits than a double holds exactly).
[[gnu::always_inline]] inline const char* scan_number(const char* p, const char* end, bool& unsure) {
  const char* start = p;
  if (*p == '-') ++p;
  if (p == end || *p < '0' || *p > '9') return nullptr;
  if (*p == '0') ++p;
  else
    while (p < end && *p >= '0' && *p <= '9') ++p;
  if (p < end && *p == '.') {
    if (++p == end || *p < '0' || *p > '9') return nullptr;
    while (p < end && *p >= '0' && *p <= '9') ++p;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    unsure = true;  // RapidJSON's range decides
    if (++p < end && (*p == '+' || *p == '-')) ++p;
    if (p == end || *p < '0' || *p > '9') return nullptr;
    while (p < end && *p >= '0' && *p <= '9') ++p;
  }
  if (p - start > 15) unsure = true;  // beyond double's exact digits: RapidJSON decides
  return p;
}

// `cp` (for a stream's events, in order): where the chunk starts with the checkpoint's prefix, the scan resumes
// from the state it saved; else the state at the chunk's first generated-text value is saved in it. The state
// there depends on the bytes before it alone (no look-ahead reaches past a key's colon), so a resumed scan
// ends exactly as a whole one would.
// Where a chunk's first generated text (a string) ended, for the checkpoint's record of what follows it.
struct AfterText {
  const char* at = nullptr;    // the byte after the string's closing quote; nullptr: no such string
  bool generated = false;      // `generated` up to there (the scan goes on from false, to tell the rest's part)
  bool unsure = false;
};

ChunkScan scan_chunk(std::string_view json, ScanCheckpoint* cp, AfterText& after_text) {
  using V = ChunkScan::Verdict;
  ChunkScan out;
  const char* p = json.data();
  const char* const end = p + json.size();
  bool in_object[kMaxJsonDepth + 1];
  int depth = 0;
  enum class Watch {
    none, text, tool_calls, finish_reason, usage, metrics, telemetry, top_usage, top_choices, prompt, completion
  } watch = Watch::none;
  int usage_depth = 0;  // while inside the top-level usage object: its depth (2)
  bool usage_keyed = false;
  bool unsure = false;
  bool checked = cp == nullptr;  // the checkpoint was used or saved: once a chunk
  bool at_text = false;          // p is at the checkpoint's value
  auto literal = [&]<std::size_t N>(const char (&word)[N]) -> bool {
    if (static_cast<std::size_t>(end - p) < N - 1 || !same_bytes(p, word, N - 1)) return false;
    p += N - 1;
    return true;
  };
  // The member a key names, wherever it is; "choices", "prompt_tokens" and "completion_tokens" as the watches
  // they are at their places (top level, the top-level usage), which the caller checks.
  auto classify = [](std::string_view key) {
    // By length first: most member names ("id", "object", "index", "delta", ...) are settled by one compare;
    // a longer one may still end in "metrics" ("x_metrics", vLLM's "request_metrics"). Each compare is of a
    // known length, made in place (no call).
    switch (key.size()) {
      case 4: return is(key, "text") ? Watch::text : Watch::none;
      case 5: return is(key, "usage") ? Watch::usage : Watch::none;
      case 7:
        if (is(key, "content")) return Watch::text;
        if (is(key, "choices")) return Watch::top_choices;
        if (is(key, "metrics")) return Watch::metrics;
        return is(key, "timings") ? Watch::telemetry : Watch::none;
      case 9:
        if (is(key, "reasoning")) return Watch::text;
        break;  // "x_metrics"
      case 10:
        if (is(key, "tool_calls")) return Watch::tool_calls;
        break;
      case 13:
        if (is(key, "finish_reason")) return Watch::finish_reason;
        if (is(key, "prompt_tokens")) return Watch::prompt;
        break;
      case 17:
        if (is(key, "reasoning_content")) return Watch::text;
        if (is(key, "completion_tokens")) return Watch::completion;
        break;
      default: break;
    }
    if (key.size() > 7 && ends_with(key, "metrics")) return Watch::telemetry;
    return Watch::none;
  };

  if (cp && cp->offset > 0 && json.size() > cp->offset && std::memcmp(json.data(), cp->prefix, cp->offset) == 0) {
    out = cp->out;
    depth = cp->depth;
    std::copy(cp->in_object + 1, cp->in_object + depth + 1, in_object + 1);  // [0] is never used
    usage_depth = cp->usage_depth;
    usage_keyed = cp->usage_keyed;
    unsure = cp->unsure;
    watch = Watch::text;
    // The value may start later in this chunk than in the one the checkpoint came from: ": \"b\"" after ":\"a\"".
    p = skip_space(json.data() + cp->offset, end);
    if (p == end) return out;
    checked = at_text = true;
    goto value_begins;
  }
  p = skip_space(p, end);
  if (p == end || *p != '{') return out;
  // value: p at the first byte of a value
value:
  p = skip_space(p, end);
  if (p == end) return out;
  if (watch == Watch::text && !checked) {
    checked = true;
    const auto at = static_cast<std::size_t>(p - json.data());
    if (at <= ScanCheckpoint::kMaxPrefix && depth <= ScanCheckpoint::kMaxDepth) {
      cp->offset = at;
      std::memcpy(cp->prefix, json.data(), at);
      cp->out = out;
      std::copy(in_object + 1, in_object + depth + 1, cp->in_object + 1);
      cp->depth = depth;
      cp->usage_depth = usage_depth;
      cp->usage_keyed = usage_keyed;
      cp->unsure = unsure;
      cp->suffix_size = 0;  // a new envelope: what followed the old one's text says nothing of this one
      at_text = true;
    }
  }
value_begins:
  switch (watch) {  // the member just keyed, seen at its value's first byte
    case Watch::none: break;
    case Watch::text: out.generated |= *p == '"' && p + 1 < end && p[1] != '"'; break;
    case Watch::tool_calls: out.generated = true; break;
    case Watch::finish_reason: out.finished |= *p != 'n'; break;
    case Watch::usage: out.usage |= *p == '{'; break;
    case Watch::metrics: out.usage = out.telemetry = true; break;
    case Watch::telemetry: out.telemetry = true; break;
    case Watch::top_usage:
      usage_keyed = true;  // the first top-level "usage" is the one usage_from_doc reads, whatever it holds
      out.usage |= *p == '{';
      if (*p == '{') {
        out.top_usage = true;
        usage_depth = depth + 1;
      }
      break;
    case Watch::top_choices:
      out.choices_empty = *p == '[' && [&] {
        const char* q = p + 1;
        while (q < end && is_space(*q)) ++q;
        return q < end && *q == ']';
      }();
      break;
    case Watch::prompt:
    case Watch::completion: {
      auto& count = watch == Watch::prompt ? out.prompt_tokens : out.completion_tokens;
      std::uint64_t n = 0;
      const char* q = p;
      while (q < end && *q >= '0' && *q <= '9' && q - p < 16) n = n * 10 + static_cast<std::uint64_t>(*q++ - '0');
      const bool is_number = *p == '-' || (*p >= '0' && *p <= '9');
      if (!is_number)
        count = 0;  // not a number: usage_from_doc counts 0
      else if (q - p > 15 || q == p || (q < end && (*q == '.' || *q == 'e' || *q == 'E')) || (*p == '0' && q - p > 1))
        out.counts_plain = false;
      else
        count = n;
      break;
    }
  }
  watch = Watch::none;
  at_text = at_text && *p == '"';  // only a string's end is recorded
  switch (*p) {
    case '{':
    case '[':
      if (++depth > kMaxJsonDepth) return out;
      in_object[depth] = *p == '{';
      p = skip_space(p + 1, end);
      if (p < end && *p == (in_object[depth] ? '}' : ']')) {
        ++p;
        if (depth == usage_depth) usage_depth = 0;  // "usage":{}
        --depth;
        goto after;
      }
      if (in_object[depth]) goto key;
      goto value;
    case '"':
      if (!(p = scan_string(p, end, unsure))) return out;
      if (at_text) {  // the checkpoint's text value has ended
        at_text = false;
        // (An event whose bytes from here to its end are the last one's never gets here: StreamChunkChecker
        // lets the last verdict stand before it scans.)
        after_text = AfterText{p, out.generated, unsure};
        out.generated = false;
      }
      goto after;
    case 't':
      if (!literal("true")) return out;
      goto after;
    case 'f':
      if (!literal("false")) return out;
      goto after;
    case 'n':
      if (!literal("null")) return out;
      goto after;
    default:
      if (!(p = scan_number(p, end, unsure))) return out;
      goto after;
  }
key:
  p = skip_space(p, end);
  if (p == end || *p != '"') return out;
  {
    const char* name = p + 1;
    if (!(p = scan_string(p, end, unsure))) return out;
    const std::string_view key(name, static_cast<std::size_t>(p - 1 - name));
    watch = classify(key);
    switch (watch) {  // the members watched only at their places, the first time
      case Watch::usage:
        if (depth == 1 && !usage_keyed) watch = Watch::top_usage;
        break;
      case Watch::top_choices:
        if (depth != 1 || out.choices_empty) watch = Watch::none;
        break;
      case Watch::prompt:
        if (depth != usage_depth || out.prompt_tokens) watch = Watch::none;
        break;
      case Watch::completion:
        if (depth != usage_depth || out.completion_tokens) watch = Watch::none;
        break;
      default: break;
    }
  }
  p = skip_space(p, end);
  if (p == end || *p != ':') return out;
  ++p;
  goto value;
after:
  p = skip_space(p, end);
  if (depth == 0) {
    if (p != end) return out;  // one value only (a NUL or anything else after it is not JSON)
    out.verdict = unsure ? V::unsure : V::valid;
    return out;
  }
  if (p == end) return out;
  if (*p == ',') {
    ++p;
    if (in_object[depth]) goto key;
    goto value;
  }
  if (*p == (in_object[depth] ? '}' : ']')) {
    ++p;
    if (depth == usage_depth) usage_depth = 0;  // the top-level usage object ends
    --depth;
    goto after;
  }
  return out;
}

}  // namespace

namespace {

std::optional<ChunkInfo> chunk_info(const ChunkScan& scan, std::string_view data) {
  if (scan.verdict == ChunkScan::Verdict::invalid) return std::nullopt;
  if (scan.verdict == ChunkScan::Verdict::unsure) {
    if (!is_json_object(data)) return std::nullopt;
    return inspect_chunk(data);
  }
  ChunkInfo info;
  info.generated = scan.generated;
  info.finished = scan.finished;
  info.has_choices = scan.choices_empty.has_value();  // set where a top-level "choices" was keyed
  if (scan.usage && scan.top_usage && scan.counts_plain && !scan.telemetry) {
    // The usual usage chunk or whole answer: its counts were read on the way, no document needed.
    info.usage = Usage{scan.prompt_tokens.value_or(0), scan.completion_tokens.value_or(0)};
    info.usage_only = scan.choices_empty.value_or(false);
    return info;
  }
  if (scan.usage || scan.telemetry) read_usage_and_telemetry(data, scan.usage, info);
  return info;
}

}  // namespace

std::optional<ChunkInfo> inspect_stream_chunk(std::string_view data) {
  AfterText unused;
  return chunk_info(scan_chunk(data, nullptr, unused), data);
}

std::optional<ChunkInfo> StreamChunkChecker::operator()(std::string_view data) {
  auto& cp = checkpoint_;
  // Nearly every token event: the bytes before its text and the bytes after it are the last event's. That is
  // the case where scan_chunk resumes and lets the last verdict stand, taken here without setting up a scan:
  // compare both ends, then read the text string between them.
  if (cp.offset > 0 && cp.suffix_size > 0 && data.size() > cp.offset + cp.suffix_size &&
      std::memcmp(data.data(), cp.prefix, cp.offset) == 0 &&
      std::memcmp(data.data() + data.size() - cp.suffix_size, cp.suffix, cp.suffix_size) == 0) {
    const char* const text_end = data.data() + data.size() - cp.suffix_size;
    const char* p = skip_space(data.data() + cp.offset, text_end);
    bool unsure = cp.unsure;
    if (p < text_end && *p == '"') {
      const bool text = p + 1 < text_end && p[1] != '"';
      // Read to the data's end (sixteen bytes at a time): the string must close exactly where the suffix starts.
      if (scan_string(p, data.data() + data.size(), unsure) == text_end && unsure == cp.unsure_after_text) {
        ChunkScan scan = cp.final_out;
        scan.generated = cp.out.generated || text || cp.suffix_generated;
        return chunk_info(scan, data);
      }
    }
  }
  AfterText after_text;
  ChunkScan scan = scan_chunk(data, &checkpoint_, after_text);
  if (after_text.at) {  // scanned past the checkpoint's text: what followed it is kept for the next chunk
    const auto rest = static_cast<std::size_t>(data.data() + data.size() - after_text.at);
    cp.suffix_size = 0;
    if (rest > 0 && rest <= ScanCheckpoint::kMaxSuffix) {
      cp.suffix_size = rest;
      std::memcpy(cp.suffix, after_text.at, rest);
      cp.final_out = scan;
      cp.suffix_generated = scan.generated;
      cp.unsure_after_text = after_text.unsure;
    }
    scan.generated = scan.generated || after_text.generated;
  }
  return chunk_info(scan, data);
}

}  // namespace sluice::openai
