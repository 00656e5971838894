#include "openai/sse_parser.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::openai {

// In the type's namespace (not the anonymous one) so std::vector's == and gtest's printer find them.
bool operator==(const SseEvent& a, const SseEvent& b) {
  return a.event == b.event && a.data == b.data && a.id == b.id;
}

std::ostream& operator<<(std::ostream& os, const SseEvent& e) {
  return os << "{event=\"" << e.event << "\" data=\"" << e.data << "\" id=\"" << e.id << "\"}";
}

namespace {

using Events = std::vector<SseEvent>;

// Parses `bytes` in one feed with a fresh parser.
Events parse_all(std::string_view bytes) {
  SseParser p;
  Events out;
  p.feed(bytes, out);
  return out;
}

SseEvent data_event(std::string data) {
  return SseEvent{"", std::move(data), ""};
}

// A realistic OpenAI chat stream: role chunk, keep-alive comment, content chunks, usage chunk, [DONE].
constexpr std::string_view kOpenAiStream =
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
    "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
    "\"finish_reason\":null}]}\n\n"
    ": keep-alive\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"content\":\"lo \\u00e9\\n\"},\"finish_reason\":null}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
    "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}\n\n"
    "data: [DONE]\n\n";

// The same kind of stream as a CRLF server (and one lone-CR line) would send it, with a comment
// inside an event, an event name and an id.
constexpr std::string_view kCrlfStream =
    ": stream opened\r\n\r\n"
    "event: message\r\n"
    "id: 1\r\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n"
    ": comment inside an event\r\n"
    "\r\n"
    "data: {\"choices\":[{\"delta\":{\"content\":\"c\"}}]}\r\r"
    "data: [DONE]\r\n\r\n";

const Events& openai_events() {
  static const Events events = {
      data_event("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,"
                 "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                 "\"content\":\"\"},"
                 "\"finish_reason\":null}]}"),
      data_event("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
                 "\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}"),
      data_event("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
                 "\"delta\":{\"content\":\"lo \\u00e9\\n\"},\"finish_reason\":null}]}"),
      data_event("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,"
                 "\"delta\":{},\"finish_reason\":\"stop\"}]}"),
      data_event("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
                 "\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"total_tokens\":12}}"),
      data_event("[DONE]"),
  };
  return events;
}

const Events& crlf_events() {
  static const Events events = {
      SseEvent{"message", "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}", "1"},
      data_event("{\"choices\":[{\"delta\":{\"content\":\"b\"}}]}"),
      data_event("{\"choices\":[{\"delta\":{\"content\":\"c\"}}]}"),
      data_event("[DONE]"),
  };
  return events;
}

// Feeds `stream` in the given pieces and checks, after every feed, that boundary() is within total()
// and lands at an event end: the bytes before it re-parse alone into exactly the events dispatched so
// far, and the bytes from it on, parsed by a fresh parser, give all the rest (nothing is cut in half).
Events feed_checked(std::string_view stream, const std::vector<std::size_t>& cuts) {
  const Events all = parse_all(stream);
  SseParser p;
  Events out;
  std::uint64_t last_boundary = 0;
  std::size_t pos = 0;
  auto step = [&](std::size_t end) {
    p.feed(stream.substr(pos, end - pos), out);
    pos = end;
    EXPECT_EQ(p.total(), pos);
    EXPECT_LE(p.boundary(), p.total());
    EXPECT_GE(p.boundary(), last_boundary) << "boundary moved backwards";
    last_boundary = p.boundary();
    EXPECT_EQ(parse_all(stream.substr(0, p.boundary())), out)
        << "bytes [0, " << p.boundary() << ") do not end at an event end (fed up to " << pos << ")";
    Events joined = parse_all(stream.substr(0, p.boundary()));
    Events rest = parse_all(stream.substr(p.boundary()));
    joined.insert(joined.end(), rest.begin(), rest.end());
    EXPECT_EQ(joined, all) << "boundary " << p.boundary() << " splits an event (fed up to " << pos << ")";
  };
  for (auto c : cuts) step(c);
  step(stream.size());
  return out;
}

TEST(SseParserTest, WholeOpenAiStreamInOneFeed) {
  SseParser p;
  Events out;
  p.feed(kOpenAiStream, out);
  EXPECT_EQ(out, openai_events());
  EXPECT_EQ(p.total(), kOpenAiStream.size());
  EXPECT_EQ(p.boundary(), kOpenAiStream.size());
  EXPECT_EQ(p.partial_line_bytes(), 0u);
}

TEST(SseParserTest, CrlfStreamInOneFeed) {
  EXPECT_EQ(parse_all(kCrlfStream), crlf_events());
}

TEST(SseParserTest, SplitAtEveryByteBoundaryGivesTheSameEvents) {
  for (auto stream : {kOpenAiStream, kCrlfStream}) {
    const Events expected = parse_all(stream);
    ASSERT_FALSE(expected.empty());
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
      SCOPED_TRACE("cut at " + std::to_string(cut));
      EXPECT_EQ(feed_checked(stream, {cut}), expected);
      if (HasFailure()) return;  // one report is enough
    }
  }
}

TEST(SseParserTest, SplitAtEveryPairOfByteBoundariesGivesTheSameEvents) {
  // Two cuts: a piece may then start and end inside the same line, or hold only a CR or LF.
  const std::string_view stream = kCrlfStream;
  const Events expected = parse_all(stream);
  for (std::size_t a = 0; a <= stream.size(); ++a) {
    for (std::size_t b = a; b <= stream.size(); ++b) {
      SCOPED_TRACE("cuts at " + std::to_string(a) + " and " + std::to_string(b));
      EXPECT_EQ(feed_checked(stream, {a, b}), expected);
      if (HasFailure()) return;
    }
  }
}

TEST(SseParserTest, ByteByByteGivesTheSameEvents) {
  for (auto stream : {kOpenAiStream, kCrlfStream}) {
    std::vector<std::size_t> cuts;
    for (std::size_t i = 1; i < stream.size(); ++i) cuts.push_back(i);
    EXPECT_EQ(feed_checked(stream, cuts), parse_all(stream));
  }
  std::vector<std::size_t> cuts;
  for (std::size_t i = 1; i < kOpenAiStream.size(); ++i) cuts.push_back(i);
  EXPECT_EQ(feed_checked(kOpenAiStream, cuts), openai_events());
}

TEST(SseParserTest, BoundaryStopsBeforeAnUnfinishedEvent) {
  SseParser p;
  Events out;
  p.feed("data: one\n\ndata: tw", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(p.boundary(), std::string_view("data: one\n\n").size());
  EXPECT_EQ(p.partial_line_bytes(), 8u);  // "data: tw"
  p.feed("o\n", out);                     // the line ended but the event has not
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(p.boundary(), std::string_view("data: one\n\n").size());
  EXPECT_EQ(p.partial_line_bytes(), 0u);
  p.feed("\n", out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].data, "two");
  EXPECT_EQ(p.boundary(), p.total());
}

TEST(SseParserTest, LineEndingsLfCrlfAndLoneCrAreEquivalent) {
  Events expected = {data_event("a\nb")};
  EXPECT_EQ(parse_all("data: a\ndata: b\n\n"), expected);
  EXPECT_EQ(parse_all("data: a\r\ndata: b\r\n\r\n"), expected);
  EXPECT_EQ(parse_all("data: a\rdata: b\r\r"), expected);
  EXPECT_EQ(parse_all("data: a\rdata: b\n\r\n"), expected);
}

TEST(SseParserTest, CrLfSplitAcrossFeedsIsOneLineEnd) {
  SseParser p;
  Events out;
  p.feed("data: x\r", out);
  p.feed("\n", out);  // must not count as a blank line
  EXPECT_TRUE(out.empty());
  p.feed("\r", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "x");
  EXPECT_EQ(p.boundary(), 10u);  // the CR ended the event; the LF may still come
  p.feed("\n", out);
  EXPECT_EQ(out.size(), 1u);
  EXPECT_EQ(p.boundary(), 11u);  // the LF belongs to the terminator
  EXPECT_EQ(p.total(), 11u);
}

TEST(SseParserTest, CommentsAreIgnored) {
  EXPECT_EQ(parse_all(": keep-alive\n\n"), Events{});
  EXPECT_EQ(parse_all(":\n\n"), Events{});
  EXPECT_EQ(parse_all("data: a\n: keep-alive\ndata: b\n\n"), Events{data_event("a\nb")});
}

TEST(SseParserTest, StandAloneCommentAdvancesBoundary) {
  SseParser p;
  Events out;
  p.feed(": keep-alive\n", out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(p.boundary(), 13u);
  EXPECT_EQ(p.boundary(), p.total());
}

TEST(SseParserTest, CommentInsideAnEventDoesNotAdvanceBoundary) {
  SseParser p;
  Events out;
  p.feed("data: a\n: keep-alive\n", out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(p.boundary(), 0u);
}

TEST(SseParserTest, MultiLineDataIsJoinedWithLf) {
  EXPECT_EQ(parse_all("data: {\"a\":\ndata: 1}\n\n"), Events{data_event("{\"a\":\n1}")});
  EXPECT_EQ(parse_all("data: x\ndata:\ndata: y\n\n"), Events{data_event("x\n\ny")});
}

TEST(SseParserTest, OnlyOneSpaceAfterTheColonIsStripped) {
  EXPECT_EQ(parse_all("data:x\n\n"), Events{data_event("x")});
  EXPECT_EQ(parse_all("data: x\n\n"), Events{data_event("x")});
  EXPECT_EQ(parse_all("data:  x\n\n"), Events{data_event(" x")});
  EXPECT_EQ(parse_all("data: x \n\n"), Events{data_event("x ")});
  EXPECT_EQ(parse_all("data:\tx\n\n"), Events{data_event("\tx")});
}

TEST(SseParserTest, FieldWithoutColonHasEmptyValue) {
  // "data" alone appends an empty line: the event is dispatched with empty data.
  EXPECT_EQ(parse_all("data\n\n"), Events{data_event("")});
  EXPECT_EQ(parse_all("data\ndata\n\n"), Events{data_event("\n")});
  // "event" alone resets the type; a field name is matched whole.
  EXPECT_EQ(parse_all("event: x\nevent\ndata: d\n\n"), Events{data_event("d")});
  EXPECT_EQ(parse_all("datax: 1\ndata : 2\n\n"), Events{});
}

TEST(SseParserTest, EventAndIdFields) {
  EXPECT_EQ(parse_all("event: delta\nid: 42\ndata: d\n\n"), (Events{SseEvent{"delta", "d", "42"}}));
  // The event type does not leak into the next event.
  EXPECT_EQ(parse_all("event: a\ndata: 1\n\ndata: 2\n\n"), (Events{SseEvent{"a", "1", ""}, data_event("2")}));
  // Unknown fields and retry are ignored.
  EXPECT_EQ(parse_all("retry: 1000\nfoo: bar\ndata: d\n\n"), Events{data_event("d")});
}

TEST(SseParserTest, IdContainingNulIsIgnored) {
  using namespace std::string_view_literals;
  EXPECT_EQ(parse_all("id: 7\nid: a\0b\ndata: d\n\n"sv), (Events{SseEvent{"", "d", "7"}}));
  EXPECT_EQ(parse_all("id: a\0b\ndata: d\n\n"sv), (Events{SseEvent{"", "d", ""}}));
  // NUL elsewhere is ordinary data.
  EXPECT_EQ(parse_all("data: a\0b\n\n"sv), Events{data_event(std::string("a\0b", 3))});
}

TEST(SseParserTest, EmptyDataBufferDispatchesNothing) {
  EXPECT_EQ(parse_all("event: ping\n\n"), Events{});
  EXPECT_EQ(parse_all("id: 3\n\n"), Events{});
  EXPECT_EQ(parse_all("\n\n\n"), Events{});
  // ...and the type set there does not carry over.
  EXPECT_EQ(parse_all("event: ping\n\ndata: d\n\n"), Events{data_event("d")});
}

TEST(SseParserTest, BlankLineWithoutDataStillAdvancesBoundary) {
  SseParser p;
  Events out;
  p.feed("event: ping\n\n", out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(p.boundary(), p.total());
}

TEST(SseParserTest, EventWithoutTerminatingBlankLineIsNotDispatched) {
  SseParser p;
  Events out;
  p.feed("data: a\n\ndata: b\n", out);
  EXPECT_EQ(out, Events{data_event("a")});
  EXPECT_EQ(parse_all("data: b"), Events{});
  EXPECT_EQ(parse_all("data: b\n"), Events{});
}

TEST(SseParserTest, LeadingBomIsSkipped) {
  EXPECT_EQ(parse_all("\xEF\xBB\xBF"
                      "data: d\n\n"),
            Events{data_event("d")});
  // Only one, and only at the start: a second BOM is part of the field name.
  EXPECT_EQ(parse_all("\xEF\xBB\xBF\xEF\xBB\xBF"
                      "data: d\n\n"),
            Events{});
  EXPECT_EQ(parse_all("data: a\n\n\xEF\xBB\xBF"
                      "data: b\n\n"),
            Events{data_event("a")});
}

TEST(SseParserTest, LeadingBomSplitAcrossFeedsIsSkipped) {
  const std::string stream =
      "\xEF\xBB\xBF"
      "data: d\n\n";
  for (std::size_t a = 0; a <= 3; ++a) {
    for (std::size_t b = a; b <= 4; ++b) {
      SCOPED_TRACE("cuts at " + std::to_string(a) + " and " + std::to_string(b));
      SseParser p;
      Events out;
      p.feed(std::string_view(stream).substr(0, a), out);
      p.feed(std::string_view(stream).substr(a, b - a), out);
      p.feed(std::string_view(stream).substr(b), out);
      EXPECT_EQ(out, Events{data_event("d")});
      EXPECT_EQ(p.total(), stream.size());
      EXPECT_EQ(p.boundary(), stream.size());
    }
  }
}

TEST(SseParserTest, BomPrefixThatIsNotABomStaysInTheLine) {
  // "\xEF\xBB" followed by something else is not a BOM: those bytes start the first field name.
  SseParser p;
  Events out;
  p.feed("\xEF\xBB", out);
  p.feed("data: d\n\n", out);
  EXPECT_TRUE(out.empty());
  EXPECT_EQ(p.total(), 11u);
  EXPECT_EQ(parse_all("\xEF"
                      "data: d\n\n"),
            Events{});
}

TEST(SseParserTest, DoneSentinelIsAnOrdinaryEvent) {
  SseParser p;
  Events out;
  p.feed("data: [DONE]\n\n", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "[DONE]");
  EXPECT_EQ(out[0].event, "");
  EXPECT_EQ(p.boundary(), 14u);
}

TEST(SseParserTest, EmptyFeedChangesNothing) {
  SseParser p;
  Events out;
  p.feed("", out);
  EXPECT_EQ(p.total(), 0u);
  EXPECT_EQ(p.boundary(), 0u);
  p.feed("data: x", out);
  p.feed("", out);
  EXPECT_EQ(p.total(), 7u);
  EXPECT_EQ(p.partial_line_bytes(), 7u);
  EXPECT_TRUE(out.empty());
}

TEST(SseParserTest, EventsKnowTheirByteRange) {
  // The relay drops an event by skipping exactly these bytes (the include_usage chunk a client did not ask for).
  const std::string stream = "data: a\n\n: ping\ndata: b\r\n\r\ndata: c\r\r";
  SseParser p;
  Events out;
  p.feed(stream, out);
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(stream.substr(out[0].begin, out[0].end - out[0].begin), "data: a\n\n");
  EXPECT_EQ(stream.substr(out[1].begin, out[1].end - out[1].begin), "data: b\r\n\r");  // its final LF comes after
  EXPECT_EQ(stream.substr(out[2].begin, out[2].end - out[2].begin), "data: c\r\r");
  EXPECT_EQ(out[0].end, 9u);
  EXPECT_EQ(out[1].begin, 16u);  // the stand-alone comment between them belongs to neither
}

// ---- the relay's form: views, no copy per event ----

TEST(SseParserViews, AnEventReadWholeIsAViewIntoTheBytesFed) {
  const std::string stream = "data: {\"a\":1}\n\ndata: {\"b\":2}\n\n";
  SseParser p;
  std::vector<SseEventView> out;
  p.feed(stream, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, "{\"a\":1}");
  EXPECT_EQ(out[1].data, "{\"b\":2}");
  for (const auto& e : out) {  // no copy: the data lies in the caller's buffer
    EXPECT_GE(e.data.data(), stream.data());
    EXPECT_LE(e.data.data() + e.data.size(), stream.data() + stream.size());
  }
}

TEST(SseParserViews, AnEventSplitAcrossFeedsSurvivesTheCallerReusingItsBuffer) {
  // The relay moves unforwarded bytes to the front of its buffer between reads: views must not point there.
  SseParser p;
  std::vector<SseEventView> out;
  std::string buf = "data: first half";
  p.feed(buf, out);
  EXPECT_TRUE(out.empty());
  buf.assign(buf.size(), '#');  // the caller overwrites what it fed
  buf = " and second\ndata: line two\nevent: custom\nid: 7\n\n";
  p.feed(buf, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "first half and second\nline two");
  EXPECT_EQ(out[0].event, "custom");
  EXPECT_EQ(out[0].id, "7");
}

TEST(SseParserViews, SeveralAssembledEventsInOneFeedKeepTheirOwnText) {
  SseParser p;
  std::vector<SseEventView> out;
  p.feed("data: a\ndata: b\nevent: x\n\ndata: c\ndata: d\nevent: y\n\ndata: e", out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].data, "a\nb");
  EXPECT_EQ(out[0].event, "x");
  EXPECT_EQ(out[1].data, "c\nd");
  EXPECT_EQ(out[1].event, "y");
  out.clear();  // views last until the next feed
  p.feed("\n\n", out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].data, "e");
}

TEST(SseParserViews, TheCopyingFormAgreesWithTheViews) {
  const std::string stream = std::string(kOpenAiStream);
  for (std::size_t piece : {1u, 3u, 7u, 64u, 4096u}) {
    SseParser views, copies;
    std::vector<SseEventView> v;
    Events c, from_views;
    for (std::size_t at = 0; at < stream.size(); at += piece) {
      v.clear();
      views.feed(std::string_view(stream).substr(at, piece), v);
      for (const auto& e : v)
        from_views.push_back(SseEvent{std::string(e.event), std::string(e.data), std::string(e.id), e.begin, e.end});
      copies.feed(std::string_view(stream).substr(at, piece), c);
    }
    EXPECT_EQ(from_views, c) << "pieces of " << piece;
    EXPECT_EQ(from_views, parse_all(stream));
  }
}

// Line ends are found sixteen or thirty-two bytes at a time (AVX2 where the CPU has it): an LF, a CRLF or a
// lone CR ends a line wherever it falls, and the byte before it is still the line's.
TEST(SseParserTest, LineEndsAreFoundWhereverTheyFall) {
  for (std::size_t len = 0; len <= 100; ++len) {
    const std::string text(len, 'x');
    for (std::string_view eol : {"\n", "\r\n", "\r"}) {
      for (std::string_view field : {"data: ", "data:", "event: e\ndata: "}) {
        const std::string stream = std::string(field) + text + std::string(eol) + std::string(eol) + "data: next\n\n";
        const Events got = parse_all(stream);
        ASSERT_EQ(got.size(), 2u) << len << " " << eol.size();
        EXPECT_EQ(got[0].data, text) << len;
        EXPECT_EQ(got[0].event, field.size() > 6 ? "e" : "") << len;
        EXPECT_EQ(got[1].data, "next") << len;
      }
    }
  }
}

// Where the bytes fed end inside or right after a line: the search's last step (an overlapping load of the
// feed's last bytes) finds a line end there, or none, for every length of feed.
TEST(SseParserTest, LineEndsAtTheEndOfAFeedAreFoundAndNoneIsInvented) {
  for (std::size_t len = 0; len <= 100; ++len) {
    const std::string text(len, 'x');
    for (std::string_view eol : {"\n", "\r"}) {
      SseParser ends_the_feed;  // the line end is the feed's last byte
      std::vector<SseEventView> out;
      ends_the_feed.feed("data: " + text + std::string(eol), out);
      EXPECT_TRUE(out.empty()) << len;
      EXPECT_EQ(ends_the_feed.partial_line_bytes(), 0u) << len;
      ends_the_feed.feed(eol, out);
      ASSERT_EQ(out.size(), 1u) << len;
      EXPECT_EQ(out[0].data, text) << len;
    }
    SseParser no_end;  // no line end in the feed at all: the whole feed waits as a partial line
    std::vector<SseEventView> out;
    no_end.feed("data: " + text, out);
    EXPECT_TRUE(out.empty()) << len;
    EXPECT_EQ(no_end.partial_line_bytes(), 6 + len) << len;
    no_end.feed("\n\n", out);
    ASSERT_EQ(out.size(), 1u) << len;
    EXPECT_EQ(out[0].data, text) << len;
    SseParser after_one;  // one whole event, then a line without its end
    out.clear();
    after_one.feed("data: a\n\ndata: " + text, out);
    ASSERT_EQ(out.size(), 1u) << len;
    EXPECT_EQ(after_one.partial_line_bytes(), 6 + len) << len;
  }
}

// An event of one data line and its blank line, whole in a feed, is dispatched in one step; the ranges, data
// and boundary are the ones the line-by-line path gives, and the two paths mix in one feed.
TEST(SseParserTest, WholeDataEventsTakenInOneStepKeepTheirRangesAmongOtherLines) {
  struct Want {
    std::string event, data;
    std::uint64_t begin, end;
  };
  auto check = [](std::string_view stream, const std::vector<Want>& want) {
    SseParser whole, bytewise;  // one feed (the one-step path where it applies) and one byte at a time (never)
    std::vector<SseEventView> a, b;
    whole.feed(stream, a);
    std::vector<std::string> kept;  // byte-by-byte views point into the parser's storage or the byte fed
    for (char c : stream) {
      std::vector<SseEventView> one;
      bytewise.feed(std::string_view(&c, 1), one);
      for (const auto& e : one) {
        kept.push_back(std::string(e.data));
        b.push_back(e);
      }
    }
    ASSERT_EQ(a.size(), want.size()) << stream;
    ASSERT_EQ(b.size(), want.size()) << stream;
    for (std::size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(a[i].event, want[i].event) << stream;
      EXPECT_EQ(a[i].data, want[i].data) << stream;
      EXPECT_EQ(kept[i], want[i].data) << stream;
      EXPECT_EQ(a[i].begin, want[i].begin) << stream;
      EXPECT_EQ(a[i].end, want[i].end) << stream;
      EXPECT_EQ(b[i].begin, want[i].begin) << stream;
      EXPECT_EQ(b[i].end, want[i].end) << stream;
    }
    EXPECT_EQ(whole.boundary(), bytewise.boundary()) << stream;
    EXPECT_EQ(whole.boundary(), stream.size()) << stream;
  };
  check("data:\n\n", {{"", "", 0, 7}});
  check(": c\ndata: a\n\ndata: b\n\n", {{"", "a", 4, 13}, {"", "b", 13, 22}});
  check("data: a\n\nevent: x\ndata: b\n\ndata: c\n\n", {{"", "a", 0, 9}, {"x", "b", 9, 27}, {"", "c", 27, 36}});
  // A CRLF blank line: the event ends at its CR (when it is dispatched), the boundary after its LF.
  check("data: a\r\n\r\ndata: b\n\n", {{"", "a", 0, 10}, {"", "b", 11, 20}});
  check("data\n\ndata: b\n\n", {{"", "", 0, 6}, {"", "b", 6, 15}});
}

}  // namespace
}  // namespace sluice::openai
