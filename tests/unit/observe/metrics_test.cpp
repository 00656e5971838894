#include "observe/metrics.hpp"

#include <gtest/gtest.h>

#include <string>
#include <thread>

namespace sluice::observe {
namespace {

std::string requests_line(const std::string& model, const std::string& key) {
  return "sluice_requests_total{backend=\"b\",code=\"200\",endpoint=\"chat/completions\",key=\"" + key +
         "\",model=\"" + model + "\"} ";
}

// Each worker finds a label set's counter in a table of its own, which grows as label sets come: every set
// keeps its own count however many there are, and two registries never share one.
TEST(MetricsTest, EveryLabelSetKeepsItsOwnCountAsTheTablesGrow) {
  Metrics a, b;
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 300; ++i)
      a.request_done("chat/completions", "m" + std::to_string(i % 30), "b", "k" + std::to_string(i), 200, 0.01);
  std::thread other([&] {  // another thread's table sees the same children
    for (int i = 0; i < 300; ++i)
      a.request_done("chat/completions", "m" + std::to_string(i % 30), "b", "k" + std::to_string(i), 200, 0.01);
  });
  other.join();
  b.request_done("chat/completions", "m0", "b", "k0", 200, 0.01);
  const std::string text = a.serialize();
  for (int i = 0; i < 300; ++i) {
    const std::string line = requests_line("m" + std::to_string(i % 30), "k" + std::to_string(i));
    const auto at = text.find(line);
    ASSERT_NE(at, std::string::npos) << line;
    EXPECT_EQ(std::stod(text.substr(at + line.size())), 4.0) << line;
  }
  const std::string other_text = b.serialize();
  const std::string line = requests_line("m0", "k0");
  ASSERT_NE(other_text.find(line), std::string::npos);
  EXPECT_EQ(std::stod(other_text.substr(other_text.find(line) + line.size())), 1.0);
}

}  // namespace
}  // namespace sluice::observe
