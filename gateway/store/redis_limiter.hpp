#pragma once
// The limiter's decisions made in Redis, so that every replica enforces the same global limits.
// One Lua script per decision checks and reserves every limit of a request atomically (one round trip);
// another settles it when the request ends. The arithmetic is the in-memory limiter's (policy/limiter.hpp),
// with Redis's own clock, so replicas with skewed clocks still agree.
#include <boost/asio/awaitable.hpp>
#include <optional>
#include <string>

#include "policy/limiter.hpp"

namespace sluice::store {

class RedisClient;

/// How a settlement went: `answered` false when Redis did not answer (the reservation then stands).
struct Settled {
  bool answered = false;
  bool already = false;  // the lease was settled before (a retry), or never admitted (a released timeout)
  std::optional<std::uint64_t> budget_left;  // when the key has a budget
};

class RedisLimiter {
 public:
  /// `lease_ttl_ms`: how long a concurrency slot outlives a replica that died holding it.
  RedisLimiter(RedisClient& client, std::string key_prefix, policy::WallMs lease_ttl_ms);

  /// The reservation admit() makes for `d` under `lease` (also what to settle when its admission timed out).
  policy::Reservation reservation_for(const policy::Demand& d, const std::string& lease) const;
  /// Checks and reserves; nullopt when Redis did not answer in time (the caller falls back).
  boost::asio::awaitable<std::optional<policy::Admission>> admit(const policy::Demand& d, const std::string& lease);
  /// Releases concurrency and replaces the estimate by `used_tokens` (nullopt: unknown, the reservation stays
  /// charged). Exactly once per lease, so it may be retried; settling a lease whose admission timed out
  /// releases whatever that admission reserved, should it still run in Redis.
  boost::asio::awaitable<Settled> settle(const policy::Reservation& r, std::optional<std::uint64_t> used_tokens);

 private:
  std::vector<std::string> keys_for(const policy::Demand& d, const std::string& lease) const;
  RedisClient& client_;
  std::string prefix_;
  policy::WallMs lease_ttl_ms_;
};

}  // namespace sluice::store
