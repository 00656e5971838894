#pragma once
// Human units in config files: durations ("50ms", "2s", "10m", "1h", "1d") and sizes ("8MiB", "64KiB", "100").
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sluice {

/// Parses "250ms", "2s", "1.5s", "10m", "1h", "1d" (or a bare number of seconds); nullopt when malformed.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text);

/// Parses "8MiB", "64KiB", "1GiB", "10MB", "4096"; nullopt when malformed.
std::optional<std::uint64_t> parse_size(std::string_view text);

/// Formats a duration as OpenAI's rate-limit headers do: "1s", "6m0s", "250ms".
std::string format_duration(std::chrono::milliseconds d);
/// The same into `buf`, without a string.
std::string_view format_duration(char (&buf)[32], std::chrono::milliseconds d);

/// `v` with three decimals (x-sluice-overhead-ms, the access log's milliseconds) into `buf`: what printf's
/// "%.3f" writes, but where `v` lies within rounding of a tie (1.0005 may end in 1 rather than 0); no locale,
/// no printf. Integer arithmetic below 10^12: a double-to-text conversion cost more than the rest of the
/// access line.
std::string_view fixed3(char (&buf)[32], double v);

/// `v` in decimal into [out, end) (std::to_chars's result: `end` when it does not fit); returns the end of the
/// digits. One out-of-line copy of the digit loop for the numbers of every request's access line and rate-limit
/// headers: inlined at each of them it made more code than it runs, code the processor fetches for every request.
char* write_decimal(char* out, char* end, std::uint64_t v);

}  // namespace sluice
