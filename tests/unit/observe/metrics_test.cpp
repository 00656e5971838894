#include "observe/metrics.hpp"

#include <gtest/gtest.h>

#include <memory>
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

// A call site keeps the child it found last, with its label values: a repeat finds the same child, and any
// change (one value, a value that is a prefix of the last one, two values swapped, another registry) does not.
TEST(MetricsTest, ARepeatedLabelSetIsCountedOnItsOwnChildAndAnyChangeIsNot) {
  Metrics a, b;
  auto count = [](const Metrics& m, const std::string& model, const std::string& backend, const std::string& key) {
    const std::string text = m.serialize();
    const std::string line = "sluice_requests_total{backend=\"" + backend +
                             "\",code=\"200\",endpoint=\"chat/completions\",key=\"" + key + "\",model=\"" +
                             model + "\"} ";
    const auto at = text.find(line);
    return at == std::string::npos ? 0.0 : std::stod(text.substr(at + line.size()));
  };
  for (int i = 0; i < 5; ++i) a.request_done("chat/completions", "m", "x", "k", 200, 0.01);
  a.request_done("chat/completions", "m", "x", "k1", 200, 0.01);  // the last value longer
  a.request_done("chat/completions", "m", "x", "k", 200, 0.01);
  b.request_done("chat/completions", "m", "x", "k", 200, 0.01);   // the same labels, another registry
  a.request_done("chat/completions", "m", "x", "k", 200, 0.01);
  a.request_done("chat/completions", "x", "m", "k", 200, 0.01);   // two values swapped
  a.request_done("chat/completions", "m", "x", "", 200, 0.01);    // a value emptied
  a.request_done("chat/completions", "m", "x", "k", 200, 0.01);
  EXPECT_EQ(count(a, "m", "x", "k"), 8.0);
  EXPECT_EQ(count(a, "m", "x", "k1"), 1.0);
  EXPECT_EQ(count(a, "x", "m", "k"), 1.0);
  EXPECT_EQ(count(a, "m", "x", ""), 1.0);
  EXPECT_EQ(count(b, "m", "x", "k"), 1.0);
  // A registry made where an earlier one was (often at the same address): never the earlier one's child.
  for (int i = 0; i < 4; ++i) {
    auto fresh = std::make_unique<Metrics>();
    fresh->request_done("chat/completions", "m", "x", "k", 200, 0.01);
    EXPECT_EQ(count(*fresh, "m", "x", "k"), 1.0) << i;
  }
  // Input and output tokens: two children of one family, each call site its own.
  for (int i = 0; i < 3; ++i) a.tokens("m", "x", "k", 10, 2);
  a.tokens("m", "y", "k", 5, 1);
  const std::string text = a.serialize();
  EXPECT_NE(text.find("sluice_tokens_total{backend=\"x\",key=\"k\",model=\"m\",type=\"input\"} 30"),
            std::string::npos);
  EXPECT_NE(text.find("sluice_tokens_total{backend=\"x\",key=\"k\",model=\"m\",type=\"output\"} 6"),
            std::string::npos);
  EXPECT_NE(text.find("sluice_tokens_total{backend=\"y\",key=\"k\",model=\"m\",type=\"input\"} 5"),
            std::string::npos);
  // In-flight: up and down on the same child, on either side of another backend's.
  a.inflight("m", "x", 1);
  a.inflight("m", "y", 1);
  a.inflight("m", "x", -1);
  const std::string gauges = a.serialize();
  EXPECT_NE(gauges.find("sluice_inflight_requests{backend=\"x\",model=\"m\"} 0"), std::string::npos);
  EXPECT_NE(gauges.find("sluice_inflight_requests{backend=\"y\",model=\"m\"} 1"), std::string::npos);
}

}  // namespace
}  // namespace sluice::observe
