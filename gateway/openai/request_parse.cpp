// The only translation unit built with RapidJSON's SSE2 scans (RAPIDJSON_SSE2): a string with no escape yet,
// and whitespace, are read sixteen bytes at a time, which makes a 4 KiB prompt's document about four times
// cheaper to parse (docs/benchmarks.md, nineteenth round). Not the whole build, for two faults in RapidJSON
// 1.1's SSE2 code:
// - its string scans take a byte below 0x20 to be one of at most 0x19, so raw 0x1A to 0x1F pass inside a
//   string. The reader's here: check_bytes (below) refuses those bytes before the parse, as JSON has them
//   nowhere raw. The Writer's (writer.h) would write them into JSON unescaped, so no translation unit
//   that writes JSON may have the define, and this one includes no writer;
// - its scans load aligned 16-byte blocks that may reach up to 15 bytes past a NUL-terminated text's end:
//   the copy parse_in_place makes has that many zeroed bytes more (kScanSlack).
// Nothing else here parses in place, so the functions this unit instantiates with the define (the in-situ
// stream's) are instantiated nowhere else.
#if defined(__SSE2__) && !defined(RAPIDJSON_SSE2)
#define RAPIDJSON_SSE2
#endif
#include "openai/request_parse.hpp"

#include <rapidjson/document.h>
#include <rapidjson/reader.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "openai/request.hpp"  // kMaxJsonDepth

namespace sluice::openai::detail {
namespace {

// The bytes past a copy's terminating NUL that the scans' aligned 16-byte loads may reach.
constexpr std::size_t kScanSlack = 15;

enum class Bytes { utf8, nul, control, invalid };

// Whether `s` is UTF-8 as RFC 3629 has it (no overlong forms, no surrogates, nothing past U+10FFFF), as
// RapidJSON's validating reader checks it, free of NUL bytes, and free of the control characters 0x1A to 0x1F,
// which JSON has nowhere raw and which the parse's SSE2 string scan would let through (above). ASCII
// goes sixteen (SSE2) or eight bytes at a time: it is nearly all of a prompt.
Bytes check_bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* const end = p + s.size();
  while (p < end) {
#if defined(__SSE2__)
    const __m128i zero = _mm_setzero_si128(), first_control = _mm_set1_epi8(0x1A), five = _mm_set1_epi8(5);
    while (end - p >= 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      // The high bit of a byte that is not ASCII, or of one that is NUL, or of one from 0x1A to 0x1F (those
      // whose distance above 0x1A, unsigned, is at most 5).
      const __m128i past_first = _mm_sub_epi8(v, first_control);
      const __m128i control = _mm_cmpeq_epi8(_mm_min_epu8(past_first, five), past_first);
      if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(v, _mm_cmpeq_epi8(v, zero)), control))) break;
      p += 16;
    }
#endif
    constexpr std::uint64_t kHighs = 0x8080808080808080ull, kSpaces = 0x2020202020202020ull;
    while (end - p >= 8) {
      std::uint64_t v;
      std::memcpy(&v, p, sizeof v);
      // A byte past ASCII, or one below 0x20 (a NUL, a control character, or a tab or line end: the bytes below
      // look at which).
      if (((v | ((v - kSpaces) & ~v)) & kHighs) != 0) break;
      p += 8;
    }
    const auto stop = std::min(end, p + 8);
    for (; p < stop; ++p) {
      const unsigned c = *p;
      if (c == 0) return Bytes::nul;
      if (c >= 0x1A && c <= 0x1F) return Bytes::control;
      if (c < 0x80) continue;
      unsigned more = 0, lo = 0x80, hi = 0xBF;  // continuation bytes, and the range of the first of them
      if (c >= 0xC2 && c <= 0xDF) {
        more = 1;
      } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2;
        if (c == 0xE0) lo = 0xA0;       // overlong
        else if (c == 0xED) hi = 0x9F;  // surrogates
      } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3;
        if (c == 0xF0) lo = 0x90;       // overlong
        else if (c == 0xF4) hi = 0x8F;  // past U+10FFFF
      } else {
        return Bytes::invalid;
      }
      if (static_cast<std::size_t>(end - p) <= more || p[1] < lo || p[1] > hi) return Bytes::invalid;
      for (unsigned i = 2; i <= more; ++i)
        if ((p[i] & 0xC0) != 0x80) return Bytes::invalid;
      p += more;
    }
  }
  return Bytes::utf8;
}


// True when a decoded string holds a UTF-16 surrogate. The body's bytes are checked as UTF-8 before parsing,
// but RapidJSON decodes a lone "\udc00" escape into bytes that are not (ED B0 80), and a rewrite would write
// them out raw. Only an escape can make one, so a body without a backslash skips the check (most bodies).
bool has_surrogate(const char* p, std::size_t n) {
  const char* end = p + n;
  // In UTF-8, ED A0..BF starts U+D800..U+DFFF; every other code point's bytes passed validation.
  while ((p = static_cast<const char*>(std::memchr(p, '\xED', static_cast<std::size_t>(end - p)))))
    if (++p < end && static_cast<unsigned char>(*p) >= 0xA0) return true;
  return false;
}

using Fault = InPlaceParse::Fault;

// Sits between RapidJSON's reader and the document, checking as the body is read what would otherwise take
// walks of the finished document: nesting depth, non-finite numbers, decoded surrogates, and the names of
// the top-level members (for repeats).
class CheckedDocument {
 public:
  using Ch = char;
  CheckedDocument(rapidjson::Document& doc, std::vector<std::string_view>& names, bool escapes)
      : doc_(doc), names_(names), escapes_(escapes) {}

  bool Null() { return doc_.Null(); }
  bool Bool(bool b) { return doc_.Bool(b); }
  bool Int(int i) { return doc_.Int(i); }
  bool Uint(unsigned u) { return doc_.Uint(u); }
  bool Int64(std::int64_t i) { return doc_.Int64(i); }
  bool Uint64(std::uint64_t u) { return doc_.Uint64(u); }
  // RapidJSON 1.1 reads a literal just above DBL_MAX (1.7976934348623157e308) as inf or NaN, and its Writer
  // then stops at that number, leaving a rewrite cut short.
  bool Double(double d) { return std::isfinite(d) ? doc_.Double(d) : fail(Fault::infinite); }
  bool RawNumber(const char* s, rapidjson::SizeType n, bool copy) { return doc_.RawNumber(s, n, copy); }
  bool String(const char* s, rapidjson::SizeType n, bool copy) {
    return escapes_ && has_surrogate(s, n) ? fail(Fault::surrogate) : doc_.String(s, n, copy);
  }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) {
    if (escapes_ && has_surrogate(s, n)) return fail(Fault::surrogate);
    if (depth_ == 1) names_.emplace_back(s, n);
    return doc_.Key(s, n, copy);
  }
  bool StartObject() { return ++depth_ > kMaxJsonDepth ? fail(Fault::too_deep) : doc_.StartObject(); }
  bool EndObject(rapidjson::SizeType n) { return --depth_, doc_.EndObject(n); }
  bool StartArray() { return ++depth_ > kMaxJsonDepth ? fail(Fault::too_deep) : doc_.StartArray(); }
  bool EndArray(rapidjson::SizeType n) { return --depth_, doc_.EndArray(n); }

  Fault fault() const { return fault_; }

 private:
  bool fail(Fault f) {
    fault_ = f;
    return false;
  }
  rapidjson::Document& doc_;
  std::vector<std::string_view>& names_;
  const bool escapes_;  // the body has a backslash: a decoded string may hold a surrogate
  int depth_ = 0;
  Fault fault_ = Fault::none;
};

}  // namespace

InPlaceParse parse_in_place(rapidjson::Document& doc, rapidjson::MemoryPoolAllocator<>& pool, std::string_view body,
                            std::vector<std::string_view>& names) {
  InPlaceParse out;
  switch (check_bytes(body)) {
    case Bytes::utf8:
      break;
    case Bytes::nul:
      out.fault = Fault::nul;
      return out;
    case Bytes::control:
      out.fault = Fault::control;
      return out;
    case Bytes::invalid:
      out.fault = Fault::not_utf8;
      return out;
  }
  const bool escapes = std::memchr(body.data(), '\\', body.size()) != nullptr;
  auto* text = static_cast<char*>(pool.Malloc(body.size() + 1 + kScanSlack));
  std::memcpy(text, body.data(), body.size());
  std::memset(text + body.size(), 0, 1 + kScanSlack);
  // Not kParseFullPrecisionFlag: RapidJSON 1.1's full-precision reader indexes past its table of powers of
  // ten for numbers beyond the double range, and one `"temperature":1.8642975318642975e-341` crashed the
  // worker. The default reader is exact for the numbers clients send (up to 15 digits, integers to 2^64).
  thread_local rapidjson::Reader reader;  // keeps its state stack from one request to the next
  auto parse = [&](rapidjson::Document& d) {
    CheckedDocument checked(d, names, escapes);
    rapidjson::InsituStringStream in(text);
    const bool ok = !reader.Parse<rapidjson::kParseInsituFlag | rapidjson::kParseIterativeFlag>(in, checked)
                         .IsError();
    out.fault = checked.fault();
    return ok;
  };
  doc.Populate(parse);
  if (out.fault == Fault::none && reader.HasParseError()) {
    out.fault = Fault::syntax;
    out.code = reader.GetParseErrorCode();
    out.offset = reader.GetErrorOffset();
  }
  return out;
}

}  // namespace sluice::openai::detail
