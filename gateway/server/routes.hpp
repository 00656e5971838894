#pragma once
// The client-facing routes: one request in, one response (or relayed stream) out.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "config.hpp"
#include "observe/metrics.hpp"
#include "policy/decide.hpp"
#include "policy/cache.hpp"
#include "policy/limiter.hpp"
#include "server/http_io.hpp"
#include "server/incoming.hpp"
#include "upstream/balancer.hpp"
#include "upstream/flight.hpp"
#include "upstream/pool.hpp"

namespace sluice::upstream {
struct ClientWatch;
}  // namespace sluice::upstream

namespace sluice::store {
class RedisClient;
class RedisLimiter;
}  // namespace sluice::store

namespace sluice::server {

/// Requests waiting for a slot on a backend at its max_inflight. Shared by workers; bounded.
class SlotQueue {
 public:
  struct Waiter {
    explicit Waiter(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;         // cancelled, on its own executor, to wake the waiter
    std::atomic<bool> woken{false};  // a freed slot was handed to it
  };
  explicit SlotQueue(unsigned capacity) : capacity_(capacity) {}
  bool join(const std::shared_ptr<Waiter>& w);  // at the back; false when the queue is full
  void leave(const std::shared_ptr<Waiter>& w);
  bool first(const std::shared_ptr<Waiter>& w) const;
  std::size_t waiting() const { return size_.load(std::memory_order_relaxed); }  // no lock: every request asks
  void wake_one();  // a slot was freed: hand it to the longest waiting request not yet handed one

 private:
  mutable std::mutex mutex_;
  std::deque<std::shared_ptr<Waiter>> waiting_;
  std::atomic<std::size_t> size_{0};
  unsigned capacity_;
};

/// Backend health, retry budgets and wait queues, shared by every worker (each object is thread-safe).
struct Fleet {
  std::map<std::string, std::unique_ptr<upstream::BackendState>, std::less<>> backends;  // enabled backends
  std::map<std::string, std::unique_ptr<upstream::RetryBudget>, std::less<>> budgets;    // by model name
  std::map<std::string, std::unique_ptr<SlotQueue>, std::less<>> queues;                 // by backend name

  /// True when at least one backend passes its checks and is not ejected.
  bool any_up(upstream::SteadyTime now) const;
};

/// The keys, limits and routes a request runs under. A reload swaps the whole snapshot; each request
/// holds the one it started with until it ends.
struct Snapshot {
  /// `limiter`: the in-memory one, whose states for the keys and models with limits are found here, once.
  explicit Snapshot(Config c, policy::LocalLimiter* limiter = nullptr)
      : config(std::move(c)), policy(config, limiter) {}
  Config config;
  policy::Policy policy;
};

/// A worker's copy of the current snapshot (Snapshots::get), and the generation it belongs to.
struct HeldSnapshot {
  std::uint64_t generation = 0;  // 0: none held yet
  std::shared_ptr<const Snapshot> snapshot;
};

class Snapshots {
 public:
  explicit Snapshots(std::shared_ptr<const Snapshot> first) : current_(std::move(first)) {}
  std::shared_ptr<const Snapshot> get() const {
    std::lock_guard lock(mutex_);
    return current_;
  }
  /// The current snapshot through a worker's copy, which is refreshed (under the lock) only when a reload has
  /// set a new one since: a request costs one atomic load, and no lock is shared by the workers. A request
  /// racing a reload runs under either snapshot.
  const HeldSnapshot& get(HeldSnapshot& held) const {
    if (generation_.load(std::memory_order_acquire) != held.generation) {
      std::shared_ptr<const Snapshot> previous;  // let go after the lock: it may be the last reference
      std::lock_guard lock(mutex_);
      previous = std::exchange(held.snapshot, current_);
      held.generation = generation_.load(std::memory_order_relaxed);
    }
    return held;
  }
  void set(std::shared_ptr<const Snapshot> next) {
    std::lock_guard lock(mutex_);
    current_ = std::move(next);
    generation_.store(generation_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const Snapshot> current_;
  std::atomic<std::uint64_t> generation_{1};  // counts the snapshots set; a held copy starts at 0
};

/// What every worker shares (read-only, or thread-safe).
struct Services {
  const Config& config;  // as started: server, backends and store settings (a reload does not change them)
  const Snapshots& snapshots;
  observe::Metrics& metrics;
  const std::atomic<bool>& draining;
  Fleet& fleet;
  policy::LocalLimiter& limiter;  // the limits when store: memory, and the fallback when Redis is down
  std::atomic<int>& background;   // settlements still on their way to Redis (a drain waits for them)
  policy::MemoryCache& cache;     // answers kept for exact repeats
  upstream::Flights& flights;     // requests on their way upstream that identical ones can follow
  std::function<std::string()> reload;  // re-reads the config file: "" when applied, else why not
  std::int64_t started_unix = 0;
};

/// One worker's connection pools, by backend name.
using Pools = std::map<std::string, std::unique_ptr<upstream::BackendPool>, std::less<>>;

/// What each worker owns for its requests (used on the worker's thread only).
struct WorkerLocal {
  WorkerLocal();
  ~WorkerLocal();
  Pools pools;
  HeldSnapshot snapshot;                         // the worker's copy of the current config (Snapshots::get)
  std::unique_ptr<store::RedisClient> redis;     // store: redis
  std::unique_ptr<store::RedisLimiter> limiter;  // store: redis
};

/// Facts about the request being served, for the reply and the access log.
struct RequestContext {
  std::chrono::steady_clock::time_point started;
  std::chrono::steady_clock::time_point ended{};  // when its answer was done (handle_client_request sets it)
  std::string client;  // peer address
  std::uint64_t bytes_in = 0;
  std::string method;  // set for a request that fails before it is routed (its error and access line)
  std::string path;
  beast::flat_buffer* read_buffer = nullptr;  // the connection's; a stream lets its memory go while it runs
  policy::KeyMemo* key_memo = nullptr;        // the connection's: the key its last request was let in with
  upstream::ClientWatch* watch = nullptr;     // the connection's watchdog for its requests' exchanges
};

/// Serves one client request on `stream`. Returns whether the connection may serve another.
asio::awaitable<bool> handle_client_request(beast::tcp_stream& stream, IncomingRequest& req,
                                            RequestContext& ctx, const Services& services, WorkerLocal& local);

/// Answers a request that failed before it could be routed (bad framing, too large, too slow), and logs it.
asio::awaitable<void> reply_unroutable(beast::tcp_stream& stream, const openai::ApiError& error,
                                       RequestContext& ctx, const Services& services);

/// Serves one admin request (/healthz, /readyz, /metrics, POST /admin/reload). `ready` says whether /readyz
/// answers 200.
StringResponse handle_admin_request(const StringRequest& req, const Services& services, bool ready);

}  // namespace sluice::server
