#pragma once
// Request coalescing: identical requests that arrive while the first is still on its way to the backend
// wait for that one (the leader) instead of going upstream themselves. The leader publishes its answer's
// events into a Flight as they arrive; each follower reads them at its own pace from its own cursor, so a
// slow follower holds back nobody. Flights are shared by every worker (each object is thread-safe).
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "openai/errors.hpp"
#include "openai/usage.hpp"
#include "server/http_io.hpp"

namespace sluice::upstream {

/// One SSE event of the leader's answer: its data payload ([DONE] is not published).
struct FlightEvent {
  std::string data;
  bool usage_only = false;  // the include_usage chunk (a follower that did not ask for it skips it)
  bool generated = false;   // carries generated text (time to first token)
};

class Flight {
 public:
  /// A follower waiting for events, woken on its own executor by cancelling its timer.
  struct Subscriber {
    explicit Subscriber(const asio::any_io_executor& ex) : timer(ex) {}
    asio::steady_timer timer;
  };
  enum class State { running, done, failed };
  /// How the leader's request ended, for the followers.
  struct Outcome {
    bool ok = false;                         // the whole answer arrived
    std::optional<std::string> completion;   // the answer as one completion, when it could be joined
    std::optional<openai::Usage> usage;      // the answer's usage
    std::optional<openai::ApiError> error;   // why it failed
    bool retry = true;  // a follower that has sent nothing yet may try on its own (not for a backend 4xx)
  };

  static constexpr std::size_t kMaxBytes = 64u << 20;  // events kept for followers, at most

  // The leader's side.
  /// Appends an event and wakes waiting followers. False once the flight holds kMaxBytes (the event is
  /// dropped, and the flight will fail for its followers).
  bool publish(std::string data, bool usage_only, bool generated);
  void finish(Outcome outcome);  // ends the flight (failed unless ok and nothing was dropped)
  /// Followers still reading: while there are any, the upstream request goes on without the leader's client.
  int followers() const { return followers_.load(std::memory_order_acquire); }
  /// The leader's client has gone. With followers, `close` (which ends the upstream request) is posted to `ex`
  /// when the last of them leaves, and true is returned; with none, false: the caller ends it at once. A flight
  /// that is ending this way takes no new followers.
  bool abandon_when_alone(const asio::any_io_executor& ex, std::function<void()> close);

  // The followers' side.
  bool join();  // false when the flight is being abandoned (nobody would finish it)
  void leave(const std::shared_ptr<Subscriber>& sub);
  /// Appends the events from `next` on to `out` (pointers stay valid as long as the flight lives) and
  /// returns the state. When there is nothing new and the flight is running, parks `sub` to be woken by
  /// the next publish or finish; the caller then waits on its timer without suspending in between.
  State read(std::size_t next, std::vector<const FlightEvent*>& out, const std::shared_ptr<Subscriber>& sub);
  /// How the flight ended; only once read() returned done or failed.
  const Outcome& outcome() const { return outcome_; }

 private:
  mutable std::mutex mutex_;
  std::deque<FlightEvent> events_;  // push_back keeps references to earlier events valid
  std::size_t bytes_ = 0;
  bool overflow_ = false;
  State state_ = State::running;
  Outcome outcome_;
  std::vector<std::shared_ptr<Subscriber>> parked_;
  std::atomic<int> followers_{0};  // changed under mutex_; read without it
  bool abandoned_ = false;
  std::optional<asio::any_io_executor> close_on_;
  std::function<void()> close_;
};

/// The flights in progress, by cache key. Sharded, so requests for different answers share no lock.
class Flights {
 public:
  struct Joined {
    std::shared_ptr<Flight> flight;
    bool leader = false;  // no flight was in progress: this request goes upstream and publishes
  };
  /// Follows the flight in progress for `key` (counted as a follower), or starts one and leads it.
  Joined join(const std::string& key);
  /// The leader is done: later requests for `key` start their own flight (or hit the cache).
  void land(const std::string& key, const Flight* flight);
  std::size_t size() const;

 private:
  struct Shard {
    mutable std::mutex mutex;
    std::unordered_map<std::string, std::shared_ptr<Flight>> flights;
  };
  static constexpr std::size_t kShards = 16;
  Shard& shard(const std::string& key) { return shards_[std::hash<std::string>{}(key) % kShards]; }
  Shard shards_[kShards];
};

}  // namespace sluice::upstream
