// Fuzzes the SSE parser: the input is one upstream byte stream. It is fed whole, byte by byte and in
// pieces whose sizes come from its own bytes; a relay reads at arbitrary TCP boundaries, so the events
// and the forwarding boundary must not depend on where the reads split.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "openai/sse_parser.hpp"

namespace {

using sluice::openai::SseEvent;
using sluice::openai::SseParser;

struct Run {
  std::vector<SseEvent> events;
  std::uint64_t boundary = 0, total = 0;
  std::size_t partial = 0;
};

// Feeds `bytes` in pieces of the sizes `next_size` returns (0 feeds an empty piece, which changes nothing).
template <class NextSize>
Run feed(std::string_view bytes, NextSize next_size) {
  Run r;
  SseParser p;
  std::size_t at = 0;
  while (at < bytes.size()) {
    std::size_t n = std::min(next_size(), bytes.size() - at);
    std::size_t before = r.events.size();
    if (n == 0) {  // an empty read must change nothing; then go on one byte at a time
      p.feed({}, r.events);
      n = 1;
    }
    p.feed(bytes.substr(at, n), r.events);
    at += n;
    // After every read: the boundary never passes the bytes seen, events end where they were dispatched.
    SLUICE_FUZZ_CHECK(p.total() == at, "total() counts every byte fed");
    SLUICE_FUZZ_CHECK(p.boundary() <= p.total(), "boundary() <= total()");
    for (std::size_t i = before; i < r.events.size(); ++i)
      SLUICE_FUZZ_CHECK(r.events[i].end <= p.boundary(), "a dispatched event lies before the boundary");
    SLUICE_FUZZ_CHECK(p.partial_line_bytes() <= p.total() - p.boundary(),
                      "the unfinished line lies after the boundary");
  }
  r.boundary = p.boundary();
  r.total = p.total();
  r.partial = p.partial_line_bytes();
  return r;
}

bool same(const SseEvent& a, const SseEvent& b) {
  return a.event == b.event && a.data == b.data && a.id == b.id && a.begin == b.begin && a.end == b.end;
}

void expect_same(const Run& a, const Run& b, const char* what) {
  SLUICE_FUZZ_CHECK(a.events.size() == b.events.size(), what);
  for (std::size_t i = 0; i < a.events.size(); ++i) SLUICE_FUZZ_CHECK(same(a.events[i], b.events[i]), what);
  SLUICE_FUZZ_CHECK(a.boundary == b.boundary, what);
  SLUICE_FUZZ_CHECK(a.total == b.total, what);
  SLUICE_FUZZ_CHECK(a.partial == b.partial, what);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);

  Run whole;
  {
    SseParser p;
    p.feed(bytes, whole.events);
    whole.boundary = p.boundary();
    whole.total = p.total();
    whole.partial = p.partial_line_bytes();
  }
  SLUICE_FUZZ_CHECK(whole.total == size, "total() counts every byte fed");
  SLUICE_FUZZ_CHECK(whole.boundary <= whole.total, "boundary() <= total()");
  std::uint64_t last_end = 0;
  for (const auto& e : whole.events) {
    SLUICE_FUZZ_CHECK(e.begin < e.end, "an event has bytes");
    SLUICE_FUZZ_CHECK(e.begin >= last_end, "events are in order and do not overlap");
    SLUICE_FUZZ_CHECK(e.end <= whole.boundary, "events lie before the boundary");
    SLUICE_FUZZ_CHECK(e.id.find('\0') == std::string::npos, "an id with NUL is ignored");
    last_end = e.end;
  }

  // The same stream, split differently.
  expect_same(whole, feed(bytes, [] { return std::size_t{1}; }), "byte-by-byte feed differs from one feed");
  const unsigned seed = size ? data[0] : 0;
  for (std::size_t piece : {std::size_t{2} + seed % 5, std::size_t{3} + seed / 16, std::size_t{64}}) {
    expect_same(whole, feed(bytes, [piece] { return piece; }), "fixed-size feed differs from one feed");
  }
  {
    // Irregular pieces, sizes taken from the input itself (empty pieces included).
    std::size_t k = 0;
    expect_same(whole, feed(bytes, [&] { return std::size_t{data[k++ % size]} % 9; }),
                "irregular feed differs from one feed");
  }

  // A relay forwards [0, boundary): those bytes alone must carry exactly the same events and end on
  // the same boundary.
  {
    Run prefix = feed(bytes.substr(0, whole.boundary), [] { return std::size_t{1} << 20; });
    SLUICE_FUZZ_CHECK(prefix.events.size() == whole.events.size(), "the forwarded prefix has every event");
    for (std::size_t i = 0; i < whole.events.size(); ++i)
      SLUICE_FUZZ_CHECK(same(prefix.events[i], whole.events[i]), "the forwarded prefix has the same events");
    SLUICE_FUZZ_CHECK(prefix.boundary == whole.boundary, "the forwarded prefix ends on the same boundary");
  }

  // Each event's own bytes [begin, end), parsed after a blank line (so a mid-stream BOM is not taken for
  // a leading one), give back that event and nothing else: dropping one event (an unwanted usage chunk)
  // leaves the others intact.
  for (const auto& e : whole.events) {
    SseParser p;
    std::vector<SseEvent> out;
    if (e.begin > 0) p.feed("\n", out);
    p.feed(bytes.substr(e.begin, e.end - e.begin), out);
    SLUICE_FUZZ_CHECK(out.size() == 1, "an event's bytes hold one event");
    SLUICE_FUZZ_CHECK(out[0].data == e.data && out[0].event == e.event && out[0].id == e.id,
                      "an event's bytes hold that event");
    SLUICE_FUZZ_CHECK(p.boundary() == p.total(), "an event's bytes end on a boundary");
  }
  return 0;
}
