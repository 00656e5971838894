#include "store/redis_limiter.hpp"

#include <spdlog/spdlog.h>

#include <cmath>
#include <mutex>
#include <set>

#include "store/redis.hpp"

namespace sluice::store {

namespace {

// Shared by both scripts: Redis's clock, GCRA buckets (a float TAT in ms), leases and budgets.
// KEYS: 1 key rpm, 2 key tpm, 3 key budget (hash: w = window index, u = used), 4 key concurrency (zset of
//       leases scored by expiry), 5 model rpm, 6 model tpm, 7 model concurrency, 8 the lease's record
//       (the budget window it was admitted in; "settled" once settled or released).
constexpr const char* kPrelude = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local P = 60000
local function n(i) return tonumber(ARGV[i]) end
local function tat_of(k)
  local v = redis.call('GET', k)
  if v then return math.max(tonumber(v), now) end
  return now
end
-- What `cost` units move a TAT, on the in-memory limiter's 1/1024 ms grid (exact in doubles, no drift);
-- %.17g stores the double exactly.
local function span(limit, cost) return math.floor(cost * P / limit * 1024) / 1024 end
local function put_tat(k, tat)
  redis.call('SET', k, string.format('%.17g', tat), 'PX', math.ceil(tat - now) + 1000)
end
local function view(k, limit)
  if limit <= 0 then return 0, 0, 0 end
  local backlog = tat_of(k) - now
  local left = math.floor((P - backlog) / (P / limit) + 1e-9)
  if left < 0 then left = 0 end
  if left > limit then left = limit end
  return limit, left, math.ceil(backlog)
end
local function budget_used(window)
  local h = redis.call('HMGET', KEYS[3], 'w', 'u')
  if h[1] and tonumber(h[1]) == window then return tonumber(h[2]) end
  return 0
end
local function put_budget(window, used, bw)
  redis.call('HSET', KEYS[3], 'w', window, 'u', used)
  redis.call('PEXPIREAT', KEYS[3], (window + 2) * bw)
end
)lua";

// ARGV: 1 key rpm, 2 key tpm, 3 budget, 4 budget window ms, 5 key concurrency, 6 model rpm, 7 model tpm,
//       8 model concurrency, 9 key tokens, 10 model tokens, 11 budget tokens, 12 lease id, 13 lease ttl ms.
// Returns {refused (0: admitted, else LimitKind + 1), retry ms, budget window, requests limit, remaining, reset,
//          tokens limit, remaining, reset, budget remaining (-1: none)}.
constexpr const char* kAdmitBody = R"lua(
local bw = n(4)
local window = math.floor(now / bw)
local function active(k)
  redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
  return redis.call('ZCARD', k)
end
local function wait(k, limit, cost)
  if limit <= 0 then return 0 end
  local over = tat_of(k) + span(limit, cost) - now - P
  if over <= 0.000001 then return 0 end
  return over
end
local function check()
  if n(5) > 0 and active(KEYS[4]) >= n(5) then return 3, 1000 end
  local w = wait(KEYS[1], n(1), 1)
  if w > 0 then return 1, w end
  w = wait(KEYS[2], n(2), n(9))
  if w > 0 then return 2, w end
  if n(3) > 0 and budget_used(window) + n(11) > n(3) then return 4, (window + 1) * bw - now end
  if n(8) > 0 and active(KEYS[7]) >= n(8) then return 7, 1000 end
  w = wait(KEYS[5], n(6), 1)
  if w > 0 then return 5, w end
  w = wait(KEYS[6], n(7), n(10))
  if w > 0 then return 6, w end
  return 0, 0
end
-- A lease already settled (or released after this admission timed out on its way): a stale call, ignore it.
if redis.call('EXISTS', KEYS[8]) == 1 then return {-1} end
local refused, retry = check()
if refused == 0 then
  redis.call('SET', KEYS[8], window, 'PX', n(13))  -- what settle needs, and proof it has not run yet
  if n(1) > 0 then put_tat(KEYS[1], tat_of(KEYS[1]) + span(n(1), 1)) end
  if n(2) > 0 then put_tat(KEYS[2], tat_of(KEYS[2]) + span(n(2), n(9))) end
  if n(3) > 0 then put_budget(window, budget_used(window) + n(11), bw) end
  if n(5) > 0 then
    redis.call('ZADD', KEYS[4], now + n(13), ARGV[12])
    redis.call('PEXPIRE', KEYS[4], n(13))
  end
  if n(6) > 0 then put_tat(KEYS[5], tat_of(KEYS[5]) + span(n(6), 1)) end
  if n(7) > 0 then put_tat(KEYS[6], tat_of(KEYS[6]) + span(n(7), n(10))) end
  if n(8) > 0 then
    redis.call('ZADD', KEYS[7], now + n(13), ARGV[12])
    redis.call('PEXPIRE', KEYS[7], n(13))
  end
end
local rl, rr, rt = view(KEYS[1], n(1))
if n(1) <= 0 then rl, rr, rt = view(KEYS[5], n(6)) end
local tl, tr, tt = view(KEYS[2], n(2))
if n(2) <= 0 then tl, tr, tt = view(KEYS[6], n(7)) end
local budget_left = -1
if n(3) > 0 then
  budget_left = math.max(0, n(3) - budget_used(window))
  if n(2) <= 0 and n(7) <= 0 then tl, tr, tt = n(3), budget_left, (window + 1) * bw - now end
end
return {refused, math.ceil(retry), window, rl, rr, rt, tl, tr, tt, budget_left}
)lua";

// ARGV: 1 key tpm, 2 model tpm, 3 budget, 4 budget window ms, 5 key concurrency, 6 model concurrency,
//       7 key tokens reserved, 8 model tokens reserved, 9 budget tokens reserved, 10 (unused), 11 tokens used
//       (-1: unknown), 12 lease id, 13 lease ttl ms.  Returns the budget left (-1: none; -2: already settled).
constexpr const char* kSettleBody = R"lua(
-- Exactly once per lease: the admission's record is replaced by a tombstone, so a retried settle, or an
-- admission that arrives after its release, changes nothing.
local rec = redis.call('GET', KEYS[8])
redis.call('SET', KEYS[8], 'settled', 'PX', n(13))
if not rec or rec == 'settled' then return -2 end
local reserved_window = tonumber(rec)
if n(5) > 0 then redis.call('ZREM', KEYS[4], ARGV[12]) end
if n(6) > 0 then redis.call('ZREM', KEYS[7], ARGV[12]) end
local used = n(11)
if used < 0 then  -- usage unknown: the reservation stays charged as it was
  if n(3) <= 0 then return -1 end
  return math.max(0, n(3) - budget_used(math.floor(now / n(4))))
end
-- A charge counts from now (idle time cannot absorb it); a refund cannot make a bucket fuller than full.
local function adjust(k, limit, delta)
  if limit <= 0 or delta == 0 then return end
  local step = span(limit, math.abs(delta))
  if delta > 0 then put_tat(k, tat_of(k) + step) else
    local v = redis.call('GET', k)
    if v then put_tat(k, math.max(tonumber(v) - step, now)) end
  end
end
adjust(KEYS[2], n(1), used - n(7))
adjust(KEYS[6], n(2), used - n(8))
if n(3) <= 0 then return -1 end
local bw = n(4)
local window = math.floor(now / bw)
local h = redis.call('HMGET', KEYS[3], 'w', 'u')
if window == reserved_window and h[1] and tonumber(h[1]) == reserved_window then
  put_budget(reserved_window, math.max(0, tonumber(h[2]) - n(9)) + used, bw)
elseif used > n(9) then
  put_budget(window, budget_used(window) + used - n(9), bw)
end
return math.max(0, n(3) - budget_used(window))
)lua";

const std::string& admit_script() {
  static const std::string s = std::string(kPrelude) + kAdmitBody;
  return s;
}
const std::string& settle_script() {
  static const std::string s = std::string(kPrelude) + kSettleBody;
  return s;
}

// A script error (CROSSSLOT on Redis Cluster, OOM, a wrong type...) is logged once per kind: decisions then
// fall back like an outage, and without the log the reason would only show as sluice_redis_errors_total.
void log_script_error(const std::optional<RedisReply>& reply) {
  if (!reply || reply->type != RedisReply::Type::error) return;
  static std::mutex mutex;
  static std::set<std::string> seen;
  auto kind = reply->str.substr(0, reply->str.find(' '));
  std::lock_guard lock(mutex);
  if (seen.size() < 64 && seen.insert(kind).second)
    spdlog::warn("redis rejected a limiter script ({}); deciding with local limits meanwhile", reply->str.substr(0, 200));
}

std::string num(std::uint64_t v) {
  return std::to_string(v);
}

long long int_at(const RedisReply& r, std::size_t i) {
  if (i >= r.elements.size()) return 0;
  const auto& e = r.elements[i];
  if (e.type == RedisReply::Type::integer) return e.integer;
  if (e.type == RedisReply::Type::string) return std::atoll(e.str.c_str());
  return 0;
}

std::uint64_t non_negative(long long v) {
  return v < 0 ? 0 : static_cast<std::uint64_t>(v);
}

}  // namespace

RedisLimiter::RedisLimiter(RedisClient& client, std::string key_prefix, policy::WallMs lease_ttl_ms)
    : client_(client), prefix_(std::move(key_prefix)), lease_ttl_ms_(lease_ttl_ms) {}

std::vector<std::string> RedisLimiter::keys_for(const policy::Demand& d, const std::string& lease) const {
  // Key names and model names come from the config; "k:" and "m:" keep the two namespaces apart.
  std::string k = prefix_ + "k:" + d.key + ":";
  std::string m = prefix_ + "m:" + d.model + ":";
  return {k + "rpm", k + "tpm", k + "budget", k + "active", m + "rpm", m + "tpm", m + "active", prefix_ + "r:" + lease};
}

policy::Reservation RedisLimiter::reservation_for(const policy::Demand& d, const std::string& lease) const {
  auto r = policy::reserve(d);
  r.remote = true;
  r.lease = lease;
  return r;
}

boost::asio::awaitable<std::optional<policy::Admission>> RedisLimiter::admit(const policy::Demand& d,
                                                                             const std::string& lease) {
  const auto& kl = d.key_limits;
  const auto& ml = d.model_limits;
  const bool key_limited = d.key_limited();
  policy::Admission a;
  a.reservation = reservation_for(d, lease);
  auto& r = a.reservation;
  auto keys = keys_for(d, lease);
  auto on = [&](std::uint64_t v) { return key_limited ? v : 0; };  // no key (auth off): no key limits
  std::vector<std::string> args{num(on(kl.rpm)),
                                num(on(kl.tpm)),
                                num(on(kl.budget)),
                                num(static_cast<std::uint64_t>(kl.budget_window.count())),
                                num(on(kl.concurrency)),
                                num(ml.rpm),
                                num(ml.tpm),
                                num(ml.concurrency),
                                num(r.key_tokens),
                                num(r.model_tokens),
                                num(r.budget_tokens),
                                lease,
                                num(static_cast<std::uint64_t>(lease_ttl_ms_))};
  const std::string& script = admit_script();
  auto reply = co_await client_.eval(script, keys, args);
  log_script_error(reply);
  if (!reply || reply->type != RedisReply::Type::array || reply->elements.size() < 10) co_return std::nullopt;
  auto refused = int_at(*reply, 0);
  a.allowed = refused == 0;
  if (!a.allowed) a.refused = static_cast<policy::LimitKind>(refused - 1);
  a.retry_after_ms = int_at(*reply, 1);
  r.budget_window = int_at(*reply, 2);
  r.at = policy::wall_now();
  a.requests = {non_negative(int_at(*reply, 3)), non_negative(int_at(*reply, 4)), int_at(*reply, 5)};
  a.tokens = {non_negative(int_at(*reply, 6)), non_negative(int_at(*reply, 7)), int_at(*reply, 8)};
  if (auto left = int_at(*reply, 9); left >= 0) a.budget_remaining = static_cast<std::uint64_t>(left);
  co_return a;
}

boost::asio::awaitable<Settled> RedisLimiter::settle(const policy::Reservation& r,
                                                     std::optional<std::uint64_t> used) {
  const auto& d = r.demand;
  const auto& kl = d.key_limits;
  const auto& ml = d.model_limits;
  const bool key_limited = d.key_limited();
  auto on = [&](std::uint64_t v) { return key_limited ? v : 0; };
  auto keys = keys_for(d, r.lease);
  std::vector<std::string> args{num(on(kl.tpm)),
                                num(ml.tpm),
                                num(on(kl.budget)),
                                num(static_cast<std::uint64_t>(kl.budget_window.count())),
                                num(on(kl.concurrency)),
                                num(ml.concurrency),
                                num(r.key_tokens),
                                num(r.model_tokens),
                                num(r.budget_tokens),
                                "0",
                                used ? num(*used) : std::string("-1"),
                                r.lease,
                                num(static_cast<std::uint64_t>(lease_ttl_ms_))};
  const std::string& script = settle_script();
  auto reply = co_await client_.eval(script, keys, args);
  log_script_error(reply);
  Settled out;
  if (!reply || reply->type != RedisReply::Type::integer) co_return out;
  out.answered = true;
  if (reply->integer >= 0) out.budget_left = static_cast<std::uint64_t>(reply->integer);
  out.already = reply->integer == -2;
  co_return out;
}

}  // namespace sluice::store
