#include "openai/stream_convert.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <map>

#include "openai/json.hpp"

namespace sluice::openai {

namespace {

using Value = rapidjson::Value;
using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void append(std::string& dst, const Value* v) {
  if (v && v->IsString()) dst.append(v->GetString(), v->GetStringLength());
}

struct ToolCall {
  std::string id, type = "function", name, arguments;
};

struct Choice {
  std::string role = "assistant", content, reasoning;
  bool has_content = false, has_reasoning = false;
  std::map<int, ToolCall> tool_calls;
  std::optional<std::string> finish_reason;
};

void key_string(Writer& w, const char* key, std::string_view value) {
  w.Key(key);
  w.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
}

// A whole answer's message as the one delta that replays it. Its tool calls get the `index` every stream
// delta carries and whole messages do not: without it clients (and StreamJoiner) take them all for
// fragments of the first call and merge them.
void write_delta(Writer& w, const Value& message) {
  if (!message.IsObject()) {
    message.Accept(w);
    return;
  }
  w.StartObject();
  for (const auto& m : message.GetObject()) {
    w.Key(m.name.GetString(), m.name.GetStringLength());
    if (std::string_view(m.name.GetString(), m.name.GetStringLength()) != "tool_calls" ||
        !m.value.IsArray()) {
      m.value.Accept(w);  // role, content, reasoning as they were
      continue;
    }
    w.StartArray();
    int index = 0;
    for (const auto& call : m.value.GetArray()) {
      if (call.IsObject() && !call.HasMember("index")) {
        w.StartObject();
        w.Key("index");
        w.Int(index);
        for (const auto& f : call.GetObject()) {
          w.Key(f.name.GetString(), f.name.GetStringLength());
          f.value.Accept(w);
        }
        w.EndObject();
      } else {
        call.Accept(w);
      }
      ++index;
    }
    w.EndArray();
  }
  w.EndObject();
}

}  // namespace

struct StreamJoiner::State {
  std::string id = "chatcmpl-sluice", model;
  std::int64_t created = 0;
  std::map<int, Choice> choices;
  std::optional<rapidjson::Document> usage;
  bool any = false;
};

StreamJoiner::StreamJoiner(Endpoint endpoint) : chat_(endpoint == Endpoint::chat_completions), s_(new State) {}
StreamJoiner::~StreamJoiner() = default;
StreamJoiner::StreamJoiner(StreamJoiner&&) noexcept = default;
StreamJoiner& StreamJoiner::operator=(StreamJoiner&&) noexcept = default;

void StreamJoiner::add(std::string_view data) {
  // A chunk nested deeper than any real one is skipped: its usage would be copied and written out
  // recursively, and a backend could exhaust the worker's stack with a few MB of brackets.
  if (data == "[DONE]" || !json_depth_within(data)) return;
  const bool chat = chat_;
  auto& st = *s_;
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(data.data(), data.size());
  if (d.HasParseError() || !d.IsObject()) return;
  st.any = true;
  if (auto* v = member(d, "id"); v && v->IsString()) st.id = v->GetString();
  if (auto* v = member(d, "model"); v && v->IsString()) st.model = v->GetString();
  if (auto* v = member(d, "created"); v && v->IsInt64()) st.created = v->GetInt64();
  if (auto* u = member(d, "usage"); u && u->IsObject() && finite_numbers(*u)) {
    st.usage.emplace();
    st.usage->CopyFrom(*u, st.usage->GetAllocator());
  }
  const Value* cs = member(d, "choices");
  if (!cs || !cs->IsArray()) return;
  for (const auto& c : cs->GetArray()) {
    int index = 0;
    if (auto* i = member(c, "index"); i && i->IsInt()) index = i->GetInt();
    auto& ch = st.choices[index];
    if (auto* f = member(c, "finish_reason"); f && f->IsString()) ch.finish_reason = f->GetString();
    const Value* delta = chat ? member(c, "delta") : &c;
    if (!delta || !delta->IsObject()) continue;
    if (auto* r = member(*delta, "role"); r && r->IsString()) ch.role = r->GetString();
    if (auto* t = member(*delta, chat ? "content" : "text"); t && t->IsString()) {
      ch.has_content = true;
      append(ch.content, t);
    }
    for (const char* name : {"reasoning_content", "reasoning"})
      if (auto* r = member(*delta, name); r && r->IsString()) {
        ch.has_reasoning = true;
        append(ch.reasoning, r);
        break;  // vLLM sends both names with the same text
      }
    if (auto* tcs = member(*delta, "tool_calls"); tcs && tcs->IsArray())
      for (const auto& tc : tcs->GetArray()) {
        int ti = 0;
        if (auto* i = member(tc, "index"); i && i->IsInt()) ti = i->GetInt();
        auto& call = ch.tool_calls[ti];
        if (auto* v = member(tc, "id"); v && v->IsString()) call.id = v->GetString();
        if (auto* v = member(tc, "type"); v && v->IsString()) call.type = v->GetString();
        if (auto* fn = member(tc, "function")) {
          append(call.name, member(*fn, "name"));
          append(call.arguments, member(*fn, "arguments"));
        }
      }
  }
}

std::optional<std::string> completion_from_stream(Endpoint endpoint, const std::vector<std::string>& payloads) {
  StreamJoiner joiner(endpoint);
  for (const auto& data : payloads) joiner.add(data);
  return joiner.result();
}

std::optional<std::string> StreamJoiner::result() const {
  const bool chat = chat_;
  const auto& [id, model, created, choices, usage, any] = *s_;
  if (!any) return std::nullopt;

  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  key_string(w, "id", id);
  key_string(w, "object", chat ? "chat.completion" : "text_completion");
  w.Key("created");
  w.Int64(created);
  key_string(w, "model", model);
  w.Key("choices");
  w.StartArray();
  for (const auto& [index, ch] : choices) {
    w.StartObject();
    w.Key("index");
    w.Int(index);
    if (chat) {
      w.Key("message");
      w.StartObject();
      key_string(w, "role", ch.role);
      w.Key("content");
      if (ch.has_content || ch.tool_calls.empty())
        w.String(ch.content.c_str(), static_cast<rapidjson::SizeType>(ch.content.size()));
      else
        w.Null();
      if (ch.has_reasoning) key_string(w, "reasoning_content", ch.reasoning);
      if (!ch.tool_calls.empty()) {
        w.Key("tool_calls");
        w.StartArray();
        for (const auto& [ti, call] : ch.tool_calls) {
          w.StartObject();
          key_string(w, "id", call.id);
          key_string(w, "type", call.type);
          w.Key("function");
          w.StartObject();
          key_string(w, "name", call.name);
          key_string(w, "arguments", call.arguments);
          w.EndObject();
          w.EndObject();
        }
        w.EndArray();
      }
      w.EndObject();
    } else {
      key_string(w, "text", ch.content);
    }
    w.Key("finish_reason");
    if (ch.finish_reason)
      w.String(ch.finish_reason->c_str(), static_cast<rapidjson::SizeType>(ch.finish_reason->size()));
    else
      w.Null();
    w.EndObject();
  }
  w.EndArray();
  if (usage) {
    w.Key("usage");
    usage->Accept(w);
  }
  w.EndObject();
  return std::string(sb.GetString(), sb.GetSize());
}

std::optional<std::string> stream_from_completion(Endpoint endpoint, std::string_view body,
                                                  bool include_usage) {
  const bool chat = endpoint == Endpoint::chat_completions;
  // The message and usage are written out recursively: refuse nesting no real completion has.
  if (!json_depth_within(body)) return std::nullopt;
  rapidjson::Document d;
  d.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());
  if (d.HasParseError() || !d.IsObject() || !finite_numbers(d)) return std::nullopt;
  const Value* cs = member(d, "choices");
  if (!cs || !cs->IsArray()) return std::nullopt;

  auto chunk_head = [&](Writer& w) {
    w.StartObject();
    w.Key("id");
    if (auto* v = member(d, "id"); v && v->IsString())
      w.String(v->GetString());
    else
      w.String("chatcmpl-sluice");
    key_string(w, "object", chat ? "chat.completion.chunk" : "text_completion");
    w.Key("created");
    if (auto* v = member(d, "created"); v && v->IsInt64())
      w.Int64(v->GetInt64());
    else
      w.Int64(0);
    w.Key("model");
    if (auto* v = member(d, "model"); v && v->IsString())
      w.String(v->GetString());
    else
      w.String("");
  };
  auto event = [](rapidjson::StringBuffer& sb) {
    return "data: " + std::string(sb.GetString(), sb.GetSize()) + "\n\n";
  };

  std::string out;
  for (int pass = 0; pass < 2; ++pass) {  // first the content, then the finish reasons
    rapidjson::StringBuffer sb;
    Writer w(sb);
    chunk_head(w);
    w.Key("choices");
    w.StartArray();
    for (const auto& c : cs->GetArray()) {
      w.StartObject();
      w.Key("index");
      if (auto* i = member(c, "index"); i && i->IsInt())
        w.Int(i->GetInt());
      else
        w.Int(0);
      if (chat) {
        w.Key("delta");
        if (pass == 0) {
          if (auto* m = member(c, "message")) {
            write_delta(w, *m);
          } else {
            w.StartObject();
            w.EndObject();
          }
        } else {
          w.StartObject();
          w.EndObject();
        }
      } else {
        w.Key("text");
        if (auto* t = member(c, "text"); pass == 0 && t && t->IsString())
          t->Accept(w);
        else
          w.String("");
      }
      w.Key("finish_reason");
      if (auto* f = member(c, "finish_reason"); pass == 1 && f && f->IsString())
        f->Accept(w);
      else
        w.Null();
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
    out += event(sb);
  }
  if (include_usage)
    if (auto* u = member(d, "usage"); u && u->IsObject()) {
      rapidjson::StringBuffer sb;
      Writer w(sb);
      chunk_head(w);
      w.Key("choices");
      w.StartArray();
      w.EndArray();
      w.Key("usage");
      u->Accept(w);
      w.EndObject();
      out += event(sb);
    }
  out += "data: [DONE]\n\n";
  return out;
}

}  // namespace sluice::openai
