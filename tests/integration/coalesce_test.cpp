// Request coalescing through the real gateway: identical requests that arrive while the first is still on its
// way upstream follow its answer instead of asking again (live, event by event, for streams); the answer
// still reaches them when the first client leaves; a failed leader lets them ask on their own.
#include <gtest/gtest.h>
#include <rapidjson/document.h>

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "harness.hpp"
#include "policy/keyring.hpp"

namespace sluice::test {
namespace {

const std::string kCompletion =
    R"({"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],)"
    R"("usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}})";

std::string chunk(const std::string& delta, const std::string& finish = "null") {
  return R"(data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":)" +
         delta + R"(,"finish_reason":)" + finish + "}]}\n\n";
}

/// A gate the test opens; the backend holds its answers at it.
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  void release() {
    std::lock_guard lock(m);
    open = true;
    cv.notify_all();
  }
  void wait() {
    std::unique_lock lock(m);
    cv.wait_for(lock, std::chrono::seconds(60), [&] { return open; });
  }
};

/// A backend that counts requests and holds each answer at a gate: the first request at `first`, later ones at
/// `later`. A stream sends its head, role and first words at once and the rest after the gate. A prompt with
/// FAIL makes the first request a 500; BAD makes every request a 400.
struct Backend {
  std::atomic<int> hits{0};
  std::atomic<bool> write_failed{false};
  std::atomic<bool> closed_early{false};
  Gate first, later;
  ~Backend() {
    first.release();
    later.release();
  }
  ScriptedUpstream upstream{[this](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request(std::chrono::seconds(60));
      if (req.empty()) return;
      int n = ++hits;
      Gate& gate = n == 1 ? first : later;
      auto body = body_of(req);
      auto error = [&](int status, const std::string& e) {
        gate.wait();
        c.write("HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(e.size()) + "\r\n\r\n" + e);
      };
      if (body.find("BAD") != std::string::npos) {
        error(400, R"({"error":{"message":"prompt too long for this model","type":"invalid_request_error"}})");
        continue;
      }
      if (body.find("FAIL") != std::string::npos && n == 1) {
        error(500, R"({"error":{"message":"boom"}})");
        continue;
      }
      if (body.find("\"stream\":true") == std::string::npos) {
        gate.wait();
        c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(kCompletion.size()) + "\r\n\r\n" + kCompletion);
        continue;
      }
      c.write_sse_header();
      c.write_chunk(chunk(R"({"role":"assistant","content":""})"));
      c.write_chunk(chunk(R"({"content":"Lyon"})"));
      if (body.find("WATCH") != std::string::npos) {  // nobody is reading: the gateway should hang up
        if (c.wait_closed(std::chrono::seconds(60))) closed_early = true;
        return;
      }
      gate.wait();
      bool ok = c.write_chunk(chunk(R"({"reasoning_content":"Streamed thought."})")) &&
                c.write_chunk(chunk(R"({"content":" too."})")) && c.write_chunk(chunk("{}", R"("stop")"));
      if (body.find("include_usage") != std::string::npos)
        ok = ok && c.write_chunk(R"(data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}})"
                                 "\n\n");
      ok = ok && c.write_chunk("data: [DONE]\n\n") && c.write("0\r\n\r\n");
      if (!ok) write_failed = true;
    }
  }};
};

std::string config(const Backend& b) {
  return "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 2 }\n"
         "log: { level: warn, format: text, access_log: false }\n"
         "backends:\n  - { name: up, url: \"" + b.upstream.url() + "\", health: { enabled: false } }\n"
         "models:\n  - { name: m, targets: [ { backend: up } ], cache: { enabled: true } }\n"
         "keys:\n"
         "  - { name: a, key_sha256: \"" + policy::sha256_hex("sk-a") + "\" }\n"
         "  - { name: b, key_sha256: \"" + policy::sha256_hex("sk-b") + "\" }\n";
}

std::string ask(const std::string& text, const std::string& extra = "") {
  return R"({"model":"m","temperature":0,"messages":[{"role":"user","content":")" + text + "\"}]" + extra + "}";
}

constexpr const char* kStream = R"(,"stream":true)";

double metric(const TestGateway& gw, const std::string& series) {
  return metric_value(gw.admin_port(), series);
}

rapidjson::Document json(const std::string& s) {
  rapidjson::Document d;
  d.Parse(s.data(), s.size());
  return d;
}

/// A raw HTTP/1.1 exchange read by hand, so a stream can be watched while it is still coming.
struct Watched {
  HttpClient client;
  std::string raw;
  explicit Watched(std::uint16_t port) : client(port) {}
  bool read_until(const std::string& needle, std::chrono::milliseconds limit = std::chrono::seconds(30)) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (raw.find(needle) == std::string::npos) {
      if (std::chrono::steady_clock::now() >= end) return false;
      auto got = client.read_some(std::chrono::seconds(1));
      raw += got;
    }
    return true;
  }
  std::string head() const { return raw.substr(0, raw.find("\r\n\r\n")); }
  /// The body, de-chunked.
  std::string body() const {
    auto at = raw.find("\r\n\r\n");
    if (at == std::string::npos) return "";
    std::string rest = raw.substr(at + 4), out;
    if (head().find("chunked") == std::string::npos) return rest;
    while (!rest.empty()) {
      auto eol = rest.find("\r\n");
      if (eol == std::string::npos) break;
      auto size = std::stoul(rest.substr(0, eol), nullptr, 16);
      if (size == 0) break;
      out += rest.substr(eol + 2, size);
      rest = rest.substr(eol + 2 + size + 2);
    }
    return out;
  }
};

struct Streamed {
  std::string content, reasoning, finish;
  bool done = false, error = false, usage = false;
};

Streamed parse_stream(const std::string& body) {
  Streamed s;
  for (const auto& e : sse_data(body)) {
    if (e == "[DONE]") {
      s.done = true;
      continue;
    }
    auto d = json(e);
    if (!d.IsObject()) continue;
    if (d.HasMember("error")) s.error = true;
    if (d.HasMember("usage") && d["usage"].IsObject()) s.usage = true;
    if (!d.HasMember("choices") || !d["choices"].IsArray() || d["choices"].Empty()) continue;
    const auto& c = d["choices"][0];
    const auto& delta = c["delta"];
    if (delta.HasMember("content") && delta["content"].IsString()) s.content += delta["content"].GetString();
    if (delta.HasMember("reasoning_content")) s.reasoning += delta["reasoning_content"].GetString();
    if (c.HasMember("finish_reason") && c["finish_reason"].IsString()) s.finish = c["finish_reason"].GetString();
  }
  return s;
}

TEST(Coalesce, FiftyIdenticalStreamsReachTheBackendOnceAndEachGetsTheLiveEvents) {
  Backend up;
  TestGateway gw(config(up));
  constexpr int kClients = 50;
  std::vector<std::unique_ptr<Watched>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<Watched>(gw.port()));
    ASSERT_TRUE(clients.back()->client.connected());
  }
  // Every other client asks for the usage chunk: each gets the stream it asked for.
  auto send = [&](int i) {
    auto extra = std::string(kStream) + (i % 2 ? R"(,"stream_options":{"include_usage":true})" : "");
    return clients[i]->client.send_raw(raw_post("/v1/chat/completions", ask("what else?", extra), "sk-a"));
  };
  ASSERT_TRUE(send(0));
  ASSERT_TRUE(wait_until([&] { return up.hits.load() == 1; }, std::chrono::seconds(30)));
  for (int i = 1; i < kClients; ++i) ASSERT_TRUE(send(i));
  ASSERT_TRUE(wait_until([&] { return metric(gw, R"(sluice_coalesced_total{model="m"})") == kClients - 1; },
                         std::chrono::seconds(60)));
  // Live: every client has its head and the first words while the backend is still holding the rest.
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(clients[i]->read_until("Lyon")) << "client " << i << " got: " << clients[i]->raw;
    EXPECT_NE(clients[i]->head().find("200"), std::string::npos);
    EXPECT_NE(clients[i]->head().find("text/event-stream"), std::string::npos);
    EXPECT_EQ(clients[i]->raw.find("too."), std::string::npos);
  }
  up.first.release();
  for (int i = 0; i < kClients; ++i) {
    ASSERT_TRUE(clients[i]->read_until("0\r\n\r\n")) << "client " << i << " got: " << clients[i]->raw;
    auto s = parse_stream(clients[i]->body());
    EXPECT_EQ(s.content, "Lyon too.") << i;
    EXPECT_EQ(s.reasoning, "Streamed thought.") << i;
    EXPECT_EQ(s.finish, "stop") << i;
    EXPECT_TRUE(s.done) << i;
    EXPECT_FALSE(s.error) << i;
    EXPECT_EQ(s.usage, i % 2 == 1) << i;
  }
  EXPECT_EQ(up.hits.load(), 1);
  EXPECT_EQ(clients[0]->head().find("x-sluice-coalesced"), std::string::npos);  // the leader
  EXPECT_NE(clients[1]->head().find("x-sluice-coalesced: true"), std::string::npos);

  // The answer was kept: a repeat is a cache hit, and the followers' tokens counted as served by the cache.
  auto again = post_json(gw.port(), "/v1/chat/completions", ask("what else?"), "sk-a");
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.header("x-sluice-cache"), "hit");
  EXPECT_EQ(up.hits.load(), 1);
  // Counted when each request's coroutine goes on after its last write, which a client can read first.
  EXPECT_TRUE(wait_until(
      [&] { return metric(gw, R"(sluice_tokens_total{backend="up",key="a",model="m",type="output"})") == 4; }));
  EXPECT_TRUE(wait_until([&] {
    return metric(gw, R"(sluice_tokens_total{backend="cache",key="a",model="m",type="output"})") == 4 * 50;
  })) << metric(gw, R"(sluice_tokens_total{backend="cache",key="a",model="m",type="output"})");
}

TEST(Coalesce, FiftyIdenticalRequestsAnsweredWholeOrAsStreamsFromOneBackendAnswer) {
  Backend up;
  TestGateway gw(config(up));
  constexpr int kClients = 50;
  std::vector<std::unique_ptr<Watched>> clients;
  for (int i = 0; i < kClients; ++i) clients.push_back(std::make_unique<Watched>(gw.port()));
  // The leader asks for a whole answer; every third follower asks for a stream of the same question.
  auto send = [&](int i) {
    return clients[i]->client.send_raw(
        raw_post("/v1/chat/completions", ask("capital?", i % 3 == 2 ? kStream : ""), "sk-a"));
  };
  ASSERT_TRUE(send(0));
  ASSERT_TRUE(wait_until([&] { return up.hits.load() == 1; }, std::chrono::seconds(30)));
  for (int i = 1; i < kClients; ++i) ASSERT_TRUE(send(i));
  ASSERT_TRUE(wait_until([&] { return metric(gw, R"(sluice_coalesced_total{model="m"})") == kClients - 1; },
                         std::chrono::seconds(60)));
  up.first.release();
  for (int i = 0; i < kClients; ++i) {
    auto& c = *clients[i];
    if (i % 3 == 2) {
      ASSERT_TRUE(c.read_until("[DONE]")) << i << ": " << c.raw;
      auto s = parse_stream(c.body());
      EXPECT_EQ(s.content, "Paris.") << i;
      EXPECT_EQ(s.finish, "stop") << i;
      EXPECT_TRUE(s.done);
    } else {
      auto res = c.client.read_response();
      ASSERT_EQ(res.status, 200) << i << ": " << res.body;
      EXPECT_EQ(res.body, kCompletion) << i;
    }
  }
  EXPECT_EQ(up.hits.load(), 1);
}

TEST(Coalesce, FollowersGetTheWholeAnswerWhenTheLeadersClientLeaves) {
  Backend up;
  TestGateway gw(config(up));
  Watched leader(gw.port()), follower(gw.port());
  ASSERT_TRUE(leader.client.send_raw(raw_post("/v1/chat/completions", ask("stay", kStream), "sk-a")));
  ASSERT_TRUE(leader.read_until("Lyon"));
  ASSERT_TRUE(follower.client.send_raw(raw_post("/v1/chat/completions", ask("stay", kStream), "sk-a")));
  ASSERT_TRUE(follower.read_until("Lyon"));
  leader.client.close();
  // Give the gateway time to see the hang-up (it would close the backend connection if nobody followed).
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  up.first.release();
  ASSERT_TRUE(follower.read_until("0\r\n\r\n")) << follower.raw;
  auto s = parse_stream(follower.body());
  EXPECT_EQ(s.content, "Lyon too.");
  EXPECT_TRUE(s.done);
  EXPECT_FALSE(s.error);
  EXPECT_FALSE(up.write_failed.load());
  EXPECT_EQ(up.hits.load(), 1);
  ASSERT_TRUE(wait_until([&] { return metric(gw, R"(sluice_client_disconnects_total{phase="streaming"})") == 1; }));
  // The answer arrived whole, so it was kept even though its first client was gone.
  auto again = post_json(gw.port(), "/v1/chat/completions", ask("stay"), "sk-a");
  EXPECT_EQ(again.header("x-sluice-cache"), "hit");
  EXPECT_EQ(up.hits.load(), 1);
}

TEST(Coalesce, TheUpstreamRequestEndsWhenTheLeadersClientAndEveryFollowerHaveLeft) {
  Backend up;
  TestGateway gw(config(up));
  Watched leader(gw.port()), follower(gw.port());
  ASSERT_TRUE(leader.client.send_raw(raw_post("/v1/chat/completions", ask("WATCH", kStream), "sk-a")));
  ASSERT_TRUE(leader.read_until("Lyon"));
  ASSERT_TRUE(follower.client.send_raw(raw_post("/v1/chat/completions", ask("WATCH", kStream), "sk-a")));
  ASSERT_TRUE(follower.read_until("Lyon"));
  leader.client.close();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(up.closed_early.load());  // the follower still reads
  follower.client.close();
  EXPECT_TRUE(wait_until([&] { return up.closed_early.load(); }, std::chrono::seconds(30)));
  ASSERT_TRUE(wait_until([&] { return metric(gw, R"(sluice_client_disconnects_total{phase="streaming"})") == 2; }));
}

TEST(Coalesce, WhenTheLeaderFailsItsFollowersAskOnTheirOwnOnce) {
  Backend up;
  TestGateway gw(config(up));
  constexpr int kFollowers = 5;
  Watched leader(gw.port());
  std::vector<std::unique_ptr<Watched>> followers;
  ASSERT_TRUE(leader.client.send_raw(raw_post("/v1/chat/completions", ask("FAIL once"), "sk-a")));
  ASSERT_TRUE(wait_until([&] { return up.hits.load() == 1; }, std::chrono::seconds(30)));
  for (int i = 0; i < kFollowers; ++i) {
    followers.push_back(std::make_unique<Watched>(gw.port()));
    ASSERT_TRUE(followers.back()->client.send_raw(raw_post("/v1/chat/completions", ask("FAIL once"), "sk-a")));
  }
  ASSERT_TRUE(wait_until([&] { return metric(gw, R"(sluice_coalesced_total{model="m"})") == kFollowers; },
                         std::chrono::seconds(60)));
  up.first.release();  // the leader's answer is a 500
  auto failed = leader.client.read_response();
  EXPECT_EQ(failed.status, 502) << failed.body;
  // The followers try again, each once: the first leads a second flight and the others follow it (or, if
  // they come after it has landed, ask themselves); every one of them gets the answer.
  ASSERT_TRUE(wait_until([&] { return up.hits.load() >= 2; }, std::chrono::seconds(30)));
  up.later.release();
  for (auto& f : followers) {
    auto res = f->client.read_response();
    EXPECT_EQ(res.status, 200) << res.body;
    EXPECT_EQ(res.body, kCompletion);
  }
  EXPECT_LE(up.hits.load(), 1 + kFollowers);
  EXPECT_EQ(metric(gw, R"(sluice_coalesced_total{model="m"})"), kFollowers);  // each request counted once
}

TEST(Coalesce, ABackendRefusalIsSharedWithTheFollowersWithoutAskingAgain) {
  Backend up;
  TestGateway gw(config(up));
  Watched leader(gw.port()), follower(gw.port());
  ASSERT_TRUE(leader.client.send_raw(raw_post("/v1/chat/completions", ask("BAD"), "sk-a")));
  ASSERT_TRUE(wait_until([&] { return up.hits.load() == 1; }, std::chrono::seconds(30)));
  ASSERT_TRUE(follower.client.send_raw(raw_post("/v1/chat/completions", ask("BAD"), "sk-a")));
  ASSERT_TRUE(wait_until([&] { return metric(gw, R"(sluice_coalesced_total{model="m"})") == 1; },
                         std::chrono::seconds(60)));
  up.first.release();
  auto a = leader.client.read_response();
  auto b = follower.client.read_response();
  EXPECT_EQ(a.status, 400) << a.body;
  EXPECT_EQ(b.status, 400) << b.body;
  EXPECT_NE(b.body.find("prompt too long"), std::string::npos) << b.body;
  EXPECT_EQ(up.hits.load(), 1);
}

TEST(Coalesce, DifferentKeysDoNotShareAFlightUnlessTheCacheIsShared) {
  Backend up;
  TestGateway gw(config(up));
  Watched a(gw.port()), b(gw.port());
  ASSERT_TRUE(a.client.send_raw(raw_post("/v1/chat/completions", ask("mine"), "sk-a")));
  ASSERT_TRUE(wait_until([&] { return up.hits.load() == 1; }, std::chrono::seconds(30)));
  ASSERT_TRUE(b.client.send_raw(raw_post("/v1/chat/completions", ask("mine"), "sk-b")));
  ASSERT_TRUE(wait_until([&] { return up.hits.load() == 2; }, std::chrono::seconds(30)));  // its own request
  up.first.release();
  up.later.release();
  EXPECT_EQ(a.client.read_response().status, 200);
  EXPECT_EQ(b.client.read_response().status, 200);
  EXPECT_EQ(metric(gw, R"(sluice_coalesced_total{model="m"})"), 0);
}

}  // namespace
}  // namespace sluice::test
