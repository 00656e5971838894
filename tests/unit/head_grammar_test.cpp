// The head readers' shared grammar: find_head_end finds what string_view::find finds, wherever the blank line
// falls against its sixteen-byte steps.
#include "head_grammar.hpp"

#include <gtest/gtest.h>

#include <cctype>
#include <random>
#include <string>

namespace sluice::head {
namespace {

TEST(HeadGrammar, FindHeadEndFindsWhatFindFinds) {
  // Every string of up to 9 bytes over CR, LF and one other byte, and longer ones drawn at random.
  const char alphabet[] = {'\r', '\n', 'a'};
  for (std::size_t len = 0; len <= 9; ++len) {
    std::size_t count = 1;
    for (std::size_t i = 0; i < len; ++i) count *= 3;
    for (std::size_t code = 0; code < count; ++code) {
      std::string s;
      for (std::size_t c = code, i = 0; i < len; ++i, c /= 3) s += alphabet[c % 3];
      ASSERT_EQ(find_head_end(s), s.find("\r\n\r\n")) << testing::PrintToString(s);
    }
  }
  std::mt19937 rng(7);
  for (int round = 0; round < 20000; ++round) {
    std::string s(rng() % 80, 'x');
    for (auto& c : s) c = alphabet[rng() % 3];
    ASSERT_EQ(find_head_end(s), s.find("\r\n\r\n")) << testing::PrintToString(s);
  }
  // A blank line at every offset of a long head, after many lines' ends.
  for (std::size_t at = 0; at < 64; ++at) {
    std::string s = std::string(at, 'h') + "\r\n\r\n" + "body\r\n\r\n";
    for (std::size_t i = 0; i + 1 < at; i += 5) s[i] = '\r', s[i + 1] = '\n';
    EXPECT_EQ(find_head_end(s), s.find("\r\n\r\n")) << at;
  }
  EXPECT_EQ(find_head_end(""), std::string_view::npos);
  EXPECT_EQ(find_head_end("\n\r\n\r\n"), 1u);
}

// value_end reads sixteen bytes at a time: every byte value, at every offset of values of every length up to
// past two steps, ends it exactly where a byte-by-byte scan does, and never past the end it is given.
TEST(HeadGrammar, ValueEndStopsWhereAByteByByteScanStops) {
  auto reference = [](const char* p, const char* end) {
    while (p < end && ((*p >= ' ' && *p < 0x7f) || *p == '\t')) ++p;
    return p;
  };
  for (std::size_t len = 0; len <= 40; ++len)
    for (std::size_t at = 0; at <= len; ++at)
      for (int b = 0; b < 256; ++b) {
        std::string s(len, 'v');
        if (at < len) s[at] = static_cast<char>(b);
        ASSERT_EQ(value_end(s.data(), s.data() + s.size()), reference(s.data(), s.data() + s.size()))
            << len << " " << at << " " << b;
      }
  const std::string tabs = "a\tb c~ \t\t~~~~~~~~~~~~~~~~\r\n";
  EXPECT_EQ(value_end(tabs.data(), tabs.data() + tabs.size()), tabs.data() + tabs.find('\r'));
}

// is_name compares eight bytes at a time with case folded by one bit: for names made of any token characters, it
// says what a comparison that lowercases letters alone says.
TEST(HeadGrammar, IsNameIgnoresTheCaseOfLettersOnly) {
  auto reference = [](std::string_view name, std::string_view lower) {
    if (name.size() != lower.size()) return false;
    for (std::size_t i = 0; i < name.size(); ++i) {
      char c = name[i];
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
      if (c != lower[i]) return false;
    }
    return true;
  };
  std::string tchars;
  for (int c = 0; c < 256; ++c)
    if (is_tchar(static_cast<char>(c))) tchars += static_cast<char>(c);
  std::mt19937 rng(11);
  for (std::string_view lower : {"te", "expect", "x-api-key", "content-length", "transfer-encoding", "x-2"}) {
    for (int round = 0; round < 20000; ++round) {
      std::string name(lower);
      // Change a few characters: to another token character, or to the other case.
      for (int k = rng() % 3; k >= 0; --k) {
        auto& c = name[rng() % name.size()];
        c = rng() % 2 ? tchars[rng() % tchars.size()] : static_cast<char>(c ^ 0x20);
        if (!is_tchar(c)) c = 'Q';
      }
      ASSERT_EQ(is_name(name, lower), reference(name, lower)) << name << " / " << lower;
    }
    std::string upper(lower);
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    EXPECT_TRUE(is_name(upper, lower)) << upper;
  }
  // Token characters one bit away from '-', a digit or a letter are not them.
  EXPECT_FALSE(is_name("content_length", "content-length"));
  EXPECT_FALSE(is_name("content-lengt^", "content-length"));
  EXPECT_FALSE(is_name("x-api-ke`", "x-api-key"));
}

}  // namespace
}  // namespace sluice::head
