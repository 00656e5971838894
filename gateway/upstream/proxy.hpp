#pragma once
// Forwarding one request to a backend and relaying its answer (JSON or SSE) to the client.
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "observe/metrics.hpp"
#include "openai/dialect.hpp"
#include "openai/errors.hpp"
#include "openai/request.hpp"
#include "openai/usage.hpp"
#include "server/http_io.hpp"
#include "upstream/flight.hpp"
#include "upstream/pool.hpp"

namespace sluice::upstream {

struct WatchState;

/// A client connection's watchdog for its requests' exchanges (forward), kept from one request to the next: its
/// timer, set for the first request's earliest deadline, stays set between requests (it then fires once and
/// finds nothing to do, or the next request's deadlines are later and it moves on to them) instead of being set
/// and cancelled for each request. An exchange whose client hung up leaves the next request a fresh one.
/// Cancelled with the connection.
struct ClientWatch {
  ClientWatch() = default;
  ClientWatch(const ClientWatch&) = delete;
  ClientWatch& operator=(const ClientWatch&) = delete;
  ~ClientWatch();
  std::shared_ptr<WatchState> state;  // null until the first exchange
};

/// What the relay needs to forward one request.
struct ForwardRequest {
  openai::Endpoint endpoint = openai::Endpoint::chat_completions;
  std::string body;  // exactly what goes upstream
  std::string_view request_id;  // the access record's, which outlives the exchange
  bool stream = false;  // the client asked for a stream (so the header comes with the first token)
  std::string model;    // the public model name (for replies Sluice has to reshape)
  bool client_wants_usage =
      false;  // stream: keep the include_usage chunk (else it is dropped if Sluice asked for it)
  unsigned client_version = 11;
  bool client_keep_alive = true;
  std::chrono::steady_clock::time_point started;
  observe::Metrics* metrics = nullptr;  // for the live gauge of relayed streams
  double backend_seconds_before = 0;    // time already spent waiting on backends (earlier attempts)
  /// Keep the whole answer as one completion (ForwardResult::completion), for the response cache.
  bool capture = false;
  /// Coalescing: the flight this request leads. Its events are published there as they arrive, and the
  /// upstream request goes on after the client leaves while followers still read.
  Flight* flight = nullptr;
  /// The client connection's read buffer: a relayed stream gives its memory back while it runs (it may take
  /// minutes, and thousands run at once); the next request's read takes a fresh one.
  beast::flat_buffer* client_read_buffer = nullptr;
  /// Extra response headers for the client (the rate-limit headers).
  const ExtraHeaders* headers = nullptr;
  /// The client connection's watchdog, reused by its requests (nullptr: one for this request alone).
  ClientWatch* watch = nullptr;
};

/// How the exchange went, for the caller's metrics, access log and error reply.
struct ForwardResult {
  int status = 0;                  // status sent to the client (0: nothing sent)
  bool client_gone = false;        // the client left before its answer was complete
  bool client_keep_alive = false;  // the client connection may serve another request
  bool stream = false;             // the answer was relayed as SSE
  std::uint64_t bytes_out = 0;
  std::optional<openai::Usage> usage;  // as the backend reported it
  std::uint64_t generated_chunks = 0;  // stream chunks that carried generated text (estimate when no usage)
  openai::BackendTelemetry telemetry;
  std::optional<double> ttfb_ms;       // first byte sent to the client
  std::optional<double> ttft_seconds;  // first generated text written to the client
  /// When the first and the last generated text reached the client (streams), for time per output token.
  std::optional<std::chrono::steady_clock::time_point> first_token_at, last_token_at;
  double backend_seconds = 0;  // waiting on backends: upstream request sent → last byte read, all attempts
  std::string error;           // short reason ("connect", "first_token", "idle", "reset", ...)
  /// With capture: the answer as one completion (a stream joined), when it ended completely (no error,
  /// [DONE] seen, the client still there) and was not larger than the capture limit.
  std::optional<std::string> completion;
  std::string disconnect_phase;  // "waiting" or "streaming" when client_gone
  bool complete = false;         // the backend's answer arrived whole (even if the client had left)
  /// Set when the exchange failed before anything reached the client: the caller answers with it
  /// (or tries another backend).
  std::optional<openai::ApiError> failure;
  bool retryable = false;  // with failure: another backend may well succeed (connect, timeout, 5xx, 429)
  bool backend_at_fault =
      false;  // counts against the backend's health (not a 4xx, not a 429, not the client)
};

/// Sends `req` to the pool's backend and relays the answer to `client`, closing the upstream
/// connection at once if the client goes away. The outcome goes into `result` (reset first), which the
/// caller keeps: a result returned by value would take a place in both coroutines' frames (and the caller's
/// temporary a third) for as long as a stream runs.
asio::awaitable<void> forward(ForwardResult& result, beast::tcp_stream& client, BackendPool& pool,
                              const ForwardRequest& req);

/// Answers `client` from a flight led by an identical request: its events relayed as they come (a
/// stream) or its completion (a whole answer, or a replayed stream when the leader's answer was whole).
/// Gives up after `patience`. When the flight fails before anything was sent, `failure` says why and
/// `retryable` whether this request may try on its own.
asio::awaitable<ForwardResult> follow(beast::tcp_stream& client, Flight& flight, const ForwardRequest& req,
                                      Millis patience);

/// One health check: GET `path` on a fresh connection (with the backend's key) within `timeout`.
/// True on a 2xx answer; otherwise `why` says what went wrong.
asio::awaitable<bool> probe(BackendPool& pool, const std::string& path, Millis timeout, std::string& why);

}  // namespace sluice::upstream
