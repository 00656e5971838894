// The relay's promise to a team running thousands of streams: no allocation per SSE event. This binary counts
// every operator new made by the gateway's own threads (the test's threads, the client and the scripted
// backend, opt out), while a stream is relayed one event per backend write, each written only after the
// client has the one before (so each event is its own read, as with a real model's tokens).
//
// Its own executable: the counting operator new replaces the global one for every test in the binary.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>

#include "harness.hpp"

namespace {
std::atomic<long> g_allocations{0};
thread_local bool t_not_counted = false;  // set by the test's own threads
}  // namespace

void* operator new(std::size_t n) {
  if (!t_not_counted) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace sluice::test {
namespace {

constexpr int kWarmUp = 20;   // the stream's first events: its buffers grow to their size, the parser learns
constexpr int kCounted = 400;  // the events counted after them

std::string token_event(int i) {
  return "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"m\","
         "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" tok" +
         std::to_string(i % 10) + "\"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
}

TEST(Allocations, ARelayedStreamAllocatesNothingPerEvent) {
  t_not_counted = true;
  std::atomic<int> seen{0};  // events the client has received
  std::atomic<long> before{-1}, after{-1};
  ScriptedUpstream upstream([&](UpstreamConn& c) {
    t_not_counted = true;
    if (c.read_request().empty()) return;
    c.write_sse_header();
    for (int i = 0; i < kWarmUp + kCounted; ++i) {
      if (i == kWarmUp) before = g_allocations.load();
      if (!c.write_chunk(token_event(i))) return;
      if (!wait_until([&] { return seen.load() > i; }, 20s)) return;
    }
    after = g_allocations.load();
    c.write_chunk("data: [DONE]\n\n");
    c.write("0\r\n\r\n");
  });
  TestGateway gw(test_config_yaml("backends:\n  - { name: up, url: \"" + upstream.url() +
                                  "\", health: { enabled: false } }\n"
                                  "models:\n  - { name: m, targets: [ { backend: up } ] }\n"));
  HttpClient client(gw.port());
  ASSERT_TRUE(client.send_raw(raw_post("/v1/chat/completions",
                                       R"({"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true})")));
  ASSERT_EQ(client.read_head().status, 200);
  std::string received;
  std::size_t counted_to = 0;
  ASSERT_TRUE(wait_until(
      [&] {
        received += client.read_some(50ms);
        for (std::size_t at; (at = received.find("\n\n", counted_to)) != std::string::npos;) {
          counted_to = at + 2;
          if (received.compare(at - 1, 1, "}") == 0) ++seen;  // a token event (not [DONE])
        }
        return after.load() >= 0;
      },
      60s))
      << "events seen: " << seen.load();
  const long per_stream = after.load() - before.load();
  std::printf("operator new calls on the gateway's threads over %d relayed events: %ld\n", kCounted, per_stream);
  // One allocation per event would be 400 here. A few may come from the worker's timers (the access log's
  // flush, the idle sweep) while the events flow.
  EXPECT_LE(per_stream, kCounted / 20) << "operator new calls on the gateway's threads over " << kCounted
                                       << " relayed events";
  EXPECT_EQ(seen.load(), kWarmUp + kCounted);
}

}  // namespace
}  // namespace sluice::test
