// Hostile clients and broken backends, over real sockets: each case ends in a well-formed OpenAI reply or
// stream ending, is counted by the right metric, and leaves no connection, stream or slot behind.
#include <dirent.h>
#include <gtest/gtest.h>
#include <rapidjson/document.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>

#include <mutex>
#include <set>
#include <thread>

#include "harness.hpp"

namespace sluice::test {
namespace {

const std::string kSim =
    "backends:\n"
    "  - { name: sim, dialect: simulator, simulator: { tokens_per_second: 5000, ttft: 1ms } }\n"
    "models:\n"
    "  - { name: demo, targets: [ { backend: sim } ] }\n";

std::string chat(const std::string& model, bool stream, const std::string& text = "hello") {
  return R"({"model":")" + model + R"(","messages":[{"role":"user","content":")" + text + R"("}],"stream":)" +
         (stream ? "true" : "false") + "}";
}

// A gateway with small client-side limits, so each can be crossed quickly.
std::string limits_config(const std::string& server_extra) {
  return "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 1, max_header_bytes: 4KiB, "
         "max_body_bytes: 64KiB, " +
         server_extra +
         " }\n"
         "log: { level: warn, format: text, access_log: false }\n" +
         kSim + "keys:\n  - { name: tester, key_sha256: \"KEYDIGEST\" }\n";
}

std::string error_code_of(const std::string& json) {
  rapidjson::Document d;
  d.Parse(json.data(), json.size());
  if (!d.IsObject() || !d.HasMember("error") || !d["error"].IsObject() || !d["error"].HasMember("code") ||
      !d["error"]["code"].IsString())
    return "(not an OpenAI error: " + json.substr(0, 200) + ")";
  return d["error"]["code"].GetString();
}

// True once the peer has closed `fd` (EOF or reset), waiting at most `limit`.
bool closed_by_peer(int fd, std::chrono::milliseconds limit) {
  return wait_until(
      [fd] {
        char tmp[4096];
        ssize_t n = ::recv(fd, tmp, sizeof tmp, MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
      },
      limit);
}

// ---- client side ----

TEST(Hardening, OversizedHeadersGet431AndTheConnectionCloses) {
  TestGateway gw(limits_config("header_timeout: 5s"));
  HttpClient c(gw.port());
  std::string body = chat("demo", false);
  ASSERT_TRUE(c.send_raw("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"
                         "X-Padding: " +
                         std::string(8192, 'a') + "\r\nContent-Type: application/json\r\nContent-Length: " +
                         std::to_string(body.size()) + "\r\n\r\n" + body));
  auto r = c.read_response();
  EXPECT_EQ(r.status, 431);
  EXPECT_EQ(error_code_of(r.body), "headers_too_large");
  EXPECT_TRUE(closed_by_peer(c.fd(), 10s));
  // Just under the limit is fine.
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", body, "sk-test", {{"X-Padding", std::string(3000, 'a')}})
                .status,
            200);
}

TEST(Hardening, OversizedBodiesGet413WithLengthOrChunked) {
  TestGateway gw(limits_config("header_timeout: 5s"));
  std::string big = chat("demo", false, std::string(70 * 1024, 'x'));
  auto r = post_json(gw.port(), "/v1/chat/completions", big);
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(error_code_of(r.body), "request_too_large");
  // Chunked: the limit applies to the bytes as they come, not to a declared length.
  HttpClient c(gw.port());
  std::string head =
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"
      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
  std::string chunks;
  for (std::size_t at = 0; at < big.size(); at += 8192) {
    auto piece = big.substr(at, 8192);
    char size[16];
    std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
    chunks += size + piece + "\r\n";
  }
  ASSERT_TRUE(c.send_raw(head + chunks + "0\r\n\r\n"));
  auto rc = c.read_response();
  EXPECT_EQ(rc.status, 413);
  EXPECT_EQ(error_code_of(rc.body), "request_too_large");
}

TEST(Hardening, BodiesThatAreNotChatRequestsGet400) {
  TestGateway gw(limits_config("header_timeout: 5s"));
  const std::vector<std::string> bodies = {
      "",
      "null",
      "42",
      "\"a string\"",
      "[]",
      "[{\"model\":\"demo\"}]",
      "true",
      "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe bad utf-8\"}]}",
      "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"\xc3\x28\"}]}",
      "{\"model\":\"demo\",\"messages\":[{\"role\":\"user\",\"content\":\"cut",
      "{\"model\":\"demo\",\"messages\":[]}",
      "{\"model\":\"demo\",\"messages\":\"hello\"}",
      "{\"model\":\"demo\",\"messages\":[42]}",
      "{\"model\":42,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
      std::string(1000, '{'),
      "{\"model\":\"demo\"} trailing",
      std::string("{\"model\":\"demo\",\0\"messages\":[]}", 31),
  };
  for (const auto& body : bodies) {
    auto r = post_json(gw.port(), "/v1/chat/completions", body);
    EXPECT_EQ(r.status, 400) << body.substr(0, 80);
    EXPECT_NE(error_code_of(r.body).rfind("(not", 0), 0u) << r.body;
  }
  // Valid UTF-8 of every width passes.
  auto ok = post_json(gw.port(), "/v1/chat/completions",
                      chat("demo", false, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"));
  EXPECT_EQ(ok.status, 200) << ok.body;
}

TEST(Hardening, MalformedHttpGets400AndPipelinedRequestsAreAnsweredInOrder) {
  TestGateway gw(limits_config("header_timeout: 5s"));
  for (std::string raw : {"GARBAGE\r\n\r\n", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                          "POST /v1/chat/completions HTTP/1.1\r\nHost x\r\n\r\n",
                          "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}) {
    HttpClient c(gw.port());
    ASSERT_TRUE(c.send_raw(raw));
    auto r = c.read_response();
    EXPECT_EQ(r.status, 400) << raw;
    EXPECT_EQ(error_code_of(r.body), "bad_request") << raw;
  }
  HttpClient c(gw.port());
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", chat("demo", false, "one")) +
                         raw_post("/v1/chat/completions", chat("nope", false, "two")) +
                         raw_post("/v1/chat/completions", chat("demo", true, "three"))));
  EXPECT_EQ(c.read_response().status, 200);
  EXPECT_EQ(c.read_response().status, 404);
  auto third = c.read_response();
  EXPECT_EQ(third.status, 200);
  EXPECT_EQ(sse_data(third.body).back(), "[DONE]");
}

TEST(Hardening, SlowHeadersAndBodiesCannotHoldTheGateway) {
  TestGateway gw(limits_config("header_timeout: 500ms, body_timeout: 500ms, idle_timeout: 30s"));
  // Slowloris: ten connections that each send one byte of a header every 100 ms, for as long as they can.
  std::string line = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ";
  std::atomic<int> cut{0};
  std::vector<std::thread> slow;
  for (int i = 0; i < 10; ++i)
    slow.emplace_back([&] {
      HttpClient c(gw.port());
      auto until = std::chrono::steady_clock::now() + 20s;
      for (std::size_t at = 0; std::chrono::steady_clock::now() < until; ++at) {
        char b = at < line.size() ? line[at] : 'a';
        if (::send(c.fd(), &b, 1, MSG_NOSIGNAL) != 1) break;
        if (closed_by_peer(c.fd(), 100ms)) break;
      }
      if (std::chrono::steady_clock::now() < until) ++cut;
    });
  // Meanwhile others are served.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", chat("demo", false)).status, 200);
  // A body that trickles is cut too.
  HttpClient b(gw.port());
  ASSERT_TRUE(b.send_raw("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"
                         "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"));
  bool body_cut = false;
  for (int i = 0; i < 200 && !body_cut; ++i) {
    b.send_raw(" ");
    body_cut = closed_by_peer(b.fd(), 100ms);
  }
  for (auto& t : slow) t.join();
  EXPECT_EQ(cut.load(), 10) << "slow header connections were not all closed by the header timeout";
  EXPECT_TRUE(body_cut);
  EXPECT_EQ(metric_value(gw.admin_port(), "sluice_client_rejections_total{reason=\"header_timeout\"}"), 10);
  EXPECT_EQ(metric_value(gw.admin_port(), "sluice_client_rejections_total{reason=\"body_timeout\"}"), 1);
  EXPECT_TRUE(wait_until([&] { return metric_value(gw.admin_port(), "sluice_client_connections") == 0; }));
}

// Sluice sets the client stream's deadline only for a read it has to wait for (a request that came whole is not
// timed), so a deadline a request was read under is still there, long past, when the next request comes on the
// same connection. Nothing after it may be bound by it: a stream, a 100-continue, an error Sluice answers itself.
TEST(Hardening, ADeadlineARequestWasReadUnderBindsNothingAfterIt) {
  TestGateway gw(limits_config("header_timeout: 1s, body_timeout: 1s"));
  HttpClient c(gw.port());
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", chat("no-such-model", false))));
  ASSERT_EQ(c.read_response().status, 404);  // (an answer Sluice gives itself sets a deadline for its write)
  const std::string first = raw_post("/v1/chat/completions", chat("demo", false));
  const auto line_end = first.find("\r\n") + 2;
  auto in_two_parts = [&] {  // a head that comes in two parts is read under the header deadline
    ASSERT_TRUE(c.send_raw(first.substr(0, line_end)));
    std::this_thread::sleep_for(50ms);
    ASSERT_TRUE(c.send_raw(first.substr(line_end)));
    EXPECT_EQ(c.read_response().status, 200);
  };
  in_two_parts();
  std::this_thread::sleep_for(1500ms);  // well past that deadline

  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", chat("demo", true))));
  auto streamed = c.read_response();
  ASSERT_EQ(streamed.status, 200) << streamed.body;
  const auto events = sse_data(streamed.body);
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back(), "[DONE]");

  const std::string body = chat("demo", false);
  ASSERT_TRUE(c.send_raw("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"
                         "Expect: 100-continue\r\nContent-Length: " +
                         std::to_string(body.size()) + "\r\n\r\n"));
  ASSERT_EQ(c.read_head().status, 100);
  ASSERT_TRUE(c.send_raw(body));
  ASSERT_EQ(c.read_response().status, 200);

  // Past the deadline the 100 Continue was written under, a head in two parts again gets one of its own.
  std::this_thread::sleep_for(1200ms);
  in_two_parts();
  EXPECT_EQ(metric_value(gw.admin_port(), "sluice_client_rejections_total{reason=\"header_timeout\"}"), 0);
}

TEST(Hardening, IdleKeepAliveConnectionsAreClosed) {
  TestGateway gw(limits_config("idle_timeout: 300ms"));
  HttpClient c(gw.port());
  EXPECT_EQ(
      c.request("POST", "/v1/chat/completions", chat("demo", false), {{"Authorization", "Bearer sk-test"}}).status,
      200);
  EXPECT_TRUE(closed_by_peer(c.fd(), 10s));
  EXPECT_TRUE(wait_until([&] { return metric_value(gw.admin_port(), "sluice_client_connections") == 0; }));
}

TEST(Hardening, TheIdleTimeoutCountsFromTheLastRequest) {
  // Used every 300 ms for about 2 s, a connection outlives its 1 s idle timeout several times over (the worker's
  // idle sweep, every 250 ms, counts each wait from its own start); left alone, it is closed.
  TestGateway gw(limits_config("idle_timeout: 1s"));
  HttpClient c(gw.port());
  for (int i = 0; i < 7; ++i) {
    ASSERT_EQ(
        c.request("POST", "/v1/chat/completions", chat("demo", false), {{"Authorization", "Bearer sk-test"}}).status,
        200)
        << "request " << i;
    std::this_thread::sleep_for(300ms);
  }
  EXPECT_TRUE(closed_by_peer(c.fd(), 10s));
}

TEST(Hardening, ConnectionsOverTheLimitAreToldWhyWithA503) {
  TestGateway gw(limits_config("max_connections: 8, idle_timeout: 60s"));
  std::vector<std::unique_ptr<HttpClient>> held;
  for (int i = 0; i < 8; ++i) held.push_back(std::make_unique<HttpClient>(gw.port()));
  ASSERT_TRUE(wait_until([&] { return metric_value(gw.admin_port(), "sluice_client_connections") == 8; }));
  HttpClient extra(gw.port());
  ASSERT_TRUE(extra.send_raw(raw_post("/v1/chat/completions", chat("demo", false))));
  auto r = extra.read_response();
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(error_code_of(r.body), "too_many_connections");
  EXPECT_EQ(r.header("retry-after"), "1");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_FALSE(r.header("x-request-id").empty());
  EXPECT_EQ(metric_value(gw.admin_port(), "sluice_client_rejections_total{reason=\"max_connections\"}"), 1);
  // The held connections still work, and a freed place is taken again.
  EXPECT_EQ(held[0]->request("POST", "/v1/chat/completions", chat("demo", false),
                             {{"Authorization", "Bearer sk-test"}})
                .status,
            200);
  held[1]->close();
  ASSERT_TRUE(wait_until([&] { return metric_value(gw.admin_port(), "sluice_client_connections") == 7; }));
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", chat("demo", false)).status, 200);
}

// Connections that arrive together are accepted together (a batch per wake-up), and the cap still holds
// exactly: each is counted when it is accepted, not when its session first runs.
TEST(Hardening, ABurstOfConnectionsCannotOvershootTheLimit) {
  TestGateway gw(limits_config("max_connections: 8, idle_timeout: 60s"));
  std::vector<std::unique_ptr<HttpClient>> burst;
  for (int i = 0; i < 40; ++i) burst.push_back(std::make_unique<HttpClient>(gw.port()));
  ASSERT_TRUE(wait_until([&] {
    return metric_value(gw.admin_port(), "sluice_client_rejections_total{reason=\"max_connections\"}") == 32;
  }));
  ASSERT_TRUE(wait_until([&] { return metric_value(gw.admin_port(), "sluice_client_connections") == 8; }));
  int served = 0, refused = 0;
  for (auto& c : burst) {
    if (!c->send_raw(raw_post("/v1/chat/completions", chat("demo", false)))) continue;
    auto r = c->read_response();
    served += r.status == 200;
    refused += r.status == 503 && error_code_of(r.body) == "too_many_connections";
  }
  EXPECT_EQ(served, 8);
  EXPECT_EQ(refused, 32);
}

// ---- backend side ----

// One scripted backend that misbehaves as the request's message names, then reports whether Sluice closed
// its side of the connection.
class FaultyBackend {
 public:
  FaultyBackend()
      : up_([this](UpstreamConn& c) {
          for (;;) {
            auto req = c.read_request();
            if (req.empty()) return;
            auto body = body_of(req);
            auto at = body.find("fault:");
            std::string name = at == std::string::npos ? "" : body.substr(at + 6, body.find('"', at) - at - 6);
            if (!play(name, c)) return;
            bool closed = c.wait_closed(15s);
            std::lock_guard lock(mutex_);
            closed_[name] = closed;
            return;
          }
        }) {}
  std::string url() const { return up_.url(); }
  // Whether Sluice closed the connection the fault was played on (false until the script has run).
  bool closed(const std::string& name) {
    std::lock_guard lock(mutex_);
    auto it = closed_.find(name);
    return it != closed_.end() && it->second;
  }

 private:
  // An SSE head that asks Sluice not to keep the connection: answers that end well are then not pooled.
  static bool sse_header_closing(UpstreamConn& c) {
    return c.write(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n"
        "Transfer-Encoding: chunked\r\n\r\n");
  }
  static std::string sse(const std::string& json) { return "data: " + json + "\n\n"; }
  static std::string delta(const std::string& text, const char* finish = nullptr) {
    return sse(R"({"id":"c1","object":"chat.completion.chunk","model":"m","choices":[{"index":0,"delta":{"content":")" +
               text + R"("},"finish_reason":)" + (finish ? "\"" + std::string(finish) + "\"" : "null") + "}]}");
  }
  // Plays the fault; false when the script itself ended the connection (nothing left to observe).
  static bool play(const std::string& name, UpstreamConn& c) {
    const std::string whole =
        R"({"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}})";
    if (name == "reset_before_headers") {
      c.reset();
      return false;
    }
    if (name == "garbage_status_line") {
      c.write("SPAM SPAM SPAM\r\n\r\n");
      return true;
    }
    if (name == "stall_before_headers") return true;
    if (name == "stall_before_first_token") return c.write_sse_header();
    if (name == "reset_mid_stream") {
      c.write_sse_header();
      c.write_chunk(delta("one ") + delta("two "));
      c.reset();
      return false;
    }
    if (name == "stall_mid_stream") {
      c.write_sse_header();
      c.write_chunk(delta("one "));
      return true;
    }
    if (name == "malformed_sse") {  // lines that are not SSE fields are ignored, as a client's parser would
      sse_header_closing(c);
      c.write_chunk(std::string("garbage line without a colon\n\x01\x02\x03\nretry: soon\n\n") + ": comment\n\n" +
                    delta("fine", "stop") + "data: [DONE]\n\n");
      c.write_chunk("");
      return true;
    }
    if (name == "invalid_json_in_chunk") {
      c.write_sse_header();
      c.write_chunk(delta("good ") + "data: {\"choices\":[{\"delta\":{\"content\":\"cut\n\n" + delta("after"));
      return true;
    }
    if (name == "oversized_chunk") {  // one event that never ends, 17 MiB and counting
      c.write_sse_header();
      c.write_chunk(delta("start ") + "data: {\"choices\":[{\"delta\":{\"content\":\"");
      std::string mib(1 << 20, 'x');
      for (int i = 0; i < 17; ++i)
        if (!c.write_chunk(mib)) break;
      return true;
    }
    if (name == "json_body_with_sse_type") {
      c.write_sse_header();
      c.write_chunk(R"({"error":{"message":"not a stream"}})");
      c.write_chunk("");
      return true;
    }
    if (name == "gzip_body") {
      std::string gz("\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x4b\x4c\x4a\x06\x00\xc2\x41\x24\x35\x03\x00\x00\x00", 23);
      c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: " +
              std::to_string(gz.size()) + "\r\n\r\n" + gz);
      return true;
    }
    if (name == "chunked_json_with_extensions_and_trailer") {
      c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n");
      for (std::size_t at = 0; at < whole.size(); at += 7) {
        auto piece = whole.substr(at, 7);
        char size[32];
        std::snprintf(size, sizeof size, "%zx;ext=1\r\n", piece.size());
        c.write(size + piece + "\r\n");
      }
      c.write("0\r\nX-Trailer: yes\r\n\r\n");
      return true;
    }
    if (name == "not_json") {
      c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n<html>oops</ht>");
      return true;
    }
    if (name == "done_missing_after_finish") {
      sse_header_closing(c);
      c.write_chunk(delta("all ") + delta("done", "stop"));
      c.write_chunk("");
      return true;
    }
    if (name == "done_missing_cut_short") {
      c.write_sse_header();
      c.write_chunk(delta("half "));
      c.write_chunk("");
      return true;
    }
    if (name == "never_closes_after_done") {  // [DONE], then neither the last chunk nor a close
      c.write_sse_header();
      c.write_chunk(delta("done", "stop") + "data: [DONE]\n\n");
      return true;
    }
    if (name == "never_ends_its_body") {  // no length, no chunking: a body that would end at a close
      c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"id\":\"c1\",");
      return true;
    }
    return true;
  }

  std::mutex mutex_;  // before up_: its connection threads use these until it is destroyed
  std::map<std::string, bool> closed_;
  ScriptedUpstream up_;
};

struct Fault {
  std::string name;
  std::string model;  // "fast" (500 ms deadlines) or "patient" (30 s)
  bool stream;
  int status;          // what the client gets
  std::string code;    // the error code it gets (the error event's, for a stream), "" for none
  std::string reason;  // sluice_upstream_errors_total{reason}, "" for none
  bool sluice_closes;  // Sluice must close the backend connection (the script left it open)
};

// The access line the gateway wrote for `request_id` (its stdout gathers one JSON object per line), parsed
// into `line`; false when there is none yet.
bool access_line_of(Child& gateway, const std::string& request_id, rapidjson::Document& line) {
  const std::string out = gateway.out();
  const std::string needle = "\"request_id\":\"" + request_id + "\"";
  const auto at = out.find(needle);
  if (request_id.empty() || at == std::string::npos) return false;
  const auto begin = out.rfind('\n', at);
  const auto end = out.find('\n', at);
  if (end == std::string::npos) return false;
  const auto from = begin == std::string::npos ? 0 : begin + 1;
  line.Parse(out.data() + from, end - from);
  return line.IsObject();
}

// A string member of an access line; "" when absent or not a string.
std::string string_member(const rapidjson::Value& line, const char* name) {
  return line.HasMember(name) && line[name].IsString() ? line[name].GetString() : "";
}

int open_fds_of(pid_t pid) {
  int n = 0;
  if (DIR* d = opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (readdir(d)) ++n;
    closedir(d);
  }
  return n;
}

// The real binary, with its access log on, against each fault in turn.
TEST(Hardening, EveryBackendFaultEndsWellFormedCountedAndWithoutLeaks) {
  FaultyBackend backend;
  RefusedPort refused;  // a port nobody listens on
  TempDir dir;
  const std::string config = dir.write(
      "faults.yaml",
      "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 1, drain_timeout: 10s }\n"
      "log: { level: info, format: json, access_log: true }\n"
      "backends:\n"
      "  - { name: fast, dialect: vllm, url: \"" +
          backend.url() +
          "\", health: { enabled: false }, outlier: { consecutive_failures: 0 }, timeouts: { first_token: 500ms, idle: 500ms, total: 20s } }\n"
          "  - { name: patient, dialect: vllm, url: \"" +
          backend.url() +
          "\", health: { enabled: false }, outlier: { consecutive_failures: 0 }, timeouts: { first_token: 30s, idle: 30s, total: 60s } }\n"
          "  - { name: gone, dialect: vllm, url: \"http://127.0.0.1:" +
          std::to_string(refused.port()) +
          "/v1\", health: { enabled: false }, outlier: { consecutive_failures: 0 } }\n"
          "models:\n"
          "  - { name: fast, targets: [ { backend: fast } ] }\n"
          "  - { name: patient, targets: [ { backend: patient } ] }\n"
          "  - { name: gone, targets: [ { backend: gone } ] }\n"
          "keys:\n"
          "  - { name: tester, key_sha256: \"f3abf2a6cc4f00987743db5f544ba345b4899ae31f326d8ee9c4816de153c9e0\" }\n");
  RunningGateway gw(config);
  ASSERT_NE(gw.port, 0) << gw.child.err();
  const pid_t pid = gw.child.pid();
  // The first request opens what stays open (a pooled backend connection); count once its client has gone
  // and the count holds still (the metrics scrapes' own connections close too).
  ASSERT_EQ(post_json(gw.port, "/v1/chat/completions", chat("fast", false, "fault:chunked_json_with_extensions_and_trailer"))
                .status,
            200);
  ASSERT_TRUE(wait_until([&] { return metric_value(gw.admin, "sluice_client_connections") == 0; }));
  int fds_before = -1;
  ASSERT_TRUE(wait_until([&] {
    const int now = open_fds_of(pid);
    std::this_thread::sleep_for(100ms);
    fds_before = open_fds_of(pid);
    return now == fds_before;
  }));
  const std::vector<Fault> faults = {
      {"refused", "gone", false, 502, "upstream_unreachable", "connect", false},
      {"reset_before_headers", "fast", false, 502, "upstream_error", "reset", false},
      {"reset_before_headers", "fast", true, 502, "upstream_error", "reset", false},
      {"garbage_status_line", "fast", false, 502, "upstream_error", "protocol", true},
      {"stall_before_headers", "fast", true, 504, "upstream_timeout", "first_token", true},
      {"stall_before_first_token", "fast", true, 200, "upstream_timeout", "first_token", true},
      {"reset_mid_stream", "fast", true, 200, "upstream_error", "reset", false},
      {"stall_mid_stream", "fast", true, 200, "upstream_timeout", "idle", true},
      {"malformed_sse", "fast", true, 200, "", "", true},
      {"invalid_json_in_chunk", "fast", true, 200, "upstream_error", "protocol", true},
      {"oversized_chunk", "patient", true, 200, "upstream_error", "protocol", true},
      {"json_body_with_sse_type", "fast", true, 200, "upstream_error", "truncated", true},
      {"gzip_body", "fast", false, 502, "upstream_error", "protocol", true},
      {"chunked_json_with_extensions_and_trailer", "fast", false, 200, "", "", true},
      {"not_json", "fast", false, 502, "upstream_error", "protocol", true},
      {"done_missing_after_finish", "fast", true, 200, "", "", true},
      {"done_missing_cut_short", "fast", true, 200, "upstream_error", "truncated", true},
      {"never_closes_after_done", "patient", true, 200, "", "", true},
      {"never_ends_its_body", "fast", false, 504, "upstream_timeout", "idle", true},
  };
  for (const auto& f : faults) {
    SCOPED_TRACE(f.name + (f.stream ? " (stream)" : ""));
    const std::string backend_name = f.model;
    const std::string series =
        "sluice_upstream_errors_total{backend=\"" + backend_name + "\",reason=\"" + f.reason + "\"}";
    double errors_before = f.reason.empty() ? 0 : metric_value(gw.admin, series);
    auto started = std::chrono::steady_clock::now();
    auto r = post_json(gw.port, "/v1/chat/completions", chat(f.model, f.stream, "fault:" + f.name));
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    ASSERT_EQ(r.status, f.status) << r.body.substr(0, 300);
    EXPECT_LT(took, 10.0) << "the client waited for the backend's own deadline";
    if (r.status != 200) {
      EXPECT_EQ(error_code_of(r.body), f.code);
    } else if (f.stream) {
      EXPECT_EQ(r.header("content-type"), "text/event-stream");
      auto events = sse_data(r.body);
      ASSERT_FALSE(events.empty());
      EXPECT_EQ(events.back(), "[DONE]") << r.body.substr(0, 300);
      std::string error_code;
      for (const auto& e : events) {
        if (e == "[DONE]") continue;
        rapidjson::Document d;
        d.Parse(e.data(), e.size());
        ASSERT_TRUE(d.IsObject()) << "an event the client cannot parse: " << e.substr(0, 100);
        if (d.HasMember("error")) error_code = error_code_of(e);
      }
      EXPECT_EQ(error_code, f.code);
    } else {
      rapidjson::Document d;
      d.Parse(r.body.data(), r.body.size());
      EXPECT_TRUE(d.IsObject() && d.HasMember("choices")) << r.body;
    }
    if (!f.reason.empty()) {
      EXPECT_TRUE(wait_until([&] { return metric_value(gw.admin, series) == errors_before + 1; }))
          << series << " = " << metric_value(gw.admin, series);
    }
    // One access line for the request: the status the client got, the backend, and the fault's reason.
    const std::string id = r.header("x-request-id");
    rapidjson::Document line;
    ASSERT_TRUE(wait_until([&] { return access_line_of(gw.child, id, line); }))
        << "no access line for request " << id;
    ASSERT_TRUE(line.HasMember("status") && line["status"].IsInt()) << gw.child.out();
    EXPECT_EQ(line["status"].GetInt(), f.status);
    EXPECT_EQ(string_member(line, "model"), f.model);
    EXPECT_EQ(string_member(line, "backend"), f.model);  // each model has the backend of its name
    ASSERT_TRUE(line.HasMember("stream") && line["stream"].IsBool());
    EXPECT_EQ(line["stream"].GetBool(), f.stream);
    EXPECT_EQ(string_member(line, "error"), f.reason);
    if (f.sluice_closes) {
      EXPECT_TRUE(wait_until([&] { return backend.closed(f.name); }, 20s));
    }
  }
  // Nothing is left behind: no stream, no request in flight, no client connection, no socket.
  EXPECT_TRUE(wait_until([&] { return metric_value(gw.admin, "sluice_active_streams") == 0; }));
  EXPECT_TRUE(wait_until([&] { return metric_value(gw.admin, "sluice_client_connections") == 0; }));
  for (const char* m : {"fast", "patient"})
    EXPECT_TRUE(wait_until([&] {
      return metric_value(gw.admin, std::string("sluice_inflight_requests{backend=\"") + m + "\",model=\"" + m +
                                          "\"}") == 0;
    }));
  EXPECT_TRUE(wait_until([&] { return open_fds_of(pid) <= fds_before; }, 20s))
      << open_fds_of(pid) << " descriptors open, " << fds_before << " before the faults";
  // And the gateway still serves, then drains and exits cleanly.
  EXPECT_EQ(post_json(gw.port, "/v1/chat/completions", chat("fast", false, "fault:chunked_json_with_extensions_and_trailer"))
                .status,
            200);
  gw.child.signal(SIGTERM);
  EXPECT_EQ(gw.child.wait_exit(), 0) << gw.child.err();
}

}  // namespace
}  // namespace sluice::test
