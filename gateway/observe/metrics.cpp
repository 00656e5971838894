#include "observe/metrics.hpp"

#include "observe/histogram.hpp"
#include "same_bytes.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <atomic>
#include <map>
#include <mutex>

namespace sluice::observe {

namespace {

std::uint64_t next_id() {
  static std::atomic<std::uint64_t> ids{0};
  return ++ids;
}

using Label = std::pair<const char*, std::string_view>;

/// Family::Add builds a label map and looks it up under the family's mutex (shared by every worker) on
/// each call. Each thread finds a label set's child that way once, then in a table of its own: the request
/// path records its metrics without a lock or an allocation. Children are never removed, so the pointers
/// stay valid for the life of their registry.
class ChildTable {
 public:
  /// The child under `key`, or nullptr.
  void* find(std::string_view key, std::uint64_t hash) const {
    for (std::size_t i = hash & (slots_.size() - 1);; i = (i + 1) & (slots_.size() - 1)) {
      const Slot& s = slots_[i];
      if (!s.child) return nullptr;
      if (s.hash == hash && s.key == key) return s.child;
    }
  }
  void add(std::string_view key, std::uint64_t hash, void* child) {
    if (2 * (used_ + 1) > slots_.size()) grow();
    place(Slot{hash, std::string(key), child});
    ++used_;
  }
  std::string key;  // reused: built for each lookup

 private:
  struct Slot {
    std::uint64_t hash = 0;
    std::string key;
    void* child = nullptr;
  };
  void place(Slot&& s) {
    std::size_t i = s.hash & (slots_.size() - 1);
    while (slots_[i].child) i = (i + 1) & (slots_.size() - 1);
    slots_[i] = std::move(s);
  }
  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    for (auto& s : old)
      if (s.child) place(std::move(s));
  }
  std::vector<Slot> slots_ = std::vector<Slot>(64);  // open addressing, a power of two, at most half full
  std::size_t used_ = 0;
};

// The key's bytes, eight at a time. Not a defence against chosen collisions (a collision costs a compare, never
// a wrong child): label values are the config's names and Sluice's own words.
std::uint64_t hash_key(std::string_view key) {
  std::uint64_t h = 0x243F6A8885A308D3ull ^ key.size();
  std::size_t i = 0;
  for (; i + 8 <= key.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, key.data() + i, 8);
    h = (h ^ w) * 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
  }
  std::uint64_t w = 0;
  std::memcpy(&w, key.data() + i, key.size() - i);
  h = (h ^ w) * 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 32);
}

// The child type a family's Add gives: prometheus::Family<T>'s T, or HistogramFamily's ShardedHistogram.
template <class Family, class... Extra>
using ChildOf = std::remove_reference_t<decltype(std::declval<Family&>().Add(
    std::declval<const std::map<std::string, std::string>&>(), std::declval<const Extra&>()...))>;

template <class Family, class... Extra>
ChildOf<Family, Extra...>& child(std::uint64_t owner, Family& family, std::initializer_list<Label> labels,
                                 const Extra&... extra) {
  using T = ChildOf<Family, Extra...>;
  thread_local ChildTable table;
  // The key: owner, family, then each value with its length (so no value can forge another), written in one go.
  const void* f = &family;
  std::size_t size = sizeof owner + sizeof f;
  for (const auto& label : labels) size += sizeof(std::uint32_t) + label.second.size();
  auto& key = table.key;
  key.resize(size);
  char* p = key.data();
  auto put = [&p](const void* bytes, std::size_t n) {
    if (n == 0) return;  // an empty label's view may have no data at all (memcpy's source must not be null)
    std::memcpy(p, bytes, n);
    p += n;
  };
  put(&owner, sizeof owner);
  put(&f, sizeof f);
  for (const auto& [name, value] : labels) {
    const auto n = static_cast<std::uint32_t>(value.size());
    put(&n, sizeof n);
    put(value.data(), value.size());
  }
  const std::uint64_t hash = hash_key(key);
  if (void* found = table.find(key, hash)) return *static_cast<T*>(found);
  std::map<std::string, std::string> map;
  for (const auto& [name, value] : labels) map.emplace(name, std::string(value));
  T& made = family.Add(map, extra...);
  table.add(key, hash, &made);
  return made;
}

/// The child a call site found last on its thread, with the label values it was found under. A worker's
/// requests mostly repeat the labels of the one before (the same key, model and backend): comparing a few short
/// values then costs less than building, hashing and probing the table's key. Used on the request path only.
class Recent {
 public:
  static constexpr std::size_t kMaxLabels = 5;
  void* find(std::uint64_t owner, const void* family, std::initializer_list<Label> labels) const {
    if (owner != owner_ || family != family_ || labels.size() != count_) return nullptr;
    std::size_t i = 0;
    for (const auto& label : labels)
      if (!same_text(values_[i++], label.second)) return nullptr;
    return child_;
  }
  void keep(std::uint64_t owner, const void* family, std::initializer_list<Label> labels, void* child) {
    if (labels.size() > kMaxLabels) return;
    owner_ = owner;
    family_ = family;
    count_ = labels.size();
    std::size_t i = 0;
    for (const auto& label : labels) values_[i++].assign(label.second);
    child_ = child;
  }

 private:
  std::uint64_t owner_ = 0;  // Metrics ids start at 1
  const void* family_ = nullptr;
  std::size_t count_ = 0;
  std::array<std::string, kMaxLabels> values_;
  void* child_ = nullptr;
};

/// child(), first asking the call site's Recent.
template <class Family, class... Extra>
ChildOf<Family, Extra...>& child(Recent& recent, std::uint64_t owner, Family& family,
                                 std::initializer_list<Label> labels, const Extra&... extra) {
  using T = ChildOf<Family, Extra...>;
  if (void* found = recent.find(owner, &family, labels)) return *static_cast<T*>(found);
  T& made = child(owner, family, labels, extra...);
  recent.keep(owner, &family, labels, &made);
  return made;
}

}  // namespace

struct Metrics::Impl {
  const std::uint64_t id = next_id();  // tells apart the children of each Metrics in the per-thread tables
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests = prometheus::BuildCounter()
                                                          .Name("sluice_requests_total")
                                                          .Help("Requests answered, by status code.")
                                                          .Register(*registry);
  // Histograms observe without a lock (observe/histogram.hpp) and are added to what the registry gives at a scrape.
  HistogramFamily duration{"sluice_request_duration_seconds", "Time from request read to last byte sent."};
  prometheus::Family<prometheus::Counter>& token_count =
      prometheus::BuildCounter()
          .Name("sluice_tokens_total")
          .Help("Tokens processed, by type (input|output).")
          .Register(*registry);
  HistogramFamily ttft{"sluice_time_to_first_token_seconds", "Time from request to the first streamed event."};
  prometheus::Family<prometheus::Counter>& upstream_errors =
      prometheus::BuildCounter()
          .Name("sluice_upstream_errors_total")
          .Help("Failed exchanges with backends, by reason.")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& disconnects =
      prometheus::BuildCounter()
          .Name("sluice_client_disconnects_total")
          .Help("Clients that left before their answer was complete.")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& fallbacks =
      prometheus::BuildCounter()
          .Name("sluice_fallbacks_total")
          .Help("Requests moved to another target after a failure before the first byte.")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& up =
      prometheus::BuildGauge()
          .Name("sluice_backend_up")
          .Help("1 while a backend passes its health checks and is not ejected.")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& in_flight = prometheus::BuildGauge()
                                                         .Name("sluice_inflight_requests")
                                                         .Help("Requests waiting on a backend now.")
                                                         .Register(*registry);
  prometheus::Family<prometheus::Counter>& estimated =
      prometheus::BuildCounter()
          .Name("sluice_estimated_tokens_total")
          .Help("Output tokens counted from the stream because the backend sent no usage.")
          .Register(*registry);
  HistogramFamily tpot{"sluice_time_per_output_token_seconds",
                       "Per streamed request: (last token - first token) / (output tokens - 1)."};
  HistogramFamily decode_speed{
      "sluice_output_tokens_per_second",
      "Per streamed request: output tokens per second after the first token (1 / time per output token)."};
  HistogramFamily overhead_family{"sluice_overhead_seconds",
                                  "Time spent in Sluice itself: request duration minus time waiting on backends."};
  // Exported from the start (at zero) so dashboards and alerts can rely on the names.
  prometheus::Family<prometheus::Counter>& rate_limited =
      prometheus::BuildCounter()
          .Name("sluice_rate_limited_total")
          .Help("Requests refused by a key's or model's limit, by limit.")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& cache_lookups = prometheus::BuildCounter()
                                                               .Name("sluice_cache_lookups_total")
                                                               .Help("Response cache lookups, by result.")
                                                               .Register(*registry);
  prometheus::Gauge& cache_bytes = prometheus::BuildGauge()
                                       .Name("sluice_cache_bytes")
                                       .Help("Bytes held by the response cache.")
                                       .Register(*registry)
                                       .Add({});
  prometheus::Counter& cache_evictions = prometheus::BuildCounter()
                                             .Name("sluice_cache_evictions_total")
                                             .Help("Cached answers evicted to stay within cache.max_bytes.")
                                             .Register(*registry)
                                             .Add({});
  prometheus::Family<prometheus::Counter>& coalesced =
      prometheus::BuildCounter()
          .Name("sluice_coalesced_total")
          .Help("Requests that followed an identical request already in flight instead of going upstream, by model.")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& redis_errors =
      prometheus::BuildCounter()
          .Name("sluice_redis_errors_total")
          .Help("Limit decisions Redis did not answer in time (made locally or refused), by operation.")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& budget_left =
      prometheus::BuildGauge()
          .Name("sluice_key_budget_remaining_tokens")
          .Help("Tokens left in a key's budget for the current window (as last seen by this replica).")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& redis_up_family =
      prometheus::BuildGauge()
          .Name("sluice_redis_up")
          .Help("1 while the shared Redis store answers (store: redis only).")
          .Register(*registry);
  prometheus::Counter& redis_outages = prometheus::BuildCounter()
                                           .Name("sluice_redis_outages_total")
                                           .Help("Times the shared Redis store became unreachable.")
                                           .Register(*registry)
                                           .Add({});
  std::mutex redis_mutex;  // redis_state() reads then moves the outage counter
  prometheus::Family<prometheus::Gauge>& queue_depth =
      prometheus::BuildGauge()
          .Name("sluice_queued_requests")
          .Help("Requests waiting for a slot on a backend at max_inflight.")
          .Register(*registry);
  prometheus::Gauge& client_conns = prometheus::BuildGauge()
                                        .Name("sluice_client_connections")
                                        .Help("Client connections open now.")
                                        .Register(*registry)
                                        .Add({});
  prometheus::Family<prometheus::Counter>& client_rejections =
      prometheus::BuildCounter()
          .Name("sluice_client_rejections_total")
          .Help("Client connections refused at max_connections (answered with a 503, also in "
                "sluice_requests_total) or closed because their header or body was not sent in time.")
          .Register(*registry);
  prometheus::Gauge& streams = prometheus::BuildGauge()
                                   .Name("sluice_active_streams")
                                   .Help("SSE streams being relayed now.")
                                   .Register(*registry)
                                   .Add({});

  // Request durations of LLM work range from milliseconds (cache hits, errors) to minutes (long generations).
  static const prometheus::Histogram::BucketBoundaries& duration_buckets() {
    static const prometheus::Histogram::BucketBoundaries b{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
    return b;
  }
  static const prometheus::Histogram::BucketBoundaries& ttft_buckets() {
    static const prometheus::Histogram::BucketBoundaries b{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60};
    return b;
  }
  static const prometheus::Histogram::BucketBoundaries& tpot_buckets() {
    static const prometheus::Histogram::BucketBoundaries b{0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2};
    return b;
  }
  static const prometheus::Histogram::BucketBoundaries& speed_buckets() {
    static const prometheus::Histogram::BucketBoundaries b{1, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000, 2000};
    return b;
  }
  static const prometheus::Histogram::BucketBoundaries& overhead_buckets() {
    static const prometheus::Histogram::BucketBoundaries b{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
    return b;
  }
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

void Metrics::request_done(std::string_view endpoint, std::string_view model, std::string_view backend,
                           std::string_view key, int code, double seconds) {
  char code_text[12];
  const auto code_len = std::to_chars(code_text, code_text + sizeof code_text, code).ptr - code_text;
  thread_local Recent recent_request, recent_duration;
  child(recent_request, impl_->id, impl_->requests,
        {{"endpoint", endpoint},
         {"model", model},
         {"backend", backend},
         {"key", key},
         {"code", std::string_view(code_text, static_cast<std::size_t>(code_len))}})
      .Increment();
  child(recent_duration, impl_->id, impl_->duration, {{"endpoint", endpoint}, {"model", model}, {"backend", backend}},
        Impl::duration_buckets())
      .Observe(seconds);
}

void Metrics::tokens(std::string_view model, std::string_view backend, std::string_view key,
                     std::uint64_t input, std::uint64_t output) {
  thread_local Recent recent_input, recent_output;
  child(recent_input, impl_->id, impl_->token_count,
        {{"model", model}, {"backend", backend}, {"key", key}, {"type", "input"}})
      .Increment(static_cast<double>(input));
  child(recent_output, impl_->id, impl_->token_count,
        {{"model", model}, {"backend", backend}, {"key", key}, {"type", "output"}})
      .Increment(static_cast<double>(output));
}

void Metrics::time_to_first_token(std::string_view model, std::string_view backend, double seconds) {
  thread_local Recent recent;
  child(recent, impl_->id, impl_->ttft, {{"model", model}, {"backend", backend}}, Impl::ttft_buckets()).Observe(seconds);
}

void Metrics::upstream_error(std::string_view backend, std::string_view reason) {
  child(impl_->id, impl_->upstream_errors, {{"backend", backend}, {"reason", reason}}).Increment();
}

void Metrics::client_disconnect(std::string_view phase) {
  child(impl_->id, impl_->disconnects, {{"phase", phase}}).Increment();
}

void Metrics::active_streams(int delta) {
  impl_->streams.Increment(delta);
}

void Metrics::fallback(std::string_view model, std::string_view from, std::string_view to) {
  child(impl_->id, impl_->fallbacks, {{"model", model}, {"from", from}, {"to", to}}).Increment();
}

void Metrics::backend_up(std::string_view backend, bool is_up) {
  child(impl_->id, impl_->up, {{"backend", backend}}).Set(is_up ? 1 : 0);
}

void Metrics::inflight(std::string_view model, std::string_view backend, int delta) {
  thread_local Recent recent;
  child(recent, impl_->id, impl_->in_flight, {{"model", model}, {"backend", backend}}).Increment(delta);
}

void Metrics::estimated_tokens(std::string_view model, std::string_view backend, std::uint64_t output) {
  child(impl_->id, impl_->estimated, {{"model", model}, {"backend", backend}}).Increment(static_cast<double>(output));
}

void Metrics::token_pacing(std::string_view model, std::string_view backend, double seconds_per_token) {
  thread_local Recent recent_tpot, recent_speed;
  child(recent_tpot, impl_->id, impl_->tpot, {{"model", model}, {"backend", backend}}, Impl::tpot_buckets())
      .Observe(seconds_per_token);
  if (seconds_per_token > 0)
    child(recent_speed, impl_->id, impl_->decode_speed, {{"model", model}, {"backend", backend}}, Impl::speed_buckets())
        .Observe(1.0 / seconds_per_token);
}

void Metrics::rate_limited(std::string_view key, std::string_view limit) {
  child(impl_->id, impl_->rate_limited, {{"key", key}, {"limit", limit}}).Increment();
}

void Metrics::budget_remaining(std::string_view key, std::uint64_t tokens) {
  thread_local Recent recent;  // on every limited request's path
  child(recent, impl_->id, impl_->budget_left, {{"key", key}}).Set(static_cast<double>(tokens));
}

void Metrics::redis_state(bool is_up, std::uint64_t outages) {
  std::lock_guard lock(impl_->redis_mutex);
  impl_->redis_up_family.Add({}).Set(is_up ? 1 : 0);
  auto seen = static_cast<double>(outages);
  if (seen > impl_->redis_outages.Value()) impl_->redis_outages.Increment(seen - impl_->redis_outages.Value());
}

void Metrics::redis_error(std::string_view op) {
  child(impl_->id, impl_->redis_errors, {{"op", op}}).Increment();
}

void Metrics::cache_lookup(std::string_view result) {
  child(impl_->id, impl_->cache_lookups, {{"result", result}}).Increment();
}

void Metrics::cache_stored(std::uint64_t bytes, std::size_t evicted) {
  impl_->cache_bytes.Set(static_cast<double>(bytes));
  if (evicted) impl_->cache_evictions.Increment(static_cast<double>(evicted));
}

void Metrics::coalesced(std::string_view model) {
  child(impl_->id, impl_->coalesced, {{"model", model}}).Increment();
}

void Metrics::client_connections(int delta) {
  impl_->client_conns.Increment(delta);
}

void Metrics::client_rejected(std::string_view reason) {
  child(impl_->id, impl_->client_rejections, {{"reason", reason}}).Increment();
}

void Metrics::queued(std::string_view backend, int delta) {
  child(impl_->id, impl_->queue_depth, {{"backend", backend}}).Increment(delta);
}

void Metrics::declare(const Config& config) {
  for (const auto& key : config.keys) {
    for (const char* limit : {"rpm", "tpm", "concurrency", "budget"})
      impl_->rate_limited.Add({{"key", key.name}, {"limit", limit}});
    // A key's budget starts whole; a reload keeps what existing keys have left.
    if (key.limits.budget && !impl_->budget_left.Has({{"key", key.name}}))
      impl_->budget_left.Add({{"key", key.name}}).Set(static_cast<double>(key.limits.budget));
  }
  if (config.store == "redis" && !impl_->redis_up_family.Has({})) impl_->redis_up_family.Add({}).Set(0);
  for (const auto& b : config.backends) {
    if (!b.enabled) continue;
    for (const char* reason :
         {"connect", "resolve", "tls", "timeout", "first_token", "idle", "total", "reset", "protocol", "truncated"})
      impl_->upstream_errors.Add({{"backend", b.name}, {"reason", reason}});
  }
  for (const auto& m : config.models) {
    if (m.cache_enabled) impl_->coalesced.Add({{"model", m.name}});
    for (const auto& from : m.targets) {
      impl_->estimated.Add({{"model", m.name}, {"backend", from.backend}});
      for (const auto& to : m.targets)
        if (to.backend != from.backend)
          impl_->fallbacks.Add({{"model", m.name}, {"from", from.backend}, {"to", to.backend}});
    }
  }
  for (const char* phase : {"waiting", "streaming"}) impl_->disconnects.Add({{"phase", phase}});
  for (const char* reason : {"max_connections", "header_timeout", "body_timeout"})
    impl_->client_rejections.Add({{"reason", reason}});
  for (const char* result : {"hit", "miss", "bypass"}) impl_->cache_lookups.Add({{"result", result}});
  for (const char* op : {"admit", "settle"}) impl_->redis_errors.Add({{"op", op}});
  for (const auto& b : config.backends)
    if (b.enabled) impl_->queue_depth.Add({{"backend", b.name}});
}

void Metrics::overhead(std::string_view endpoint, double seconds) {
  thread_local Recent recent;
  child(recent, impl_->id, impl_->overhead_family, {{"endpoint", endpoint}}, Impl::overhead_buckets())
      .Observe(seconds);
}

namespace {

prometheus::MetricFamily process_family(const char* name, const char* help, prometheus::MetricType type,
                                        double v) {
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter)
    m.counter.value = v;
  else
    m.gauge.value = v;
  return prometheus::MetricFamily{name, help, type, {m}};
}

// The standard process_* metrics, read from /proc/self at each scrape (Linux).
std::vector<prometheus::MetricFamily> process_metrics() {
  std::vector<prometheus::MetricFamily> out;
  std::ifstream stat_file("/proc/self/stat");
  std::string stat((std::istreambuf_iterator<char>(stat_file)), std::istreambuf_iterator<char>());
  auto close_paren = stat.rfind(')');  // the command name may hold spaces; fields follow it
  if (close_paren == std::string::npos) return out;
  std::istringstream fields(stat.substr(close_paren + 2));
  std::vector<std::string> f{std::istream_iterator<std::string>(fields),
                             std::istream_iterator<std::string>()};
  // After the name: state is field 3; utime 14, stime 15, starttime 22, vsize 23, rss 24 (1-based, man proc).
  auto field = [&](std::size_t n) { return n - 3 < f.size() ? std::stod(f[n - 3]) : 0.0; };
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  const double page = static_cast<double>(sysconf(_SC_PAGESIZE));
  double boot_time = 0;
  std::ifstream proc_stat("/proc/stat");
  for (std::string line; std::getline(proc_stat, line);)
    if (line.rfind("btime ", 0) == 0) boot_time = std::stod(line.substr(6));
  std::size_t fds = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++fds;
  rlimit nofile{};
  getrlimit(RLIMIT_NOFILE, &nofile);
  using T = prometheus::MetricType;
  out.push_back(process_family("process_cpu_seconds_total",
                               "Total user and system CPU time spent in seconds.", T::Counter,
                               (field(14) + field(15)) / ticks));
  out.push_back(process_family("process_resident_memory_bytes", "Resident memory size in bytes.", T::Gauge,
                               field(24) * page));
  out.push_back(
      process_family("process_virtual_memory_bytes", "Virtual memory size in bytes.", T::Gauge, field(23)));
  out.push_back(
      process_family("process_open_fds", "Number of open file descriptors.", T::Gauge,
                     static_cast<double>(fds > 0 ? fds - 1 : 0)));  // less the one listing the directory
  out.push_back(process_family("process_max_fds", "Maximum number of open file descriptors.", T::Gauge,
                               static_cast<double>(nofile.rlim_cur)));
  out.push_back(process_family("process_start_time_seconds",
                               "Start time of the process since unix epoch in seconds.", T::Gauge,
                               boot_time + field(22) / ticks));
  return out;
}

}  // namespace

std::string Metrics::serialize() const {
  auto families = impl_->registry->Collect();
  for (const HistogramFamily* h : {&impl_->duration, &impl_->ttft, &impl_->tpot, &impl_->decode_speed,
                                   &impl_->overhead_family})
    h->Collect(families);
  for (auto& f : process_metrics()) families.push_back(std::move(f));
  return prometheus::TextSerializer{}.Serialize(families);
}

}  // namespace sluice::observe
