#pragma once
// Histograms whose observations take no lock. prometheus::Histogram takes a mutex on every observation, and every
// worker observing the same label set (the same endpoint, model and backend) takes the same one: the one lock
// all workers would share on a request's path. Here each thread adds to a shard of its own (bucket counts and a
// sum, relaxed atomics on cache lines of their own), and a scrape adds the shards up into what
// prometheus::Histogram would have reported for the same observations.
#include <prometheus/client_metric.h>
#include <prometheus/metric_family.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace sluice::observe {

class ShardedHistogram {
 public:
  /// `bounds`: the buckets' upper bounds, strictly ascending (a +Inf bucket follows them), as
  /// prometheus::Histogram's; std::invalid_argument otherwise.
  explicit ShardedHistogram(std::vector<double> bounds);
  ShardedHistogram(const ShardedHistogram&) = delete;
  ShardedHistogram& operator=(const ShardedHistogram&) = delete;

  void Observe(double value);
  /// The buckets (cumulative), count and sum, as prometheus::Histogram::Collect gives them. A scrape racing an
  /// observation may see its count and not yet its sum.
  prometheus::ClientMetric Collect() const;

 private:
  static constexpr std::size_t kShards = 16;  // threads beyond that share shards (still exact: atomics)
  struct alignas(64) Line {                   // a cache line of counts
    std::atomic<std::uint64_t> count[8];
  };
  struct alignas(64) Shard {
    std::unique_ptr<Line[]> lines;  // per bucket, not cumulative, the last +Inf: lines no other shard touches
    std::atomic<double> sum{0};
    std::atomic<std::uint64_t>& operator[](std::size_t bucket) { return lines[bucket / 8].count[bucket % 8]; }
    const std::atomic<std::uint64_t>& operator[](std::size_t bucket) const {
      return lines[bucket / 8].count[bucket % 8];
    }
  };
  std::vector<double> bounds_;
  std::array<Shard, kShards> shards_;
};

/// A family of ShardedHistograms by label values, as prometheus::Family<Histogram> (Add, then Collect).
class HistogramFamily {
 public:
  HistogramFamily(std::string name, std::string help) : name_(std::move(name)), help_(std::move(help)) {}
  /// The child for `labels`, made with `bounds` the first time. Its address stays valid as long as the family.
  ShardedHistogram& Add(const std::map<std::string, std::string>& labels, const std::vector<double>& bounds);
  /// Appends the family to `out`, as prometheus::Family::Collect gives it (nothing while it has no child).
  void Collect(std::vector<prometheus::MetricFamily>& out) const;

 private:
  std::string name_, help_;
  mutable std::mutex mutex_;  // the map only; observations never take it
  std::map<std::map<std::string, std::string>, std::unique_ptr<ShardedHistogram>> children_;
};

}  // namespace sluice::observe
