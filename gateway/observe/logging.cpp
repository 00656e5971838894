#include "observe/logging.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <mutex>

#include "duration.hpp"
#include "openai/errors.hpp"

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

// The access line is written by hand, straight into the buffer it goes out from: it is built for every
// request, and RapidJSON's writer (its level stack, its shortest-form doubles), and then std::string's
// appends piece by piece, cost more than the rest of the line.
class Line {
 public:
  // Every line starts with its type, so each field after it starts with a comma.
  explicit Line(char* at) : p_(at) { put(R"({"type":"access")"); }
  // The most bytes one field takes, past its name and the text of its value.
  static constexpr std::size_t kFieldBound = 48;

  // A field's name is copied in line (its length is known here, so the copy is a few moves); its value is
  // written out of line, by one copy of each writer for all the fields: inlined at each of the line's fields,
  // the writers made 20 KiB of code that every request ran through.
  template <std::size_t N>
  void str(const char (&key)[N], std::string_view v) {
    name(key);
    p_ = openai::write_json_string(p_, v);
  }
  template <std::size_t N>
  void uint(const char (&key)[N], std::uint64_t v) {
    name(key);
    p_ = write_decimal(p_, p_ + 20, v);
  }
  template <std::size_t N>
  void boolean(const char (&key)[N], bool v) {
    name(key);
    if (v)
      put("true");
    else
      put("false");
  }
  // Three decimals: milliseconds to the microsecond, tokens per second to a thousandth. Never NaN or inf (null).
  template <std::size_t N>
  void real(const char (&key)[N], double v) {
    name(key);
    p_ = real_value(p_, v);
  }
  char* end() {
    *p_++ = '}';
    return p_;
  }

 private:
  template <std::size_t N>
  void put(const char (&text)[N]) {
    std::memcpy(p_, text, N - 1);
    p_ += N - 1;
  }
  template <std::size_t N>
  void name(const char (&key)[N]) {
    *p_++ = ',';
    *p_++ = '"';
    put(key);
    *p_++ = '"';
    *p_++ = ':';
  }
  [[gnu::noinline]] static char* real_value(char* out, double v) {
    char buf[32];
    const std::string_view text = std::isfinite(v) ? fixed3(buf, v) : std::string_view("null");
    std::memcpy(out, text.data(), text.size());
    return out + text.size();
  }

  char* p_;
};

void write_access(const AccessRecord& r, std::string& out) {
  // Room for the longest line this record can make, then cut back to what was written.
  std::size_t bound = 32 * Line::kFieldBound;  // every field's name, the numbers and the punctuation
  for (const std::string_view s : {std::string_view(r.request_id), r.method, r.path, r.client, r.model, r.backend,
                                   r.key, std::string_view(r.error), std::string_view(r.rate_limit)})
    bound += openai::json_string_bound(s.size());
  const std::size_t at = out.size();
  out.resize(at + bound);
  Line w(out.data() + at);
  w.str("request_id", r.request_id);
  w.str("method", r.method);
  w.str("path", r.path);
  w.str("client", r.client);
  if (!r.model.empty()) w.str("model", r.model);
  if (!r.backend.empty()) w.str("backend", r.backend);
  if (!r.key.empty()) w.str("key", r.key);
  w.uint("status", static_cast<std::uint64_t>(std::max(r.status, 0)));
  w.boolean("stream", r.stream);
  w.uint("bytes_in", r.bytes_in);
  w.uint("bytes_out", r.bytes_out);
  if (r.prompt_tokens) w.uint("prompt_tokens", *r.prompt_tokens);
  if (r.completion_tokens) w.uint("completion_tokens", *r.completion_tokens);
  if (r.usage_estimated) w.boolean("usage_estimated", true);
  if (r.attempts > 1) w.uint("attempts", r.attempts);
  if (r.backend_tokens_per_second) w.real("backend_tokens_per_second", *r.backend_tokens_per_second);
  if (r.ttfb_ms) w.real("ttfb_ms", *r.ttfb_ms);
  if (r.ttft_ms) w.real("ttft_ms", *r.ttft_ms);
  if (r.tpot_ms) w.real("tpot_ms", *r.tpot_ms);
  if (r.overhead_ms) w.real("overhead_ms", *r.overhead_ms);
  w.real("duration_ms", r.duration_ms);
  if (!r.error.empty()) w.str("error", r.error);
  if (!r.rate_limit.empty()) w.str("rate_limit", r.rate_limit);
  out.resize(static_cast<std::size_t>(w.end() - out.data()));
}

}  // namespace

std::string access_json(const AccessRecord& r) {
  std::string out;
  write_access(r, out);
  return out;
}

void log_access(const AccessRecord& r) {
  if (!g_access_enabled) return;
  auto& l = lines();
  write_access(r, l.text);
  l.text.push_back('\n');
  if (l.text.size() >= g_access_buffer.load(std::memory_order_relaxed)) l.flush();
}

void flush_access_log() {
  lines().flush();
}

}  // namespace sluice::observe
