// The SSE relay against a test upstream: byte-exact forwarding whatever the splits, promptness, failures.
#include <gtest/gtest.h>

#include <sys/socket.h>

#include <atomic>
#include <thread>

#include "harness.hpp"

namespace sluice::test {
namespace {

// A stream exercising the framing rules: LF, CRLF and lone-CR line ends, comments, multi-line data,
// an `event:` field, an empty data line, and OpenAI's [DONE].
const std::string kStream =
    ": keep-alive\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u00e9\xc3\xa9\"}}]}\r\n\r\n"
    "event: message\r\ndata: {\"choices\":[{\"index\":0,\r\ndata: \"delta\":{\"content\":\"!\"}}]}\r\r"
    "data:{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n"
    "data: [DONE]\n\n";

std::string chat_body(const std::string& extra = "") {
  return R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true)" + extra + "}";
}

std::string relay_config(const std::string& url, const std::string& timeouts = "") {
  return test_config_yaml("backends:\n  - { name: up, url: \"" + url + "\", health: { enabled: false }" +
                          (timeouts.empty() ? "" : ", timeouts: " + timeouts) +
                          " }\nmodels:\n  - { name: m, targets: [ { backend: up } ] }\n");
}

int split_of(const std::string& raw_request) {
  auto body = body_of(raw_request);
  auto p = body.find("\"split\":");
  return p == std::string::npos ? -1 : std::stoi(body.substr(p + 8));
}

TEST(SseRelay, EverySplitPointArrivesByteExactAndInOrder) {
  ScriptedUpstream* upstream_ptr = nullptr;
  // Each request names where the upstream splits the stream into two writes (-1: one byte per write).
  ScriptedUpstream upstream([&upstream_ptr](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      upstream_ptr->record(req);
      int split = split_of(req);
      c.write_sse_header();
      if (split < 0) {
        for (char ch : kStream) {
          c.write_chunk(std::string(1, ch));
          std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
      } else {
        c.write_chunk(kStream.substr(0, static_cast<std::size_t>(split)));
        std::this_thread::sleep_for(std::chrono::microseconds(300));  // let the gateway read the halves apart
        c.write_chunk(kStream.substr(static_cast<std::size_t>(split)));
      }
      c.write("0\r\n\r\n");
    }
  });
  upstream_ptr = &upstream;
  TestGateway gw(relay_config(upstream.url()));
  HttpClient client(gw.port());
  // Sluice always asks the backend for the usage chunk; a client that did not ask gets the stream without it.
  const std::string usage_event =
      "data:{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4,\"total_tokens\":7}}\n\n";
  std::string without_usage = kStream;
  without_usage.erase(without_usage.find(usage_event), usage_event.size());
  for (bool client_asks_usage : {true, false}) {
    const std::string options = client_asks_usage ? R"(,"stream_options":{"include_usage":true})" : "";
    const std::string& expected = client_asks_usage ? kStream : without_usage;
    for (int split = -1; split < static_cast<int>(kStream.size()); ++split) {
      if (split == 0) continue;
      auto r = client.request("POST", "/v1/chat/completions",
                              chat_body(options + ",\"split\":" + std::to_string(split)),
                              {{"Authorization", "Bearer sk-test"}});
      ASSERT_EQ(r.status, 200) << "split " << split;
      ASSERT_EQ(r.body, expected) << "split " << split << ", client asks for usage: " << client_asks_usage;
    }
  }
  EXPECT_EQ(upstream.connections(), 1);  // and all of it over one pooled upstream connection
  // Every request upstream asked for the usage chunk.
  for (const auto& raw : upstream.requests())
    EXPECT_NE(raw.find("\"include_usage\":true"), std::string::npos);
}

TEST(SseRelay, EachEventIsForwardedWithoutWaitingForTheNext) {
  // The upstream sends the next piece only once the client has seen the previous one: a relay that
  // held bytes back waiting for more would deadlock here (and the wait_until deadlines fail the test).
  std::atomic<int> seen{0};
  const std::vector<std::string> pieces = {
      ": ping\n", "\n", "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
      "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\r", "\ndata: [DONE]\n\n"};
  std::atomic<bool> in_step{true};
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    for (std::size_t i = 0; i < pieces.size(); ++i) {
      c.write_chunk(pieces[i]);
      if (!wait_until([&] { return seen.load() > static_cast<int>(i); }, 10s)) in_step = false;
    }
    c.write("0\r\n\r\n");
  });
  TestGateway gw(relay_config(upstream.url()));
  HttpClient client(gw.port());
  ASSERT_TRUE(client.send_raw(raw_post("/v1/chat/completions", chat_body())));
  auto head = client.read_head();
  ASSERT_EQ(head.status, 200);
  std::string received;
  std::string expected;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    expected += pieces[i];
    // Chunk framing aside, the payload so far must contain everything the upstream has sent.
    ASSERT_TRUE(wait_until(
        [&] {
          received += client.read_some(50ms);
          std::string payload;
          std::size_t pos = 0;
          while (pos < received.size()) {  // de-chunk what has arrived
            auto eol = received.find("\r\n", pos);
            if (eol == std::string::npos) break;
            auto size = std::stoul(received.substr(pos, eol - pos), nullptr, 16);
            if (received.size() < eol + 2 + size + 2) break;
            payload += received.substr(eol + 2, size);
            pos = eol + 2 + size + 2;
          }
          return payload == expected;
        },
        10s))
        << "piece " << i << " was held back";
    seen = static_cast<int>(i) + 1;
  }
  EXPECT_TRUE(in_step.load());
}

// The same with the chunk framing split across the backend's writes: each write ends right after an event's
// data, and the CRLF that closes that chunk comes with the next chunk's size line. The relay must forward the
// event without waiting for the rest of the framing.
TEST(SseRelay, EventsAreForwardedWhenChunkFramingIsSplitAcrossWrites) {
  std::atomic<int> seen{0};
  const std::vector<std::string> events = {"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
                                           "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n",
                                           "data: [DONE]\n\n"};
  std::atomic<bool> in_step{true};
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    for (std::size_t i = 0; i < events.size(); ++i) {
      char size[16];
      std::snprintf(size, sizeof size, "%zx\r\n", events[i].size());
      c.write((i > 0 ? "\r\n" : "") + std::string(size) + events[i]);
      if (!wait_until([&] { return seen.load() > static_cast<int>(i); }, 10s)) in_step = false;
    }
    c.write("\r\n0\r\n\r\n");
  });
  TestGateway gw(relay_config(upstream.url()));
  HttpClient client(gw.port());
  ASSERT_TRUE(client.send_raw(raw_post("/v1/chat/completions", chat_body())));
  ASSERT_EQ(client.read_head().status, 200);
  std::string received;
  for (std::size_t i = 0; i < events.size(); ++i) {
    ASSERT_TRUE(wait_until(
        [&] {
          received += client.read_some(50ms);
          return received.find(events[i]) != std::string::npos;
        },
        10s))
        << "event " << i << " was held back until more framing came";
    seen = static_cast<int>(i) + 1;
  }
  EXPECT_TRUE(in_step.load());
}

TEST(SseRelay, BackendFailureMidStreamEndsWithErrorEventAndDone) {
  ScriptedUpstream upstream([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial\"}}]}\n\n");
    std::this_thread::sleep_for(20ms);
    c.reset();
  });
  TestGateway gw(relay_config(upstream.url()));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat_body());
  ASSERT_EQ(r.status, 200);
  auto events = sse_data(r.body);
  ASSERT_EQ(events.size(), 3u) << r.body;
  EXPECT_NE(events[0].find("partial"), std::string::npos);
  EXPECT_EQ(events[1].rfind("{\"error\":{\"message\":", 0), 0u) << events[1];
  EXPECT_NE(events[1].find("\"code\":\"upstream_error\""), std::string::npos);
  EXPECT_EQ(events[2], "[DONE]");
}

TEST(SseRelay, StalledStreamHitsIdleDeadline) {
  ScriptedUpstream upstream([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"one\"}}]}\n\n");
    c.wait_closed(10s);  // then nothing
  });
  TestGateway gw(relay_config(upstream.url(), "{ idle: 300ms }"));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat_body());
  ASSERT_EQ(r.status, 200);
  auto events = sse_data(r.body);
  ASSERT_EQ(events.size(), 3u) << r.body;
  EXPECT_NE(events[1].find("\"code\":\"upstream_timeout\""), std::string::npos) << events[1];
  EXPECT_EQ(events[2], "[DONE]");
}

// The idle deadline counts from the last event, not the first: a backend that sends a token every 100 ms goes
// on for three and a half times its 1 s idle timeout, and the client gets every token and the end.
TEST(SseRelay, TheIdleDeadlineCountsFromTheLastEvent) {
  constexpr int kTokens = 35;
  ScriptedUpstream upstream([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    for (int i = 0; i < kTokens; ++i) {
      c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"t" + std::to_string(i) + "\"}}]}\n\n");
      std::this_thread::sleep_for(100ms);
    }
    c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n");
    c.write("0\r\n\r\n");
    c.wait_closed(5s);
  });
  TestGateway gw(relay_config(upstream.url(), "{ idle: 1s }"));
  auto r = post_json(gw.port(), "/v1/chat/completions", chat_body());
  ASSERT_EQ(r.status, 200);
  auto events = sse_data(r.body);
  ASSERT_EQ(events.size(), kTokens + 2u) << r.body;
  for (int i = 0; i < kTokens; ++i)
    EXPECT_NE(events[i].find("\"t" + std::to_string(i) + "\""), std::string::npos) << events[i];
  EXPECT_EQ(r.body.find("upstream_timeout"), std::string::npos) << r.body;
  EXPECT_EQ(events.back(), "[DONE]");
}

// A backend that answers its head at once and thinks before its first token: the client has its 200 and
// headers at once too (its SDK's read timeout and the operator's TTFB see the gateway answer), and then the
// events as they come.
TEST(SseRelay, TheHeadIsNotHeldBackWhileTheBackendThinks) {
  std::atomic<bool> release{false};
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    for (int i = 0; i < 2000 && !release; ++i) std::this_thread::sleep_for(10ms);
    c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"late\"},\"finish_reason\":\"stop\"}]}\n\n"
                  "data: [DONE]\n\n");
    c.write("0\r\n\r\n");
    c.wait_closed(2s);
  });
  TestGateway gw(relay_config(upstream.url()));
  HttpClient c(gw.port());
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", chat_body())));
  auto head = c.read_head();  // while the backend still holds its first token
  EXPECT_EQ(head.status, 200);
  EXPECT_FALSE(release.load());
  release = true;
  std::string body;
  for (int i = 0; i < 100 && body.find("0\r\n\r\n") == std::string::npos; ++i) body += c.read_some(100ms);
  EXPECT_NE(body.find("\"late\""), std::string::npos) << body;
  EXPECT_NE(body.find("data: [DONE]"), std::string::npos) << body;
  EXPECT_NE(body.find("0\r\n\r\n"), std::string::npos) << body;
}

// A client that stops reading a stream is dropped after the idle timeout: its write cannot hold the relay,
// the backend's connection is closed (it stops generating), and the metric says the client left mid-stream.
TEST(SseRelay, AClientThatStopsReadingIsDroppedAfterTheIdleTimeout) {
  std::atomic<bool> upstream_cut{false};
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    const std::string event =
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" + std::string(2000, 'x') + "\"}}]}\n\n";
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < until)
      if (!c.write_chunk(event)) {  // the gateway closed the connection
        upstream_cut = true;
        return;
      }
  });
  TestGateway gw(relay_config(upstream.url(), "{ idle: 300ms }"));
  HttpClient c(gw.port());
  int small = 4096;
  ASSERT_EQ(setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions", chat_body())));
  ASSERT_EQ(c.read_head().status, 200);
  // ...and reads nothing more.
  EXPECT_TRUE(wait_until([&] { return upstream_cut.load(); }, 20s));
  EXPECT_TRUE(wait_until(
      [&] { return metric_value(gw.admin_port(), "sluice_client_disconnects_total{phase=\"streaming\"}") == 1; },
      10s));
  EXPECT_TRUE(wait_until([&] { return metric_value(gw.admin_port(), "sluice_active_streams") == 0; }, 10s));
}

// The same for a whole answer: one the socket cannot take at once (16 MiB against a client that reads none
// of it) waits under the idle timeout, and the client is dropped when it runs out; the worker goes on.
TEST(SseRelay, AClientThatStopsReadingAWholeAnswerIsDroppedAfterTheIdleTimeout) {
  const std::string answer = R"({"id":"c1","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":")" +
                             std::string(16u << 20, 'x') +
                             R"("},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}})";
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      const std::string body = req.find("\"big\"") != std::string::npos ? answer : R"({"id":"c2","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]})";
      if (!c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body))
        return;
    }
  });
  TestGateway gw(relay_config(upstream.url(), "{ idle: 300ms }"));
  // As the connection's first request, and after a quick one (then it runs under the watchdog the connection
  // kept from that one).
  for (const bool after_a_quick_one : {false, true}) {
    SCOPED_TRACE(after_a_quick_one ? "after a quick request" : "first request");
    HttpClient c(gw.port());
    int small = 4096;
    ASSERT_EQ(setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    if (after_a_quick_one) {
      ASSERT_EQ(c.request("POST", "/v1/chat/completions",
                          R"({"model":"m","messages":[{"role":"user","content":"hi"}]})",
                          {{"Authorization", "Bearer sk-test"}})
                    .status,
                200);
    }
    ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions",
                                    R"({"model":"m","messages":[{"role":"user","content":"big"}]})")));
    // ...and reads nothing.
    const double dropped = after_a_quick_one ? 2 : 1;
    EXPECT_TRUE(wait_until(
        [&] {
          return metric_value(gw.admin_port(), "sluice_client_disconnects_total{phase=\"streaming\"}") == dropped;
        },
        20s));
    auto res =
        post_json(gw.port(), "/v1/chat/completions", R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
    EXPECT_EQ(res.status, 200) << res.body;
  }
}

// A client connection keeps its watchdog from one request to the next (its timer stays set between them): each
// later request on the connection still has its backend deadline kept, and its client watched for a hang-up,
// whether the connection's earlier requests were quick or were watched themselves.
TEST(SseRelay, EveryRequestOnAKeptAliveConnectionIsWatched) {
  std::atomic<int> cut{0};
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      if (req.find("\"stall\"") != std::string::npos) {  // no first token, ever
        c.wait_closed(20s);
        return;
      }
      if (req.find("\"hang up\"") != std::string::npos) {  // one event, then waits for the gateway to close
        c.write_sse_header();
        c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"one\"}}]}\n\n");
        if (c.wait_closed(20s)) ++cut;
        return;
      }
      const std::string body = R"({"id":"c","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]})";
      if (!c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body))
        return;
    }
  });
  TestGateway gw(relay_config(upstream.url(), "{ first_token: 300ms }"));
  HttpClient c(gw.port());
  auto ask = [&](const std::string& content, bool stream) {
    return c.request("POST", "/v1/chat/completions",
                     R"({"model":"m","messages":[{"role":"user","content":")" + content + "\"}]" +
                         (stream ? R"(,"stream":true})" : "}"),
                     {{"Authorization", "Bearer sk-test"}});
  };
  // The backend never starts the stream: its first-token deadline ends it, on the watchdog the connection kept:
  // right after quick requests (its timer most likely still set for the last one), and after a pause in which
  // that timer has fired with nothing to do.
  for (const auto pause : {0ms, 200ms}) {
    for (int i = 0; i < 5; ++i) ASSERT_EQ(ask("hi", false).status, 200) << i;
    std::this_thread::sleep_for(pause);
    auto stalled = ask("stall", true);
    EXPECT_EQ(stalled.status, 504) << stalled.body;
    EXPECT_NE(stalled.body.find("upstream_timeout"), std::string::npos) << stalled.body;
  }
  for (int i = 0; i < 3; ++i) ASSERT_EQ(ask("hi", false).status, 200) << i;
  // A hang-up mid-stream, after quick requests: the backend's connection is closed at once.
  ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions",
                                  R"({"model":"m","messages":[{"role":"user","content":"hang up"}],"stream":true})")));
  ASSERT_EQ(c.read_head().status, 200);
  std::string got;
  ASSERT_TRUE(wait_until([&] {
    got += c.read_some(100ms);
    return got.find("\"one\"") != std::string::npos;
  }));
  c.close();
  EXPECT_TRUE(wait_until([&] { return cut.load() == 1; }, 10s));
  EXPECT_TRUE(wait_until(
      [&] { return metric_value(gw.admin_port(), "sluice_client_disconnects_total{phase=\"streaming\"}") == 1; },
      10s));
}

// A stream's client is watched for a hang-up from the relay's first wait for its backend (after its first
// events). A client that sends its next request before the stream has ended is not one that hung up: the stream
// goes on whole, and the request sent ahead is answered after it on the same connection.
TEST(SseRelay, ARequestSentAheadDuringAStreamIsNotTakenForAHangUp) {
  std::atomic<int> cut{0}, first_events{0}, sent_ahead{0};
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      if (req.find("\"slow\"") != std::string::npos) {
        c.write_sse_header();
        c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"one\"}}]}\n\n");
        const int round = ++first_events;
        wait_until([&] { return sent_ahead.load() >= round; }, 10s);
        // The next request is on the gateway's client socket now, under its watch: the stream stays open.
        if (c.wait_closed(200ms)) {
          ++cut;
          return;
        }
        c.write_chunk("data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"two\"},\"finish_reason\":\"stop\"}]}\n\n");
        c.write_chunk("data: [DONE]\n\n");
        c.write("0\r\n\r\n");
        continue;
      }
      const std::string body = R"({"id":"c","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]})";
      if (!c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                   std::to_string(body.size()) + "\r\n\r\n" + body))
        return;
    }
  });
  TestGateway gw(relay_config(upstream.url()));
  HttpClient c(gw.port());
  for (int round = 1; round <= 2; ++round) {  // on a new connection's first request, then on a kept-alive one
    ASSERT_TRUE(c.send_raw(raw_post("/v1/chat/completions",
                                    R"({"model":"m","messages":[{"role":"user","content":"slow"}],"stream":true})")));
    ASSERT_TRUE(wait_until([&] { return first_events.load() >= round; }, 10s)) << round;
    std::this_thread::sleep_for(20ms);  // the first event relayed, the relay waits for the backend
    ASSERT_TRUE(c.send_raw(
        raw_post("/v1/chat/completions", R"({"model":"m","messages":[{"role":"user","content":"next"}]})")));
    ++sent_ahead;
    auto stream = c.read_response();
    ASSERT_EQ(stream.status, 200) << round;
    const auto data = sse_data(stream.body);
    ASSERT_FALSE(data.empty()) << round;
    EXPECT_EQ(data.back(), "[DONE]") << round << ": " << stream.body;
    EXPECT_NE(stream.body.find("\"two\""), std::string::npos) << round << ": " << stream.body;
    auto next = c.read_response();
    EXPECT_EQ(next.status, 200) << round << ": " << next.body;
    EXPECT_NE(next.body.find("\"ok\""), std::string::npos) << round << ": " << next.body;
  }
  EXPECT_EQ(cut.load(), 0);
  EXPECT_LE(metric_value(gw.admin_port(), "sluice_client_disconnects_total{phase=\"streaming\"}"), 0);  // none, or not listed
}

TEST(SseRelay, TheClientGetsTheFormItAskedForWhateverTheBackendSends) {
  // The backend's Content-Type says what it sent: here always JSON when asked to stream, and always
  // SSE when asked not to (as Qubrid's legacy endpoint may). Sluice converts either way.
  ScriptedUpstream upstream([](UpstreamConn& c) {
    for (;;) {
      auto req = c.read_request();
      if (req.empty()) return;
      if (req.find("\"stream\":true") != std::string::npos) {
        std::string body =
            R"({"id":"c1","object":"chat.completion","created":5,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"ok","reasoning_content":"hmm"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}})";
        c.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\n\r\n" + body);
      } else {
        c.write_sse_header();
        c.write_chunk(
            "data: "
            "{\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{"
            "\"index\":0,"
            "\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n"
            "data: "
            "{\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\",\"tool_calls\":[{"
            "\"index\":0,\"id\":\"t1\","
            "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n"
            "data: "
            "{\"id\":\"c2\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
            "\"arguments\":\":1}\"}}]},"
            "\"finish_reason\":\"tool_calls\"}]}\n\n"
            "data: "
            "{\"id\":\"c2\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_"
            "tokens\":5}}\n\n"
            "data: [DONE]\n\n");
        c.write("0\r\n\r\n");
      }
    }
  });
  TestGateway gw(relay_config(upstream.url()));
  auto s = post_json(gw.port(), "/v1/chat/completions", chat_body());
  ASSERT_EQ(s.status, 200);
  EXPECT_EQ(s.header("content-type"), "text/event-stream");
  auto events = sse_data(s.body);
  ASSERT_EQ(events.size(), 3u) << s.body;  // the message, the finish reason, [DONE] (no usage: not asked)
  EXPECT_NE(
      events[0].find("\"delta\":{\"role\":\"assistant\",\"content\":\"ok\",\"reasoning_content\":\"hmm\"}"),
      std::string::npos)
      << events[0];
  EXPECT_NE(events[1].find("\"finish_reason\":\"stop\""), std::string::npos);
  EXPECT_EQ(events[2], "[DONE]");

  auto j = post_json(gw.port(), "/v1/chat/completions",
                     R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
  ASSERT_EQ(j.status, 200);
  EXPECT_EQ(j.header("content-type"), "application/json");
  EXPECT_NE(j.body.find("\"object\":\"chat.completion\""), std::string::npos) << j.body;
  EXPECT_NE(j.body.find("\"content\":\"Hello\""), std::string::npos) << j.body;
  EXPECT_NE(j.body.find("\"arguments\":\"{\\\"a\\\":1}\""), std::string::npos) << j.body;
  EXPECT_NE(j.body.find("\"finish_reason\":\"tool_calls\""), std::string::npos) << j.body;
  EXPECT_NE(j.body.find("\"completion_tokens\":2"), std::string::npos) << j.body;
}

TEST(SseRelay, TimeToFirstTokenWaitsForGeneratedText) {
  // A keep-alive comment and the role-only chunk come at once; the first text only after 300 ms.
  ScriptedUpstream upstream([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    c.write_chunk(
        ": keep-alive\n\ndata: "
        "{\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n");
    std::this_thread::sleep_for(300ms);
    c.write_chunk(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"first\"}}]}\n\ndata: [DONE]\n\n");
    c.write("0\r\n\r\n");
  });
  TestGateway gw(relay_config(upstream.url()));
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", chat_body()).status, 200);
  auto m = HttpClient(gw.admin_port()).request("GET", "/metrics").body;
  // It cannot have been under 0.25 s: the text came 300 ms in.
  EXPECT_NE(m.find("sluice_time_to_first_token_seconds_bucket{backend=\"up\",model=\"m\",le=\"0.25\"} 0"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("sluice_time_to_first_token_seconds_count{backend=\"up\",model=\"m\"} 1"),
            std::string::npos);
}

TEST(SseRelay, UsageFromTheStreamIsCounted) {
  ScriptedUpstream upstream([](UpstreamConn& c) {
    if (c.read_request().empty()) return;
    c.write_sse_header();
    c.write_chunk(kStream);
    c.write("0\r\n\r\n");
  });
  TestGateway gw(relay_config(upstream.url()));
  ASSERT_EQ(post_json(gw.port(), "/v1/chat/completions", chat_body()).status, 200);
  HttpClient admin(gw.admin_port());
  auto m = admin.request("GET", "/metrics").body;
  EXPECT_NE(m.find("sluice_tokens_total{backend=\"up\",key=\"tester\",model=\"m\",type=\"input\"} 3"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("sluice_tokens_total{backend=\"up\",key=\"tester\",model=\"m\",type=\"output\"} 4"),
            std::string::npos);
}

}  // namespace
}  // namespace sluice::test
