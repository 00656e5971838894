// The gateway end to end over real sockets: simulator and scripted backends, errors, keep-alive, disconnects.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <rapidjson/document.h>

#include <thread>

#include "harness.hpp"
#include "simulator/simulator.hpp"

namespace sluice::test {
namespace {

const std::string kSimBackend =
    "backends:\n"
    "  - { name: sim, dialect: simulator, simulator: { tokens_per_second: 5000, ttft: 1ms } }\n"
    "models:\n"
    "  - { name: demo, aliases: [ demo-alias ], targets: [ { backend: sim } ] }\n";

std::string chat(const std::string& model, bool stream, const std::string& extra = "") {
  return R"({"model":")" + model + R"(","messages":[{"role":"user","content":"hello there"}],"stream":)" +
         (stream ? "true" : "false") + extra + "}";
}

std::string expected_text(int tokens) {
  std::string s;
  for (int i = 0; i < tokens; ++i) s += simulator::simulated_token(i);
  return s;
}

rapidjson::Document parse(const std::string& s) {
  rapidjson::Document d;
  d.Parse(s.data(), s.size());
  return d;
}

void expect_openai_error(const HttpResponse& r, int status, const std::string& code) {
  EXPECT_EQ(r.status, status) << r.body;
  auto d = parse(r.body);
  ASSERT_TRUE(d.IsObject() && d.HasMember("error")) << r.body;
  const auto& e = d["error"];
  EXPECT_TRUE(e["message"].IsString());
  EXPECT_TRUE(e["type"].IsString());
  EXPECT_TRUE(e.HasMember("param"));
  ASSERT_TRUE(e["code"].IsString()) << r.body;
  EXPECT_EQ(std::string(e["code"].GetString()), code);
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_FALSE(r.header("x-request-id").empty());
}

// Serves each request on a connection with a fixed JSON answer; records every request.
ScriptedUpstream::Handler json_backend(ScriptedUpstream*& self, std::string body, int status = 200) {
  return [&self, body, status](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      self->record(req);
      c.write("HTTP/1.1 " + std::to_string(status) +
              " X\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
              "\r\n\r\n" + body);
    }
  };
}

// Answers one request per connection, then closes it (saying so in the answer when `says_close`).
ScriptedUpstream::Handler one_answer_per_connection(ScriptedUpstream*& self, bool says_close) {
  return [&self, says_close](UpstreamConn& c) {
    auto req = c.read_request();
    if (req.empty()) return;
    self->record(req);
    std::string body = R"({"object":"chat.completion","choices":[]})";
    c.write(std::string("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n") +
            (says_close ? "Connection: close\r\n" : "") + "Content-Length: " + std::to_string(body.size()) +
            "\r\n\r\n" + body);
  };
}

std::string scripted_config(const std::string& url, const std::string& timeouts = "") {
  return test_config_yaml("backends:\n  - { name: up, dialect: vllm, url: \"" + url +
                          "\", api_key: backend-secret, health: { enabled: false }" +
                          (timeouts.empty() ? "" : ", timeouts: " + timeouts) +
                          " }\nmodels:\n  - { name: m, targets: [ { backend: up, model: upstream-m } ] }\n");
}

TEST(Proxy, NonStreamChatThroughSimulator) {
  TestGateway gw(test_config_yaml(kSimBackend));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat("demo", false, R"(,"simulator":{"tokens":7})"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_FALSE(r.header("x-request-id").empty());
  auto d = parse(r.body);
  ASSERT_TRUE(d.IsObject()) << r.body;
  EXPECT_EQ(std::string(d["object"].GetString()), "chat.completion");
  EXPECT_EQ(std::string(d["choices"][0]["message"]["content"].GetString()), expected_text(7));
  EXPECT_EQ(d["usage"]["completion_tokens"].GetInt(), 7);
  EXPECT_EQ(d["usage"]["prompt_tokens"].GetInt(), 3);  // "user" "hello" "there"
}

TEST(Proxy, StreamChatThroughSimulatorArrivesInOrderAndEndsWithDone) {
  TestGateway gw(test_config_yaml(kSimBackend));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat("demo", true, R"(,"simulator":{"tokens":12})"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("content-type"), "text/event-stream");
  EXPECT_EQ(r.header("cache-control"), "no-cache");
  EXPECT_EQ(r.header("x-accel-buffering"), "no");
  auto events = sse_data(r.body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  for (std::size_t i = 0; i + 1 < events.size(); ++i) {
    auto d = parse(events[i]);
    ASSERT_TRUE(d.IsObject()) << events[i];
    EXPECT_EQ(std::string(d["object"].GetString()), "chat.completion.chunk");
    const auto& delta = d["choices"][0]["delta"];
    if (delta.HasMember("content")) text += delta["content"].GetString();
  }
  EXPECT_EQ(text, expected_text(12));
}

TEST(Proxy, CompletionsAndEmbeddingsAndAliases) {
  TestGateway gw(test_config_yaml(kSimBackend));
  auto c = post_json(gw.port(), "/v1/completions",
                     R"({"model":"demo-alias","prompt":"once upon","max_tokens":4})");
  ASSERT_EQ(c.status, 200) << c.body;
  auto d = parse(c.body);
  EXPECT_EQ(std::string(d["choices"][0]["text"].GetString()), expected_text(4));
  EXPECT_EQ(std::string(d["choices"][0]["finish_reason"].GetString()), "length");
  auto e = post_json(gw.port(), "/v1/embeddings", R"({"model":"demo","input":"embed me"})");
  ASSERT_EQ(e.status, 200) << e.body;
  auto ed = parse(e.body);
  EXPECT_EQ(ed["data"][0]["embedding"].Size(), 8u);
}

TEST(Proxy, SimulatorFaultsSurfaceAsOpenAIErrors) {
  TestGateway gw(test_config_yaml(kSimBackend));
  // An HTTP error from the backend before any byte reached the client.
  auto r = post_json(gw.port(), "/v1/chat/completions",
                     chat("demo", false, R"(,"simulator":{"fault":"status","status":503})"));
  expect_openai_error(r, 503, "simulated");
  // A reset mid-stream: the tokens so far, then an error event and [DONE].
  auto s = post_json(gw.port(), "/v1/chat/completions",
                     chat("demo", true, R"(,"simulator":{"tokens":5,"fault":"reset","fault_after":2})"));
  ASSERT_EQ(s.status, 200);
  auto events = sse_data(s.body);
  ASSERT_EQ(events.size(), 4u) << s.body;
  EXPECT_NE(events[2].find("\"error\""), std::string::npos);
  EXPECT_EQ(events[3], "[DONE]");
  // A chunk no SDK could parse never reaches the client: the events before it do, then an error event.
  auto m = post_json(gw.port(), "/v1/chat/completions",
                     chat("demo", true, R"(,"simulator":{"tokens":3,"fault":"malformed","fault_after":1})"));
  ASSERT_EQ(m.status, 200);
  EXPECT_EQ(m.body.find("oops not json"), std::string::npos);
  auto me = sse_data(m.body);
  ASSERT_EQ(me.size(), 3u) << m.body;
  EXPECT_NE(me[0].find("chat.completion.chunk"), std::string::npos);
  EXPECT_NE(me[1].find("\"upstream_error\""), std::string::npos);
  EXPECT_EQ(me[2], "[DONE]");
}

TEST(Proxy, ExpectContinueIsAnswered) {
  TestGateway gw(test_config_yaml(kSimBackend));
  HttpClient c(gw.port());
  std::string body = chat("demo", false);
  ASSERT_TRUE(
      c.send_raw("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-test\r\n"
                 "Expect: 100-continue\r\nContent-Length: " +
                 std::to_string(body.size()) + "\r\n\r\n"));
  auto interim = c.read_head();  // the client waits for this before sending its body
  ASSERT_EQ(interim.status, 100);
  ASSERT_TRUE(c.send_raw(body));
  EXPECT_EQ(c.read_response().status, 200);
}

TEST(Proxy, ModelsListAndAdminRoutes) {
  TestGateway gw(test_config_yaml(kSimBackend));
  HttpClient c(gw.port());
  auto r = c.request("GET", "/v1/models", "", {{"Authorization", "Bearer sk-test"}});
  ASSERT_EQ(r.status, 200);
  auto d = parse(r.body);
  EXPECT_EQ(std::string(d["object"].GetString()), "list");
  EXPECT_EQ(std::string(d["data"][0]["id"].GetString()), "demo");
  // The admin listener never asks for a key.
  HttpClient a(gw.admin_port());
  EXPECT_EQ(a.request("GET", "/healthz").status, 200);
  EXPECT_EQ(a.request("GET", "/readyz").status, 200);
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", chat("demo", false)).status, 200);
  auto m = a.request("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(
      m.body.find("sluice_requests_total{backend=\"sim\",code=\"200\",endpoint=\"chat/completions\",key="
                  "\"tester\",model=\"demo\"} 1"),
      std::string::npos)
      << m.body;
  EXPECT_NE(
      m.body.find("sluice_tokens_total{backend=\"sim\",key=\"tester\",model=\"demo\",type=\"output\"} 16"),
      std::string::npos)
      << m.body;
  EXPECT_EQ(m.body.find("sk-test"), std::string::npos);
}

TEST(Proxy, ClientErrorsAreOpenAIShaped) {
  TestGateway gw(test_config_yaml(kSimBackend));
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", "{not json"), 400, "invalid_json");
  expect_openai_error(
      post_json(gw.port(), "/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}]})"), 400,
      "missing_required_parameter");
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", chat("nope", false)), 404,
                      "model_not_found");
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", chat("demo", false), ""), 401,
                      "missing_api_key");
  auto bad_key = post_json(gw.port(), "/v1/chat/completions", chat("demo", false), "sk-wrong-secret");
  expect_openai_error(bad_key, 401, "invalid_api_key");
  EXPECT_EQ(bad_key.body.find("sk-wrong-secret"), std::string::npos);
  expect_openai_error(post_json(gw.port(), "/v1/nowhere", "{}"), 404, "unknown_url");
  // Hostile nesting is refused without recursing on it, and a repeated "model" cannot smuggle another model.
  std::string deep = R"({"model":"demo","messages":[{"role":"user","content":)" + std::string(500000, '[') +
                     std::string(500000, ']') + "}]}";
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", deep), 400, "invalid_json");
  expect_openai_error(
      post_json(gw.port(), "/v1/chat/completions",
                R"({"model":"demo","messages":[{"role":"user","content":"x"}],"model":"other"})"),
      400, "duplicate_parameter");
  HttpClient c(gw.port());
  expect_openai_error(c.request("GET", "/v1/chat/completions", "", {{"Authorization", "Bearer sk-test"}}),
                      405, "method_not_allowed");
  // The connection survives client errors (keep-alive).
  EXPECT_EQ(
      c.request("POST", "/v1/chat/completions", chat("demo", false), {{"Authorization", "Bearer sk-test"}})
          .status,
      200);
}

TEST(Proxy, OversizedBodyGets413) {
  TestGateway gw(
      "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 1, max_body_bytes: 1KiB }\n"
      "log: { level: warn, format: text, access_log: false }\n" +
      kSimBackend + "keys:\n  - { name: tester, key_sha256: \"KEYDIGEST\" }\n");
  std::string big = chat("demo", false, R"(,"pad":")" + std::string(4096, 'x') + "\"");
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", big), 413, "request_too_large");
  // A small request still works.
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", chat("demo", false)).status, 200);
}

TEST(Proxy, RequestIsRewrittenOnlyWhereItMustBeAndKeysAreSwapped) {
  ScriptedUpstream* up = nullptr;
  ScriptedUpstream upstream(json_backend(up, R"({"id":"x","object":"chat.completion","choices":[]})"));
  up = &upstream;
  TestGateway gw(scripted_config(upstream.url()));
  auto r = post_json(
      gw.port(), "/v1/chat/completions",
      R"({"model":"m","messages":[{"role":"user","content":"hi"}],"top_k":7,"chat_template_kwargs":{"enable_thinking":false}})",
      "sk-test", {{"x-request-id", "trace-abc-123"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-request-id"), "trace-abc-123");
  auto reqs = upstream.requests();
  ASSERT_EQ(reqs.size(), 1u);
  const auto& raw = reqs[0];
  EXPECT_EQ(raw.rfind("POST /v1/chat/completions HTTP/1.1\r\n", 0), 0u) << raw;
  EXPECT_EQ(header_of(raw, "authorization"), "Bearer backend-secret");
  EXPECT_EQ(raw.find("sk-test"), std::string::npos);  // the client's key never reaches a backend
  EXPECT_EQ(header_of(raw, "x-request-id"), "trace-abc-123");
  auto body = parse(body_of(raw));
  ASSERT_TRUE(body.IsObject());
  EXPECT_EQ(std::string(body["model"].GetString()), "upstream-m");
  ASSERT_TRUE(body.HasMember("stream"));
  EXPECT_FALSE(body["stream"].GetBool());  // always explicit: Qubrid streams by default
  EXPECT_EQ(body["top_k"].GetInt(), 7);
  EXPECT_FALSE(body["chat_template_kwargs"]["enable_thinking"].GetBool());
}

TEST(Proxy, UpstreamConnectionsAreReused) {
  ScriptedUpstream* up = nullptr;
  ScriptedUpstream upstream(json_backend(up, R"({"object":"chat.completion","choices":[]})"));
  up = &upstream;
  TestGateway gw(scripted_config(upstream.url()));
  for (int i = 0; i < 5; ++i)
    ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", chat("m", false)).status, 200);
  EXPECT_EQ(upstream.requests().size(), 5u);
  EXPECT_EQ(upstream.connections(), 1);
}

TEST(Proxy, StalePooledConnectionIsReplacedTransparently) {
  // The backend closes every connection after one answer (while it idles in the pool).
  ScriptedUpstream* up = nullptr;
  ScriptedUpstream upstream(one_answer_per_connection(up, false));
  up = &upstream;
  TestGateway gw(scripted_config(upstream.url()));
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", chat("m", false)).status, 200);
    ASSERT_TRUE(wait_until([&] { return upstream.connections() == i + 1; }));
  }
  EXPECT_EQ(upstream.requests().size(), 3u);
}

// A backend that writes a whole answer at once, far larger than the gateway's first read of a new connection
// (512 bytes): the rest is already in the socket, and is read at once (read_now) rather than after a turn of the
// event loop. Every byte arrives, for a stream and for a whole answer, on a new connection and on a reused one.
TEST(Proxy, AnswersWrittenInOneGoLargerThanAReadArriveWhole) {
  constexpr int kEvents = 300;
  std::string events, text;
  for (int i = 0; i < kEvents; ++i) {
    const std::string token = "tok-" + std::to_string(i) + " ";
    text += token;
    const std::string data =
        R"({"id":"c","object":"chat.completion.chunk","created":1,"model":"upstream-m","choices":[{"index":0,"delta":{"content":")" +
        token + R"("},"finish_reason":null}]})";
    const std::string event = "data: " + data + "\n\n";
    char size[16];
    std::snprintf(size, sizeof size, "%zx\r\n", event.size());
    events += size + event + "\r\n";
  }
  for (std::string tail : {std::string(R"(data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"upstream-m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]})") + "\n\n",
                           std::string("data: [DONE]\n\n")}) {
    char size[16];
    std::snprintf(size, sizeof size, "%zx\r\n", tail.size());
    events += size + tail + "\r\n";
  }
  events += "0\r\n\r\n";
  const std::string answer = R"({"id":"c","object":"chat.completion","created":1,"model":"upstream-m","choices":[{"index":0,"message":{"role":"assistant","content":")" +
                             text + R"("},"finish_reason":"stop"}]})";
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      const bool stream = req.find("\"stream\":true") != std::string::npos;
      c.write(stream ? "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + events
                     : "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(answer.size()) + "\r\n\r\n" + answer);
    }
  });
  TestGateway gw(scripted_config(upstream.url()));
  for (int round = 0; round < 3; ++round) {
    auto s = post_json(gw.port(), "/v1/chat/completions", chat("m", true));
    ASSERT_EQ(s.status, 200) << s.body;
    const auto data = sse_data(s.body);
    ASSERT_EQ(data.size(), static_cast<std::size_t>(kEvents + 2)) << "round " << round;
    std::string got;
    for (int i = 0; i < kEvents; ++i) {
      auto d = parse(data[i]);
      ASSERT_TRUE(d.IsObject()) << data[i];
      got += d["choices"][0]["delta"]["content"].GetString();
    }
    EXPECT_EQ(got, text);
    EXPECT_EQ(data.back(), "[DONE]");
    auto j = post_json(gw.port(), "/v1/chat/completions", chat("m", false));
    ASSERT_EQ(j.status, 200) << j.body;
    auto d = parse(j.body);
    ASSERT_TRUE(d.IsObject()) << j.body.substr(0, 200);
    EXPECT_EQ(std::string(d["choices"][0]["message"]["content"].GetString()), text);
  }
  EXPECT_EQ(upstream.connections(), 1);  // the first exchange's connection, reused after each whole answer
}

// A backend named by host name: resolved once, its addresses kept for the next connections (which no longer
// wait on the resolver's thread), and every new connection still reaches it.
TEST(Proxy, ABackendNamedByHostNameIsReachedOnEveryNewConnection) {
  ScriptedUpstream* up = nullptr;
  ScriptedUpstream upstream(one_answer_per_connection(up, true));  // then it closes
  up = &upstream;
  TestGateway gw(scripted_config("http://localhost:" + std::to_string(upstream.port()) + "/v1"));
  for (int i = 0; i < 3; ++i) {
    auto r = post_json(gw.port(), "/v1/chat/completions", chat("m", false));
    ASSERT_EQ(r.status, 200) << r.body;
    ASSERT_TRUE(wait_until([&] { return upstream.connections() == i + 1; }));
  }
  EXPECT_EQ(upstream.requests().size(), 3u);
  EXPECT_NE(header_of(upstream.requests().front(), "host").find("localhost:"), std::string::npos);
}

TEST(Proxy, UnreachableBackendIs502) {
  RefusedPort dead;  // connections to it are refused
  TestGateway gw(scripted_config("http://127.0.0.1:" + std::to_string(dead.port()) + "/v1"));
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", chat("m", false)), 502,
                      "upstream_unreachable");
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", chat("m", true)), 502,
                      "upstream_unreachable");
}

// A backend on this host answers a connect within connect(2) itself, and Sluice takes that answer at once; a
// connect the backend leaves waiting is waited for, up to timeouts.connect.
TEST(Proxy, ConnectThatHangsEndsAtTheConnectTimeoutAs504) {
  StalledPort stalled;
  TestGateway gw(scripted_config("http://127.0.0.1:" + std::to_string(stalled.port()) + "/v1", "{ connect: 300ms }"));
  for (bool stream : {false, true}) {
    const auto t0 = std::chrono::steady_clock::now();
    expect_openai_error(post_json(gw.port(), "/v1/chat/completions", chat("m", stream)), 504, "upstream_timeout");
    // The connect timeout ended it, not the kernel giving up on the SYN (about two minutes).
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 20s);
  }
}

TEST(Proxy, ConnectThatWaitsGoesOnWhenTheBackendAccepts) {
  StalledPort stalled;
  TestGateway gw(scripted_config("http://127.0.0.1:" + std::to_string(stalled.port()) + "/v1", "{ connect: 30s }"));
  bool waited = false;
  std::string request;
  std::thread backend([&] {
    waited = stalled.wait_for_waiting_connect(20s);  // Sluice's SYN was dropped: its connect is in progress
    stalled.release();
    UpstreamConn c(stalled.accept(20s));  // the kernel's retry of that SYN, a second later
    request = c.read_request();
    const std::string body = R"({"id":"x","object":"chat.completion","choices":[]})";
    c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
            std::to_string(body.size()) + "\r\n\r\n" + body);
  });
  auto r = post_json(gw.port(), "/v1/chat/completions", chat("m", false));
  backend.join();
  EXPECT_TRUE(waited) << "Sluice's connect never waited in SYN_SENT";
  EXPECT_NE(request.find("POST /v1/chat/completions"), std::string::npos) << request;
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_NE(r.body.find(R"("object":"chat.completion")"), std::string::npos) << r.body;
}

TEST(Proxy, SilentBackendIs504) {
  ScriptedUpstream upstream([](UpstreamConn& c) {
    c.read_request();
    c.wait_closed(10s);  // never answers
  });
  // A stream must start within first_token; a whole answer must come within total.
  TestGateway gw(scripted_config(upstream.url(), "{ first_token: 200ms, total: 400ms }"));
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", chat("m", true)), 504, "upstream_timeout");
  expect_openai_error(post_json(gw.port(), "/v1/chat/completions", chat("m", false)), 504,
                      "upstream_timeout");
}

TEST(Proxy, BackendErrorBodiesAreMappedToOpenAIShape) {
  ScriptedUpstream* up = nullptr;
  ScriptedUpstream vllm(json_backend(
      up, R"({"error":{"message":"engine dead","type":"InternalServerError","param":null,"code":500}})",
      500));
  up = &vllm;
  TestGateway gw(scripted_config(vllm.url()));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat("m", false));
  expect_openai_error(r, 502, "500");
  EXPECT_NE(r.body.find("engine dead"), std::string::npos);

  ScriptedUpstream* up2 = nullptr;
  ScriptedUpstream tgi(
      json_backend(up2, R"({"error":"Input validation error: too long","error_type":"validation"})", 422));
  up2 = &tgi;
  TestGateway gw2(scripted_config(tgi.url()));
  auto r2 = post_json(gw2.port(), "/v1/chat/completions", chat("m", false));
  expect_openai_error(r2, 422, "validation");
  EXPECT_NE(r2.body.find("Input validation error"), std::string::npos);
}

TEST(Proxy, BackendRefusingOurKeyIsA502WithoutItsMessage) {
  ScriptedUpstream* up = nullptr;
  ScriptedUpstream upstream(json_backend(
      up,
      R"({"error":{"message":"Incorrect API key provided: back****cret","type":"invalid_request_error","code":"invalid_api_key"}})",
      401));
  up = &upstream;
  TestGateway gw(scripted_config(upstream.url()));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat("m", false));
  expect_openai_error(r, 502, "upstream_auth_failed");  // not a 401: the client's own key is fine
  EXPECT_EQ(r.body.find("back****cret"), std::string::npos) << r.body;
}

TEST(Proxy, WholeAnswerMayTakeLongerThanFirstTokenButNotTotal) {
  // Non-stream: the backend sends its header only when generation is done.
  ScriptedUpstream slow([](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      std::this_thread::sleep_for(300ms);
      std::string body = R"({"object":"chat.completion","choices":[]})";
      c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\n\r\n" + body);
    }
  });
  TestGateway gw(scripted_config(slow.url(), "{ first_token: 100ms, total: 10s }"));
  EXPECT_EQ(post_json(gw.port(), "/v1/chat/completions", chat("m", false)).status, 200);
  TestGateway strict(scripted_config(slow.url(), "{ first_token: 100ms, total: 150ms }"));
  expect_openai_error(post_json(strict.port(), "/v1/chat/completions", chat("m", false)), 504,
                      "upstream_timeout");
}

TEST(Proxy, AdminAnswersHeadWithoutABody) {
  TestGateway gw(test_config_yaml(kSimBackend));
  HttpClient c(gw.admin_port());
  ASSERT_TRUE(c.send_raw("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto head = c.read_head();
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.header("content-length"), "15");
  auto next = c.read_response();  // the pipelined GET parses cleanly: no stray body before it
  EXPECT_EQ(next.status, 200);
  EXPECT_EQ(next.body, R"({"status":"ready"})");
}

// A stream that sends one event every 20 ms until the gateway closes the connection.
ScriptedUpstream::Handler endless_stream(std::atomic<long>& closed_at_us) {
  return [&closed_at_us](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    for (int i = 0; i < 500; ++i) {
      c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}\n\n");
      if (c.wait_closed(20ms)) {
        closed_at_us = std::chrono::duration_cast<std::chrono::microseconds>(
                           std::chrono::steady_clock::now().time_since_epoch())
                           .count();
        return;
      }
    }
  };
}

long now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

TEST(Proxy, ClientDisconnectMidStreamClosesUpstreamPromptly) {
  std::atomic<long> closed_at{0};
  ScriptedUpstream upstream(endless_stream(closed_at));
  TestGateway gw(scripted_config(upstream.url()));
  HttpClient c(gw.port());
  std::string body = chat("m", true);
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", body, "sk-test")));
  auto head = c.read_head();
  ASSERT_EQ(head.status, 200);
  ASSERT_NE(c.read_some().find("data:"), std::string::npos);
  long left_at = now_us();
  c.close();
  ASSERT_TRUE(wait_until([&] { return closed_at.load() != 0; }, 10s))
      << "the upstream connection was never closed";
  double ms = static_cast<double>(closed_at.load() - left_at) / 1000.0;
  std::printf("upstream closed %.2f ms after the client left\n", ms);
  EXPECT_LT(ms, 1000.0);  // the target is 100 ms; a loaded CI machine gets a wide margin
  HttpClient a(gw.admin_port());
  EXPECT_TRUE(wait_until([&] {
    return a.request("GET", "/metrics").body.find("sluice_client_disconnects_total{phase=\"streaming\"} 1") !=
           std::string::npos;
  }));
}

TEST(Proxy, ClientDisconnectBeforeFirstByteClosesUpstream) {
  std::atomic<bool> closed{false};
  ScriptedUpstream upstream([&closed](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    closed = c.wait_closed(10s);  // thinking... never answers
  });
  TestGateway gw(scripted_config(upstream.url()));
  HttpClient c(gw.port());
  std::string body = chat("m", false);
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", body, "sk-test")));
  ASSERT_TRUE(wait_until([&] { return upstream.connections() == 1; }));
  c.close();
  EXPECT_TRUE(wait_until([&] { return closed.load(); }, 10s));
}

}  // namespace
}  // namespace sluice::test

namespace sluice::test {
namespace {

TEST(Proxy, StreamsStillOpenWhenTheDrainRunsOutEndCleanly) {
  // 200 tokens at 20/s would take 10 s; the drain allows 300 ms. Short streams that ended in between (one begun
  // before the long ones, one between them, one after) leave the worker's list of exchanges in use: every long
  // stream is still reached.
  TestGateway gw(
      "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 1, drain_timeout: 300ms }\n"
      "log: { level: warn, format: text, access_log: false }\n" +
      kSimBackend + "keys:\n  - { name: tester, key_sha256: \"KEYDIGEST\" }\n");
  const std::string long_stream = R"(,"simulator":{"tokens":200,"tokens_per_second":20})";
  const std::string short_stream = R"(,"simulator":{"tokens":30,"tokens_per_second":100})";
  std::vector<std::unique_ptr<HttpClient>> longs, shorts;
  std::vector<std::string> received;
  auto start = [&](const std::string& extra, std::vector<std::unique_ptr<HttpClient>>& into) {
    into.push_back(std::make_unique<HttpClient>(gw.port()));
    ASSERT_TRUE(into.back()->send_raw(raw_post("/v1/chat/completions", chat("demo", true, extra))));
    ASSERT_EQ(into.back()->read_head().status, 200);
  };
  start(short_stream, shorts);
  for (int i = 0; i < 3; ++i) {
    start(long_stream, longs);
    received.push_back(longs.back()->read_some());
    if (i == 1) start(short_stream, shorts);
  }
  start(short_stream, shorts);
  for (auto& s : shorts) {  // each ends on its own
    std::string all;
    for (int i = 0; i < 100 && all.find("0\r\n\r\n") == std::string::npos; ++i) all += s->read_some(100ms);
    ASSERT_NE(all.find("data: [DONE]"), std::string::npos) << all;
    EXPECT_EQ(all.find("shutting_down"), std::string::npos) << all;
  }
  gw.gateway().drain();
  for (std::size_t k = 0; k < longs.size(); ++k) {
    for (int i = 0; i < 100 && received[k].find("0\r\n\r\n") == std::string::npos; ++i)
      received[k] += longs[k]->read_some(100ms);
    // Each client is told, and its chunked stream is properly terminated.
    EXPECT_NE(received[k].find("\"code\":\"shutting_down\""), std::string::npos) << k << ": " << received[k];
    EXPECT_NE(received[k].find("data: [DONE]"), std::string::npos) << k;
    EXPECT_NE(received[k].find("0\r\n\r\n"), std::string::npos) << k;
  }
  gw.gateway().wait();  // and the gateway stops
}

}  // namespace
}  // namespace sluice::test
