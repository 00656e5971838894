#include "duration.hpp"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>

namespace sluice {
namespace {

// Splits "12.5ms" into 12.5 and "ms"; false when there is no leading number.
bool split_number(std::string_view text, double& number, std::string_view& unit) {
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) return false;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + i, number);
  if (ec != std::errc{} || ptr != text.data() + i || number < 0 || !std::isfinite(number)) return false;
  unit = text.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  return true;
}

}  // namespace

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  double n = 0;
  std::string_view unit;
  if (!split_number(text, n, unit)) return std::nullopt;
  double ms;
  if (unit == "ms")
    ms = n;
  else if (unit == "s" || unit.empty())
    ms = n * 1000;
  else if (unit == "m")
    ms = n * 60'000;
  else if (unit == "h")
    ms = n * 3'600'000;
  else if (unit == "d")  // budgets: "1d", "7d"
    ms = n * 86'400'000;
  else
    return std::nullopt;
  if (ms > 1e15) return std::nullopt;
  return std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(ms)));
}

std::optional<std::uint64_t> parse_size(std::string_view text) {
  double n = 0;
  std::string_view unit;
  if (!split_number(text, n, unit)) return std::nullopt;
  double mult;
  if (unit.empty() || unit == "B")
    mult = 1;
  else if (unit == "KiB")
    mult = 1024.0;
  else if (unit == "MiB")
    mult = 1024.0 * 1024;
  else if (unit == "GiB")
    mult = 1024.0 * 1024 * 1024;
  else if (unit == "KB" || unit == "kB")
    mult = 1e3;
  else if (unit == "MB")
    mult = 1e6;
  else if (unit == "GB")
    mult = 1e9;
  else
    return std::nullopt;
  double bytes = n * mult;
  if (bytes > 1e18) return std::nullopt;
  return static_cast<std::uint64_t>(std::llround(bytes));
}

std::string_view format_duration(char (&buf)[32], std::chrono::milliseconds d) {
  // Numbers with write_decimal into the caller's buffer: two of these go into every limited request's headers.
  // The longest, "2562047788015h12m55.807s" (the largest count of milliseconds), is 24 characters.
  char* p = buf;
  auto number = [&p, &buf](long long n) { p = write_decimal(p, buf + sizeof buf, static_cast<std::uint64_t>(n)); };
  auto ms = d.count();
  if (ms < 0) ms = 0;
  if (ms < 1000) {
    number(ms);
    *p++ = 'm';
    *p++ = 's';
    return {buf, static_cast<std::size_t>(p - buf)};
  }
  const auto h = ms / 3'600'000;
  const auto m = (ms / 60'000) % 60;
  const auto s = (ms / 1000) % 60;
  const auto frac = ms % 1000;
  if (h > 0) {
    number(h);
    *p++ = 'h';
  }
  if (h > 0 || m > 0) {
    number(m);
    *p++ = 'm';
  }
  number(s);
  if (frac != 0) {  // ".5", ".25", ".125": three digits, trailing zeros dropped
    *p++ = '.';
    *p++ = static_cast<char>('0' + frac / 100);
    if (frac % 100 != 0) *p++ = static_cast<char>('0' + frac / 10 % 10);
    if (frac % 10 != 0) *p++ = static_cast<char>('0' + frac % 10);
  }
  *p++ = 's';
  return {buf, static_cast<std::size_t>(p - buf)};
}

std::string format_duration(std::chrono::milliseconds d) {
  char buf[32];
  return std::string(format_duration(buf, d));
}

[[gnu::noinline]] char* write_decimal(char* out, char* end, std::uint64_t v) {
  return std::to_chars(out, end, v).ptr;
}

std::string_view fixed3(char (&buf)[32], double v) {
  if (std::isfinite(v) && std::fabs(v) < 1e12) {  // v * 1000 + 0.5 exact enough below 2^53
    const double scaled = v * 1000.0;
    const auto thousandths = static_cast<std::int64_t>(scaled < 0 ? scaled - 0.5 : scaled + 0.5);
    char* p = buf;
    if (thousandths < 0) *p++ = '-';
    const auto u = static_cast<std::uint64_t>(thousandths < 0 ? -thousandths : thousandths);
    p = write_decimal(p, buf + sizeof buf, u / 1000);
    const auto f = static_cast<unsigned>(u % 1000);
    p[0] = '.';
    p[1] = static_cast<char>('0' + f / 100);
    p[2] = static_cast<char>('0' + f / 10 % 10);
    p[3] = static_cast<char>('0' + f % 10);
    return {buf, static_cast<std::size_t>(p + 4 - buf)};
  }
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed, 3);
  if (ec != std::errc{}) return "0.000";  // beyond 10^28 ms: not a duration
  return {buf, static_cast<std::size_t>(end - buf)};
}

}  // namespace sluice
