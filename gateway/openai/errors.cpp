#include "openai/errors.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdint>
#include <cstring>

#include "openai/json.hpp"

namespace sluice::openai {

std::string_view default_error_type(int status) {
  if (status == 401) return "invalid_request_error";
  if (status == 429) return "rate_limit_exceeded";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

// Out of line: the access line writes each of its strings through one copy of this (see observe's Line).
[[gnu::noinline]] char* write_json_string(char* out, std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  *out++ = '"';
  const char* p = text.data();
  const char* const end = p + text.size();
  for (;;) {
    // The run of bytes that need no escape (nearly always the whole string): eight bytes at a time.
    const char* run = p;
    while (end - p >= 8) {
      std::uint64_t v;
      std::memcpy(&v, p, sizeof v);
      if (json_special_bytes(v)) break;
      p += 8;
    }
    while (p < end && static_cast<unsigned char>(*p) >= 0x20 && *p != '"' && *p != '\\') ++p;
    if (p != run) {  // an empty view may have no data at all (memcpy's source must not be null)
      std::memcpy(out, run, static_cast<std::size_t>(p - run));
      out += p - run;
    }
    if (p == end) break;
    const auto c = static_cast<unsigned char>(*p++);
    *out++ = '\\';
    switch (c) {
      case '"': *out++ = '"'; break;
      case '\\': *out++ = '\\'; break;
      case '\b': *out++ = 'b'; break;
      case '\f': *out++ = 'f'; break;
      case '\n': *out++ = 'n'; break;
      case '\r': *out++ = 'r'; break;
      case '\t': *out++ = 't'; break;
      default:
        std::memcpy(out, "u00", 3);
        out[3] = kHex[c >> 4];
        out[4] = kHex[c & 15];
        out += 5;
    }
  }
  *out++ = '"';
  return out;
}

void append_json_string(std::string& out, std::string_view text) {
  const std::size_t at = out.size();
  out.resize(at + json_string_bound(text.size()));
  out.resize(static_cast<std::size_t>(write_json_string(out.data() + at, text) - out.data()));
}

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  append_json_string(out, text);
  return out;
}

std::string error_json(const ApiError& e) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  auto str = [&](std::string_view s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); };
  w.StartObject();
  w.Key("error");
  w.StartObject();
  w.Key("message");
  str(e.message);
  w.Key("type");
  str(e.type.empty() ? default_error_type(e.status) : std::string_view(e.type));
  w.Key("param");
  if (e.param)
    str(*e.param);
  else
    w.Null();
  w.Key("code");
  if (e.code)
    str(*e.code);
  else
    w.Null();
  w.EndObject();
  w.EndObject();
  return sb.GetString();
}

namespace {

std::optional<std::string> as_text(const rapidjson::Value& v) {
  if (v.IsString()) return std::string(v.GetString(), v.GetStringLength());
  if (v.IsInt64()) return std::to_string(v.GetInt64());
  if (v.IsNumber()) return std::to_string(v.GetDouble());
  return std::nullopt;
}

}  // namespace

ApiError normalize_backend_error(int status, std::string_view body) {
  ApiError e;
  e.status = status;
  rapidjson::Document doc;
  doc.Parse<rapidjson::kParseIterativeFlag>(body.data(), body.size());  // no recursion on hostile nesting
  const bool json_object = !doc.HasParseError() && doc.IsObject();
  if (json_object) {
    const rapidjson::Value* obj = &doc;
    auto err = doc.FindMember("error");
    if (err != doc.MemberEnd() && err->value.IsObject()) obj = &err->value;
    if (err != doc.MemberEnd() && err->value.IsString()) {
      // TGI: {"error":"Model is overloaded","error_type":"overloaded"}
      e.message = err->value.GetString();
      if (auto t = doc.FindMember("error_type"); t != doc.MemberEnd() && t->value.IsString())
        e.code = t->value.GetString();
    } else {
      if (auto m = obj->FindMember("message"); m != obj->MemberEnd()) {
        if (auto s = as_text(m->value)) e.message = *s;
      } else if (auto d = obj->FindMember("detail"); d != obj->MemberEnd()) {
        if (auto s = as_text(d->value)) e.message = *s;
      }
      if (auto t = obj->FindMember("type"); t != obj->MemberEnd() && t->value.IsString())
        e.type = t->value.GetString();
      if (auto p = obj->FindMember("param"); p != obj->MemberEnd()) e.param = as_text(p->value);
      // vLLM sends the HTTP status as an integer code; OpenAI's code is a string or null.
      if (auto c = obj->FindMember("code"); c != obj->MemberEnd()) e.code = as_text(c->value);
    }
  }
  if (e.message.empty()) {
    std::string_view text = json_object ? std::string_view() : body.substr(0, 512);
    // Not in the middle of a UTF-8 character: the message goes into JSON, and half of one makes it invalid.
    while (text.size() < body.size() && !text.empty() &&
           (static_cast<unsigned char>(body[text.size()]) & 0xC0) == 0x80)
      text.remove_suffix(1);
    e.message =
        text.empty() ? "the backend answered with HTTP status " + std::to_string(status) : std::string(text);
  }
  return e;
}

ApiError invalid_request(std::string message, std::optional<std::string> param,
                         std::optional<std::string> code) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

}  // namespace sluice::openai
