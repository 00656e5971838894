#include "openai/request.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "openai/errors.hpp"
#include "openai/json.hpp"

namespace sluice::openai {

std::string_view to_string(Endpoint e) {
  switch (e) {
    case Endpoint::chat_completions:
      return "chat/completions";
    case Endpoint::completions:
      return "completions";
    case Endpoint::embeddings:
      return "embeddings";
  }
  return "chat/completions";
}

std::optional<Endpoint> endpoint_for_path(std::string_view path) {
  if (path == "/v1/chat/completions") return Endpoint::chat_completions;
  if (path == "/v1/completions") return Endpoint::completions;
  if (path == "/v1/embeddings") return Endpoint::embeddings;
  return std::nullopt;
}

namespace {

ApiError missing(const char* field) {
  return invalid_request(std::string("you must provide a '") + field + "' parameter", field,
                         "missing_required_parameter");
}

// True when a string in `v` (a value or a member name) holds a UTF-16 surrogate. The body's bytes are
// checked as UTF-8 while parsing, but RapidJSON decodes a lone "\udc00" escape into bytes that are not
// (ED B0 80), and a rewrite would write them out raw. Recursive: the depth is bounded before parsing.
bool has_surrogate(const rapidjson::Value& v) {
  auto in = [](const rapidjson::Value& s) {
    const char* p = s.GetString();
    const char* end = p + s.GetStringLength();
    // In UTF-8, ED A0..BF starts U+D800..U+DFFF; every other code point's bytes passed validation.
    while ((p = static_cast<const char*>(std::memchr(p, '\xED', static_cast<std::size_t>(end - p)))))
      if (++p < end && static_cast<unsigned char>(*p) >= 0xA0) return true;
    return false;
  };
  if (v.IsString()) return in(v);
  if (v.IsArray())
    for (const auto& e : v.GetArray())
      if (has_surrogate(e)) return true;
  if (v.IsObject())
    for (const auto& m : v.GetObject())
      if (in(m.name) || has_surrogate(m.value)) return true;
  return false;
}

}  // namespace

bool json_depth_within(std::string_view json, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

std::variant<ClientRequest, ApiError> inspect_request(Endpoint endpoint, std::string_view body) {
  // Chunks of about what the document will need (its strings are copies of the body's, plus ~24 bytes a value).
  ClientRequest req(std::clamp<std::size_t>(body.size() * 2, ClientRequest::kDocumentChunk, 64u << 10));
  req.endpoint = endpoint;
  auto& doc = req.doc;
  if (!json_depth_within(body))
    return invalid_request("the JSON body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels",
                           std::nullopt, "invalid_json");
  // RapidJSON takes a NUL byte for the end of the input: `{...}\0<anything>` would pass, and go upstream
  // whole when nothing needs rewriting. JSON has no raw NUL anywhere.
  if (body.find('\0') != std::string_view::npos)
    return invalid_request("the JSON body contains a NUL byte", std::nullopt, "invalid_json");
  // RapidJSON skips a leading byte-order mark, or any of its three bytes alone, without a word; the body
  // would then go upstream with them (and Python's json refuses even a whole BOM).
  if (!body.empty() &&
      (static_cast<unsigned char>(body[0]) == 0xEF || static_cast<unsigned char>(body[0]) == 0xBB ||
       static_cast<unsigned char>(body[0]) == 0xBF))
    return invalid_request("the JSON body starts with a byte-order mark or invalid UTF-8", std::nullopt,
                           "invalid_json");
  // Invalid UTF-8 is refused here rather than passed to a backend that may choke on it mid-generation.
  // Not kParseFullPrecisionFlag: RapidJSON 1.1's full-precision reader indexes past its table of powers of
  // ten for numbers beyond the double range, and one `"temperature":1.8642975318642975e-341` crashed the
  // worker. The default reader is exact for the numbers clients send (up to 15 digits, integers to 2^64).
  doc.Parse<rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(body.data(), body.size());
  if (doc.HasParseError()) {
    return invalid_request(std::string("we could not parse the JSON body of your request (") +
                               rapidjson::GetParseError_En(doc.GetParseError()) + " at offset " +
                               std::to_string(doc.GetErrorOffset()) + ")",
                           std::nullopt, "invalid_json");
  }
  if (!doc.IsObject())
    return invalid_request("the request body must be a JSON object", std::nullopt, "invalid_json");
  // A number beyond the double range reads as inf, and a rewrite would send JSON cut short at it.
  if (!finite_numbers(doc))
    return invalid_request("a number in the JSON body is too large", std::nullopt, "invalid_json");
  if (has_surrogate(doc))
    return invalid_request("the JSON body escapes a lone UTF-16 surrogate, which is not a character",
                           std::nullopt, "invalid_json");
  // A repeated member would let Sluice act on one value while the backend (which keeps the last) acts on
  // another.
  {
    std::vector<std::string_view> names;  // sorted, so a body with many members costs n log n, not n²
    names.reserve(doc.MemberCount());
    for (const auto& m : doc.GetObject()) names.emplace_back(m.name.GetString(), m.name.GetStringLength());
    std::sort(names.begin(), names.end());
    if (auto dup = std::adjacent_find(names.begin(), names.end()); dup != names.end())
      return invalid_request("the member '" + std::string(*dup) + "' appears more than once",
                             std::string(*dup), "duplicate_parameter");
  }

  const auto* model = member(doc, "model");
  if (!model) return missing("model");
  if (!model->IsString() || model->GetStringLength() == 0)
    return invalid_request("'model' must be a non-empty string", "model", "invalid_type");
  req.model.assign(model->GetString(), model->GetStringLength());

  switch (endpoint) {
    case Endpoint::chat_completions: {
      const auto* messages = member(doc, "messages");
      if (!messages) return missing("messages");
      if (!messages->IsArray() || messages->Empty())
        return invalid_request("'messages' must be a non-empty array", "messages", "invalid_type");
      for (const auto& m : messages->GetArray())
        if (!m.IsObject() || !member(m, "role") || !(*member(m, "role")).IsString())
          return invalid_request("each message must be an object with a string 'role'", "messages",
                                 "invalid_type");
      break;
    }
    case Endpoint::completions:
      if (!member(doc, "prompt")) return missing("prompt");
      break;
    case Endpoint::embeddings:
      if (!member(doc, "input")) return missing("input");
      break;
  }

  if (const auto* stream = member(doc, "stream")) {
    if (!stream->IsBool() && !stream->IsNull())
      return invalid_request("'stream' must be a boolean", "stream", "invalid_type");
    req.stream_explicit = stream->IsBool();
    req.stream = stream->IsBool() && stream->GetBool();
  }
  if (endpoint == Endpoint::embeddings && req.stream)
    return invalid_request("embeddings cannot be streamed", "stream", "invalid_value");
  if (const auto* opts = member(doc, "stream_options"); opts && !opts->IsNull()) {
    if (!opts->IsObject())
      return invalid_request("'stream_options' must be an object", "stream_options", "invalid_type");
    if (!req.stream)
      return invalid_request("'stream_options' is only allowed when 'stream' is true", "stream_options",
                             "invalid_value");
    if (const auto* iu = member(*opts, "include_usage")) {
      if (!iu->IsBool())
        return invalid_request("'stream_options.include_usage' must be a boolean",
                               "stream_options.include_usage", "invalid_type");
      req.include_usage = iu->GetBool();
    }
  }
  return req;
}

namespace {

std::uint64_t string_chars(const rapidjson::Value& v) {
  if (v.IsString()) return v.GetStringLength();
  std::uint64_t n = 0;
  if (v.IsArray())
    for (const auto& e : v.GetArray()) n += string_chars(e);
  else if (v.IsObject())
    for (const auto& m : v.GetObject()) n += string_chars(m.value);
  return n;
}

bool needs_cap(const rapidjson::Value& doc, const char* field, std::uint64_t cap) {
  auto it = doc.FindMember(field);
  return it != doc.MemberEnd() && it->value.IsNumber() && it->value.GetDouble() > static_cast<double>(cap);
}

// A default's YAML text as a JSON value: integers and decimals as numbers, true/false as booleans.
rapidjson::Value default_value(const std::string& text, rapidjson::Document::AllocatorType& alloc) {
  if (text == "true" || text == "false") return rapidjson::Value(text == "true");
  rapidjson::Document num;
  num.Parse(text.c_str(), text.size());
  if (!text.empty() && !num.HasParseError() && num.IsNumber() && finite_numbers(num))
    return rapidjson::Value(num, alloc);
  return rapidjson::Value(text.c_str(), static_cast<rapidjson::SizeType>(text.size()), alloc);
}

// Where the top-level members a rewrite touches sit in the client's bytes.
struct TopSpans {
  std::optional<std::pair<std::size_t, std::size_t>> model, stream, stream_options;  // value [begin, end)
  std::size_t close = 0;  // the object's closing brace
};

bool json_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

// Reads the top level of a body inspect_request accepted (one JSON object, no duplicate members). False when
// a member name is escaped: its bytes would not be its name, so only the document can be trusted then.
bool top_spans(std::string_view json, TopSpans& out) {
  std::size_t i = 0;
  const std::size_t n = json.size();
  auto skip_space = [&] {
    while (i < n && json_space(json[i])) ++i;
  };
  auto skip_string = [&] {  // from the opening quote to just past the closing one
    for (++i; i < n && json[i] != '"'; ++i)
      if (json[i] == '\\') ++i;
    ++i;
  };
  skip_space();
  if (i >= n || json[i] != '{') return false;
  ++i;
  for (;;) {
    skip_space();
    if (i >= n) return false;
    if (json[i] == '}') {
      out.close = i;
      return true;
    }
    if (json[i] == ',') {
      ++i;
      continue;
    }
    if (json[i] != '"') return false;
    const std::size_t key_begin = i + 1;
    skip_string();
    const std::string_view key = json.substr(key_begin, i - 1 - key_begin);
    if (key.find('\\') != std::string_view::npos) return false;
    skip_space();
    if (i >= n || json[i] != ':') return false;
    ++i;
    skip_space();
    const std::size_t value_begin = i;
    if (i < n && json[i] == '"') {
      skip_string();
    } else if (i < n && (json[i] == '{' || json[i] == '[')) {
      int depth = 0;
      for (; i < n; ++i) {
        if (json[i] == '"') {
          skip_string();
          --i;
        } else if (json[i] == '{' || json[i] == '[') {
          ++depth;
        } else if ((json[i] == '}' || json[i] == ']') && --depth == 0) {
          ++i;
          break;
        }
      }
    } else {
      while (i < n && json[i] != ',' && json[i] != '}' && !json_space(json[i])) ++i;
    }
    const auto span = std::make_pair(value_begin, i);
    if (key == "model") out.model = span;
    else if (key == "stream") out.stream = span;
    else if (key == "stream_options") out.stream_options = span;
  }
}

// The usual rewrites (the model's upstream name, an explicit `stream`, stream_options for usage) made in the
// client's own bytes: its formatting and numbers are kept as sent, and no document is copied or written.
// nullopt when the rewrite needs the document (defaults, a cap, existing stream_options, escaped names).
std::optional<std::string> splice_request(std::string_view original, bool model_changes, std::string_view model,
                                          bool stream_missing, bool stream, bool usage_missing) {
  TopSpans at;
  if (!top_spans(original, at) || (usage_missing && at.stream_options)) return std::nullopt;
  if (model_changes && !at.model) return std::nullopt;
  struct Edit {
    std::size_t begin, end;
    std::string text;
  };
  std::vector<Edit> edits;
  edits.reserve(3);
  if (model_changes) edits.push_back({at.model->first, at.model->second, json_quote(model)});
  std::string added;
  const char* stream_text = stream ? "true" : "false";
  if (stream_missing) {
    if (at.stream)
      edits.push_back({at.stream->first, at.stream->second, stream_text});  // a null: replaced in place
    else
      added += std::string(",\"stream\":") + stream_text;
  }
  if (usage_missing) added += ",\"stream_options\":{\"include_usage\":true}";
  if (!added.empty()) edits.push_back({at.close, at.close, std::move(added)});
  std::sort(edits.begin(), edits.end(), [](const Edit& a, const Edit& b) { return a.begin < b.begin; });
  std::string out;
  out.reserve(original.size() + 96 + model.size());
  std::size_t from = 0;
  for (const auto& e : edits) {
    out.append(original.substr(from, e.begin - from));
    out += e.text;
    from = e.end;
  }
  out.append(original.substr(from));
  return out;
}

}  // namespace

std::string rewrite_request(const ClientRequest& req, std::string_view original, const Rewrite& rw) {
  const auto& doc = req.doc;
  bool model_changes = rw.upstream_model != req.model;
  // Embeddings have no `stream`; everything else states it explicitly (Qubrid streams by default).
  bool stream_missing = req.endpoint != Endpoint::embeddings && !req.stream_explicit;
  bool usage_missing = rw.include_usage && req.stream && !req.include_usage;
  bool defaults_missing = false;
  if (rw.defaults)
    for (const auto& [k, v] : *rw.defaults) defaults_missing |= !doc.HasMember(k.c_str());
  bool cap = rw.max_tokens_cap > 0 && (needs_cap(doc, "max_tokens", rw.max_tokens_cap) ||
                                       needs_cap(doc, "max_completion_tokens", rw.max_tokens_cap));
  if (!model_changes && !stream_missing && !usage_missing && !defaults_missing && !cap)
    return std::string(original);
  if (!defaults_missing && !cap)
    if (auto spliced = splice_request(original, model_changes, rw.upstream_model, stream_missing, req.stream,
                                      usage_missing))
      return std::move(*spliced);

  // Work on a copy: the same client request may be rewritten again for another target.
  rapidjson::Document out;
  out.CopyFrom(doc, out.GetAllocator());
  auto& alloc = out.GetAllocator();
  auto set = [&](const char* name, rapidjson::Value v) {
    if (auto it = out.FindMember(name); it != out.MemberEnd())
      it->value = v;
    else
      out.AddMember(rapidjson::Value(name, alloc), v, alloc);
  };
  if (model_changes)
    set("model", rapidjson::Value(rw.upstream_model.data(),
                                  static_cast<rapidjson::SizeType>(rw.upstream_model.size()), alloc));
  if (stream_missing) set("stream", rapidjson::Value(req.stream));
  if (usage_missing) {
    auto it = out.FindMember("stream_options");
    if (it == out.MemberEnd() || !it->value.IsObject()) {
      set("stream_options", rapidjson::Value(rapidjson::kObjectType));
      it = out.FindMember("stream_options");
    }
    if (auto iu = it->value.FindMember("include_usage"); iu != it->value.MemberEnd())
      iu->value.SetBool(true);
    else
      it->value.AddMember("include_usage", true, alloc);
  }
  if (rw.defaults)
    for (const auto& [k, v] : *rw.defaults)
      if (!out.HasMember(k.c_str()))
        out.AddMember(rapidjson::Value(k.c_str(), alloc), default_value(v, alloc), alloc);
  // On `out`, not only when the client's values were over: a default (max_tokens: 8192) obeys the cap too.
  if (rw.max_tokens_cap > 0)
    for (const char* field : {"max_tokens", "max_completion_tokens"})
      if (needs_cap(out, field, rw.max_tokens_cap)) out[field].SetUint64(rw.max_tokens_cap);

  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  out.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

std::string rewrite_request(const ClientRequest& req, std::string_view original,
                            std::string_view upstream_model) {
  return rewrite_request(req, original, Rewrite{upstream_model});
}

std::uint64_t estimate_prompt_tokens(const ClientRequest& req) {
  const auto& doc = req.doc;
  if (!doc.IsObject()) return 0;
  std::uint64_t chars = 0, messages = 0;
  for (const char* field : {"messages", "prompt", "input", "tools"}) {
    auto it = doc.FindMember(field);
    if (it == doc.MemberEnd()) continue;
    chars += string_chars(it->value);
    if (std::string_view(field) == "messages" && it->value.IsArray()) messages = it->value.Size();
  }
  return (chars + 3) / 4 + 4 * messages;
}

std::optional<std::uint64_t> completion_limit(const ClientRequest& req, std::uint64_t cap) {
  const auto& doc = req.doc;
  if (!doc.IsObject()) return std::nullopt;
  std::optional<std::uint64_t> most;
  for (const char* field : {"max_completion_tokens", "max_tokens"}) {
    auto it = doc.FindMember(field);
    if (it != doc.MemberEnd() && it->value.IsNumber() && it->value.GetDouble() >= 0) {
      most = static_cast<std::uint64_t>(std::min(it->value.GetDouble(), 1e12));
      break;
    }
  }
  if (cap && (!most || *most > cap)) most = cap;
  if (!most) return std::nullopt;
  std::uint64_t choices = 1;
  auto n = doc.FindMember("n");
  if (n != doc.MemberEnd() && n->value.IsNumber() && n->value.GetDouble() >= 1)
    choices = static_cast<std::uint64_t>(std::min(n->value.GetDouble(), 128.0));
  return *most * choices;
}

}  // namespace sluice::openai
