#pragma once
// OpenAI's error shape: {"error":{"message","type","param","code"}}, and mapping of backend errors into it.
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace sluice::openai {

/// An error as a client sees it: HTTP status plus OpenAI's error object.
struct ApiError {
  ApiError() = default;
  ApiError(int status_, std::string message_, std::string type_ = "", std::optional<std::string> param_ = {},
           std::optional<std::string> code_ = {})
      : status(status_),
        message(std::move(message_)),
        type(std::move(type_)),
        param(std::move(param_)),
        code(std::move(code_)) {}

  int status = 500;
  std::string message;
  std::string type;  // empty: derived from status
  std::optional<std::string> param;
  std::optional<std::string> code;
  std::optional<std::string> retry_after;  // seconds, sent as the retry-after header (429, 503)
};

/// OpenAI's `type` for a status: invalid_request_error for 4xx, server_error for 5xx, ...
std::string_view default_error_type(int status);

/// `text` as a JSON string literal, quotes included.
std::string json_quote(std::string_view text);

/// Appends `text` to `out` as a JSON string literal (quotes and backslashes escaped, control characters as
/// \n, \t, ... or \u00XX; other bytes as they are).
void append_json_string(std::string& out, std::string_view text);

/// The most bytes write_json_string writes for `size` bytes of text: every byte as \u00XX, and the quotes.
constexpr std::size_t json_string_bound(std::size_t size) { return 6 * size + 2; }

/// Writes `text` as a JSON string literal at `out` (room for json_string_bound(text.size()) bytes) and returns
/// the end of what it wrote.
char* write_json_string(char* out, std::string_view text);

/// Serialises to {"error":{"message":...,"type":...,"param":...,"code":...}}.
std::string error_json(const ApiError& e);

/// Maps whatever error body a backend returned (OpenAI, vLLM's integer code, TGI's flat
/// {"error":"...","error_type":"..."}, a top-level message, plain text) to OpenAI's shape.
ApiError normalize_backend_error(int status, std::string_view body);

// Errors Sluice answers itself.
ApiError invalid_request(std::string message, std::optional<std::string> param = std::nullopt,
                         std::optional<std::string> code = std::nullopt);

}  // namespace sluice::openai
