#pragma once
// The in-place parse of a request body into its document (inspect_request's), in a translation unit of its own:
// the one built with RapidJSON's SSE2 scans (request_parse.cpp says why only it).
#include <rapidjson/document.h>

#include <cstddef>
#include <string_view>
#include <vector>

namespace sluice::openai::detail {

struct InPlaceParse {
  // nul, control, not_utf8: the bytes were refused before any parse; syntax: RapidJSON refused the text (code,
  // offset); the rest: a check made while reading it.
  enum class Fault { none, nul, control, not_utf8, syntax, too_deep, infinite, surrogate } fault = Fault::none;
  rapidjson::ParseErrorCode code = rapidjson::kParseErrorNone;
  std::size_t offset = 0;
};

/// Checks `body`'s bytes (UTF-8 as RFC 3629 has it, no NUL, no raw control character from 0x1A to 0x1F), copies
/// it into `pool` and parses the copy in place into `doc`, whose strings then point into it. The names of the
/// top-level members go to `names` in the document's order.
InPlaceParse parse_in_place(rapidjson::Document& doc, rapidjson::MemoryPoolAllocator<>& pool, std::string_view body,
                            std::vector<std::string_view>& names);

}  // namespace sluice::openai::detail
