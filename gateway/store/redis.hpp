#pragma once
// A small Redis client for Sluice's shared state: hiredis encodes commands and decodes replies,
// Asio drives the socket. Every call has a deadline, and an unreachable Redis is an answer
// (std::nullopt) that callers fall back on, never a wait.
#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::store {

/// Where Redis is and how to log in.
struct RedisUrl {
  std::string host = "127.0.0.1";
  std::uint16_t port = 6379;
  std::string username;  // optional (Redis 6 ACL)
  std::string password;  // secret: never logged
  int db = 0;
};

/// redis://[[username]:password@]host[:port][/db]  (also "redis://host"); nullopt when malformed.
/// User and password may be percent-encoded; an IPv6 host goes in brackets.
std::optional<RedisUrl> parse_redis_url(std::string_view url);

/// One decoded RESP2 reply.
struct RedisReply {
  enum class Type { string, status, error, integer, nil, array };
  Type type = Type::nil;
  std::string str;  // string, status, error
  long long integer = 0;
  std::vector<RedisReply> elements;  // array
};

/// Outage bookkeeping shared by every worker's client (thread-safe): logs once per outage, not per failure.
class RedisHealth {
 public:
  /// Called (from any thread) when Redis goes down or comes back; set before clients start.
  std::function<void(bool up)> on_change;
  /// Logs "redis reachable again" once per recovery.
  void report_up();
  /// Logs a warning once per outage (the reason, never the password).
  void report_down(std::string_view why);
  bool up() const { return state_.load() == kUp; }
  /// How many up→down transitions (the first report_down of a fresh process counts too).
  std::uint64_t outages() const { return outages_.load(); }

 private:
  enum : int { kUnknown, kUp, kDown };
  std::atomic<int> state_{kUnknown};
  std::atomic<std::uint64_t> outages_{0};
};

/// One connection to Redis, used from one worker's io_context only (every call on `ex`).
/// Calls pipeline: they are written in call order and their replies matched in that order.
class RedisClient {
 public:
  /// `health` must stay alive until the client's stop() has run on `ex` (or `ex` runs no more).
  RedisClient(boost::asio::any_io_executor ex, RedisUrl url, std::chrono::milliseconds timeout,
              RedisHealth& health);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  /// Begins connecting in the background; reconnects with backoff (50 ms doubling to 5 s) after failures.
  void start();
  /// Closes; pending and later calls complete with nullopt. Callable from any thread, its own included.
  void stop();

  /// Runs one command. nullopt when Redis is unreachable, the reply does not come within `timeout`, or the
  /// connection breaks. Never waits longer than about `timeout`. Error replies are replies, not nullopt.
  boost::asio::awaitable<std::optional<RedisReply>> command(std::vector<std::string> argv);

  /// EVALSHA of `script`, or EVAL when Redis answers NOSCRIPT. Same failure semantics as command().
  boost::asio::awaitable<std::optional<RedisReply>> eval(const std::string& script,
                                                         const std::vector<std::string>& keys,
                                                         const std::vector<std::string>& args);

  /// True while a connection is established and logged in.
  bool connected() const;

 private:
  struct State;  // shared with the background coroutines, so none of them dangles after the client is gone
  std::shared_ptr<State> state_;
};

}  // namespace sluice::store
