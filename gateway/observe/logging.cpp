#include "observe/logging.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <ctime>
#include <mutex>

namespace sluice::observe {
namespace {

std::atomic<bool> g_access_enabled{true};
std::atomic<std::size_t> g_access_buffer{0};
std::mutex g_stdout;  // taken per write(2) of gathered lines, never per request when buffering

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

void write_stdout(const std::string& text) {
  std::lock_guard lock(g_stdout);
  std::size_t at = 0;
  while (at < text.size()) {
    ssize_t n = ::write(STDOUT_FILENO, text.data() + at, text.size() - at);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // stdout is gone: the lines are dropped, the gateway goes on
    at += static_cast<std::size_t>(n);
  }
}

/// One worker's access lines not yet written; written by the thread that gathered them.
struct AccessLines {
  std::string text;
  rapidjson::StringBuffer json;  // reused for each record
  void flush() {
    if (text.empty()) return;
    write_stdout(text);
    text.clear();
  }
  ~AccessLines() { flush(); }
};

AccessLines& lines() {
  thread_local AccessLines l;
  return l;
}

void put(Writer& w, const char* key, std::string_view v) {
  w.Key(key);
  w.String(v.data(), static_cast<rapidjson::SizeType>(v.size()));
}

// Formats log records as one JSON object per line, with the message escaped properly.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    auto t = std::chrono::system_clock::to_time_t(msg.time);
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()).count() % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char ts[64];
    std::snprintf(ts, sizeof ts, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                  tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
    put(w, "time", ts);
    auto lvl = spdlog::level::to_string_view(msg.level);
    put(w, "level", std::string_view(lvl.data(), lvl.size()));
    put(w, "msg", std::string_view(msg.payload.data(), msg.payload.size()));
    w.EndObject();
    dest.append(sb.GetString(), sb.GetString() + sb.GetSize());
    dest.push_back('\n');
  }
  std::unique_ptr<spdlog::formatter> clone() const override { return std::make_unique<JsonFormatter>(); }
};

}  // namespace

void setup_logging(const LogConfig& cfg) {
  auto logger = std::make_shared<spdlog::logger>("sluice", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  if (cfg.format == "json")
    logger->set_formatter(std::make_unique<JsonFormatter>());
  else
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
  logger->set_level(spdlog::level::from_str(cfg.level));
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);

  g_access_enabled = cfg.access_log;
  g_access_buffer = static_cast<std::size_t>(cfg.access_buffer);
}

namespace {

void write_access(const AccessRecord& r, rapidjson::StringBuffer& sb) {
  Writer w(sb);
  w.StartObject();
  put(w, "type", "access");
  put(w, "request_id", r.request_id);
  put(w, "method", r.method);
  put(w, "path", r.path);
  put(w, "client", r.client);
  if (!r.model.empty()) put(w, "model", r.model);
  if (!r.backend.empty()) put(w, "backend", r.backend);
  if (!r.key.empty()) put(w, "key", r.key);
  w.Key("status");
  w.Int(r.status);
  w.Key("stream");
  w.Bool(r.stream);
  w.Key("bytes_in");
  w.Uint64(r.bytes_in);
  w.Key("bytes_out");
  w.Uint64(r.bytes_out);
  if (r.prompt_tokens) {
    w.Key("prompt_tokens");
    w.Uint64(*r.prompt_tokens);
  }
  if (r.completion_tokens) {
    w.Key("completion_tokens");
    w.Uint64(*r.completion_tokens);
  }
  if (r.usage_estimated) {
    w.Key("usage_estimated");
    w.Bool(true);
  }
  if (r.attempts > 1) {
    w.Key("attempts");
    w.Uint(r.attempts);
  }
  if (r.backend_tokens_per_second) {
    w.Key("backend_tokens_per_second");
    w.Double(*r.backend_tokens_per_second);
  }
  if (r.ttfb_ms) {
    w.Key("ttfb_ms");
    w.Double(*r.ttfb_ms);
  }
  for (auto [name, value] : {std::pair{"ttft_ms", r.ttft_ms}, std::pair{"tpot_ms", r.tpot_ms},
                             std::pair{"overhead_ms", r.overhead_ms}})
    if (value) {
      w.Key(name);
      w.Double(*value);
    }
  w.Key("duration_ms");
  w.Double(r.duration_ms);
  if (!r.error.empty()) put(w, "error", r.error);
  if (!r.rate_limit.empty()) put(w, "rate_limit", r.rate_limit);
  w.EndObject();
}

}  // namespace

std::string access_json(const AccessRecord& r) {
  rapidjson::StringBuffer sb;
  write_access(r, sb);
  return std::string(sb.GetString(), sb.GetSize());
}

void log_access(const AccessRecord& r) {
  if (!g_access_enabled) return;
  auto& l = lines();
  l.json.Clear();
  write_access(r, l.json);
  l.text.append(l.json.GetString(), l.json.GetSize());
  l.text.push_back('\n');
  if (l.text.size() >= g_access_buffer.load(std::memory_order_relaxed)) l.flush();
}

void flush_access_log() {
  lines().flush();
}

}  // namespace sluice::observe
