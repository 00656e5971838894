#include "server/routes.hpp"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio/write.hpp>
#include <cstring>
#include <random>

#include "duration.hpp"
#include "observe/logging.hpp"
#include "openai/request.hpp"
#include "openai/stream_convert.hpp"
#include "store/redis.hpp"
#include "store/redis_limiter.hpp"
#include "upstream/proxy.hpp"

namespace sluice::server {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

using Headers = ExtraHeaders;

struct Reply {
  beast::tcp_stream& stream;
  const Services& services;
  RequestContext& ctx;
  observe::AccessRecord& log;
  bool keep_alive;
  unsigned version;
  const Headers* extra = nullptr;  // the rate-limit headers, once the request has been admitted

  // Sends a locally built response; returns whether the connection may be reused.
  // (Arguments of co_await calls are named locals throughout: GCC 12 destroys some temporaries twice.)
  asio::awaitable<bool> send(StringResponse& res) {
    res.set("x-request-id", log.request_id);
    char overhead[32];  // an answer Sluice gives itself is all overhead
    res.set("x-sluice-overhead-ms", fixed3(overhead, seconds_since(ctx.started) * 1000));
    if (extra) extra->each([&res](std::string_view name, std::string_view value) { res.set(name, value); });
    if (services.draining) res.keep_alive(false);
    stream.expires_after(std::chrono::seconds(30));
    const std::string head = wire_head(res);
    const std::array<asio::const_buffer, 2> out{asio::buffer(head), asio::buffer(res.body())};
    auto [ec, n] = co_await write_all(stream, out);
    log.status = res.result_int();
    log.bytes_out += n;
    co_return !ec && res.keep_alive();
  }

  // A 200 answer Sluice has in hand (a cache hit): its head built as wire bytes, like the relay's.
  asio::awaitable<bool> send_answer(const std::string& body, bool sse) {
    char overhead[32];
    const std::string_view spent = fixed3(overhead, seconds_since(ctx.started) * 1000);
    const bool keep = keep_alive && !services.draining;
    const std::string head = answer_head(version, keep, sse, log.request_id, spent, extra, body.size());
    const std::array<asio::const_buffer, 2> out{asio::buffer(head), asio::buffer(body)};
    std::size_t sent = 0;
    auto wrote = write_at_once(stream, out, sent);  // a cache hit nearly always goes in one send: no frame
    if (!wrote) {
      stream.expires_after(std::chrono::seconds(30));
      wrote = co_await write_rest(stream, out, sent);
    }
    auto [ec, n] = *wrote;
    log.status = 200;
    log.bytes_out += n;
    co_return !ec && keep;
  }

  // The error and the response are taken by value, into these coroutines' own frames: a caller builds them in
  // plain code (see `refused` in handle_client_request), so they take no room in its frame.
  asio::awaitable<bool> error(openai::ApiError e) {
    if (log.error.empty()) log.error = e.code.value_or(std::string(openai::default_error_type(e.status)));
    auto res = error_response(e, version, keep_alive);
    co_return co_await send(res);
  }

  asio::awaitable<bool> send_owned(StringResponse res) { co_return co_await send(res); }
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

// x-ratelimit-{limit,remaining,reset}-{requests,tokens}, as OpenAI sends them, for the limits that exist.
// The six lines are written into one buffer on the stack and appended at once.
Headers rate_limit_headers(const policy::Admission& a) {
  char lines[512];  // six names of at most 30 characters, two 20-digit numbers and a 24-character duration each
  char* p = lines;
  auto put = [&p](std::string_view text) {
    std::memcpy(p, text.data(), text.size());
    p += text.size();
  };
  auto add = [&](std::string_view limit, std::string_view remaining, std::string_view reset,
                 const policy::WindowView& v) {
    if (!v.limit) return;
    put(limit);
    p = write_decimal(p, p + 20, v.limit);
    put(remaining);
    p = write_decimal(p, p + 20, v.remaining);
    put(reset);
    char duration[32];
    put(format_duration(duration, Millis(v.reset_ms)));
    put("\r\n");
  };
  add("x-ratelimit-limit-requests: ", "\r\nx-ratelimit-remaining-requests: ", "\r\nx-ratelimit-reset-requests: ",
      a.requests);
  add("x-ratelimit-limit-tokens: ", "\r\nx-ratelimit-remaining-tokens: ", "\r\nx-ratelimit-reset-tokens: ", a.tokens);
  Headers h;
  h.add_lines(std::string_view(lines, static_cast<std::size_t>(p - lines)));
  return h;
}

// Settles in Redis off the request's path, retrying while Redis does not answer (settling is idempotent per
// lease, so a retry of one that did run changes nothing). Counted in `background` so a drain waits for it.
asio::awaitable<void> settle_remote(store::RedisLimiter& limiter, policy::Reservation r,
                                    std::optional<std::uint64_t> used, observe::Metrics& metrics,
                                    std::atomic<int>& background) {
  struct Count {
    std::atomic<int>& n;
    ~Count() { --n; }
  } count{background};
  auto pause = std::chrono::milliseconds(200);
  for (int attempt = 0; attempt < 6; ++attempt) {
    auto settled = co_await limiter.settle(r, used);
    if (settled.answered) {
      if (settled.budget_left) metrics.budget_remaining(r.demand.key, *settled.budget_left);
      co_return;
    }
    metrics.redis_error("settle");
    auto executor = co_await asio::this_coro::executor;  // a named local (GCC 12, see Reply::send)
    asio::steady_timer timer(executor, pause);
    co_await timer.async_wait(use_nothrow);
    pause *= 2;
  }
  // Given up (Redis away for ~12 s): the reservation stays charged and its lease expires.
}

asio::awaitable<void> keep_shared(store::RedisClient& redis, std::vector<std::string> set) {
  co_await redis.command(std::move(set));
}

// Keeps an answer; in Redis off the request's path (if Redis is away the answer is simply not shared).
void keep_answer(const Services& services, WorkerLocal& local, const std::string& key, policy::CachedAnswer answer,
                 Millis ttl, const asio::any_io_executor& executor) {
  if (!local.redis) {
    auto evicted = services.cache.put(key, std::move(answer));
    services.metrics.cache_stored(services.cache.bytes(), evicted);
    return;
  }
  std::vector<std::string> set{"SET", services.config.redis.key_prefix + "c:" + key,
                               policy::encode_shared(answer, policy::wall_now()), "PX",
                               std::to_string(std::max<std::int64_t>(1, ttl.count()))};
  asio::co_spawn(executor, keep_shared(*local.redis, std::move(set)), asio::detached);
}

// A request's admission in Redis (replicas sharing limits), in a frame of its own; nullopt when Redis did not
// answer in time. The script may still run once Redis catches up: what it would reserve is released off the
// request's path (or made a no-op if it comes later), so a stall cannot leak a concurrency slot.
asio::awaitable<std::unique_ptr<policy::Admission>> admit_shared(const Services& services, WorkerLocal& local,
                                                                 policy::Demand demand) {
  auto lease = new_request_id();  // unique, unlike a client's x-request-id
  auto admission = co_await local.limiter->admit(demand, lease);
  if (!admission) {
    services.metrics.redis_error("admit");
    ++services.background;
    auto executor = co_await asio::this_coro::executor;  // a named local (GCC 12, see Reply::send)
    auto release = local.limiter->reservation_for(demand, lease);
    std::optional<std::uint64_t> nothing_used = 0;
    asio::co_spawn(executor,
                   settle_remote(*local.limiter, std::move(release), nothing_used, services.metrics,
                                 services.background),
                   asio::detached);
    co_return nullptr;
  }
  co_return std::make_unique<policy::Admission>(std::move(*admission));
}

// Hands an admitted request's reservation back exactly once, with the tokens it really used.
struct Settlement {
  Settlement(policy::Reservation r, policy::LocalLimiter& l, store::RedisLimiter* rl, observe::Metrics& m,
             std::atomic<int>& bg, asio::any_io_executor ex)
      : reservation(std::move(r)), local(l), remote(rl), metrics(m), background(bg), executor(std::move(ex)) {}
  Settlement(const Settlement&) = delete;
  Settlement& operator=(const Settlement&) = delete;

  policy::Reservation reservation;
  policy::LocalLimiter& local;
  store::RedisLimiter* remote;
  observe::Metrics& metrics;
  std::atomic<int>& background;
  asio::any_io_executor executor;
  bool done = false;

  /// `used`: the tokens the request consumed; nullopt when unknown (the reservation stays charged).
  void operator()(std::optional<std::uint64_t> used) {
    if (done) return;
    done = true;
    if (reservation.remote) {
      // Off the request's path: the answer is complete; Redis need not delay the next request.
      ++background;
      asio::co_spawn(executor, settle_remote(*remote, reservation, used, metrics, background), asio::detached);
      return;
    }
    local.settle(reservation, used, policy::wall_now());  // the limiter sets the budget gauge itself
  }
  // A request torn down some other way (shutdown) keeps its reservation charged; leases in Redis expire.
  ~Settlement() {
    if (!done && !reservation.remote) local.settle(reservation, std::nullopt, policy::wall_now());
  }
};

// The flight a request leads: ended and unregistered exactly once, however the request ends (followers of
// a flight that ends without an answer may ask on their own).
struct FlightLanding {
  FlightLanding(upstream::Flights& fs, std::string k, std::shared_ptr<upstream::Flight> f)
      : flights(fs), key(std::move(k)), flight(std::move(f)) {}
  FlightLanding(const FlightLanding&) = delete;
  FlightLanding& operator=(const FlightLanding&) = delete;
  ~FlightLanding() { land({}); }

  void land(upstream::Flight::Outcome outcome) {
    if (!flight) return;
    flights.land(key, flight.get());  // first, so that later requests start their own flight
    flight->finish(std::move(outcome));
    flight.reset();
  }

  upstream::Flights& flights;
  std::string key;
  std::shared_ptr<upstream::Flight> flight;
};

// True when a Cache-Control header value holds `directive` (case-insensitive, as a whole token).
bool has_directive(std::string_view header, std::string_view directive) {
  while (!header.empty()) {
    auto comma = header.find(',');
    auto token = header.substr(0, comma);
    while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
    if (auto eq = token.find('='); eq != std::string_view::npos) token = token.substr(0, eq);
    while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
    if (beast::iequals(token, directive)) return true;
    if (comma == std::string_view::npos) break;
    header.remove_prefix(comma + 1);
  }
  return false;
}

std::string_view path_of(std::string_view target) {
  auto q = target.find('?');
  return q == std::string_view::npos ? target : target.substr(0, q);
}

// Answers a request from the response cache when it holds the answer (as JSON, or replayed as a stream, as
// the request asked), in a frame of its own: whether the connection may be reused, or nullopt on a miss. The
// cache is Redis with store: redis (shared by replicas), else this process's memory; Redis away or slow is a
// miss, never an error.
asio::awaitable<std::optional<bool>> answer_from_cache(Reply& reply, WorkerLocal& local, const std::string& key,
                                                       openai::Endpoint endpoint, const openai::ClientRequest& req,
                                                       const std::string& model, Headers& extra_headers,
                                                       std::optional<Settlement>& settle) {
  const Services& services = reply.services;
  const auto now = policy::CacheClock::now();
  std::optional<policy::CachedAnswer> hit;
  if (!local.redis) {
    hit = services.cache.get(key, now);
  } else {
    std::vector<std::string> get{"GET", services.config.redis.key_prefix + "c:" + key};
    auto found = co_await local.redis->command(get);
    if (found && found->type == store::RedisReply::Type::string)
      hit = policy::decode_shared(found->str, now, policy::wall_now());
  }
  if (!hit) co_return std::nullopt;
  const std::optional<std::string> body =
      req.stream ? openai::stream_from_completion(endpoint, hit->completion, req.include_usage)
                 : std::optional<std::string>(hit->completion);
  if (!body) co_return std::nullopt;
  services.metrics.cache_lookup("hit");
  if (settle) (*settle)(0);  // no backend tokens were spent (the request still counted against request limits)
  const auto age = std::chrono::duration_cast<std::chrono::seconds>(now - hit->stored).count();
  extra_headers.add("x-sluice-cache", "hit").add("age", static_cast<std::uint64_t>(std::max<long long>(0, age)));
  reply.extra = &extra_headers;
  auto& log = reply.log;
  log.backend = "cache";
  log.prompt_tokens = hit->prompt_tokens;
  log.completion_tokens = hit->completion_tokens;
  services.metrics.tokens(model, "cache", log.key, hit->prompt_tokens, hit->completion_tokens);
  auto sending = reply.send_answer(*body, req.stream);
  co_return co_await std::move(sending);
}

// Follows the flight of an identical request already on its way upstream (coalescing) and answers this one
// from it, in a frame of its own: whether the connection may be reused, or nullopt when the leader failed in a
// way that makes asking on its own worthwhile (`may_retry`, the first round only).
asio::awaitable<std::optional<bool>> follow_leader(beast::tcp_stream& stream, upstream::Flight& flight,
                                                   const upstream::ForwardRequest& fr, Millis patience,
                                                   double before, bool may_retry, Reply& reply,
                                                   const std::string& model, std::optional<Settlement>& settle) {
  auto followed = co_await upstream::follow(stream, flight, fr, patience);
  if (followed.failure && followed.retryable && may_retry) co_return std::nullopt;
  // Answered like a cache hit: no backend tokens spent (the request still counted against request limits).
  if (settle) (*settle)(0);
  auto& log = reply.log;
  auto& metrics = reply.services.metrics;
  log.backend = "cache";
  log.bytes_out += followed.bytes_out;
  log.ttfb_ms = followed.ttfb_ms;
  log.overhead_ms = before * 1000;
  if (followed.client_gone) {
    metrics.client_disconnect(followed.disconnect_phase);
    log.error = "client_disconnected";
    log.status = followed.status ? followed.status : 499;
    co_return false;
  }
  if (followed.failure) {
    auto replying = reply.error(*followed.failure);
    co_return co_await std::move(replying);
  }
  if (!followed.error.empty()) log.error = followed.error;
  if (followed.usage) {
    log.prompt_tokens = followed.usage->prompt_tokens;
    log.completion_tokens = followed.usage->completion_tokens;
    metrics.tokens(model, "cache", log.key, followed.usage->prompt_tokens, followed.usage->completion_tokens);
  }
  if (followed.ttft_seconds) log.ttft_ms = *followed.ttft_seconds * 1000;
  log.status = followed.status;
  co_return followed.client_keep_alive;
}

}  // namespace

asio::awaitable<bool> handle_client_request(beast::tcp_stream& stream, IncomingRequest& req,
                                            RequestContext& ctx, const Services& services, WorkerLocal& local) {
  // The config this request runs under, held until it ends (a reload swaps in a new one for later requests).
  const std::shared_ptr<const Snapshot> snapshot = services.snapshots.get(local.snapshot).snapshot;
  const policy::Policy& policy = snapshot->policy;
  auto& pools = local.pools;
  observe::AccessRecord log;
  auto incoming_id = req[IncomingRequest::Field::x_request_id];
  log.request_id = acceptable_request_id(incoming_id) ? std::string(incoming_id) : new_request_id();
  log.method = req.method_string();
  auto path = path_of(req.target());
  log.path = path.substr(0, 256);
  log.client = ctx.client;
  log.bytes_in = ctx.bytes_in;
  Reply reply{stream, services, ctx, log, req.keep_alive() && !services.draining, req.version()};
  std::string_view endpoint_label = "other";  // a static name (openai::to_string's, "models" or "other")

  std::string metric_model;  // the model label: configured names only ("other" for unknown ones)
  // `now`: the clock reading the caller already holds, when nothing was awaited since it was taken. (A default
  // argument would be a temporary in every co_await expression that calls it: a place each in the frame.)
  auto finish_at = [&](bool k, std::chrono::steady_clock::time_point now) {
    ctx.ended = now;
    const double seconds = std::chrono::duration<double>(now - ctx.started).count();
    log.duration_ms = seconds * 1000;
    const std::string_view model_label = log.model.empty() ? std::string_view(metric_model) : log.model;
    services.metrics.request_done(endpoint_label, model_label, log.backend, log.key, log.status, seconds);
    // Overhead: the whole duration for answers Sluice gives itself, else what the backends did not take.
    services.metrics.overhead(endpoint_label, log.overhead_ms ? *log.overhead_ms / 1000 : seconds);
    observe::log_access(log);
    return k;
  };
  auto finish = [&](bool k) { return finish_at(k, std::chrono::steady_clock::now()); };

  // The reply to a request refused before it goes upstream, made where the refusal is decided and awaited at
  // once. GCC gives every local of a coroutine, and every temporary that lives across a co_await, a place of
  // its own in the frame, which a stream keeps for as long as it runs; so each refusal's error and response
  // are built in plain code and handed to the reply's own frame, and this one slot is all they take here.
  asio::awaitable<bool> refused;
  auto endpoint = openai::endpoint_for_path(path);
  bool is_models = path == "/v1/models";
  if (!endpoint && !is_models) {
    refused = reply.error({404, "Invalid URL (" + std::string(log.method) + " " + std::string(log.path) + ")",
                           "invalid_request_error", std::nullopt, "unknown_url"});
    co_return finish(co_await std::move(refused));
  }
  endpoint_label = is_models ? std::string_view("models") : openai::to_string(*endpoint);
  auto expected = is_models ? http::verb::get : http::verb::post;
  if (req.method() != expected) {
    refused = reply.send_owned([&] {
      auto res = error_response({405,
                                 "Method " + std::string(log.method) + " is not allowed on " + std::string(log.path),
                                 "invalid_request_error", std::nullopt, "method_not_allowed"},
                                reply.version, reply.keep_alive);
      res.set(http::field::allow, is_models ? "GET" : "POST");
      return res;
    }());
    log.error = "method_not_allowed";
    co_return finish(co_await std::move(refused));
  }

  using Field = IncomingRequest::Field;
  const policy::KeyEntry* key = [&]() -> const policy::KeyEntry* {
    auto auth = policy.authenticate(req[Field::authorization], req[Field::x_api_key], ctx.key_memo);
    if (auto* e = std::get_if<openai::ApiError>(&auth)) {
      refused = reply.error(std::move(*e));
      return nullptr;
    }
    return std::get<const policy::KeyEntry*>(auth);
  }();
  if (refused.valid()) co_return finish(co_await std::move(refused));
  if (key) log.key = key->name;

  if (is_models) {
    refused = reply.send_owned(json_response(http::status::ok,
                                             models_json(policy.visible_models(key), services.started_unix),
                                             reply.version, reply.keep_alive));
    co_return finish(co_await std::move(refused));
  }

  auto inspected = openai::inspect_request(*endpoint, req.body());
  if (auto* e = std::get_if<openai::ApiError>(&inspected)) {
    refused = reply.error(std::move(*e));
    co_return finish(co_await std::move(refused));
  }
  auto& client_req = std::get<openai::ClientRequest>(inspected);
  log.stream = client_req.stream;

  auto routed = policy.route(key, client_req.model);
  if (auto* e = std::get_if<openai::ApiError>(&routed)) {
    // Names nobody configured must not become metric labels: they are all "other".
    metric_model = "other";
    refused = reply.error(std::move(*e));
    co_return finish(co_await std::move(refused));
  }
  auto& fwd = std::get<policy::Forward>(routed);
  const ModelConfig& model = *fwd.model;
  log.model = model.name;

  // Limits: one decision per request (in Redis when replicas share state), before any backend is touched.
  Headers extra_headers;  // rate-limit and cache headers, on every response from here on
  std::optional<Settlement> settle;
  if ((key && key->limits.any()) || model.limits.any()) {
    auto demand_of = [&] {
      policy::Demand demand;
      if (key) {
        demand.key = key->name;
        demand.key_limits = key->limits;
        demand.key_state = key->limit_state;
      }
      demand.model = model.name;
      demand.model_limits = model.limits;
      demand.model_state = fwd.model_state;
      demand.tokens = policy::token_reservation(openai::estimate_prompt_tokens(client_req),
                                                openai::completion_limit(client_req, model.max_tokens_cap),
                                                snapshot->config.limits.completion_estimate);
      return demand;
    };
    // Redis's decision, when replicas share state and Redis answered (behind a pointer: see `refused`).
    std::unique_ptr<policy::Admission> shared;
    if (local.limiter) {
      auto admitting = admit_shared(services, local, demand_of());
      shared = co_await std::move(admitting);
      if (!shared && services.config.redis.fail_closed) {
        refused = reply.error([] {
          openai::ApiError down{503, "Rate limits cannot be checked right now (the shared store is unreachable).",
                                "server_error", std::nullopt, "limits_unavailable"};
          down.retry_after = "1";
          return down;
        }());
        co_return finish(co_await std::move(refused));
      }
    }
    // The decision's consequences, in plain code (see `refused`): the headers, a refusal, or the settlement.
    [&](std::optional<policy::Admission> admission) {
      const policy::Demand demand = demand_of();
      // From Redis, the budget gauge shows what this replica last saw; the in-memory limiter sets it itself.
      if (admission && key && admission->budget_remaining)
        services.metrics.budget_remaining(key->name, *admission->budget_remaining);
      if (!admission) admission = services.limiter.admit(demand, policy::wall_now());  // memory, or Redis down
      extra_headers = rate_limit_headers(*admission);
      reply.extra = &extra_headers;
      if (!admission->allowed) {
        auto text = policy::refusal_text(*admission, demand);
        services.metrics.rate_limited(demand.key, policy::to_string(admission->refused));
        openai::ApiError limited{429, text.message, text.type, std::nullopt, "rate_limit_exceeded"};
        auto res = error_response(limited, reply.version, reply.keep_alive);
        auto wait_ms = std::max<policy::WallMs>(1, admission->retry_after_ms);
        res.set(http::field::retry_after, std::to_string((wait_ms + 999) / 1000));
        res.set("retry-after-ms", std::to_string(wait_ms));
        log.error = "rate_limit_exceeded";
        log.rate_limit = std::string(policy::to_string(admission->refused));
        refused = reply.send_owned(std::move(res));
        return;
      }
      settle.emplace(std::move(admission->reservation), services.limiter, local.limiter.get(), services.metrics,
                     services.background, stream.get_executor());
    }(shared ? std::optional<policy::Admission>(std::move(*shared)) : std::nullopt);
    if (refused.valid()) co_return finish(co_await std::move(refused));
  }
  auto unused = [&] {
    if (settle) (*settle)(0);
  };

  // What the relay needs, whether this request goes upstream or follows an identical one that does.
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
  fr.headers = &extra_headers;
  fr.client_read_buffer = ctx.read_buffer;
  fr.watch = ctx.watch;

  // Response cache: an exact repeat is answered here, as JSON or as a replayed stream, whichever was asked.
  std::string cache_key;
  bool cache_store = false;
  bool coalesce = false;  // looked up and missed: an identical request in flight may answer this one
  if (model.cache_enabled &&
      (*endpoint == openai::Endpoint::chat_completions || *endpoint == openai::Endpoint::completions)) {
    auto control = req[Field::cache_control];
    bool no_cache = has_directive(control, "no-cache"), no_store = has_directive(control, "no-store");
    bool eligible = !model.cache_only_deterministic || policy::deterministic_request(client_req.doc);
    std::string_view lookup = "bypass";
    if (eligible && !(no_cache && no_store)) {
      // Scoped to the key unless the operator chose to share answers across keys.
      std::string_view scope = services.config.cache.scope == "shared" || !key ? std::string_view() : key->name;
      cache_key = policy::cache_key(openai::to_string(*endpoint), scope, client_req.doc, model.name);
      cache_store = !no_store;
      if (!no_cache) {
        lookup = "miss";
        auto answering = answer_from_cache(reply, local, cache_key, *endpoint, client_req, model.name,
                                           extra_headers, settle);
        const std::optional<bool> answered = co_await std::move(answering);
        if (answered) co_return finish(*answered);
      }
    }
    services.metrics.cache_lookup(lookup);
    extra_headers.add("x-sluice-cache", lookup);
    reply.extra = &extra_headers;
    coalesce = lookup == "miss";
  }

  // Coalescing: while an identical request is on its way upstream, this one follows its answer (live, for a
  // stream) instead of asking again. The first one leads: its answer is published to its followers.
  std::optional<FlightLanding> landing;
  std::string flight_key = cache_key;
  // The usage chunk is part of the shared stream only when Sluice asks every backend for it.
  if (client_req.include_usage)
    for (const auto* b : fwd.backends)
      if (!b->include_usage) flight_key += "+usage";
  bool counted = false;
  for (int round = 0; coalesce && round < 2; ++round) {
    auto joined = services.flights.join(flight_key);
    if (joined.leader) {
      landing.emplace(services.flights, flight_key, std::move(joined.flight));
      break;
    }
    if (!std::exchange(counted, true)) services.metrics.coalesced(model.name);
    const auto before_coalesced = extra_headers.mark();
    extra_headers.add("x-sluice-coalesced", "true");
    Millis patience{0};  // as long as the leader may take: its queue wait and every attempt's deadline
    for (const auto* b : fwd.backends) patience = std::max(patience, b->queue_timeout + b->timeouts.total);
    patience *= std::max(1u, model.max_attempts);
    const double before = seconds_since(ctx.started);  // Sluice's own time; the rest is the leader's backend
    auto following = follow_leader(stream, *joined.flight, fr, patience, before, round == 0, reply, model.name, settle);
    const std::optional<bool> followed_keep = co_await std::move(following);
    if (!followed_keep) {  // the leader failed: ask on its own (once)
      extra_headers.rewind(before_coalesced);
      continue;
    }
    co_return finish(*followed_keep);
  }

  // Plan the attempts: health, load, weights and max_inflight decide the order (upstream/balancer).
  thread_local std::mt19937_64 rng{std::random_device{}()};
  auto plan = [&](std::chrono::steady_clock::time_point now) {
    upstream::Candidates candidates;
    for (std::size_t i = 0; i < fwd.targets.size(); ++i) {
      const auto& state = *services.fleet.backends.at(fwd.targets[i]->backend);
      candidates.push_back(
          {fwd.targets[i]->weight, state.inflight.load(), fwd.backends[i]->max_inflight, state.available(now)});
    }
    return upstream::plan_attempts(model.strategy == "balance", candidates, model.max_attempts, rng);
  };
  // One clock reading for the plan and the first attempt's admission (another after each attempt that fails over).
  auto planned_at = std::chrono::steady_clock::now();
  auto order = plan(planned_at);
  // First come, first served: a request that finds others already waiting for these backends queues behind
  // them (waking the first for the slot it saw free) rather than overtaking them.
  bool others_waiting = false;
  for (const auto* t : fwd.targets)
    if (services.fleet.queues.at(t->backend)->waiting() > 0) others_waiting = true;
  if (order.empty() || others_waiting) {
    // Wait in the targets' queues (bounded, up to queue_timeout) for a slot.
    order.clear();
    auto executor = co_await asio::this_coro::executor;
    auto waiter = std::make_shared<SlotQueue::Waiter>(executor);
    std::vector<std::pair<SlotQueue*, const std::string*>> joined;
    Millis patience{0};
    auto now = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < fwd.targets.size(); ++i) {
      const auto& name = fwd.targets[i]->backend;
      if (!services.fleet.backends.at(name)->available(now) || fwd.backends[i]->max_queue == 0) continue;
      auto& queue = *services.fleet.queues.at(name);
      if (!queue.join(waiter)) continue;
      joined.emplace_back(&queue, &name);
      services.metrics.queued(name, 1);
      patience = std::max(patience, fwd.backends[i]->queue_timeout);
      if (others_waiting) queue.wake_one();
    }
    auto deadline = now + patience;
    while (!joined.empty()) {
      // A request tries when a freed slot was handed to it, or when it is first in line.
      bool turn = waiter->woken.exchange(false);
      for (auto [queue, name] : joined) turn = turn || queue->first(waiter);
      if (turn) {
        order = plan(planned_at = std::chrono::steady_clock::now());
        if (!order.empty()) break;
      }
      if (std::chrono::steady_clock::now() >= deadline) break;
      // Woken when a slot is handed over; a short poll as well, so a hand-over to a request that gave up
      // meanwhile cannot strand the others.
      waiter->timer.expires_at(std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
      co_await waiter->timer.async_wait(use_nothrow);
    }
    for (auto [queue, name] : joined) {
      queue->leave(waiter);
      services.metrics.queued(*name, -1);
    }
  }
  if (order.empty()) {
    unused();
    refused = [&] {
      openai::ApiError full{503,
                            "Every backend for the model `" + model.name + "` is at capacity; retry shortly.",
                            "server_error", std::nullopt, "backend_overloaded"};
      full.retry_after = "1";
      if (landing) landing->land(upstream::Flight::Outcome{false, std::nullopt, std::nullopt, full, false});
      return reply.error(std::move(full));
    }();
    co_return finish(co_await std::move(refused));
  }

  fr.capture = cache_store;
  if (landing) fr.flight = landing->flight.get();

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
    if (pool_it == pools.end() || !state.admit(planned_at)) continue;
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
    co_await upstream::forward(result, stream, *pool_it->second, fr);
    backend_seconds += result.backend_seconds;
    --state.inflight;
    services.fleet.queues.at(target.backend)->wake_one();
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
    planned_at = std::chrono::steady_clock::now();
  }
  budget.request_finished();
  log.attempts = attempts;
  if (attempts == 0) {
    unused();
    refused = [&] {
      auto none = policy::no_backend_available(model.name);
      if (landing) landing->land(upstream::Flight::Outcome{false, std::nullopt, std::nullopt, none, false});
      return reply.error(std::move(none));
    }();
    co_return finish(co_await std::move(refused));
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
  if (landing) [&] {  // a whole answer reached the followers from the relay already; otherwise tell them why not
    upstream::Flight::Outcome outcome;
    const auto& e = result.error;
    const bool timed_out = e == "timeout" || e == "first_token" || e == "idle" || e == "total";
    if (result.failure) {
      outcome.error = result.failure;
      // A backend's 4xx would be the same for them; after a timeout their own deadlines have run out too.
      outcome.retry = result.retryable && !timed_out;
    } else {
      outcome.error = openai::ApiError{502, "The backend's answer was cut short (" + result.error + ").",
                                       "server_error", std::nullopt, "upstream_error"};
    }
    landing->land(std::move(outcome));  // unregisters it; a flight already finished is not changed
  }();
  if (settle) {
    // Charge what was used: the backend's count, or what was streamed. When that is unknown and the backend
    // may have generated (an answer without usage, a client that left, a deadline or reset mid-answer), the
    // reservation stays charged; only a backend that refused or could not be reached costs nothing.
    std::optional<std::uint64_t> used;
    const auto& e = result.error;
    bool may_have_generated =
        result.client_gone || e == "first_token" || e == "idle" || e == "total" || e == "reset" || !result.failure;
    if (usage)
      used = usage->prompt_tokens + usage->completion_tokens;
    else if (!may_have_generated)
      used = 0;
    (*settle)(used);
  }
  // Only complete, successful answers are kept (every choice finished; never an error or a cut stream).
  if (cache_store && result.completion && !result.failure && policy::complete_answer(*result.completion)) {
    auto now = policy::CacheClock::now();
    auto ttl = model.cache_ttl.value_or(services.config.cache.default_ttl);
    policy::CachedAnswer answer{std::move(*result.completion), usage ? usage->prompt_tokens : 0,
                                usage ? usage->completion_tokens : 0, now, now + ttl};
    auto executor = co_await asio::this_coro::executor;
    keep_answer(services, local, cache_key, std::move(answer), ttl, executor);
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
  const auto done = std::chrono::steady_clock::now();
  log.overhead_ms =
      std::max(0.0, std::chrono::duration<double>(done - ctx.started).count() - backend_seconds) * 1000;
  if (!result.error.empty()) log.error = result.error;
  if (result.client_gone) {
    services.metrics.client_disconnect(result.disconnect_phase);
    // 499: the client closed the connection before the answer was complete (nginx's convention).
    log.status = result.status ? result.status : 499;
    co_return finish_at(false, done);
  }
  if (result.failure) {
    refused = reply.error(*result.failure);
    co_return finish(co_await std::move(refused));
  }
  log.status = result.status;
  co_return finish_at(result.client_keep_alive, done);
}

bool SlotQueue::join(const std::shared_ptr<Waiter>& w) {
  std::lock_guard lock(mutex_);
  if (waiting_.size() >= capacity_) return false;
  waiting_.push_back(w);
  size_ = waiting_.size();
  return true;
}

void SlotQueue::leave(const std::shared_ptr<Waiter>& w) {
  std::lock_guard lock(mutex_);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), w); it != waiting_.end()) waiting_.erase(it);
  size_ = waiting_.size();
}

bool SlotQueue::first(const std::shared_ptr<Waiter>& w) const {
  std::lock_guard lock(mutex_);
  return !waiting_.empty() && waiting_.front() == w;
}

void SlotQueue::wake_one() {
  // Nobody waiting, the common case: no lock. The first of the requests joining meanwhile is first in line, so
  // it plans again at once and finds the slot the caller freed: the caller's decrement of the backend's in-flight count comes
  // before this load, and the join's store before that plan's load (all sequentially consistent), so one of
  // the two sees the other.
  if (size_.load(std::memory_order_seq_cst) == 0) return;
  std::shared_ptr<Waiter> w;
  {
    std::lock_guard lock(mutex_);
    for (const auto& candidate : waiting_)  // the longest waiting one not already handed a slot
      if (!candidate->woken.exchange(true)) {
        w = candidate;
        break;
      }
  }
  // The timer belongs to the waiter's worker: cancel it there (the shared_ptr keeps it alive until then).
  if (w) asio::post(w->timer.get_executor(), [w] { w->timer.cancel(); });
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
  auto replying = reply.error(error);
  co_await std::move(replying);
  log.duration_ms = seconds_since(ctx.started) * 1000;
  services.metrics.request_done("other", "", "", "", log.status, seconds_since(ctx.started));
  observe::log_access(log);
}

StringResponse handle_admin_request(const StringRequest& req, const Services& services, bool ready) {
  auto path = path_of(req.target());
  bool keep = req.keep_alive();
  if (path == "/admin/reload") {
    if (req.method() != http::verb::post) {
      auto res = error_response(
          {405, "/admin/reload answers POST only", "invalid_request_error", std::nullopt, "method_not_allowed"},
          req.version(), keep);
      res.set(http::field::allow, "POST");
      return res;
    }
    auto why = services.reload ? services.reload() : std::string("this gateway has no config file to reload");
    if (why.empty()) return json_response(http::status::ok, R"({"status":"reloaded"})", req.version(), keep);
    return error_response({400, "The config was not reloaded (the running one is kept): " + why,
                           "invalid_request_error", std::nullopt, "invalid_config"},
                          req.version(), keep);
  }
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
