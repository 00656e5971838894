// The only translation unit built with RapidJSON's SSE2 scans (RAPIDJSON_SSE2): a string with no escape yet,
// and whitespace, are read sixteen bytes at a time, which makes a 4 KiB prompt's document about four times
// cheaper to parse (docs/benchmarks.md, nineteenth round). Not the whole build, for two faults in RapidJSON
// 1.1's SSE2 code:
// - its string scans take a byte below 0x20 to be one of at most 0x19, so raw 0x1A to 0x1F pass inside a
//   string. The reader's here: check_bytes (request.cpp) refuses those bytes before the parse, as JSON has
//   them nowhere raw. The Writer's (writer.h) would write them into JSON unescaped, so no translation unit
//   that writes JSON may have the define, and this one includes no writer;
// - its scans load aligned 16-byte blocks that may reach up to 15 bytes past a NUL-terminated text's end:
//   the caller pads its copy (kInPlaceSlack).
// Nothing else here parses in place, so the functions this unit instantiates with the define (the in-situ
// stream's) are instantiated nowhere else.
#if defined(__SSE2__) && !defined(RAPIDJSON_SSE2)
#define RAPIDJSON_SSE2
#endif
#include "openai/request_parse.hpp"

#include <rapidjson/document.h>
#include <rapidjson/reader.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "openai/request.hpp"  // kMaxJsonDepth

namespace sluice::openai::detail {
namespace {

// True when a decoded string holds a UTF-16 surrogate. The body's bytes are checked as UTF-8 before parsing,
// but RapidJSON decodes a lone "\udc00" escape into bytes that are not (ED B0 80), and a rewrite would write
// them out raw.
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
  CheckedDocument(rapidjson::Document& doc, std::vector<std::string_view>& names) : doc_(doc), names_(names) {}

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
    return has_surrogate(s, n) ? fail(Fault::surrogate) : doc_.String(s, n, copy);
  }
  bool Key(const char* s, rapidjson::SizeType n, bool copy) {
    if (has_surrogate(s, n)) return fail(Fault::surrogate);
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
  int depth_ = 0;
  Fault fault_ = Fault::none;
};

}  // namespace

InPlaceParse parse_in_place(rapidjson::Document& doc, char* text, std::vector<std::string_view>& names) {
  // Not kParseFullPrecisionFlag: RapidJSON 1.1's full-precision reader indexes past its table of powers of
  // ten for numbers beyond the double range, and one `"temperature":1.8642975318642975e-341` crashed the
  // worker. The default reader is exact for the numbers clients send (up to 15 digits, integers to 2^64).
  thread_local rapidjson::Reader reader;  // keeps its state stack from one request to the next
  InPlaceParse out;
  auto parse = [&](rapidjson::Document& d) {
    CheckedDocument checked(d, names);
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
