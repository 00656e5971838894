#include "observe/histogram.hpp"

#include <algorithm>
#include <functional>
#include <iterator>
#include <limits>
#include <stdexcept>

namespace sluice::observe {

namespace {

// Each thread's shard, handed out in turn as threads first observe.
std::size_t shard_of_this_thread(std::size_t shards) {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed);
  return mine % shards;
}

}  // namespace

ShardedHistogram::ShardedHistogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  if (std::adjacent_find(bounds_.begin(), bounds_.end(), std::greater_equal<>()) != bounds_.end())
    throw std::invalid_argument("histogram bounds must be strictly ascending");
  const std::size_t lines = (bounds_.size() + 1 + 7) / 8;
  for (auto& s : shards_) {
    s.lines = std::make_unique<Line[]>(lines);
    for (std::size_t i = 0; i < lines * 8; ++i) s.lines[i / 8].count[i % 8].store(0, std::memory_order_relaxed);
  }
}

void ShardedHistogram::Observe(double value) {
  // As prometheus::Histogram: the first bucket whose bound is not below the value (+Inf past the last).
  const auto bucket =
      static_cast<std::size_t>(std::distance(bounds_.begin(), std::lower_bound(bounds_.begin(), bounds_.end(), value)));
  Shard& s = shards_[shard_of_this_thread(kShards)];
  s[bucket].fetch_add(1, std::memory_order_relaxed);
  s.sum.fetch_add(value, std::memory_order_relaxed);
}

prometheus::ClientMetric ShardedHistogram::Collect() const {
  prometheus::ClientMetric metric;
  std::uint64_t cumulative = 0;
  double sum = 0;
  metric.histogram.bucket.reserve(bounds_.size() + 1);
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    for (const auto& s : shards_) cumulative += s[i].load(std::memory_order_relaxed);
    prometheus::ClientMetric::Bucket bucket;
    bucket.cumulative_count = cumulative;
    bucket.upper_bound = i == bounds_.size() ? std::numeric_limits<double>::infinity() : bounds_[i];
    metric.histogram.bucket.push_back(bucket);
  }
  for (const auto& s : shards_) sum += s.sum.load(std::memory_order_relaxed);
  metric.histogram.sample_count = cumulative;
  metric.histogram.sample_sum = sum;
  return metric;
}

ShardedHistogram& HistogramFamily::Add(const std::map<std::string, std::string>& labels,
                                       const std::vector<double>& bounds) {
  std::lock_guard lock(mutex_);
  auto& child = children_[labels];
  if (!child) child = std::make_unique<ShardedHistogram>(bounds);
  return *child;
}

void HistogramFamily::Collect(std::vector<prometheus::MetricFamily>& out) const {
  std::lock_guard lock(mutex_);
  if (children_.empty()) return;
  prometheus::MetricFamily family;
  family.name = name_;
  family.help = help_;
  family.type = prometheus::MetricType::Histogram;
  family.metric.reserve(children_.size());
  for (const auto& [labels, child] : children_) {
    auto metric = child->Collect();
    for (const auto& [name, value] : labels) metric.label.push_back({name, value});
    family.metric.push_back(std::move(metric));
  }
  out.push_back(std::move(family));
}

}  // namespace sluice::observe
