#pragma once
// The in-place parse of a request body into its document (inspect_request's), in a translation unit of its own:
// the one built with RapidJSON's SSE2 scans (request_parse.cpp says why only it).
#include <rapidjson/document.h>

#include <cstddef>
#include <string_view>
#include <vector>

namespace sluice::openai::detail {

/// The zeroed bytes a caller leaves after the text's terminating NUL: the scans load aligned 16-byte blocks,
/// the last of which may reach that far past it.
inline constexpr std::size_t kInPlaceSlack = 15;

struct InPlaceParse {
  // syntax: RapidJSON refused the text (code, offset); the others: a check made while reading it.
  enum class Fault { none, syntax, too_deep, infinite, surrogate } fault = Fault::none;
  rapidjson::ParseErrorCode code = rapidjson::kParseErrorNone;
  std::size_t offset = 0;
};

/// Parses `text` (NUL-terminated, kInPlaceSlack zeroed bytes after the NUL, bytes already checked as UTF-8 with
/// no NUL and no control character from 0x1A to 0x1F) into `doc`, in place: its strings point into `text`.
/// The names of the top-level members go to `names` in the document's order.
InPlaceParse parse_in_place(rapidjson::Document& doc, char* text, std::vector<std::string_view>& names);

}  // namespace sluice::openai::detail
