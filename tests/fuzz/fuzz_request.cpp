// Fuzzes client request bodies: inspection for every endpoint, then (for a body that passes) the rewrites a
// request goes through on its way upstream, the prompt estimate and the completion limit. Whatever the
// client sent, what Sluice forwards must be a JSON object that Sluice itself would accept again.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "fuzz_check.hpp"
#include "openai/json.hpp"
#include "openai/request.hpp"

namespace {

using namespace sluice::openai;
namespace fz = sluice::fuzz;

// Deepest nesting of arrays/objects in a parsed value (iterative: the value may be hostile).
int depth_of(const rapidjson::Value& root) {
  int deepest = 0;
  std::vector<std::pair<const rapidjson::Value*, int>> todo{{&root, 0}};
  while (!todo.empty()) {
    auto [v, d] = todo.back();
    todo.pop_back();
    if (v->IsArray()) {
      deepest = std::max(deepest, d + 1);
      for (const auto& e : v->GetArray()) todo.emplace_back(&e, d + 1);
    } else if (v->IsObject()) {
      deepest = std::max(deepest, d + 1);
      for (const auto& m : v->GetObject()) todo.emplace_back(&m.value, d + 1);
    }
  }
  return deepest;
}

// Two JSON values are the same, numbers to within RapidJSON's own reading of long numbers: a rewrite through
// the document writes a double back in its shortest form, which the default reader may take an ulp apart.
bool same_value(const rapidjson::Value& a, const rapidjson::Value& b) {
  if (a.IsNumber() && b.IsNumber()) {
    if (a.IsUint64() && b.IsUint64()) return a.GetUint64() == b.GetUint64();
    if (a.IsInt64() && b.IsInt64()) return a.GetInt64() == b.GetInt64();
    const double x = a.GetDouble(), y = b.GetDouble();
    return x == y || std::fabs(x - y) <= 1e-12 * std::max(std::fabs(x), std::fabs(y));
  }
  if (a.GetType() != b.GetType()) return false;
  if (a.IsArray()) {
    if (a.Size() != b.Size()) return false;
    for (rapidjson::SizeType i = 0; i < a.Size(); ++i)
      if (!same_value(a[i], b[i])) return false;
    return true;
  }
  if (a.IsObject()) {  // member by member, in order (a nested object may repeat a name, and both ways keep order)
    if (a.MemberCount() != b.MemberCount()) return false;
    for (auto x = a.MemberBegin(), y = b.MemberBegin(); x != a.MemberEnd(); ++x, ++y)
      if (x->name != y->name || !same_value(x->value, y->value)) return false;
    return true;
  }
  return a == b;
}

// Sluice refuses bodies that are not UTF-8, so what it forwards must be UTF-8 too.
void check_rewrite(const ClientRequest& req, std::string_view body, const Rewrite& rw) {
  std::string out = rewrite_request(req, body, rw);
  rapidjson::Document d;
  fz::parse_output(d, out, true, "the rewritten request");
  SLUICE_FUZZ_CHECK(d.IsObject(), "the rewritten request is an object");

  // Sluice would accept its own rewrite, and it says what the rewrite promised.
  auto again = inspect_request(req.endpoint, out);
  if (auto* e = std::get_if<ApiError>(&again)) {
    std::fprintf(stderr, "rewrite refused: %s\n%s\n", e->message.c_str(), out.c_str());
    SLUICE_FUZZ_CHECK(false, "a rewritten request passes inspection");
  }
  const auto& r2 = std::get<ClientRequest>(again);
  SLUICE_FUZZ_CHECK(r2.model == rw.upstream_model, "the rewrite names the upstream model");
  SLUICE_FUZZ_CHECK(r2.stream == req.stream, "the rewrite keeps the client's stream choice");
  if (req.endpoint != Endpoint::embeddings)
    SLUICE_FUZZ_CHECK(r2.stream_explicit, "the rewrite states `stream` explicitly");
  SLUICE_FUZZ_CHECK(r2.include_usage == (req.include_usage || (rw.include_usage && req.stream)),
                    "include_usage is asked for exactly when the rewrite promised");
  if (rw.defaults)
    for (const auto& [k, v] : *rw.defaults)
      SLUICE_FUZZ_CHECK(r2.doc.HasMember(k.c_str()), "every default is present after the rewrite");
  // Whether made in the client's bytes or through the document: every member the rewrite does not own is
  // the client's, unchanged.
  for (const auto& m : req.doc.GetObject()) {
    const std::string_view k(m.name.GetString(), m.name.GetStringLength());
    if (k == "model" || k == "stream" || k == "stream_options") continue;
    if (rw.max_tokens_cap && (k == "max_tokens" || k == "max_completion_tokens")) continue;
    auto it = r2.doc.FindMember(m.name);
    SLUICE_FUZZ_CHECK(it != r2.doc.MemberEnd() && same_value(it->value, m.value),
                      "the rewrite keeps the client's members");
  }
  if (!rw.defaults)
    SLUICE_FUZZ_CHECK(r2.doc.MemberCount() <= req.doc.MemberCount() + 2, "the rewrite adds only what it owns");
  if (rw.max_tokens_cap) {
    auto limit = completion_limit(r2, 0);
    auto n = r2.doc.FindMember("n");
    bool many = n != r2.doc.MemberEnd() && n->value.IsNumber() && n->value.GetDouble() >= 2;
    if (!many && limit) SLUICE_FUZZ_CHECK(*limit <= rw.max_tokens_cap, "the cap holds after the rewrite");
  }
}

// The verdict on the JSON itself, as Sluice reached it before it checked bytes and depth while parsing in
// place: RapidJSON's validating reader over the body as it came, then the limits Sluice adds.
bool reference_accepts_json(std::string_view body) {
  if (body.find('\0') != std::string_view::npos) return false;
  if (!body.empty() && (static_cast<unsigned char>(body[0]) == 0xEF || static_cast<unsigned char>(body[0]) == 0xBB ||
                        static_cast<unsigned char>(body[0]) == 0xBF))
    return false;
  if (!json_depth_within(body)) return false;
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(body.data(), body.size());
  if (d.HasParseError() || !d.IsObject()) return false;
  auto surrogate = [](const rapidjson::Value& s) {
    const std::string_view t(s.GetString(), s.GetStringLength());
    for (std::size_t i = 0; i + 1 < t.size(); ++i)
      if (static_cast<unsigned char>(t[i]) == 0xED && static_cast<unsigned char>(t[i + 1]) >= 0xA0) return true;
    return false;
  };
  std::vector<const rapidjson::Value*> todo{&d};
  while (!todo.empty()) {
    const auto* v = todo.back();
    todo.pop_back();
    if (v->IsDouble() && !std::isfinite(v->GetDouble())) return false;
    if (v->IsString() && surrogate(*v)) return false;
    if (v->IsArray())
      for (const auto& e : v->GetArray()) todo.push_back(&e);
    if (v->IsObject())
      for (const auto& m : v->GetObject()) {
        if (surrogate(m.name)) return false;
        todo.push_back(&m.value);
      }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  static const std::vector<std::pair<std::string, std::string>> defaults{{"reasoning_effort", "low"},
                                                                         {"temperature", "0.2"},
                                                                         {"max_tokens", "512"},
                                                                         {"seed", "42"},
                                                                         {"parallel_tool_calls", "false"},
                                                                         {"user", "1e400"},
                                                                         {"top_k", "1.7976934348623157e308"}};

  const bool json_ok = reference_accepts_json(body);
  for (auto endpoint : {Endpoint::chat_completions, Endpoint::completions, Endpoint::embeddings}) {
    auto result = inspect_request(endpoint, body);
    const auto* refused = std::get_if<ApiError>(&result);
    SLUICE_FUZZ_CHECK(json_ok == !(refused && refused->code == "invalid_json"),
                      "the body is refused as JSON exactly when RapidJSON's validating reader refuses it");
    if (auto* e = std::get_if<ApiError>(&result)) {
      SLUICE_FUZZ_CHECK(e->status == 400, "a refused body is a 400");
      SLUICE_FUZZ_CHECK(!e->message.empty(), "a refusal says why");
      continue;
    }
    const auto& req = std::get<ClientRequest>(result);
    // The members found while parsing are the ones a search of the document finds.
    {
      using T = ClientRequest::Top;
      const std::pair<T, const char*> tops[] = {
          {T::model, "model"}, {T::messages, "messages"}, {T::prompt, "prompt"}, {T::input, "input"},
          {T::tools, "tools"}, {T::stream, "stream"}, {T::stream_options, "stream_options"},
          {T::max_tokens, "max_tokens"}, {T::max_completion_tokens, "max_completion_tokens"}, {T::n, "n"}};
      for (const auto& [t, name] : tops)
        SLUICE_FUZZ_CHECK(req.top(t) == member(req.doc, name), "a top-level member is found where a search finds it");
    }
    SLUICE_FUZZ_CHECK(req.doc.IsObject(), "an accepted body is an object");
    SLUICE_FUZZ_CHECK(!req.model.empty(), "an accepted body names a model");
    SLUICE_FUZZ_CHECK(fz::valid_utf8(body), "an accepted body is UTF-8");
    SLUICE_FUZZ_CHECK(depth_of(req.doc) <= kMaxJsonDepth, "an accepted body nests at most kMaxJsonDepth");
    SLUICE_FUZZ_CHECK(!req.include_usage || req.stream, "include_usage only on streams");
    SLUICE_FUZZ_CHECK(!(endpoint == Endpoint::embeddings && req.stream), "embeddings never stream");

    auto tokens = estimate_prompt_tokens(req);
    SLUICE_FUZZ_CHECK(tokens <= size + 4 * size, "the prompt estimate is bounded by the body's size");
    for (std::uint64_t cap :
         {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{4096}, std::uint64_t{UINT32_MAX}}) {
      auto limit = completion_limit(req, cap);
      if (cap) {
        SLUICE_FUZZ_CHECK(limit.has_value(), "a cap always gives a limit");
        SLUICE_FUZZ_CHECK(*limit <= cap * 128, "the cap holds for every choice");
      }
    }

    // An unchanged model and nothing to add: only an explicit `stream` may be added.
    std::string same = rewrite_request(req, body, req.model);
    if (req.stream_explicit || endpoint == Endpoint::embeddings)
      SLUICE_FUZZ_CHECK(same == body, "a body that needs no change is forwarded byte for byte");
    check_rewrite(req, body, Rewrite{req.model});
    check_rewrite(req, body, Rewrite{"upstream/model-1", true});
    check_rewrite(req, body, Rewrite{"m", false, &defaults});
    check_rewrite(req, body, Rewrite{"openai/gpt-oss-120b", true, &defaults, 256});
    check_rewrite(req, body, Rewrite{"x", false, nullptr, 1});
  }
  return 0;
}
