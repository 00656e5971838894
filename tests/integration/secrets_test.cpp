// No key, the client's or a backend's, ever appears in Sluice's logs, its metrics or any answer, whatever goes
// wrong: the real binary at debug level with access logs, driven through every error path, its output searched.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <csignal>
#include <mutex>

#include "harness.hpp"
#include "policy/keyring.hpp"

namespace sluice::test {
namespace {

const std::string kClientKey = "sk-client-Zq9SECRETclientKEY0042";
const std::string kBackendKey = "bk-backend-Xy7SECRETbackendKEY0042";  // from a file
const std::string kEnvKey = "bk-env-Qw3SECRETenvKEY0042";             // from the environment
// The distinctive middles and first 12 characters too, so a key cut, quoted or re-encoded in part is found.
const std::vector<std::string> kSecrets = {kClientKey,    kBackendKey,     kEnvKey,     "SECRETclient",
                                           "SECRETbackend", "SECRETenv",     "sk-client-Zq", "bk-backend-X",
                                           "bk-env-Qw3SE"};

// A backend that misbehaves as the message asks, quoting the Authorization header it received.
void play(UpstreamConn& c, const std::string& req) {
  auto auth = header_of(req, "authorization");
  auto body = body_of(req);
  auto json = [&](int status, const std::string& b) {
    c.write("HTTP/1.1 " + std::to_string(status) + " X\r\nContent-Type: application/json\r\nContent-Length: " +
            std::to_string(b.size()) + "\r\n\r\n" + b);
  };
  if (body.find("mode:401") != std::string::npos) {
    json(401, R"({"error":{"message":"Incorrect API key provided: )" + auth + R"(","type":"invalid_request_error","param":")" +
                  auth + R"(","code":"invalid_api_key"}})");
  } else if (body.find("mode:500") != std::string::npos) {
    json(500, R"({"error":{"message":"upstream failed; request headers were Authorization: )" + auth + R"("}})");
  } else if (body.find("mode:vllm400") != std::string::npos) {
    json(400, R"({"object":"error","message":"bad request with )" + auth + R"(","type":"BadRequestError","code":400})");
  } else if (body.find("mode:tgi422") != std::string::npos) {
    json(422, R"({"error":")" + auth + R"( is not allowed","error_type":"validation"})");
  } else if (body.find("mode:cut") != std::string::npos) {  // plain text, the key across Sluice's 512-byte cut
    std::string text = std::string(493, '.') + auth;
    c.write("HTTP/1.1 500 X\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(text.size()) +
            "\r\n\r\n" + text);
  } else if (body.find("mode:429") != std::string::npos) {
    json(429, R"({"error":{"message":"slow down, )" + auth + R"("}})");
  } else if (body.find("mode:reset") != std::string::npos) {
    c.reset();
  } else if (body.find("mode:garbage") != std::string::npos) {
    c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n" + auth.substr(0, 20));
  } else if (body.find("mode:stall") != std::string::npos) {
    c.wait_closed(10s);
  } else if (body.find("\"stream\":true") != std::string::npos) {
    c.write_sse_header();
    c.write_chunk(
        R"(data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}})"
        "\n\ndata: [DONE]\n\n");
    c.write_chunk("");
  } else {
    json(200,
         R"({"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}})");
  }
}

TEST(Secrets, NoKeyAppearsInLogsMetricsOrAnswersOnAnyErrorPath) {
  std::mutex mutex;
  std::vector<std::string> seen_auth;  // what the backend received: proves the secrets were in play
  ScriptedUpstream backend([&](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      {
        std::lock_guard lock(mutex);
        seen_auth.push_back(header_of(req, "authorization"));
      }
      play(c, req);
      if (c.fd() < 0) return;
    }
  });
  TempDir dir;
  auto key_file = dir.write("backend.key", kBackendKey + "\n");
  ::setenv("SLUICE_SECRETS_TEST_KEY", kEnvKey.c_str(), 1);
  const std::string timeouts = "timeouts: { first_token: 300ms, idle: 300ms, total: 5s }";
  auto config = dir.write(
      "sluice.yaml",
      "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 1, max_body_bytes: 4KiB, "
      "max_header_bytes: 2KiB }\n"
      "log: { level: debug, format: json, access_log: true }\n"
      "backends:\n"
      "  - { name: filed, dialect: vllm, url: \"" +
          backend.url() + "\", api_key_file: " + key_file + ", health: { enabled: false }, outlier: { consecutive_failures: 0 }, " + timeouts +
          " }\n"
          "  - { name: env, dialect: tgi, url: \"" +
          backend.url() + "\", api_key: \"${SLUICE_SECRETS_TEST_KEY}\", health: { enabled: false }, outlier: { consecutive_failures: 0 }, " + timeouts +
          " }\n"
          "models:\n"
          "  - { name: m, targets: [ { backend: filed } ] }\n"
          "  - { name: e, targets: [ { backend: env } ] }\n"
          "  - { name: other, targets: [ { backend: filed } ] }\n"
          "keys:\n"
          "  - { name: alice, key_sha256: \"" +
          policy::sha256_hex(kClientKey) +
          "\", models: [ m, e ], limits: { rpm: 40 } }\n");

  auto [check_code, check_out] = run_command({sluice_binary(), "check-config", "--config", config});
  EXPECT_EQ(check_code, 0) << check_out;

  RunningGateway gw(config);
  ASSERT_NE(gw.port, 0) << gw.child.err();
  std::vector<HttpResponse> answers;
  auto chat = [](const std::string& model, const std::string& text, bool stream = false) {
    return R"({"model":")" + model + R"(","messages":[{"role":"user","content":")" + text + R"("}],"stream":)" +
           (stream ? "true" : "false") + "}";
  };
  auto ask = [&](const std::string& model, const std::string& text, const std::string& key = kClientKey,
                 bool stream = false, const std::map<std::string, std::string>& headers = {}) {
    answers.push_back(post_json(gw.port, "/v1/chat/completions", chat(model, text, stream), key, headers));
    return answers.back().status;
  };
  // Answers that work, then every backend failure, for both backends.
  EXPECT_EQ(ask("m", "fine"), 200);
  EXPECT_EQ(ask("m", "fine", kClientKey, true), 200);
  for (const std::string model : {"m", "e"}) {
    EXPECT_EQ(ask(model, "mode:401"), 502);
    EXPECT_EQ(ask(model, "mode:500"), 502);
    EXPECT_EQ(ask(model, "mode:cut"), 502);
    EXPECT_EQ(ask(model, "mode:vllm400"), 400);
    EXPECT_EQ(ask(model, "mode:tgi422"), 422);
    EXPECT_EQ(ask(model, "mode:429"), 429);
    EXPECT_EQ(ask(model, "mode:reset"), 502);
    EXPECT_EQ(ask(model, "mode:garbage"), 502);
    EXPECT_EQ(ask(model, "mode:stall"), 504);
    EXPECT_EQ(ask(model, "mode:401", kClientKey, true), 502);
  }
  // Client mistakes, the key always somewhere in the request.
  EXPECT_EQ(ask("m", "x", "sk-client-Zq9SECRETclientKEY0043"), 401);  // one character off
  EXPECT_EQ(ask("m", "x", ""), 401);
  EXPECT_EQ(ask("m", "x", "", false, {{"x-api-key", kClientKey + "-not"}}), 401);
  EXPECT_EQ(ask("other", "x"), 403);
  EXPECT_EQ(ask("nope", "x"), 404);
  answers.push_back(post_json(gw.port, "/v1/chat/completions", "{\"model\":\"" + kClientKey + "\"", kClientKey));
  EXPECT_EQ(answers.back().status, 400);
  answers.push_back(post_json(gw.port, "/v1/chat/completions", chat("m", std::string(8000, 'x')), kClientKey));
  EXPECT_EQ(answers.back().status, 413);
  answers.push_back(
      post_json(gw.port, "/v1/chat/completions", chat("m", "x"), kClientKey, {{"x-pad", std::string(3000, 'p')}}));
  EXPECT_EQ(answers.back().status, 431);
  {
    HttpClient c(gw.port);
    answers.push_back(
        c.request("GET", "/v1/models?api_key=" + kClientKey, "", {{"Authorization", "Bearer " + kClientKey}}));
    EXPECT_EQ(answers.back().status, 200);
  }
  {
    HttpClient c(gw.port);
    c.send_raw("POST /v1/" + kClientKey + " HTTP/1.1\r\nAuthorization Bearer " + kClientKey + "\r\n\r\n");
    answers.push_back(c.read_response());
    EXPECT_EQ(answers.back().status, 400);
  }
  // Rate limited: rpm 40 is used up by now or soon.
  int limited = 0;
  for (int i = 0; i < 60 && limited == 0; ++i) limited += ask("m", "fine") == 429;
  EXPECT_EQ(limited, 1);

  std::string metrics = HttpClient(gw.admin).request("GET", "/metrics").body;
  EXPECT_NE(metrics.find("sluice_requests_total"), std::string::npos);
  gw.child.signal(SIGTERM);
  EXPECT_EQ(gw.child.wait_exit(30s), 0);
  std::string logs = gw.child.out() + gw.child.err();

  // The secrets were in play: the backends got their keys, and the log has a line for each request.
  {
    std::lock_guard lock(mutex);
    EXPECT_NE(std::find(seen_auth.begin(), seen_auth.end(), "Bearer " + kBackendKey), seen_auth.end());
    EXPECT_NE(std::find(seen_auth.begin(), seen_auth.end(), "Bearer " + kEnvKey), seen_auth.end());
    for (const auto& a : seen_auth) EXPECT_EQ(a.find(kClientKey), std::string::npos);
  }
  EXPECT_NE(logs.find("refused the configured API key"), std::string::npos) << logs.substr(0, 2000);
  EXPECT_GE(std::count(logs.begin(), logs.end(), '\n'), static_cast<long>(answers.size()));

  for (const auto& secret : kSecrets) {
    SCOPED_TRACE(secret);
    EXPECT_EQ(logs.find(secret), std::string::npos) << logs.substr(logs.find(secret) - std::min<std::size_t>(logs.find(secret), 300), 400);
    EXPECT_EQ(metrics.find(secret), std::string::npos);
    EXPECT_EQ(check_out.find(secret), std::string::npos);
    for (const auto& a : answers) {
      EXPECT_EQ(a.body.find(secret), std::string::npos) << a.status << " " << a.body;
      for (const auto& [name, value] : a.headers) EXPECT_EQ(value.find(secret), std::string::npos) << name;
    }
  }
}

}  // namespace
}  // namespace sluice::test
