#pragma once
// Sluice's Prometheus metrics (prometheus-cpp core), exposed as text on the admin listener.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "config.hpp"

namespace sluice::observe {

/// The registry and the recorders the request path calls. Labels are bounded by config
/// (endpoint, model, backend, key name, status code); never a secret.
class Metrics {
 public:
  Metrics();
  ~Metrics();

  void request_done(std::string_view endpoint, std::string_view model, std::string_view backend,
                    std::string_view key, int code, double seconds);
  void tokens(std::string_view model, std::string_view backend, std::string_view key, std::uint64_t input,
              std::uint64_t output);
  void time_to_first_token(std::string_view model, std::string_view backend, double seconds);
  void upstream_error(std::string_view backend, std::string_view reason);
  void client_disconnect(std::string_view phase);
  void active_streams(int delta);
  void fallback(std::string_view model, std::string_view from, std::string_view to);
  void backend_up(std::string_view backend, bool up);
  void inflight(std::string_view model, std::string_view backend, int delta);
  /// Tokens Sluice counted itself because the backend reported no usage (also in sluice_tokens_total).
  void estimated_tokens(std::string_view model, std::string_view backend, std::uint64_t output);

  /// Decode speed of one streamed answer: (last token − first token) / (output tokens − 1), and its inverse.
  void token_pacing(std::string_view model, std::string_view backend, double seconds_per_token);
  /// Time spent in Sluice itself for one request (its duration minus the time waiting on backends).
  void overhead(std::string_view endpoint, double seconds);

  /// A request refused by a limit (`limit`: rpm, tpm, concurrency, budget, model_rpm, ...). `key` is the
  /// key's configured name, or empty for model limits hit with auth off.
  void rate_limited(std::string_view key, std::string_view limit);
  /// Tokens left in a key's budget for its current window.
  void budget_remaining(std::string_view key, std::uint64_t tokens);
  /// Shared-store health: Redis reachable or not, and how many outages so far.
  void redis_state(bool up, std::uint64_t outages);
  /// A decision made with local limits because Redis did not answer (`op`: admit, settle).
  void redis_error(std::string_view op);
  /// Response cache: one lookup (`hit`, `miss`, `bypass`); the bytes held and entries evicted after a store.
  void cache_lookup(std::string_view result);
  void cache_stored(std::uint64_t bytes, std::size_t evicted);
  /// A request answered by following an identical one in flight (request coalescing).
  void coalesced(std::string_view model);
  /// Client connections open now (+1 accepted, -1 closed).
  void client_connections(int delta);
  /// A client connection ended by Sluice before a request could be answered (`reason`: max_connections,
  /// header_timeout, body_timeout).
  void client_rejected(std::string_view reason);
  /// Requests waiting for a slot on a backend that is at max_inflight.
  void queued(std::string_view backend, int delta);

  /// Starts the series whose label values the config determines at zero, so dashboards and alerts
  /// see them before the first event (limits per key, fallbacks and errors per backend, ...).
  void declare(const Config& config);

  /// Prometheus text exposition format of every metric.
  std::string serialize() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::observe
