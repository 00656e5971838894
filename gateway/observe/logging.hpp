#pragma once
// spdlog set-up (JSON or text) and the one-line-per-request JSON access log. Never a secret.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config.hpp"

namespace sluice::observe {

/// Configures the default logger (stderr) and the access log (stdout, one JSON line per request).
void setup_logging(const LogConfig& cfg);

/// What one request did, for the access log.
struct AccessRecord {
  // The names are views: into the request, its connection and the config snapshot the request runs under, all
  // of which outlive the record (it is written as the request ends). Copies cost every request seven string
  // copies and, for each name past 15 characters (such as "openai/gpt-oss-120b"), an allocation.
  std::string request_id;
  std::string_view method;
  std::string_view path;
  std::string_view client;
  std::string_view model;
  std::string_view backend;
  std::string_view key;  // the key's configured name, never the key
  int status = 0;
  bool stream = false;
  std::uint64_t bytes_in = 0;
  std::uint64_t bytes_out = 0;
  std::optional<std::uint64_t> prompt_tokens;
  std::optional<std::uint64_t> completion_tokens;
  bool usage_estimated = false;  // token counts came from counting the stream, not from the backend
  unsigned attempts = 0;         // backends tried (more than 1: failover)
  std::optional<double> backend_tokens_per_second;  // the backend's own figure (x_metrics, metrics, timings)
  std::optional<double> ttfb_ms;                    // time to the first response byte sent to the client
  std::optional<double> ttft_ms;                    // time to the first generated text sent (streams)
  std::optional<double> tpot_ms;                    // time per output token after the first (streams)
  std::optional<double> overhead_ms;  // time in Sluice itself (duration less time waiting on backends)
  double duration_ms = 0;
  std::string error;       // short reason when the request failed
  std::string rate_limit;  // the limit that refused it (rpm, tpm, concurrency, budget, model_rpm, ...)
};

/// Serialises a record as one JSON object (no newline).
std::string access_json(const AccessRecord& r);

/// Writes the record to the access log (when enabled): at once, or gathered with the calling thread's other
/// lines when `log.access_buffer` is set.
void log_access(const AccessRecord& r);

/// Writes the calling thread's gathered access lines (each worker does so every `log.access_flush`, and as
/// it stops).
void flush_access_log();

}  // namespace sluice::observe
