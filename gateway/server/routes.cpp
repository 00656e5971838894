#include "server/routes.hpp"

#include <spdlog/spdlog.h>

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

  auto finish = [&](bool k) {
    log.duration_ms = seconds_since(ctx.started) * 1000;
    services.metrics.request_done(endpoint_label, log.model, log.backend, log.key, log.status,
                                  seconds_since(ctx.started));
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
    // log.model stays empty: names nobody configured must not become metric labels.
    co_return finish(co_await reply.error(*e));
  }
  auto& fwd = std::get<policy::Forward>(routed);
  log.model = fwd.model->name;
  const auto& target = *fwd.targets.front();
  log.backend = target.backend;
  auto pool_it = pools.find(target.backend);
  if (pool_it == pools.end()) {
    openai::ApiError none{503, "No backend is available for the model `" + fwd.model->name + "`.",
                          "server_error", std::nullopt, "no_backend_available"};
    co_return finish(co_await reply.error(none));
  }

  upstream::ForwardRequest fr;
  fr.endpoint = *endpoint;
  fr.body =
      openai::rewrite_request(client_req, req.body(), target.model.empty() ? fwd.model->name : target.model);
  fr.request_id = log.request_id;
  fr.client_version = req.version();
  fr.client_keep_alive = reply.keep_alive;
  fr.started = ctx.started;
  fr.metrics = &services.metrics;
  req.body().clear();
  req.body().shrink_to_fit();  // the rewritten copy is all that is needed now

  auto result = co_await upstream::forward(stream, *pool_it->second, fr);
  log.bytes_out += result.bytes_out;
  log.ttfb_ms = result.ttfb_ms;
  if (result.usage) {
    log.prompt_tokens = result.usage->prompt_tokens;
    log.completion_tokens = result.usage->completion_tokens;
    services.metrics.tokens(log.model, log.backend, log.key, result.usage->prompt_tokens,
                            result.usage->completion_tokens);
  }
  if (result.ttft_seconds) services.metrics.time_to_first_token(log.model, log.backend, *result.ttft_seconds);
  if (!result.error.empty()) log.error = result.error;
  if (result.error.size() && !result.client_gone && result.error.rfind("backend_", 0) != 0)
    services.metrics.upstream_error(log.backend, result.error);
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
