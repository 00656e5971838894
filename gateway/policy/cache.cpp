#include "policy/cache.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include "policy/keyring.hpp"

namespace sluice::policy {

namespace {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void write_number(const rapidjson::Value& v, Writer& w) {
  if (v.IsInt64()) {
    w.Int64(v.GetInt64());
  } else if (v.IsUint64()) {
    w.Uint64(v.GetUint64());
  } else {
    double d = v.GetDouble();
    // 1.0 and 1e0 are the number 1: written as an integer when they are one.
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15)
      w.Int64(static_cast<std::int64_t>(d));
    else
      w.Double(d);  // shortest round-trip form: the same double always gives the same text
  }
}

void write_canonical(const rapidjson::Value& v, Writer& w, bool top, std::string_view model) {
  switch (v.GetType()) {
    case rapidjson::kNullType: w.Null(); break;
    case rapidjson::kFalseType: w.Bool(false); break;
    case rapidjson::kTrueType: w.Bool(true); break;
    case rapidjson::kNumberType: write_number(v, w); break;
    case rapidjson::kStringType: w.String(v.GetString(), v.GetStringLength()); break;
    case rapidjson::kArrayType:
      w.StartArray();
      for (const auto& e : v.GetArray()) write_canonical(e, w, false, model);
      w.EndArray();
      break;
    case rapidjson::kObjectType: {
      std::vector<const rapidjson::Value::Member*> members;
      for (const auto& m : v.GetObject()) {
        std::string_view name(m.name.GetString(), m.name.GetStringLength());
        if (top && (name == "stream" || name == "stream_options" || name == "user" || name == "model")) continue;
        members.push_back(&m);
      }
      std::sort(members.begin(), members.end(), [](const auto* a, const auto* b) {
        return std::string_view(a->name.GetString(), a->name.GetStringLength()) <
               std::string_view(b->name.GetString(), b->name.GetStringLength());
      });
      w.StartObject();
      if (top) {  // "model" sorts among the others; written as the public name
        bool written = false;
        for (const auto* m : members) {
          std::string_view name(m->name.GetString(), m->name.GetStringLength());
          if (!written && name > "model") {
            w.Key("model");
            w.String(model.data(), static_cast<rapidjson::SizeType>(model.size()));
            written = true;
          }
          w.Key(m->name.GetString(), m->name.GetStringLength());
          write_canonical(m->value, w, false, model);
        }
        if (!written) {
          w.Key("model");
          w.String(model.data(), static_cast<rapidjson::SizeType>(model.size()));
        }
      } else {
        for (const auto* m : members) {
          w.Key(m->name.GetString(), m->name.GetStringLength());
          write_canonical(m->value, w, false, model);
        }
      }
      w.EndObject();
      break;
    }
  }
}

}  // namespace

std::string canonical_request(const rapidjson::Value& body, std::string_view model) {
  rapidjson::StringBuffer buf;
  Writer w(buf);
  write_canonical(body, w, true, model);
  return std::string(buf.GetString(), buf.GetSize());
}

std::string cache_key(std::string_view endpoint, std::string_view scope, const rapidjson::Value& body,
                      std::string_view model) {
  // Lengths first, so no choice of names can make two different triples hash the same text.
  std::string text = std::to_string(endpoint.size()) + ":" + std::string(endpoint) + std::to_string(scope.size()) +
                     ":" + std::string(scope) + canonical_request(body, model);
  return sha256_hex(text);
}

bool deterministic_request(const rapidjson::Value& body) {
  if (!body.IsObject()) return false;
  if (auto seed = body.FindMember("seed"); seed != body.MemberEnd() && seed->value.IsNumber()) return true;
  auto t = body.FindMember("temperature");
  return t != body.MemberEnd() && t->value.IsNumber() && t->value.GetDouble() == 0;
}

bool complete_answer(std::string_view completion) {
  rapidjson::Document d;
  // Iterative: the completion is the backend's, and the default parser recurses once per nesting level.
  d.Parse<rapidjson::kParseIterativeFlag>(completion.data(), completion.size());
  if (d.HasParseError() || !d.IsObject() || d.HasMember("error")) return false;
  auto choices = d.FindMember("choices");
  if (choices == d.MemberEnd() || !choices->value.IsArray() || choices->value.Empty()) return false;
  for (const auto& c : choices->value.GetArray()) {
    if (!c.IsObject()) return false;
    auto f = c.FindMember("finish_reason");
    if (f == c.MemberEnd() || !f->value.IsString() || f->value.GetStringLength() == 0) return false;
  }
  return true;
}

std::string encode_shared(const CachedAnswer& a, std::int64_t stored_unix_ms) {
  return std::to_string(stored_unix_ms) + " " + std::to_string(a.prompt_tokens) + " " +
         std::to_string(a.completion_tokens) + "\n" + a.completion;
}

std::optional<CachedAnswer> decode_shared(std::string_view text, CacheClock::time_point now, std::int64_t now_unix_ms) {
  auto nl = text.find('\n');
  if (nl == std::string_view::npos) return std::nullopt;
  long long stored = 0;
  unsigned long long prompt = 0, completion = 0;
  std::string head(text.substr(0, nl));
  if (std::sscanf(head.c_str(), "%lld %llu %llu", &stored, &prompt, &completion) != 3) return std::nullopt;
  CachedAnswer a;
  a.completion = std::string(text.substr(nl + 1));
  a.prompt_tokens = prompt;
  a.completion_tokens = completion;
  auto age = std::chrono::milliseconds(std::max<long long>(0, now_unix_ms - stored));
  a.stored = now - age;
  a.expires = now + std::chrono::hours(1);  // Redis expires it; this copy lives for one answer only
  return a;
}

MemoryCache::MemoryCache(std::uint64_t max_bytes, unsigned shards)
    : shard_budget_(max_bytes / std::max(1u, shards)) {
  for (unsigned i = 0; i < std::max(1u, shards); ++i) shards_.push_back(std::make_unique<Shard>());
}

std::uint64_t MemoryCache::cost(const std::string& key, const CachedAnswer& a) {
  return key.size() * 2 + a.completion.size() + 128;  // the key is held twice (list and index), plus overhead
}

MemoryCache::Shard& MemoryCache::shard_for(const std::string& key) {
  return *shards_[std::hash<std::string>{}(key) % shards_.size()];
}

std::optional<CachedAnswer> MemoryCache::get(const std::string& key, CacheClock::time_point now) {
  auto& s = shard_for(key);
  std::lock_guard lock(s.mutex);
  auto it = s.index.find(key);
  if (it == s.index.end()) return std::nullopt;
  if (it->second->second.expires <= now) {  // expired: gone
    s.bytes -= cost(key, it->second->second);
    s.lru.erase(it->second);
    s.index.erase(it);
    return std::nullopt;
  }
  s.lru.splice(s.lru.begin(), s.lru, it->second);
  return it->second->second;
}

std::size_t MemoryCache::put(const std::string& key, CachedAnswer answer) {
  auto& s = shard_for(key);
  std::uint64_t c = cost(key, answer);
  if (c > shard_budget_) return 0;
  std::lock_guard lock(s.mutex);
  if (auto it = s.index.find(key); it != s.index.end()) {
    s.bytes -= cost(key, it->second->second);
    s.lru.erase(it->second);
    s.index.erase(it);
  }
  std::size_t evicted = 0;
  while (s.bytes + c > shard_budget_ && !s.lru.empty()) {
    auto& victim = s.lru.back();
    s.bytes -= cost(victim.first, victim.second);
    s.index.erase(victim.first);
    s.lru.pop_back();
    ++evicted;
  }
  s.lru.emplace_front(key, std::move(answer));
  s.index.emplace(key, s.lru.begin());
  s.bytes += c;
  return evicted;
}

std::uint64_t MemoryCache::bytes() const {
  std::uint64_t total = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    total += s->bytes;
  }
  return total;
}

std::size_t MemoryCache::entries() const {
  std::size_t total = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock(s->mutex);
    total += s->lru.size();
  }
  return total;
}

}  // namespace sluice::policy
