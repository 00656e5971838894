#pragma once
// Sluice's Prometheus metrics (prometheus-cpp core), exposed as text on the admin listener.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

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

  /// Prometheus text exposition format of every metric.
  std::string serialize() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sluice::observe
