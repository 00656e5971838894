#include "server/routes.hpp"

#include <spdlog/spdlog.h>

#include <random>

#include "observe/logging.hpp"
#include "openai/request.hpp"
#include "upstream/proxy.hpp"

namespace sluice::server {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

struct Reply {
  beast::tcp_stream& stream;
  const Services& services;
  RequestContext& ctx;
  observe::AccessRecord& log;
  bool keep_alive;
  unsigned version;

  // Sends a locally built response; returns whether the connection may be reused.
  // (Arguments of co_await calls are named locals throughout: GCC 12 destroys some temporaries twice.)
  asio::awaitable<bool> send(StringResponse& res) {
    res.set("x-request-id", log.request_id);
    char overhead[32];  // an answer Sluice gives itself is all overhead
    std::snprintf(overhead, sizeof overhead, "%.3f", seconds_since(ctx.started) * 1000);
    res.set("x-sluice-overhead-ms", overhead);
    if (services.draining) res.keep_alive(false);
    stream.expires_after(std::chrono::seconds(30));
    auto [ec, n] = co_await http::async_write(stream, res, use_nothrow);
    log.status = res.result_int();
    log.bytes_out += n;
    co_return !ec && res.keep_alive();
  }

  asio::awaitable<bool> error(const openai::ApiError& e) {
    if (log.error.empty()) log.error = e.code.value_or(std::string(openai::default_error_type(e.status)));
    auto res = error_response(e, version, keep_alive);
    co_return co_await send(res);
  }
};

std::string models_json(const std::vector<std::string>& names, std::int64_t created) {
  std::string out = R"({"object":"list","data":[)";
  for (std::size_t i = 0; i < names.size(); ++i) {
    if (i) out += ',';
    out += R"({"id":)" + openai::json_quote(names[i]) + R"(,"object":"model","created":)" +
           std::to_string(created) + R"(,"owned_by":"sluice"})";
  }
  out += "]}";
  return out;
}

std::string_view path_of(std::string_view target) {
  auto q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

}  // namespace

asio::awaitable<bool> handle_client_request(beast::tcp_stream& stream, StringRequest& req,
                                            RequestContext& ctx, const Services& services, Pools& pools) {
  observe::AccessRecord log;
  auto incoming_id = req["x-request-id"];
  log.request_id = acceptable_request_id(incoming_id) ? std::string(incoming_id) : new_request_id();
  log.method = std::string(req.method_string());
  auto path = path_of(req.target());
  log.path = std::string(path.substr(0, 256));
  log.client = ctx.client;
  log.bytes_in = ctx.bytes_in;
  Reply reply{stream, services, ctx, log, req.keep_alive() && !services.draining, req.version()};
  std::string endpoint_label = "other";
  bool keep = false;

  std::string metric_model;  // the model label: configured names only ("other" for unknown ones)
  auto finish = [&](bool k) {
    double seconds = seconds_since(ctx.started);
    log.duration_ms = seconds * 1000;
    const std::string& model_label = log.model.empty() ? metric_model : log.model;
    services.metrics.request_done(endpoint_label, model_label, log.backend, log.key, log.status, seconds);
    // Overhead: the whole duration for answers Sluice gives itself, else what the backends did not take.
    services.metrics.overhead(endpoint_label, log.overhead_ms ? *log.overhead_ms / 1000 : seconds);
    observe::log_access(log);
    return k;
  };

  auto endpoint = openai::endpoint_for_path(path);
  bool is_models = path == "/v1/models";
  if (!endpoint && !is_models) {
    openai::ApiError unknown{404, "Invalid URL (" + log.method + " " + log.path + ")",
                             "invalid_request_error", std::nullopt, "unknown_url"};
    keep = co_await reply.error(unknown);
    co_return finish(keep);
  }
  endpoint_label = is_models ? "models" : std::string(openai::to_string(*endpoint));
  auto expected = is_models ? http::verb::get : http::verb::post;
  if (req.method() != expected) {
    auto res = error_response({405, "Method " + log.method + " is not allowed on " + log.path,
                               "invalid_request_error", std::nullopt, "method_not_allowed"},
                              reply.version, reply.keep_alive);
    res.set(http::field::allow, is_models ? "GET" : "POST");
    log.error = "method_not_allowed";
    keep = co_await reply.send(res);
    co_return finish(keep);
  }

  auto auth = services.policy.authenticate(req[http::field::authorization], req["x-api-key"]);
  if (auto* e = std::get_if<openai::ApiError>(&auth)) co_return finish(co_await reply.error(*e));
  const policy::KeyEntry* key = std::get<const policy::KeyEntry*>(auth);
  if (key) log.key = key->name;

  if (is_models) {
    auto res = json_response(http::status::ok,
                             models_json(services.policy.visible_models(key), services.started_unix),
                             reply.version, reply.keep_alive);
    keep = co_await reply.send(res);
    co_return finish(keep);
  }

  auto inspected = openai::inspect_request(*endpoint, req.body());
  if (auto* e = std::get_if<openai::ApiError>(&inspected)) co_return finish(co_await reply.error(*e));
  auto& client_req = std::get<openai::ClientRequest>(inspected);
  log.stream = client_req.stream;

  auto routed = services.policy.route(key, client_req.model);
  if (auto* e = std::get_if<openai::ApiError>(&routed)) {
    // Names nobody configured must not become metric labels: they are all "other".
    metric_model = "other";
    co_return finish(co_await reply.error(*e));
  }
  auto& fwd = std::get<policy::Forward>(routed);
  const ModelConfig& model = *fwd.model;
  log.model = model.name;

  // Plan the attempts: health, load, weights and max_inflight decide the order (upstream/balancer).
  thread_local std::mt19937_64 rng{std::random_device{}()};
  auto now = std::chrono::steady_clock::now();
  std::vector<upstream::Candidate> candidates;
  for (std::size_t i = 0; i < fwd.targets.size(); ++i) {
    const auto& state = *services.fleet.backends.at(fwd.targets[i]->backend);
    candidates.push_back(
        {fwd.targets[i]->weight, state.inflight.load(), fwd.backends[i]->max_inflight, state.available(now)});
  }
  auto order = upstream::plan_attempts(model.strategy == "balance", candidates, model.max_attempts, rng);
  if (order.empty()) {
    openai::ApiError full{503,
                          "Every backend for the model `" + model.name + "` is at capacity; retry shortly.",
                          "server_error", std::nullopt, "backend_overloaded"};
    auto res = error_response(full, reply.version, reply.keep_alive);
    res.set(http::field::retry_after, "1");
    log.error = "backend_overloaded";
    keep = co_await reply.send(res);
    co_return finish(keep);
  }

  upstream::ForwardRequest fr;
  fr.endpoint = *endpoint;
  fr.request_id = log.request_id;
  fr.model = model.name;
  fr.stream = client_req.stream;
  fr.client_wants_usage = client_req.include_usage;
  fr.client_version = req.version();
  fr.client_keep_alive = reply.keep_alive;
  fr.started = ctx.started;
  fr.metrics = &services.metrics;

  auto& budget = *services.fleet.budgets.at(model.name);
  budget.request_started();
  upstream::ForwardResult result;
  double backend_seconds = 0;  // all attempts: what is not this is Sluice's own overhead
  std::string previous;
  unsigned attempts = 0;
  for (std::size_t index : order) {
    const auto& target = *fwd.targets[index];
    const auto& backend = *fwd.backends[index];
    auto& state = *services.fleet.backends.at(target.backend);
    auto pool_it = pools.find(target.backend);
    if (pool_it == pools.end() || !state.admit(std::chrono::steady_clock::now())) continue;
    // Failover only within the retry budget, so a failing backend cannot multiply the load.
    bool retry = attempts > 0;
    if (retry && !budget.try_retry()) {
      state.neutral();
      break;
    }
    if (retry) services.metrics.fallback(model.name, previous, target.backend);
    ++attempts;
    log.backend = target.backend;
    openai::Rewrite rw{target.model.empty() ? std::string_view(model.name) : std::string_view(target.model),
                       backend.include_usage, &model.defaults, model.max_tokens_cap};
    fr.body = openai::rewrite_request(client_req, req.body(), rw);

    ++state.inflight;
    services.metrics.inflight(model.name, target.backend, 1);
    fr.backend_seconds_before = backend_seconds;
    result = co_await upstream::forward(stream, *pool_it->second, fr);
    backend_seconds += result.backend_seconds;
    --state.inflight;
    services.metrics.inflight(model.name, target.backend, -1);
    if (retry) budget.retry_finished();

    bool flipped = false;  // ejected or brought back: only then does sluice_backend_up change
    if (result.client_gone || (result.failure && !result.backend_at_fault && result.retryable))
      state.neutral();
    else if (result.backend_at_fault)
      flipped = state.failure(std::chrono::steady_clock::now());
    else
      flipped = state.success();
    if (flipped) services.metrics.backend_up(target.backend, state.up(std::chrono::steady_clock::now()));
    if (!result.error.empty() && !result.client_gone && result.error.rfind("backend_", 0) != 0)
      services.metrics.upstream_error(target.backend, result.error);
    if (result.client_gone || !result.failure || !result.retryable) break;
    previous = target.backend;
  }
  budget.request_finished();
  log.attempts = attempts;
  if (attempts == 0) {
    auto none = policy::no_backend_available(model.name);
    co_return finish(co_await reply.error(none));
  }

  log.bytes_out += result.bytes_out;
  log.ttfb_ms = result.ttfb_ms;
  log.backend_tokens_per_second = result.telemetry.tokens_per_second;
  auto usage = result.usage;
  if (!usage && result.stream) {
    // No usage from the backend (or the stream was cut): count what was generated, and say so.
    usage = openai::Usage{req.body().size() / 4, result.generated_chunks};
    log.usage_estimated = true;
    services.metrics.estimated_tokens(log.model, log.backend, result.generated_chunks);
  }
  if (usage) {
    log.prompt_tokens = usage->prompt_tokens;
    log.completion_tokens = usage->completion_tokens;
    services.metrics.tokens(log.model, log.backend, log.key, usage->prompt_tokens, usage->completion_tokens);
  }
  if (result.ttft_seconds) {
    services.metrics.time_to_first_token(log.model, log.backend, *result.ttft_seconds);
    log.ttft_ms = *result.ttft_seconds * 1000;
  }
  // Time per output token: (last token - first token) / (output tokens - 1), for streamed answers.
  if (result.first_token_at && usage && usage->completion_tokens > 1) {
    double span = std::chrono::duration<double>(*result.last_token_at - *result.first_token_at).count();
    double tpot = span / static_cast<double>(usage->completion_tokens - 1);
    services.metrics.token_pacing(log.model, log.backend, tpot);
    log.tpot_ms = tpot * 1000;
  }
  log.overhead_ms = std::max(0.0, seconds_since(ctx.started) - backend_seconds) * 1000;
  if (!result.error.empty()) log.error = result.error;
  if (result.client_gone) {
    services.metrics.client_disconnect(result.disconnect_phase);
    // 499: the client closed the connection before the answer was complete (nginx's convention).
    log.status = result.status ? result.status : 499;
    co_return finish(false);
  }
  if (result.failure) {
    keep = co_await reply.error(*result.failure);
    co_return finish(keep);
  }
  log.status = result.status;
  co_return finish(result.client_keep_alive);
}

bool Fleet::any_up(upstream::SteadyTime now) const {
  for (const auto& [name, state] : backends)
    if (state->up(now)) return true;
  return false;
}

asio::awaitable<void> reply_unroutable(beast::tcp_stream& stream, const openai::ApiError& error,
                                       RequestContext& ctx, const Services& services) {
  observe::AccessRecord log;
  log.request_id = new_request_id();
  log.client = ctx.client;
  log.bytes_in = ctx.bytes_in;
  log.method = ctx.method;
  log.path = ctx.path;
  Reply reply{stream, services, ctx, log, false, 11};
  co_await reply.error(error);
  log.duration_ms = seconds_since(ctx.started) * 1000;
  services.metrics.request_done("other", "", "", "", log.status, seconds_since(ctx.started));
  observe::log_access(log);
}

StringResponse handle_admin_request(const StringRequest& req, const Services& services, bool ready) {
  auto path = path_of(req.target());
  bool keep = req.keep_alive();
  if (req.method() != http::verb::get && req.method() != http::verb::head)
    return error_response(
        {405, "admin routes answer GET only", "invalid_request_error", std::nullopt, "method_not_allowed"},
        req.version(), keep);
  if (path == "/healthz") return json_response(http::status::ok, R"({"status":"ok"})", req.version(), keep);
  if (path == "/readyz") {
    if (ready) return json_response(http::status::ok, R"({"status":"ready"})", req.version(), keep);
    return json_response(http::status::service_unavailable,
                         services.draining ? R"({"status":"draining"})" : R"({"status":"no usable backend"})",
                         req.version(), keep);
  }
  if (path == "/metrics") {
    StringResponse res{http::status::ok, req.version()};
    res.set(http::field::server, "sluice");
    res.set(http::field::content_type, "text/plain; version=0.0.4; charset=utf-8");
    res.keep_alive(keep);
    res.body() = services.metrics.serialize();
    res.prepare_payload();
    return res;
  }
  return error_response({404, "Invalid URL (GET " + std::string(path.substr(0, 256)) + ")",
                         "invalid_request_error", std::nullopt, "unknown_url"},
                        req.version(), keep);
}

}  // namespace sluice::server
