#pragma once
// The client-facing routes: one request in, one response (or relayed stream) out.
#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "config.hpp"
#include "observe/metrics.hpp"
#include "policy/decide.hpp"
#include "server/http_io.hpp"
#include "upstream/balancer.hpp"
#include "upstream/pool.hpp"

namespace sluice::server {

/// Backend health and retry budgets, shared by every worker (each object is thread-safe).
struct Fleet {
  std::map<std::string, std::unique_ptr<upstream::BackendState>, std::less<>> backends;  // enabled backends
  std::map<std::string, std::unique_ptr<upstream::RetryBudget>, std::less<>> budgets;    // by model name

  /// True when at least one backend passes its checks and is not ejected.
  bool any_up(upstream::SteadyTime now) const;
};

/// What every worker shares (read-only, or thread-safe).
struct Services {
  const Config& config;
  const policy::Policy& policy;
  observe::Metrics& metrics;
  const std::atomic<bool>& draining;
  Fleet& fleet;
  std::int64_t started_unix = 0;
};

/// One worker's connection pools, by backend name.
using Pools = std::map<std::string, std::unique_ptr<upstream::BackendPool>, std::less<>>;

/// Facts about the request being served, for the reply and the access log.
struct RequestContext {
  std::chrono::steady_clock::time_point started;
  std::string client;  // peer address
  std::uint64_t bytes_in = 0;
  std::string method;  // known once the request line is parsed (for errors before routing)
  std::string path;
};

/// Serves one client request on `stream`. Returns whether the connection may serve another.
asio::awaitable<bool> handle_client_request(beast::tcp_stream& stream, StringRequest& req,
                                            RequestContext& ctx, const Services& services, Pools& pools);

/// Answers a request that failed before it could be routed (bad framing, too large, too slow), and logs it.
asio::awaitable<void> reply_unroutable(beast::tcp_stream& stream, const openai::ApiError& error,
                                       RequestContext& ctx, const Services& services);

/// Serves one admin request (/healthz, /readyz, /metrics). `ready` says whether /readyz answers 200.
StringResponse handle_admin_request(const StringRequest& req, const Services& services, bool ready);

}  // namespace sluice::server
