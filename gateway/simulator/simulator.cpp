#include "simulator/simulator.hpp"

#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>
#include <stdexcept>

#include "openai/request.hpp"
#include "server/http_io.hpp"

namespace sluice::simulator {

namespace {

using Clock = std::chrono::steady_clock;

const char* const kWords[] = {"The",   " quick", " brown", " fox",    " jumps",   " over",  " the",
                              " lazy", " dog",   ".",      " Sluice", " relays",  " every", " token",
                              " as",   " soon",  " as",    " it",     " arrives", "."};

/// How one request asked to be answered.
struct Plan {
  std::uint64_t tokens = 16;
  std::uint64_t prompt_tokens = 0;
  Millis ttft{0};
  double tokens_per_second = 200;
  std::string fault;  // "", reset, malformed, stall, status
  std::uint64_t fault_after = 0;
  int status = 500;
  Millis delay{0};
  bool length_limited = false;
};

std::uint64_t count_words(const rapidjson::Value& v) {
  std::uint64_t n = 0;
  if (v.IsString()) {
    bool in_word = false;
    for (const char* p = v.GetString(); *p; ++p) {
      bool space = *p == ' ' || *p == '\n' || *p == '\t';
      if (!space && !in_word) ++n;
      in_word = !space;
    }
  } else if (v.IsArray()) {
    for (const auto& x : v.GetArray()) n += count_words(x);
  } else if (v.IsObject()) {
    for (const auto& m : v.GetObject()) n += count_words(m.value);
  }
  return n;
}

class Session {
 public:
  Session(tcp::socket s, const SimulatorConfig& cfg) : stream_(std::move(s)), cfg_(cfg) {}

  asio::awaitable<void> run() {
    beast::flat_buffer buffer;
    for (;;) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(64u << 20);
      stream_.expires_after(std::chrono::seconds(60));
      auto [ec, n] = co_await http::async_read(stream_, buffer, parser, use_nothrow);
      if (ec) co_return;
      auto req = parser.release();
      bool keep = co_await handle(req);
      if (!keep) break;
    }
    error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

 private:
  // Arguments of co_await calls stay trivially destructible or named: GCC 12 destroys some temporaries twice.
  asio::awaitable<bool> reply(http::status status, std::string_view body, const StringRequest& req) {
    auto res = json_response(status, std::string(body), req.version(), req.keep_alive());
    stream_.expires_after(std::chrono::seconds(60));
    auto [ec, n] = co_await http::async_write(stream_, res, use_nothrow);
    co_return !ec && req.keep_alive();
  }

  asio::awaitable<void> sleep(Millis d) {
    if (d.count() <= 0) co_return;
    asio::steady_timer t(stream_.get_executor(), d);
    co_await t.async_wait(use_nothrow);
  }

  asio::awaitable<bool> handle(const StringRequest& req) {
    std::string_view target = req.target();
    if (req.method() == http::verb::get && (target == "/health" || target == "/healthz"))
      co_return co_await reply(http::status::ok, R"({"status":"ok"})", req);
    if (req.method() == http::verb::get && target == "/v1/models")
      co_return co_await reply(
          http::status::ok,
          R"({"object":"list","data":[{"id":"sluice-simulator","object":"model","created":0,"owned_by":"sluice"}]})",
          req);
    bool chat = target == "/v1/chat/completions", completion = target == "/v1/completions",
         embedding = target == "/v1/embeddings";
    if (req.method() != http::verb::post || !(chat || completion || embedding)) {
      auto body = openai::error_json({404, "no such route on the simulator", "", {}, "not_found"});
      co_return co_await reply(http::status::not_found, body, req);
    }

    rapidjson::Document doc;
    if (openai::json_depth_within(req.body()))
      doc.Parse(req.body().data(), req.body().size());
    else
      doc.SetNull();
    if (doc.HasParseError() || !doc.IsObject() || !doc.HasMember("model") || !doc["model"].IsString()) {
      auto body = openai::error_json(openai::invalid_request("simulator: invalid request body"));
      co_return co_await reply(http::status::bad_request, body, req);
    }
    Plan plan = make_plan(doc);
    co_await sleep(plan.delay);
    if (plan.fault == "status") {
      auto body = openai::error_json({plan.status, "simulated backend failure", "", {}, "simulated"});
      co_return co_await reply(static_cast<http::status>(plan.status), body, req);
    }
    std::string model = doc["model"].GetString();
    if (embedding) co_return co_await embed(doc, model, plan, req);
    bool stream = doc.HasMember("stream") && doc["stream"].IsBool() && doc["stream"].GetBool();
    bool include_usage = stream && doc.HasMember("stream_options") && doc["stream_options"].IsObject() &&
                         doc["stream_options"].HasMember("include_usage") &&
                         doc["stream_options"]["include_usage"].IsBool() &&
                         doc["stream_options"]["include_usage"].GetBool();
    if (stream) co_return co_await stream_answer(model, plan, chat, include_usage, req);
    co_return co_await whole_answer(model, plan, chat, req);
  }

  Plan make_plan(const rapidjson::Document& doc) {
    Plan p;
    p.ttft = cfg_.ttft;
    p.tokens_per_second = cfg_.tokens_per_second;
    if (doc.HasMember("messages"))
      p.prompt_tokens = count_words(doc["messages"]);
    else if (doc.HasMember("prompt"))
      p.prompt_tokens = count_words(doc["prompt"]);
    else if (doc.HasMember("input"))
      p.prompt_tokens = count_words(doc["input"]);
    for (const char* cap : {"max_tokens", "max_completion_tokens"})
      if (doc.HasMember(cap) && doc[cap].IsUint64() && doc[cap].GetUint64() < p.tokens) {
        p.tokens = doc[cap].GetUint64();
        p.length_limited = true;
      }
    if (doc.HasMember("simulator") && doc["simulator"].IsObject()) {
      const auto& s = doc["simulator"];
      if (s.HasMember("tokens") && s["tokens"].IsUint64())
        p.tokens = std::min<std::uint64_t>(s["tokens"].GetUint64(), 1'000'000);
      // Client-controlled through the gateway: bounded, so no request can hold a session for long.
      if (s.HasMember("ttft_ms") && s["ttft_ms"].IsUint64())
        p.ttft = Millis(std::min<std::uint64_t>(s["ttft_ms"].GetUint64(), 60'000));
      if (s.HasMember("tokens_per_second") && s["tokens_per_second"].IsNumber() &&
          s["tokens_per_second"].GetDouble() > 0)
        p.tokens_per_second = std::clamp(s["tokens_per_second"].GetDouble(), 0.1, 1e7);
      if (s.HasMember("fault") && s["fault"].IsString()) p.fault = s["fault"].GetString();
      if (s.HasMember("fault_after") && s["fault_after"].IsUint64())
        p.fault_after = s["fault_after"].GetUint64();
      if (s.HasMember("status") && s["status"].IsInt() && s["status"].GetInt() >= 400 &&
          s["status"].GetInt() < 600)
        p.status = s["status"].GetInt();
      if (s.HasMember("delay_ms") && s["delay_ms"].IsUint64())
        p.delay = Millis(std::min<std::uint64_t>(s["delay_ms"].GetUint64(), 60'000));
    }
    return p;
  }

  static std::string usage_json(const Plan& p) {
    return R"({"prompt_tokens":)" + std::to_string(p.prompt_tokens) + R"(,"completion_tokens":)" +
           std::to_string(p.tokens) + R"(,"total_tokens":)" + std::to_string(p.prompt_tokens + p.tokens) +
           "}";
  }

  static std::string escaped(const std::string& s) { return openai::json_quote(s); }

  std::string head(const std::string& model, bool chat) {
    return R"({"id":")" + id_ + R"(","object":")" + (chat ? "chat.completion.chunk" : "text_completion") +
           R"(","created":)" + std::to_string(created_) + R"(,"model":)" + escaped(model);
  }

  asio::awaitable<bool> whole_answer(const std::string& model, const Plan& p, bool chat,
                                     const StringRequest& req) {
    auto decode =
        Millis(static_cast<std::int64_t>(1000.0 * static_cast<double>(p.tokens) / p.tokens_per_second));
    co_await sleep(p.ttft + decode);
    std::string text;
    for (std::uint64_t i = 0; i < p.tokens; ++i) text += simulated_token(i);
    std::string finish = p.length_limited ? "length" : "stop";
    std::string body =
        R"({"id":")" + id_ + R"(","object":")" + (chat ? "chat.completion" : "text_completion") +
        R"(","created":)" + std::to_string(created_) + R"(,"model":)" + escaped(model) +
        R"(,"choices":[{"index":0,)" +
        (chat ? R"("message":{"role":"assistant","content":)" + escaped(text) + "}"
              : R"("text":)" + escaped(text)) +
        R"(,"logprobs":null,"finish_reason":")" + finish + R"("}],"usage":)" + usage_json(p) + "}";
    co_return co_await reply(http::status::ok, body, req);
  }

  asio::awaitable<bool> embed(const rapidjson::Document&, const std::string& model, const Plan& p,
                              const StringRequest& req) {
    co_await sleep(p.ttft);
    std::string body = R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[)";
    for (int i = 0; i < 8; ++i)
      body += (i ? "," : "") + std::to_string((static_cast<double>(p.prompt_tokens % 7) + i) / 10.0);
    body += R"(]}],"model":)" + escaped(model) + R"(,"usage":{"prompt_tokens":)" +
            std::to_string(p.prompt_tokens) + R"(,"total_tokens":)" + std::to_string(p.prompt_tokens) + "}}";
    co_return co_await reply(http::status::ok, body, req);
  }

  asio::awaitable<bool> write_chunk(std::string_view data) {
    stream_.expires_after(std::chrono::seconds(60));
    auto chunk = http::make_chunk(asio::buffer(data));
    auto [ec, n] = co_await asio::async_write(stream_, chunk, use_nothrow);
    co_return !ec;
  }

  asio::awaitable<bool> stream_answer(const std::string& model, const Plan& p, bool chat, bool include_usage,
                                      const StringRequest& req) {
    co_await sleep(p.ttft);
    http::response<http::empty_body> res{http::status::ok, req.version()};
    res.set(http::field::server, "sluice-simulator");
    res.set(http::field::content_type, "text/event-stream");
    res.set(http::field::cache_control, "no-cache");
    res.keep_alive(req.keep_alive());
    res.chunked(true);
    http::response_serializer<http::empty_body> sr{res};
    auto [hec, hn] = co_await http::async_write_header(stream_, sr, use_nothrow);
    if (hec) co_return false;

    const auto interval =
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / p.tokens_per_second));
    auto next = Clock::now();
    std::string h = head(model, chat);
    for (std::uint64_t i = 0; i < p.tokens; ++i) {
      if (i == p.fault_after && !p.fault.empty()) {
        if (p.fault == "reset") {
          reset_socket(stream_.socket());
          co_return false;
        }
        if (p.fault == "stall") {  // stop sending but keep the connection open, until the client leaves
          stream_.expires_after(std::chrono::seconds(60));
          std::array<char, 512> sink;
          for (;;) {
            auto [rec, n] = co_await stream_.async_read_some(asio::buffer(sink), use_nothrow);
            if (rec) break;
          }
          co_return false;
        }
        if (p.fault == "malformed" && !co_await write_chunk("data: {\"id\": oops not json\n\n"))
          co_return false;
      }
      if (i > 0) {
        next += interval;
        if (next > Clock::now()) {
          asio::steady_timer t(stream_.get_executor(), next);
          co_await t.async_wait(use_nothrow);
        }
      }
      std::string tok = escaped(simulated_token(i));
      std::string ev = "data: " + h + R"(,"choices":[{"index":0,)" +
                       (chat ? std::string(R"("delta":{)") + (i == 0 ? R"("role":"assistant",)" : "") +
                                   R"("content":)" + tok + "}"
                             : R"("text":)" + tok) +
                       R"(,"logprobs":null,"finish_reason":null}])" +
                       (include_usage ? R"(,"usage":null)" : "") + "}\n\n";
      if (!co_await write_chunk(ev)) co_return false;
    }
    std::string finish = p.length_limited ? "length" : "stop";
    std::string tail = "data: " + h + R"(,"choices":[{"index":0,)" +
                       (chat ? R"("delta":{})" : R"("text":"")") + R"(,"logprobs":null,"finish_reason":")" +
                       finish + R"("}])" + (include_usage ? R"(,"usage":null)" : "") + "}\n\n";
    if (include_usage) tail += "data: " + h + R"(,"choices":[],"usage":)" + usage_json(p) + "}\n\n";
    tail += "data: [DONE]\n\n";
    if (!co_await write_chunk(tail)) co_return false;
    auto last = http::make_chunk_last();
    auto [lec, ln] = co_await asio::async_write(stream_, last, use_nothrow);
    co_return !lec && req.keep_alive();
  }

  beast::tcp_stream stream_;
  const SimulatorConfig& cfg_;
  std::string id_ = "chatcmpl-sim" + new_request_id().substr(4);
  std::int64_t created_ =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
};

}  // namespace

std::string simulated_token(std::uint64_t i) {
  return kWords[i % (sizeof kWords / sizeof kWords[0])];
}

struct SimulatorServer::Impl {
  asio::io_context& ctx;
  SimulatorConfig cfg;
  tcp::acceptor acceptor{ctx};

  asio::awaitable<void> accept_loop(std::shared_ptr<Impl> self) {
    for (;;) {
      auto [ec, sock] = co_await acceptor.async_accept(use_nothrow);
      if (ec) {
        if (!acceptor.is_open()) co_return;
        continue;
      }
      sock.set_option(tcp::no_delay(true), ec);
      asio::co_spawn(
          ctx,
          [s = std::move(sock), self]() mutable -> asio::awaitable<void> {
            Session session(std::move(s), self->cfg);
            co_await session.run();
          },
          asio::detached);
    }
  }
};

SimulatorServer::SimulatorServer(asio::io_context& ctx, SimulatorConfig cfg)
    : impl_(std::make_shared<Impl>(Impl{ctx, cfg})) {}

SimulatorServer::~SimulatorServer() {
  close();
}

std::uint16_t SimulatorServer::listen(const std::string& host, std::uint16_t port) {
  error_code ec;
  auto addr = asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("simulator: invalid listen address '" + host + "'");
  tcp::endpoint ep{addr, port};
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("simulator: cannot listen on " + host + ":" + std::to_string(port) + ": " +
                             ec.message());
  asio::co_spawn(impl_->ctx, impl_->accept_loop(impl_), asio::detached);
  return a.local_endpoint().port();
}

void SimulatorServer::close() {
  if (!impl_) return;
  asio::post(impl_->ctx, [impl = impl_] {
    error_code ec;
    impl->acceptor.close(ec);
  });
}

}  // namespace sluice::simulator
