#include "observe/histogram.hpp"

#include <gtest/gtest.h>
#include <prometheus/family.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace sluice::observe {
namespace {

const std::vector<double> kBounds{0.001, 0.01, 0.1, 1, 10};

// What prometheus-cpp's own histogram family exposes for the same observations: the reference.
struct Reference {
  prometheus::Registry registry;
  prometheus::Family<prometheus::Histogram>& family =
      prometheus::BuildHistogram().Name("sluice_test_seconds").Help("A test histogram.").Register(registry);
  std::string text() const { return prometheus::TextSerializer{}.Serialize(registry.Collect()); }
};

std::string text_of(const HistogramFamily& f) {
  std::vector<prometheus::MetricFamily> families;
  f.Collect(families);
  return prometheus::TextSerializer{}.Serialize(families);
}

TEST(ShardedHistogramTest, ExposesWhatPrometheusHistogramExposesForTheSameObservations) {
  Reference ref;
  HistogramFamily mine("sluice_test_seconds", "A test histogram.");
  EXPECT_EQ(text_of(mine), ref.text());  // no child yet: nothing exported
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> spread(-1, 30);
  const std::vector<std::map<std::string, std::string>> label_sets{
      {{"endpoint", "chat/completions"}, {"model", "m"}}, {{"endpoint", "embeddings"}, {"model", "m"}}};
  for (int i = 0; i < 2000; ++i) {
    const auto& labels = label_sets[static_cast<std::size_t>(i) % 2];
    // The bounds themselves (a value on a bound counts in that bucket), 0, and values past the last bound.
    const double v = i % 7 == 0 ? kBounds[static_cast<std::size_t>(i) % kBounds.size()] : i % 11 == 0 ? 0 : spread(rng);
    ref.family.Add(labels, kBounds).Observe(v);
    mine.Add(labels, kBounds).Observe(v);
  }
  const auto expected = ref.text();
  EXPECT_NE(expected.find("sluice_test_seconds_bucket{endpoint=\"embeddings\",model=\"m\",le=\"+Inf\"} 1000"),
            std::string::npos)
      << expected;
  // prometheus-cpp orders a family's children by hash; the sharded family by their labels. Compare line sets.
  auto lines = [](const std::string& text) {
    std::multiset<std::string> out;
    std::size_t at = 0;
    for (auto nl = text.find('\n'); nl != std::string::npos; at = nl + 1, nl = text.find('\n', at))
      out.insert(text.substr(at, nl - at));
    return out;
  };
  EXPECT_EQ(lines(text_of(mine)), lines(expected));
}

TEST(ShardedHistogramTest, BoundsMustAscend) {
  EXPECT_THROW(ShardedHistogram({1, 1, 2}), std::invalid_argument);
  EXPECT_THROW(ShardedHistogram({2, 1}), std::invalid_argument);
  EXPECT_NO_THROW(ShardedHistogram({}));  // +Inf alone
}

TEST(ShardedHistogramTest, ObservationsFromManyThreadsAreAllCounted) {
  ShardedHistogram h(kBounds);
  constexpr int kThreads = 20, kEach = 5000;  // more threads than shards: some share one
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&h, t] {
      for (int i = 0; i < kEach; ++i) h.Observe(t % 2 ? 0.005 : 5.0);
    });
  for (auto& t : threads) t.join();
  const auto m = h.Collect();
  ASSERT_EQ(m.histogram.bucket.size(), kBounds.size() + 1);
  EXPECT_EQ(m.histogram.sample_count, static_cast<std::uint64_t>(kThreads) * kEach);
  EXPECT_EQ(m.histogram.bucket[1].cumulative_count, static_cast<std::uint64_t>(kThreads / 2) * kEach);  // ≤ 0.01
  EXPECT_EQ(m.histogram.bucket[4].cumulative_count, static_cast<std::uint64_t>(kThreads) * kEach);      // ≤ 10
  EXPECT_NEAR(m.histogram.sample_sum, (kThreads / 2) * kEach * (0.005 + 5.0), 1e-6);  // summed in any order
}

}  // namespace
}  // namespace sluice::observe
