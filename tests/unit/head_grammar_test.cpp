// The head readers' shared grammar: find_head_end finds what string_view::find finds, wherever the blank line
// falls against its sixteen-byte steps.
#include "head_grammar.hpp"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace sluice::head
