#include "openai/request.hpp"

#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

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

const rapidjson::Value* member(const rapidjson::Value& obj, const char* name) {
  auto it = obj.FindMember(name);
  return it == obj.MemberEnd() ? nullptr : &it->value;
}

ApiError missing(const char* field) {
  return invalid_request(std::string("you must provide a '") + field + "' parameter", field,
                         "missing_required_parameter");
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
  ClientRequest req;
  req.endpoint = endpoint;
  auto& doc = req.doc;
  if (!json_depth_within(body))
    return invalid_request("the JSON body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels",
                           std::nullopt, "invalid_json");
  doc.Parse<rapidjson::kParseFullPrecisionFlag | rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (doc.HasParseError()) {
    return invalid_request(std::string("we could not parse the JSON body of your request (") +
                               rapidjson::GetParseError_En(doc.GetParseError()) + " at offset " +
                               std::to_string(doc.GetErrorOffset()) + ")",
                           std::nullopt, "invalid_json");
  }
  if (!doc.IsObject())
    return invalid_request("the request body must be a JSON object", std::nullopt, "invalid_json");
  // A repeated member would let Sluice act on one value while the backend (which keeps the last) acts on
  // another.
  for (auto a = doc.MemberBegin(); a != doc.MemberEnd(); ++a)
    for (auto b = a + 1; b != doc.MemberEnd(); ++b)
      if (a->name == b->name)
        return invalid_request(std::string("the member '") + a->name.GetString() + "' appears more than once",
                               std::string(a->name.GetString()), "duplicate_parameter");

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

std::string rewrite_request(ClientRequest& req, std::string_view original, std::string_view upstream_model) {
  bool model_changes = upstream_model != req.model;
  // Embeddings have no `stream`; everything else states it explicitly (Qubrid streams by default).
  bool stream_missing = req.endpoint != Endpoint::embeddings && !req.stream_explicit;
  if (!model_changes && !stream_missing) return std::string(original);

  auto& doc = req.doc;
  auto& alloc = doc.GetAllocator();
  if (model_changes)
    doc["model"].SetString(upstream_model.data(), static_cast<rapidjson::SizeType>(upstream_model.size()),
                           alloc);
  if (stream_missing) {
    if (auto it = doc.FindMember("stream"); it != doc.MemberEnd())
      it->value.SetBool(req.stream);
    else
      doc.AddMember("stream", rapidjson::Value(req.stream), alloc);
  }
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

}  // namespace sluice::openai
