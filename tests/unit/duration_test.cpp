#include "duration.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>

namespace sluice {
namespace {

using std::chrono::milliseconds;

TEST(ParseDurationTest, Units) {
  EXPECT_EQ(parse_duration("50ms"), milliseconds(50));
  EXPECT_EQ(parse_duration("2s"), milliseconds(2'000));
  EXPECT_EQ(parse_duration("1.5s"), milliseconds(1'500));
  EXPECT_EQ(parse_duration("10m"), milliseconds(600'000));
  EXPECT_EQ(parse_duration("1h"), milliseconds(3'600'000));
  EXPECT_EQ(parse_duration("0ms"), milliseconds(0));
  EXPECT_EQ(parse_duration("0.25h"), milliseconds(900'000));
}

TEST(ParseDurationTest, BareNumberIsSeconds) {
  EXPECT_EQ(parse_duration("5"), milliseconds(5'000));
  EXPECT_EQ(parse_duration("0"), milliseconds(0));
  EXPECT_EQ(parse_duration("2.5"), milliseconds(2'500));
}

TEST(ParseDurationTest, BadUnits) {
  for (auto text : {"5x", "5 sec", "5S", "5MS", "5D", "5us", "5mss", "ms", "s5", "5s5"})
    EXPECT_EQ(parse_duration(text), std::nullopt) << text;
}

TEST(ParseDurationTest, DaysForBudgetWindows) {
  EXPECT_EQ(parse_duration("1d"), std::chrono::milliseconds(86'400'000));
  EXPECT_EQ(parse_duration("7d"), std::chrono::milliseconds(7 * 86'400'000LL));
}

TEST(ParseDurationTest, NegativeAndEmptyAreRejected) {
  for (auto text : {"-1s", "-5", "-0.5ms", "", " ", ".", "1..5s", "+5s"})
    EXPECT_EQ(parse_duration(text), std::nullopt) << "'" << text << "'";
}

TEST(ParseDurationTest, AbsurdlyLargeIsRejected) {
  EXPECT_EQ(parse_duration("1e30h"), std::nullopt);
  EXPECT_EQ(parse_duration("99999999999999999999h"), std::nullopt);
}

TEST(ParseSizeTest, Units) {
  EXPECT_EQ(parse_size("8MiB"), 8ull << 20);
  EXPECT_EQ(parse_size("64KiB"), 64ull << 10);
  EXPECT_EQ(parse_size("1GiB"), 1ull << 30);
  EXPECT_EQ(parse_size("10MB"), 10'000'000ull);
  EXPECT_EQ(parse_size("2KB"), 2'000ull);
  EXPECT_EQ(parse_size("1GB"), 1'000'000'000ull);
  EXPECT_EQ(parse_size("4096"), 4096ull);
  EXPECT_EQ(parse_size("4096B"), 4096ull);
  EXPECT_EQ(parse_size("1.5KiB"), 1536ull);
}

TEST(ParseSizeTest, BadInput) {
  for (auto text : {"", "MiB", "8XB", "8mib", "8 MiBs", "-1", "-8MiB", "8TiB", "abc", "1e30GiB"})
    EXPECT_EQ(parse_size(text), std::nullopt) << "'" << text << "'";
}

TEST(FormatDurationTest, LikeOpenAiRateLimitHeaders) {
  EXPECT_EQ(format_duration(milliseconds(0)), "0ms");
  EXPECT_EQ(format_duration(milliseconds(250)), "250ms");
  EXPECT_EQ(format_duration(milliseconds(999)), "999ms");
  EXPECT_EQ(format_duration(milliseconds(1'000)), "1s");
  EXPECT_EQ(format_duration(milliseconds(1'500)), "1.5s");
  EXPECT_EQ(format_duration(milliseconds(1'250)), "1.25s");
  EXPECT_EQ(format_duration(milliseconds(1'005)), "1.005s");
  EXPECT_EQ(format_duration(milliseconds(59'000)), "59s");
  EXPECT_EQ(format_duration(milliseconds(60'000)), "1m0s");
  EXPECT_EQ(format_duration(milliseconds(360'000)), "6m0s");
  EXPECT_EQ(format_duration(milliseconds(3'600'000)), "1h0m0s");
  EXPECT_EQ(format_duration(milliseconds(3'723'000)), "1h2m3s");
  EXPECT_EQ(format_duration(milliseconds(-5)), "0ms");
  // The longest there is fits the 32-byte buffer the request path writes it into.
  EXPECT_EQ(format_duration(milliseconds::max()), "2562047788015h12m55.807s");
  char buf[32];
  EXPECT_EQ(format_duration(buf, milliseconds(1'250)), "1.25s");
}

TEST(FormatDurationTest, RoundTripsThroughParse) {
  for (auto ms : {0, 7, 250, 1'000, 1'500, 59'999}) {
    auto text = format_duration(milliseconds(ms));
    EXPECT_EQ(parse_duration(text), milliseconds(ms)) << text;
  }
  // Every fraction of a second, under a minute, and with minutes and hours: written as Go writes durations
  // (what OpenAI's reset headers look like), no trailing zero in a fraction.
  auto expected = [](long long ms) {
    if (ms < 1000) return std::to_string(ms) + "ms";
    const long long h = ms / 3'600'000, m = ms / 60'000 % 60, s = ms / 1000 % 60, frac = ms % 1000;
    std::string out;
    if (h > 0) out += std::to_string(h) + "h";
    if (h > 0 || m > 0) out += std::to_string(m) + "m";
    out += std::to_string(s);
    if (frac != 0) {
      std::string f = std::to_string(1000 + frac).substr(1);
      while (f.back() == '0') f.pop_back();
      out += "." + f;
    }
    return out + "s";
  };
  for (long long ms = 0; ms < 3'000; ++ms) {
    const auto text = format_duration(milliseconds(ms));
    EXPECT_EQ(parse_duration(text), milliseconds(ms)) << text;
    EXPECT_EQ(text, expected(ms));
    for (long long whole : {59'000LL, 61'000LL, 3'600'000LL, 90'061'000LL})
      EXPECT_EQ(format_duration(milliseconds(whole + ms)), expected(whole + ms));
  }
}

TEST(Fixed3Test, WritesWhatPrintfWrites) {
  // Away from exact ties (where the last digit may round either way) the figures are printf's, digit for digit.
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> ms(0, 1e6), small(0, 2);
  for (int i = 0; i < 20000; ++i) {
    const double v = (i % 2 ? ms(rng) : small(rng)) * (i % 7 == 0 ? -1 : 1);
    const double frac = std::fabs(v * 1000) - std::floor(std::fabs(v * 1000));
    if (std::fabs(frac - 0.5) < 1e-6) continue;
    char want[64], buf[32];
    std::snprintf(want, sizeof want, "%.3f", v);
    std::string_view w(want);
    if (w == "-0.000") w = "0.000";  // fixed3 writes no sign on a zero
    EXPECT_EQ(fixed3(buf, v), w) << v;
  }
  char buf[32];
  EXPECT_EQ(fixed3(buf, 0), "0.000");
  EXPECT_EQ(fixed3(buf, 1234.5678), "1234.568");
  EXPECT_EQ(fixed3(buf, 0.0004), "0.000");
  EXPECT_EQ(fixed3(buf, 55.25), "55.250");
  EXPECT_EQ(fixed3(buf, 2.5e15), "2500000000000000.000");  // past the integer path: to_chars
}

}  // namespace
}  // namespace sluice
