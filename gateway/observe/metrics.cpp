#include "observe/metrics.hpp"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace sluice::observe {

struct Metrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  prometheus::Family<prometheus::Counter>& requests = prometheus::BuildCounter()
                                                          .Name("sluice_requests_total")
                                                          .Help("Requests answered, by status code.")
                                                          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& duration = prometheus::BuildHistogram()
                                                            .Name("sluice_request_duration_seconds")
                                                            .Help("Time from request read to last byte sent.")
                                                            .Register(*registry);
  prometheus::Family<prometheus::Counter>& token_count =
      prometheus::BuildCounter()
          .Name("sluice_tokens_total")
          .Help("Tokens processed, by type (input|output).")
          .Register(*registry);
  prometheus::Family<prometheus::Histogram>& ttft =
      prometheus::BuildHistogram()
          .Name("sluice_time_to_first_token_seconds")
          .Help("Time from request to the first streamed event.")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& upstream_errors =
      prometheus::BuildCounter()
          .Name("sluice_upstream_errors_total")
          .Help("Failed exchanges with backends, by reason.")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& disconnects =
      prometheus::BuildCounter()
          .Name("sluice_client_disconnects_total")
          .Help("Clients that left before their answer was complete.")
          .Register(*registry);
  prometheus::Family<prometheus::Counter>& fallbacks =
      prometheus::BuildCounter()
          .Name("sluice_fallbacks_total")
          .Help("Requests moved to another target after a failure before the first byte.")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& up =
      prometheus::BuildGauge()
          .Name("sluice_backend_up")
          .Help("1 while a backend passes its health checks and is not ejected.")
          .Register(*registry);
  prometheus::Family<prometheus::Gauge>& in_flight = prometheus::BuildGauge()
                                                         .Name("sluice_inflight_requests")
                                                         .Help("Requests waiting on a backend now.")
                                                         .Register(*registry);
  prometheus::Family<prometheus::Counter>& estimated =
      prometheus::BuildCounter()
          .Name("sluice_estimated_tokens_total")
          .Help("Output tokens counted from the stream because the backend sent no usage.")
          .Register(*registry);
  prometheus::Gauge& streams = prometheus::BuildGauge()
                                   .Name("sluice_active_streams")
                                   .Help("SSE streams being relayed now.")
                                   .Register(*registry)
                                   .Add({});

  // Request durations of LLM work range from milliseconds (cache hits, errors) to minutes (long generations).
  static prometheus::Histogram::BucketBoundaries duration_buckets() {
    return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};
  }
  static prometheus::Histogram::BucketBoundaries ttft_buckets() {
    return {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60};
  }
};

Metrics::Metrics() : impl_(std::make_unique<Impl>()) {}
Metrics::~Metrics() = default;

static std::string s(std::string_view v) {
  return std::string(v);
}

void Metrics::request_done(std::string_view endpoint, std::string_view model, std::string_view backend,
                           std::string_view key, int code, double seconds) {
  impl_->requests
      .Add({{"endpoint", s(endpoint)},
            {"model", s(model)},
            {"backend", s(backend)},
            {"key", s(key)},
            {"code", std::to_string(code)}})
      .Increment();
  impl_->duration
      .Add({{"endpoint", s(endpoint)}, {"model", s(model)}, {"backend", s(backend)}},
           Impl::duration_buckets())
      .Observe(seconds);
}

void Metrics::tokens(std::string_view model, std::string_view backend, std::string_view key,
                     std::uint64_t input, std::uint64_t output) {
  impl_->token_count.Add({{"model", s(model)}, {"backend", s(backend)}, {"key", s(key)}, {"type", "input"}})
      .Increment(static_cast<double>(input));
  impl_->token_count.Add({{"model", s(model)}, {"backend", s(backend)}, {"key", s(key)}, {"type", "output"}})
      .Increment(static_cast<double>(output));
}

void Metrics::time_to_first_token(std::string_view model, std::string_view backend, double seconds) {
  impl_->ttft.Add({{"model", s(model)}, {"backend", s(backend)}}, Impl::ttft_buckets()).Observe(seconds);
}

void Metrics::upstream_error(std::string_view backend, std::string_view reason) {
  impl_->upstream_errors.Add({{"backend", s(backend)}, {"reason", s(reason)}}).Increment();
}

void Metrics::client_disconnect(std::string_view phase) {
  impl_->disconnects.Add({{"phase", s(phase)}}).Increment();
}

void Metrics::active_streams(int delta) {
  impl_->streams.Increment(delta);
}

void Metrics::fallback(std::string_view model, std::string_view from, std::string_view to) {
  impl_->fallbacks.Add({{"model", s(model)}, {"from", s(from)}, {"to", s(to)}}).Increment();
}

void Metrics::backend_up(std::string_view backend, bool is_up) {
  impl_->up.Add({{"backend", s(backend)}}).Set(is_up ? 1 : 0);
}

void Metrics::inflight(std::string_view model, std::string_view backend, int delta) {
  impl_->in_flight.Add({{"model", s(model)}, {"backend", s(backend)}}).Increment(delta);
}

void Metrics::estimated_tokens(std::string_view model, std::string_view backend, std::uint64_t output) {
  impl_->estimated.Add({{"model", s(model)}, {"backend", s(backend)}}).Increment(static_cast<double>(output));
}

std::string Metrics::serialize() const {
  return prometheus::TextSerializer{}.Serialize(impl_->registry->Collect());
}

}  // namespace sluice::observe
