// Benchmark: Sluice next to nginx, side by side, on the same mock backend (issue 7).
//
// One run starts a fast mock OpenAI backend (a fork of this program, epoll, one thread), Sluice (1 worker,
// keys, limits, budgets, metrics and its access log on) and, when it is installed, nginx as a plain keep-alive
// reverse proxy (1 worker, proxy_buffering off, an access log). The load generator (this process, epoll, one
// thread) runs on core 0; the proxy under test and the backend share core 1, so a proxy is charged for every
// cycle it spends. The same load also goes straight to the backend: the floor. Prints one table with the
// ratios the issue sets as targets. Asserts nothing (tests do that); exits 0 unless something could not run.
//
//   proxy_bench [--seconds S] [--rounds N] [--only direct,nginx,sluice] [--streams N] [--rows 12345]
//
// Rows 1 and 2 are measured in rounds (3 by default): in each, every row's direct, nginx and Sluice runs one
// after another, S seconds each, with all of them up throughout, so each Sluice/nginx pair is measured within
// seconds of each other and a slow or noisy minute on a shared machine weighs on both (row 2's target compares
// latency tails, which one VM stall decides when the pair is a minute apart). The table shows the rounds
// together, and lines under it each round's figures. Rows 3 to 5 run once per target.
//
// Environment: SLUICE_BINARY (default: the build's sluice; `make bench` names the release build's), NGINX
// (default: nginx on PATH).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <queue>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#ifndef SLUICE_BINARY
#define SLUICE_BINARY "sluice"
#endif

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::duration;

double secs(Clock::duration d) { return duration<double>(d).count(); }
double ms(Clock::duration d) { return duration<double, std::milli>(d).count(); }

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "proxy_bench: %s (%s)\n", what.c_str(), std::strerror(errno));
  std::exit(2);
}

void pin_to(int core) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core % std::max(1u, std::thread::hardware_concurrency()), &set);
  sched_setaffinity(0, sizeof set, &set);
}

void nonblocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

int listen_on(std::uint16_t& port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("bind");
  if (listen(fd, 4096) != 0) die("listen");
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

std::uint16_t free_port() {
  std::uint16_t port = 0;
  close(listen_on(port));
  return port;
}

int connect_to(std::uint16_t port, bool block) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (!block) nonblocking(fd);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 && errno != EINPROGRESS) {
    close(fd);
    return -1;
  }
  return fd;
}

// ---- the mock backend ------------------------------------------------------------------------------------
//
// Answers POST /v1/chat/completions like vLLM: JSON with usage, or (with "stream":true) chunked SSE with one
// token per event, a finish event, the usage event when stream_options.include_usage asks for it, and [DONE].
// "max_tokens" sets the number of tokens. On its fast port every event of an answer goes out in one write;
// on its slow port the events are 50 ms apart. Any GET (health, models) gets 200 {}.

constexpr const char* kCompletion =
    R"({"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench","choices":[{"index":0,)"
    R"("message":{"role":"assistant","content":"Hello! This is the mock backend answering a benchmark request."},)"
    R"("logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":16,"total_tokens":28}})";
constexpr const char* kChunkHead =
    R"({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[{"index":0,)";

std::string sse_chunk(std::string_view json) {
  std::string event = "data: " + std::string(json) + "\n\n";
  char size[16];
  std::snprintf(size, sizeof size, "%zx\r\n", event.size());
  return size + event + "\r\n";
}

struct MockEvents {
  std::string head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
                     "transfer-encoding: chunked\r\n\r\n";
  std::string role = sse_chunk(std::string(kChunkHead) + R"("delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]})");
  std::string token = sse_chunk(std::string(kChunkHead) + R"("delta":{"content":" tok"},"logprobs":null,"finish_reason":null}]})");
  std::string finish = sse_chunk(std::string(kChunkHead) + R"("delta":{},"logprobs":null,"finish_reason":"length"}]})");
  std::string usage_for(int n) const {
    return sse_chunk(R"({"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench","choices":[],)"
                     R"("usage":{"prompt_tokens":12,"completion_tokens":)" + std::to_string(n) +
                     R"(,"total_tokens":)" + std::to_string(n + 12) + "}}");
  }
  std::string done = sse_chunk("[DONE]") + "0\r\n\r\n";
};

struct MockConn {
  std::string in, out;
  std::size_t out_at = 0;
  // a slow stream in progress
  int left = 0, total = 0;
  bool usage = false;
  std::uint64_t generation = 0;
};

std::optional<long> json_int(std::string_view body, std::string_view name) {
  auto at = body.find(name);
  if (at == std::string_view::npos) return std::nullopt;
  at += name.size();
  while (at < body.size() && (body[at] == ' ' || body[at] == ':' || body[at] == '"')) ++at;
  return std::strtol(std::string(body.substr(at, 12)).c_str(), nullptr, 10);
}

bool json_true(std::string_view body, std::string_view name) {
  auto at = body.find(name);
  if (at == std::string_view::npos) return false;
  at += name.size();
  while (at < body.size() && (body[at] == ' ' || body[at] == ':')) ++at;
  return body.substr(at, 4) == "true";
}

[[noreturn]] void run_mock(int fast_fd, int slow_fd) {
  signal(SIGPIPE, SIG_IGN);
  const MockEvents ev;
  int ep = epoll_create1(0);
  for (int fd : {fast_fd, slow_fd}) {
    nonblocking(fd);
    epoll_event e{EPOLLIN, {.fd = fd}};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
  }
  std::map<int, MockConn> conns;
  std::map<int, bool> slow_conn;
  using Due = std::pair<Clock::time_point, std::pair<int, std::uint64_t>>;
  std::priority_queue<Due, std::vector<Due>, std::greater<>> timers;
  std::uint64_t generation = 0;

  auto flush = [&](int fd, MockConn& c) {
    while (c.out_at < c.out.size()) {
      ssize_t n = ::send(fd, c.out.data() + c.out_at, c.out.size() - c.out_at, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_at += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EAGAIN) {
        epoll_event e{EPOLLIN | EPOLLOUT, {.fd = fd}};
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
      }
      return;
    }
    c.out.clear();
    c.out_at = 0;
  };
  auto drop = [&](int fd) {
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
    close(fd);
    conns.erase(fd);
    slow_conn.erase(fd);
  };
  auto serve = [&](int fd, MockConn& c) {
    for (;;) {
      if (c.left > 0) return;  // a slow stream is still going: the next request waits
      auto end = c.in.find("\r\n\r\n");
      if (end == std::string::npos) return;
      std::string_view head(c.in.data(), end);
      std::size_t length = 0;
      for (std::string_view name : {"Content-Length:", "content-length:", "Content-length:"})
        if (auto at = head.find(name); at != std::string_view::npos)
          length = std::strtoul(c.in.c_str() + at + name.size(), nullptr, 10);
      if (c.in.size() < end + 4 + length) return;
      std::string_view body(c.in.data() + end + 4, length);
      bool post = head.substr(0, 5) == "POST ";
      if (!post) {
        c.out += "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
      } else if (!json_true(body, "\"stream\"")) {
        static const std::string answer = std::string("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n") +
                                          "content-length: " + std::to_string(std::strlen(kCompletion)) +
                                          "\r\n\r\n" + kCompletion;
        c.out += answer;
      } else {
        int tokens = static_cast<int>(std::clamp(json_int(body, "\"max_tokens\"").value_or(16), 1L, 100000L));
        bool usage = json_true(body, "\"include_usage\"");
        c.out += ev.head;
        c.out += ev.role;
        if (slow_conn[fd]) {
          c.left = tokens;
          c.total = tokens;
          c.usage = usage;
          c.generation = ++generation;
          timers.push({Clock::now() + std::chrono::milliseconds(50), {fd, c.generation}});
        } else {
          for (int i = 0; i < tokens; ++i) c.out += ev.token;
          c.out += ev.finish;
          if (usage) c.out += ev.usage_for(tokens);
          c.out += ev.done;
        }
      }
      c.in.erase(0, end + 4 + length);
    }
  };

  std::vector<epoll_event> events(512);
  for (;;) {
    int wait_ms = -1;
    if (!timers.empty())
      wait_ms = std::max(0, static_cast<int>(std::ceil(ms(timers.top().first - Clock::now()))));
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), wait_ms);
    for (int i = 0; i < n; ++i) {
      int fd = events[i].data.fd;
      if (fd == fast_fd || fd == slow_fd) {
        for (;;) {
          int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK);
          if (c < 0) break;
          int one = 1;
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          epoll_event e{EPOLLIN, {.fd = c}};
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
          conns[c];
          slow_conn[c] = fd == slow_fd;
        }
        continue;
      }
      auto it = conns.find(fd);
      if (it == conns.end()) continue;
      auto& c = it->second;
      if (events[i].events & EPOLLOUT) {
        flush(fd, c);
        if (c.out.empty()) {
          epoll_event e{EPOLLIN, {.fd = fd}};
          epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
        }
      }
      if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        char buf[65536];
        bool closed = false;
        for (;;) {
          ssize_t r = ::recv(fd, buf, sizeof buf, 0);
          if (r > 0) {
            c.in.append(buf, static_cast<std::size_t>(r));
            continue;
          }
          closed = r == 0 || errno != EAGAIN;
          break;
        }
        if (closed) {
          drop(fd);
          continue;
        }
        serve(fd, c);
        if (!c.out.empty()) flush(fd, c);
      }
    }
    auto now = Clock::now();
    while (!timers.empty() && timers.top().first <= now) {
      auto [fd, gen] = timers.top().second;
      auto due = timers.top().first;
      timers.pop();
      auto it = conns.find(fd);
      if (it == conns.end() || it->second.generation != gen) continue;
      auto& c = it->second;
      c.out += ev.token;
      if (--c.left == 0) {
        c.out += ev.finish;
        if (c.usage) c.out += ev.usage_for(c.total);
        c.out += ev.done;
      } else {
        timers.push({due + std::chrono::milliseconds(50), {fd, gen}});
      }
      flush(fd, c);
      if (c.left == 0) serve(fd, c);
    }
  }
}

// ---- the load generator ----------------------------------------------------------------------------------

// One response, parsed as it arrives: status, headers, Content-Length or chunked body, and SSE events.
struct Response {
  enum class State { head, length, chunk_size, chunk_data, chunk_crlf, trailer, done } state = State::head;
  int status = 0;
  bool close = false;
  std::size_t left = 0;
  // SSE accounting over the decoded body
  int events = 0, tokens = 0;
  bool done_seen = false, after_done = false;
  std::string event;  // the event being assembled (capacity kept between events)
  Clock::time_point first_event{};

  void reset() {
    state = State::head;
    status = 0;
    close = false;
    left = 0;
    events = tokens = 0;
    done_seen = after_done = false;
    event.clear();
    first_event = {};
  }

  void body_bytes(const char* p, std::size_t n) {
    while (n) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', n));
      std::size_t take = nl ? static_cast<std::size_t>(nl - p) + 1 : n;
      event.append(p, take);
      p += take;
      n -= take;
      if (nl && event.size() >= 2 && event[event.size() - 2] == '\n') end_event();
    }
  }
  void end_event() {
    if (event.size() > 2) {  // not a bare blank line
      if (done_seen) after_done = true;
      ++events;
      if (first_event == Clock::time_point{}) first_event = Clock::now();
      if (event.compare(0, 12, "data: [DONE]") == 0) done_seen = true;
      else if (event.find("\"content\":\" tok\"") != std::string::npos) ++tokens;
    }
    event.clear();
  }

  // Up to `left` body bytes from `in` at `at`.
  void take_body(const std::string& in, std::size_t& at) {
    std::size_t take = std::min(left, in.size() - at);
    body_bytes(in.data() + at, take);
    at += take;
    left -= take;
  }

  // Consumes what it can of `in` from `at`; returns false on a malformed response.
  bool feed(const std::string& in, std::size_t& at) {
    while (at < in.size() && state != State::done) {
      switch (state) {
        case State::head: {
          auto end = in.find("\r\n\r\n", at);
          if (end == std::string::npos) return true;
          std::string head = in.substr(at, end - at);
          for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
          if (head.compare(0, 5, "http/") != 0) return false;
          status = std::atoi(head.c_str() + 9);
          close = head.find("\r\nconnection: close") != std::string::npos;
          at = end + 4;
          if (head.find("\r\ntransfer-encoding: chunked") != std::string::npos) {
            state = State::chunk_size;
          } else if (auto cl = head.find("\r\ncontent-length:"); cl != std::string::npos) {
            left = std::strtoul(head.c_str() + cl + 17, nullptr, 10);
            state = left ? State::length : State::done;
          } else {
            return false;
          }
          break;
        }
        case State::length: {
          take_body(in, at);
          if (!left) {
            if (!event.empty()) end_event();
            state = State::done;
          }
          break;
        }
        case State::chunk_size: {
          auto eol = in.find("\r\n", at);
          if (eol == std::string::npos) return true;
          left = std::strtoul(in.c_str() + at, nullptr, 16);
          at = eol + 2;
          state = left ? State::chunk_data : State::trailer;
          break;
        }
        case State::chunk_data: {
          take_body(in, at);
          if (!left) state = State::chunk_crlf;
          break;
        }
        case State::chunk_crlf:
          if (in.size() - at < 2) return true;
          at += 2;
          state = State::chunk_size;
          break;
        case State::trailer: {
          if (in.size() - at < 2) return true;
          if (in.compare(at, 2, "\r\n") == 0) {
            at += 2;
            state = State::done;
          } else {
            auto eol = in.find("\r\n", at);
            if (eol == std::string::npos) return true;
            at = eol + 2;
          }
          break;
        }
        case State::done: break;
      }
    }
    return true;
  }
};

struct Sample {
  double latency_ms = 0, ttfe_ms = 0;
  int events = 0, tokens = 0;
};

struct Stats {
  std::vector<double> latency, ttfe;  // ms
  std::vector<double> first_event_at;  // concurrent() only: per ttfe entry, when its request was sent (steady s)
  std::vector<double> ttfe_read;  // concurrent() only: per ttfe entry, when the load generator read the first event
  std::size_t ok = 0, failed = 0, intact = 0;
  std::uint64_t events = 0;
  double seconds = 0;
  double rate() const { return seconds > 0 ? static_cast<double>(ok) / seconds : 0; }
  double events_rate() const { return seconds > 0 ? static_cast<double>(events) / seconds : 0; }
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}
double maximum(const std::vector<double>& v) { return v.empty() ? NAN : *std::max_element(v.begin(), v.end()); }
double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? NAN : s / static_cast<double>(v.size());
}

std::string make_request(const std::string& model, bool stream, int max_tokens, bool with_key) {
  std::string body = R"({"model":")" + model + R"(","messages":[{"role":"user","content":"Say hello to the benchmark."}],)" +
                     R"("max_tokens":)" + std::to_string(max_tokens) + (stream ? R"(,"stream":true})" : "}");
  std::string req = "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n";
  if (with_key) req += "authorization: Bearer sk-bench\r\n";
  return req + "content-length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// The epoll client: connections that each carry one request at a time (keep-alive).
class Load {
 public:
  struct Conn {
    int fd = -1;
    bool connected = false, busy = false;
    std::string in;
    std::size_t at = 0;
    std::size_t out_at = 0;
    Clock::time_point sent{};  // when the request was due (open loop) or sent
    Clock::time_point arrived{};  // concurrent() only: when the first event reached the socket (kernel stamp)
    Response res;
  };

  Load(std::uint16_t port, std::string request) : port_(port), request_(std::move(request)) {
    ep_ = epoll_create1(0);
    timer_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
    epoll_event e{EPOLLIN, {.u64 = kTimer}};
    epoll_ctl(ep_, EPOLL_CTL_ADD, timer_, &e);
  }
  ~Load() {
    for (auto& c : conns_)
      if (c.fd >= 0) close(c.fd);
    close(timer_);
    close(ep_);
  }

  /// Closed loop: `n` connections, each sends its next request as soon as the last is answered.
  Stats closed(int n, double warmup_s, double seconds) {
    for (int i = 0; i < n; ++i) start(open_conn(), Clock::now());
    on_done_ = [&](Conn& c) { start(c, Clock::now()); };
    Stats s;
    run_until(Clock::now() + seconds_of(warmup_s), nullptr);
    recording_ = &s;
    auto t0 = Clock::now();
    record_from_ = t0;
    run_until(t0 + seconds_of(seconds), nullptr);
    s.seconds = secs(Clock::now() - t0);
    recording_ = nullptr;
    return s;
  }

  /// Open loop: requests are due at a fixed rate whether or not earlier ones were answered; latency counts
  /// from when each was due (no coordinated omission). Idle connections are reused, new ones opened as needed.
  Stats open(double rate, double warmup_s, double seconds) {
    for (int i = 0; i < 16; ++i) idle_.push_back(open_conn_index());
    on_done_ = [&](Conn& c) { idle_.push_back(static_cast<std::size_t>(&c - conns_.data())); };
    Stats s;
    auto t0 = Clock::now();
    auto interval = duration<double>(1.0 / rate);
    std::uint64_t issued = 0;
    auto measure_from = t0 + seconds_of(warmup_s), end = measure_from + seconds_of(seconds);
    record_from_ = measure_from;
    bool measuring = false;
    while (Clock::now() < end) {
      auto now = Clock::now();
      if (!measuring && now >= measure_from) {
        measuring = true;
        recording_ = &s;
      }
      for (;;) {
        auto due = t0 + std::chrono::duration_cast<Clock::duration>(interval * static_cast<double>(issued));
        if (due > now) {
          arm(due);
          break;
        }
        std::size_t i;
        if (!idle_.empty()) {
          i = idle_.back();
          idle_.pop_back();
        } else {
          i = open_conn_index();
        }
        start(conns_[i], due);
        ++issued;
      }
      poll(end);
    }
    s.seconds = seconds;
    // what is still in flight is waited for (up to 5 s), so slow answers are not left out of the figures
    auto stop = Clock::now() + std::chrono::seconds(5);
    while (busy_ > 0 && Clock::now() < stop) poll(stop);
    s.failed += static_cast<std::size_t>(busy_);
    recording_ = nullptr;
    return s;
  }

  /// `n` streams at once (opened over `ramp_s`), each one request; waits for all (or `timeout_s`).
  Stats concurrent(int n, double ramp_s, double timeout_s) {
    Stats s;
    recording_ = &s;
    on_done_ = [](Conn&) {};
    keep_first_event_at_ = true;  // for SLUICE_BENCH_TTFE (the closed-loop rows skip it)
    {
      timespec r{}, m{};
      clock_gettime(CLOCK_REALTIME, &r);
      clock_gettime(CLOCK_MONOTONIC, &m);
      real_minus_steady_ = std::chrono::nanoseconds((r.tv_sec - m.tv_sec) * 1'000'000'000ll + (r.tv_nsec - m.tv_nsec));
    }
    auto t0 = Clock::now();
    record_from_ = t0;
    for (int i = 0; i < n; ++i) {
      auto due = t0 + std::chrono::duration_cast<Clock::duration>(duration<double>(ramp_s * i / n));
      while (Clock::now() < due) {
        arm(due);
        poll(due);
      }
      start(open_conn(), Clock::now());
    }
    auto deadline = t0 + seconds_of(timeout_s);
    while (busy_ > 0 && Clock::now() < deadline) poll(deadline);
    s.failed += static_cast<std::size_t>(busy_);
    s.seconds = secs(Clock::now() - t0);
    recording_ = nullptr;
    keep_first_event_at_ = false;
    return s;
  }

  int expect_tokens = -1;  // when set, a stream is intact only with this many tokens, [DONE] last

 private:
  static constexpr std::uint64_t kTimer = ~0ull;
  static constexpr int kOne = 1;
  static Clock::duration seconds_of(double s) {
    return std::chrono::duration_cast<Clock::duration>(duration<double>(s));
  }

  std::size_t open_conn_index() {
    int fd = connect_to(port_, false);
    if (fd < 0) die("connect");
    // Indexes stay valid: room is reserved up front (a stream run opens at most a few thousand).
    if (conns_.size() == conns_.capacity()) conns_.reserve(std::max<std::size_t>(8192, conns_.size() * 2));
    conns_.push_back(Conn{});
    conns_.back().fd = fd;
    std::size_t i = conns_.size() - 1;
    if (keep_first_event_at_) setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &kOne, sizeof kOne);
    epoll_event e{EPOLLIN | EPOLLOUT, {.u64 = i}};
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &e);
    return i;
  }
  Conn& open_conn() { return conns_[open_conn_index()]; }

  void start(Conn& c, Clock::time_point due) {
    c.busy = true;
    ++busy_;
    c.sent = due;
    c.arrived = {};
    c.out_at = 0;
    c.res.reset();
    if (c.connected) write_some(c);
  }

  void write_some(Conn& c) {
    while (c.busy && c.out_at < request_.size()) {
      ssize_t n = ::send(c.fd, request_.data() + c.out_at, request_.size() - c.out_at, MSG_NOSIGNAL);
      if (n <= 0) return;
      c.out_at += static_cast<std::size_t>(n);
    }
  }

  void arm(Clock::time_point due) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(due.time_since_epoch()).count();
    itimerspec t{};
    t.it_value.tv_sec = ns / 1'000'000'000;
    t.it_value.tv_nsec = ns % 1'000'000'000;
    if (t.it_value.tv_sec == 0 && t.it_value.tv_nsec == 0) t.it_value.tv_nsec = 1;
    timerfd_settime(timer_, TFD_TIMER_ABSTIME, &t, nullptr);
  }

  void run_until(Clock::time_point end, std::nullptr_t) {
    while (Clock::now() < end) poll(end);
  }

  void fail(Conn& c) {
    if (recording_) ++recording_->failed;
    epoll_ctl(ep_, EPOLL_CTL_DEL, c.fd, nullptr);
    close(c.fd);
    bool was_busy = c.busy;
    if (was_busy) --busy_;
    std::size_t i = static_cast<std::size_t>(&c - conns_.data());
    c = Conn{};
    c.fd = connect_to(port_, false);
    if (c.fd < 0) die("reconnect");
    epoll_event e{EPOLLIN | EPOLLOUT, {.u64 = i}};
    epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &e);
    on_done_(c);
  }

  void poll(Clock::time_point until) {
    epoll_event events[256];
    int wait = std::max(0, static_cast<int>(std::ceil(ms(until - Clock::now()))));
    int n = epoll_wait(ep_, events, 256, std::min(wait, 100));
    for (int k = 0; k < n; ++k) {
      if (events[k].data.u64 == kTimer) {
        std::uint64_t expirations;
        [[maybe_unused]] auto r = read(timer_, &expirations, sizeof expirations);
        continue;
      }
      Conn& c = conns_[events[k].data.u64];
      if (events[k].events & (EPOLLERR | EPOLLHUP) && !(events[k].events & EPOLLIN)) {
        fail(c);
        continue;
      }
      if (events[k].events & EPOLLOUT) {
        if (!c.connected) {
          c.connected = true;
          epoll_event e{EPOLLIN, {.u64 = events[k].data.u64}};
          epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &e);
        }
        write_some(c);
      }
      if (events[k].events & EPOLLIN) read_some(c);
    }
  }

  void read_some(Conn& c) {
    char buf[65536];
    for (;;) {
      bool stamp = keep_first_event_at_ && c.res.first_event == Clock::time_point{};
      timespec arrived{};
      ssize_t n;
      if (stamp) {
        iovec v{buf, sizeof buf};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
        msghdr m{};
        m.msg_iov = &v;
        m.msg_iovlen = 1;
        m.msg_control = control;
        m.msg_controllen = sizeof control;
        n = ::recvmsg(c.fd, &m, 0);
        if (n > 0)
          for (cmsghdr* h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
            if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_TIMESTAMPNS)
              std::memcpy(&arrived, CMSG_DATA(h), sizeof arrived);
      } else {
        n = ::recv(c.fd, buf, sizeof buf, 0);
      }
      if (n == 0 || (n < 0 && errno != EAGAIN)) {
        if (c.busy || !c.res.close) fail(c);
        return;
      }
      if (n < 0) return;
      if (!c.busy) {  // bytes nobody asked for
        fail(c);
        return;
      }
      c.in.append(buf, static_cast<std::size_t>(n));
      if (!c.res.feed(c.in, c.at)) {
        fail(c);
        return;
      }
      if (stamp && c.res.first_event != Clock::time_point{} && arrived.tv_sec != 0) {
        auto real = std::chrono::seconds(arrived.tv_sec) + std::chrono::nanoseconds(arrived.tv_nsec);
        c.arrived = Clock::time_point(std::chrono::duration_cast<Clock::duration>(real - real_minus_steady_));
      }
      if (c.res.state == Response::State::done) {
        complete(c);
        return;
      }
      if (c.at > 4096) {
        c.in.erase(0, c.at);
        c.at = 0;
      }
    }
  }

  void complete(Conn& c) {
    auto now = Clock::now();
    c.busy = false;
    --busy_;
    c.in.erase(0, c.at);
    c.at = 0;
    if (auto* s = recording_; s && c.sent >= record_from_) {
      if (c.res.status == 200) {
        ++s->ok;
        s->latency.push_back(ms(now - c.sent));
        s->events += static_cast<std::uint64_t>(c.res.events);
        if (c.res.first_event != Clock::time_point{}) {
          // concurrent(): when the first event reached the socket, so that the load generator's own delay in
          // reading it (its core is shared with the kernel's work for 2,000 sockets) is not counted as the proxy's
          bool stamped = c.arrived >= c.sent && c.arrived <= c.res.first_event;
          s->ttfe.push_back(ms((stamped ? c.arrived : c.res.first_event) - c.sent));
          if (keep_first_event_at_) {
            s->first_event_at.push_back(duration<double>(c.sent.time_since_epoch()).count());
            s->ttfe_read.push_back(ms(c.res.first_event - c.sent));
          }
        }
        if (expect_tokens < 0 || (c.res.tokens == expect_tokens && c.res.done_seen && !c.res.after_done))
          ++s->intact;
      } else {
        ++s->failed;
      }
    }
    if (c.res.close) {
      fail(c);
      if (recording_) --recording_->failed;  // a close after a whole answer is not a failure
      return;
    }
    on_done_(c);
  }

  std::uint16_t port_;
  bool keep_first_event_at_ = false;
  std::chrono::nanoseconds real_minus_steady_{0};  // CLOCK_REALTIME (the kernel's stamps) less the steady clock
  std::string request_;
  int ep_, timer_;
  std::vector<Conn> conns_;
  std::vector<std::size_t> idle_;
  int busy_ = 0;
  Stats* recording_ = nullptr;
  Clock::time_point record_from_{};
  std::function<void(Conn&)> on_done_;
};

// ---- processes under test --------------------------------------------------------------------------------

struct Proc {
  pid_t pid = -1;
  std::string name;
};

Proc spawn(const std::string& name, std::vector<std::string> argv, int core, const std::string& log) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    pin_to(core);
    int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(out, 1);
    dup2(out, 2);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::perror("exec");
    _exit(127);
  }
  return {pid, name};
}

void stop(Proc& p) {
  if (p.pid <= 0) return;
  kill(p.pid, SIGTERM);
  for (int i = 0; i < 100; ++i) {
    if (waitpid(p.pid, nullptr, WNOHANG) == p.pid) {
      p.pid = -1;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(p.pid, SIGKILL);
  waitpid(p.pid, nullptr, 0);
  p.pid = -1;
}

bool wait_listening(std::uint16_t port, Proc& p) {
  for (int i = 0; i < 200; ++i) {
    int fd = connect_to(port, true);
    if (fd >= 0) {
      close(fd);
      return true;
    }
    if (waitpid(p.pid, nullptr, WNOHANG) == p.pid) {
      p.pid = -1;
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

struct Usage {
  double rss_peak_mib = 0, rss_mib = 0, cpu_s = 0;
};

Usage usage_of(pid_t pid) {
  Usage u;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) u.rss_peak_mib = std::atof(line.c_str() + 6) / 1024;
    if (line.rfind("VmRSS:", 0) == 0) u.rss_mib = std::atof(line.c_str() + 6) / 1024;
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string all((std::istreambuf_iterator<char>(stat)), {});
  auto close_paren = all.rfind(')');
  if (close_paren != std::string::npos) {
    std::istringstream fields(all.substr(close_paren + 2));
    std::vector<std::string> f;
    std::string x;
    while (fields >> x) f.push_back(x);
    if (f.size() > 13)
      u.cpu_s = (std::atof(f[11].c_str()) + std::atof(f[12].c_str())) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  return u;
}

std::string http_get(std::uint16_t port, const std::string& path) {
  int fd = connect_to(port, true);
  if (fd < 0) return {};
  std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
  [[maybe_unused]] auto w = ::send(fd, req.data(), req.size(), MSG_NOSIGNAL);
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<std::size_t>(n));
  close(fd);
  return out;
}

double metric(const std::string& text, const std::string& series) {
  auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return 0;
  return std::atof(text.c_str() + at + series.size() + 2);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
}

// `slow_idle`: how many idle connections each proxy keeps to the slow port (256, as for the fast one; more with
// SLUICE_BENCH_WARM, so that row 4's warm-up leaves one for every stream).
std::string sluice_config(std::uint16_t port, std::uint16_t admin, std::uint16_t fast, std::uint16_t slow,
                          int slow_idle) {
  auto backend = [](const char* name, std::uint16_t p, int idle) {
    return std::string("  - name: ") + name + "\n    dialect: vllm\n    url: http://127.0.0.1:" + std::to_string(p) +
           "\n    max_inflight: 100000\n    max_idle_connections: " + std::to_string(idle) +
           "\n    health: { enabled: false }\n"
           "    timeouts: { connect: 5s, first_token: 60s, idle: 60s, total: 10m }\n";
  };
  return "server:\n  listen: 127.0.0.1:" + std::to_string(port) + "\n  admin_listen: 127.0.0.1:" +
         std::to_string(admin) + "\n  workers: 1\n  max_connections: 20000\n" +
         "log: { level: info, format: json, access_buffer: 64KiB, access_flush: 1s }\n"  // as nginx: buffer=64k
         "cache: { max_bytes: 64MiB, default_ttl: 10m, scope: key }\n"
         "backends:\n" +
         backend("fast", fast, 256) + backend("slow", slow, slow_idle) +
         "models:\n"
         "  - { name: bench, targets: [ { backend: fast } ] }\n"
         "  - { name: bench-slow, targets: [ { backend: slow } ] }\n"
         "  - name: bench-cached\n    targets: [ { backend: fast } ]\n"
         "    cache: { enabled: true, ttl: 10m, only_deterministic: false }\n"
         "keys:\n"
         "  - name: bench\n"
         "    key_sha256: \"c00397de4384b5bbaf14c02fe1ec7020d28d1eeab6a722c576c84b6678c41c29\"\n"  // sha256 of sk-bench

         "    limits: { rpm: 1000000000, tpm: 4000000000, concurrency: 100000, budget: 1000000000000 }\n";
}

std::string nginx_config(const std::string& dir, std::uint16_t port, std::uint16_t slow_port, std::uint16_t fast,
                         std::uint16_t slow, int slow_idle) {
  auto server = [](std::uint16_t listen, const char* upstream) {
    return "  server {\n    listen 127.0.0.1:" + std::to_string(listen) +
           " backlog=4096;\n    location / {\n      proxy_pass http://" + upstream +
           ";\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n"
           "      proxy_buffering off;\n    }\n  }\n";
  };
  return "daemon off;\nmaster_process off;\nworker_processes 1;\nworker_rlimit_nofile 20000;\n"
         "error_log " + dir + "/nginx-error.log warn;\npid " + dir + "/nginx.pid;\n"
         "events { worker_connections 16384; }\n"
         "http {\n  access_log " + dir + "/nginx-access.log combined buffer=64k;\n"
         "  client_body_temp_path " + dir + "/body;\n  proxy_temp_path " + dir + "/proxy;\n"
         "  upstream fast { server 127.0.0.1:" + std::to_string(fast) + "; keepalive 256; }\n"
         "  upstream slow { server 127.0.0.1:" + std::to_string(slow) + "; keepalive " + std::to_string(slow_idle) + "; }\n" +
         server(port, "fast") + server(slow_port, "slow") + "}\n";
}

std::string find_nginx() {
  if (const char* n = std::getenv("NGINX")) return n;
  for (const char* p : {"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"})
    if (access(p, X_OK) == 0) return p;
  return {};
}

// ---- the run ---------------------------------------------------------------------------------------------

struct Target {
  std::string name;
  std::uint16_t port = 0, slow_port = 0, admin = 0;
  std::string model = "bench", slow_model = "bench-slow";
  bool key = false;
  Proc proc;
  // results
  Stats nonstream, open1k, open3k, stream, slow, cached;
  Usage slow_before, slow_after;
  double overhead_sum_s = 0, overhead_count = 0;  // sluice_overhead_seconds over the 1,000 req/s runs
  double overhead_metric_ms() const { return overhead_count > 0 ? overhead_sum_s / overhead_count * 1000 : NAN; }
  std::vector<double> round_rates;                 // row 1, req/s in each round
  std::vector<double> round_p99_1k, round_p99_3k;  // row 2, p99 ms in each round
  bool up = false;  // wanted, and (a proxy) started and listening: measured
};

struct Options {
  double seconds = 5, warmup = 1;
  int rounds = 3;  // rows 1 and 2: alternating rounds
  int streams = 2000;
  // SLUICE_BENCH_WARM (a diagnostic, not part of the table's method): before row 4, as many 4-second streams,
  // so that each proxy starts row 4 with an idle backend connection for every stream and none connects on the
  // way to a first event. What is left of the time to first event is the proxy's own setting-up.
  bool warm_pools = std::getenv("SLUICE_BENCH_WARM") != nullptr;
  int slow_idle() const { return warm_pools ? std::max(streams, 256) : 256; }
  std::vector<std::string> only;
  std::string rows = "12345";  // which rows to measure (--rows 4: the slow streams alone)
  bool row(char r) const { return rows.find(r) != std::string::npos; }
};

// Adds one round's figures to what a target gathered in the others: requests over seconds, latencies pooled.
void pool(Stats& all, const Stats& s) {
  all.ok += s.ok;
  all.failed += s.failed;
  all.seconds += s.seconds;
  all.latency.insert(all.latency.end(), s.latency.begin(), s.latency.end());
}

// One open-loop run at `rate` req/s of one target, added to its row 2; for Sluice at 1,000 req/s also what its
// sluice_overhead_seconds counted meanwhile (the metric that should agree with the added mean).
void open_loop_round(Target& t, const Options& o, double rate, int round) {
  const bool overhead = t.admin != 0 && rate == 1000;
  std::string before = overhead ? http_get(t.admin, "/metrics") : "";
  std::fprintf(stderr, "[%s] open loop %.0f req/s, round %d of %d\n", t.name.c_str(), rate, round + 1, o.rounds);
  Stats s = Load(t.port, make_request(t.model, false, 16, t.key)).open(rate, o.warmup, o.seconds);
  (rate == 1000 ? t.round_p99_1k : t.round_p99_3k).push_back(percentile(s.latency, .99));
  pool(rate == 1000 ? t.open1k : t.open3k, s);
  if (overhead) {
    std::string after = http_get(t.admin, "/metrics");
    const std::string series = R"(sluice_overhead_seconds_%s{endpoint="chat/completions"})";
    char sum[128], count[128];
    std::snprintf(sum, sizeof sum, series.c_str(), "sum");
    std::snprintf(count, sizeof count, series.c_str(), "count");
    t.overhead_sum_s += metric(after, sum) - metric(before, sum);
    t.overhead_count += metric(after, count) - metric(before, count);
  }
}

// Rows 1 (which row 5 compares with) and 2, in rounds: each round measures each of these rows on every target
// that is up, one target after another.
void measure_rounds(std::initializer_list<Target*> targets, const Options& o) {
  for (int r = 0; r < o.rounds; ++r) {
    if (o.row('1') || o.row('5')) {
      for (Target* t : targets) {
        if (!t->up) continue;
        std::fprintf(stderr, "[%s] non-stream saturation, round %d of %d\n", t->name.c_str(), r + 1, o.rounds);
        Stats s = Load(t->port, make_request(t->model, false, 16, t->key)).closed(64, o.warmup, o.seconds);
        t->round_rates.push_back(s.rate());
        pool(t->nonstream, s);
      }
    }
    if (o.row('2')) {
      for (double rate : {1000.0, 3000.0})
        for (Target* t : targets)
          if (t->up) open_loop_round(*t, o, rate, r);
    }
  }
}

void measure(Target& t, const Options& o, bool sluice) {
  if (o.row('3')) {
    std::fprintf(stderr, "[%s] stream saturation\n", t.name.c_str());
    Load l(t.port, make_request(t.model, true, 64, t.key));
    l.expect_tokens = 64;
    t.stream = l.closed(64, o.warmup, o.seconds);
  }
  if (sluice && o.row('5')) {
    std::fprintf(stderr, "[%s] cache hits\n", t.name.c_str());
    t.cached = Load(t.port, make_request("bench-cached", false, 16, t.key)).closed(64, o.warmup, o.seconds);
  }
  if (o.row('4')) {
    std::fprintf(stderr, "[%s] %d slow streams\n", t.name.c_str(), o.streams);
    Load l(t.slow_port, make_request(t.slow_model, true, 200, t.key));
    l.expect_tokens = 200;
    if (o.warm_pools) {
      Load warm(t.slow_port, make_request(t.slow_model, true, 80, t.key));  // 80 tokens: 4 s, all open at once
      warm.expect_tokens = 80;
      const Stats w = warm.concurrent(o.streams, 2.0, 60);
      std::fprintf(stderr, "[%s] warm-up: %zu streams, %zu failed\n", t.name.c_str(), w.ok, w.failed);
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    if (t.proc.pid > 0) t.slow_before = usage_of(t.proc.pid);  // CPU seconds: row 4's streams only
    t.slow = l.concurrent(o.streams, 2.0, 60);
    if (t.proc.pid > 0) t.slow_after = usage_of(t.proc.pid);
    // SLUICE_BENCH_TTFE=PREFIX: row 4's streams as "sent_at_s ttfe_ms read_ms" lines in PREFIX-<target> (read_ms:
    // when the load generator read the first event, where ttfe_ms is when it reached the socket), to find when
    // the slow first events came (the steady clock is perf's `-k CLOCK_MONOTONIC`).
    if (const char* prefix = std::getenv("SLUICE_BENCH_TTFE")) {
      if (FILE* f = std::fopen((std::string(prefix) + "-" + t.name).c_str(), "w")) {
        for (std::size_t k = 0; k < t.slow.ttfe.size(); ++k)
          std::fprintf(f, "%.6f %.3f %.3f\n", t.slow.first_event_at[k], t.slow.ttfe[k], t.slow.ttfe_read[k]);
        std::fclose(f);
      }
    }
  }
}

void print_table(const Target& direct, const Target& nginx, const Target& sluice, const Options& o) {
  auto cell = [](double v, int prec = 0) {
    char b[32];
    if (std::isnan(v)) return std::string("-");
    std::snprintf(b, sizeof b, "%.*f", prec, v);
    return std::string(b);
  };
  auto ratio = [](double a, double b) {
    char r[32];
    if (std::isnan(a) || std::isnan(b) || b == 0) return std::string("-");
    std::snprintf(r, sizeof r, "%.2f×", a / b);
    return std::string(r);
  };
  bool has_nginx = nginx.up, has_sluice = sluice.up, has_direct = direct.up;
  std::printf("\n| row | measure | direct | nginx | sluice | sluice/nginx | sluice/direct | target | met |\n");
  std::printf("|-----|---------|-------:|------:|-------:|-------------:|--------------:|--------|-----|\n");
  auto line = [&](const char* row, const std::string& what, double d, double n, double s, int prec,
                  const std::string& target, std::optional<bool> met) {
    if (!o.row(row[0])) return;  // not measured in this run (--rows)
    std::printf("| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", row, what.c_str(),
                has_direct ? cell(d, prec).c_str() : "-", has_nginx ? cell(n, prec).c_str() : "-",
                has_sluice ? cell(s, prec).c_str() : "-", has_nginx && has_sluice ? ratio(s, n).c_str() : "-",
                has_direct && has_sluice ? ratio(s, d).c_str() : "-", target.c_str(),
                met ? (*met ? "yes" : "**no**") : "");
  };
  auto when = [&](bool cond) -> std::optional<bool> {
    if (!has_nginx || !has_sluice) return std::nullopt;
    return cond;
  };
  const auto &dn = direct.nonstream, &nn = nginx.nonstream, &sn = sluice.nonstream;
  line("1", "non-stream, 64 conns: req/s", dn.rate(), nn.rate(), sn.rate(), 0, "≥ 1.0× nginx",
       when(sn.rate() >= nn.rate()));
  line("1", "… p50 ms", percentile(dn.latency, .5), percentile(nn.latency, .5), percentile(sn.latency, .5), 3, "", {});
  line("1", "… p99 ms", percentile(dn.latency, .99), percentile(nn.latency, .99), percentile(sn.latency, .99), 3, "",
       {});
  line("1", "… failed", static_cast<double>(dn.failed), static_cast<double>(nn.failed),
       static_cast<double>(sn.failed), 0, "0", {});
  const Stats& d1 = direct.open1k;
  for (int k = 0; k < 2; ++k) {
    const Stats& d = k ? direct.open3k : direct.open1k;
    const Stats& n = k ? nginx.open3k : nginx.open1k;
    const Stats& s = k ? sluice.open3k : sluice.open1k;
    std::string rate = k ? "3,000" : "1,000";
    auto added = [&](const Stats& x, double p) {
      return p < 0 ? maximum(x.latency) - maximum(d.latency) : percentile(x.latency, p) - percentile(d.latency, p);
    };
    line("2", rate + " req/s: p50 ms (direct) / added", percentile(d.latency, .5), added(n, .5), added(s, .5), 3, "",
         {});
    line("2", rate + " req/s: p99 ms (direct) / added", percentile(d.latency, .99), added(n, .99), added(s, .99), 3,
         "added ≤ nginx's + 0.1 ms", has_direct ? when(added(s, .99) <= added(n, .99) + 0.1) : std::nullopt);
    line("2", rate + " req/s: max ms (direct) / added", maximum(d.latency), added(n, -1), added(s, -1), 3, "", {});
    line("2", rate + " req/s: answered / failed", static_cast<double>(d.ok), static_cast<double>(n.ok),
         static_cast<double>(s.ok), 0,
         "failed: " + std::to_string(d.failed) + "/" + std::to_string(n.failed) + "/" + std::to_string(s.failed), {});
  }
  line("2", "1,000 req/s: mean ms (direct) / added", mean(d1.latency), mean(nginx.open1k.latency) - mean(d1.latency),
       mean(sluice.open1k.latency) - mean(d1.latency), 3, "", {});
  line("2", "1,000 req/s: sluice_overhead_seconds mean ms", NAN, NAN, sluice.overhead_metric_ms(), 3,
       "≈ the added mean above", {});
  const auto &ds = direct.stream, &ns = nginx.stream, &ss = sluice.stream;
  line("3", "SSE 64 tokens, 64 conns: responses/s", ds.rate(), ns.rate(), ss.rate(), 0, "", {});
  line("3", "… events/s", ds.events_rate(), ns.events_rate(), ss.events_rate(), 0, "≥ 1.0× nginx",
       when(ss.events_rate() >= ns.events_rate()));
  line("3", "… time to first event p50 ms", percentile(ds.ttfe, .5), percentile(ns.ttfe, .5), percentile(ss.ttfe, .5),
       3, "", {});
  line("3", "… time to first event p99 ms", percentile(ds.ttfe, .99), percentile(ns.ttfe, .99),
       percentile(ss.ttfe, .99), 3, "", {});
  line("3", "… intact / failed", static_cast<double>(ds.intact), static_cast<double>(ns.intact),
       static_cast<double>(ss.intact), 0,
       "failed: " + std::to_string(ds.failed) + "/" + std::to_string(ns.failed) + "/" + std::to_string(ss.failed), {});
  const auto &dl = direct.slow, &nl = nginx.slow, &sl = sluice.slow;
  std::string n = std::to_string(o.streams);
  line("4", n + " slow streams: intact", static_cast<double>(dl.intact), static_cast<double>(nl.intact),
       static_cast<double>(sl.intact), 0, "all " + n,
       has_sluice ? std::optional<bool>(sl.intact == static_cast<std::size_t>(o.streams)) : std::nullopt);
  line("4", "… peak RSS MiB", NAN, nginx.slow_after.rss_peak_mib, sluice.slow_after.rss_peak_mib, 1, "≤ 64 MiB",
       has_sluice ? std::optional<bool>(sluice.slow_after.rss_peak_mib <= 64) : std::nullopt);
  line("4", "… CPU seconds", NAN, nginx.slow_after.cpu_s - nginx.slow_before.cpu_s,
       sluice.slow_after.cpu_s - sluice.slow_before.cpu_s, 2, "", {});
  line("4", "… time to first event p50 ms", percentile(dl.ttfe, .5), percentile(nl.ttfe, .5), percentile(sl.ttfe, .5),
       2, "", {});
  line("4", "… time to first event p99 ms", percentile(dl.ttfe, .99), percentile(nl.ttfe, .99),
       percentile(sl.ttfe, .99), 2, "≤ nginx", when(percentile(sl.ttfe, .99) <= percentile(nl.ttfe, .99)));
  line("5", "cache hits, 64 conns: req/s (nginx column: sluice row 1)", NAN, sn.rate(), sluice.cached.rate(), 0,
       "≥ 2× row 1", has_sluice ? std::optional<bool>(sluice.cached.rate() >= 2 * sn.rate()) : std::nullopt);
  line("5", "… p50 ms", NAN, percentile(sn.latency, .5), percentile(sluice.cached.latency, .5), 3, "", {});
  line("5", "… p99 ms", NAN, percentile(sn.latency, .99), percentile(sluice.cached.latency, .99), 3, "", {});

  // Rows 1 and 2 round by round: the figures measured next to each other.
  if (o.row('1') || o.row('5')) {
    std::printf("\nRow 1 by round (req/s, %d rounds of %.0f s each):", o.rounds, o.seconds);
    for (const Target* t : {&direct, &nginx, &sluice}) {
      if (t->round_rates.empty()) continue;
      std::printf("\n- %s:", t->name.c_str());
      for (double r : t->round_rates) std::printf(" %.0f", r);
    }
    if (nginx.round_rates.size() == sluice.round_rates.size() && !sluice.round_rates.empty()) {
      std::printf("\n- sluice/nginx:");
      for (std::size_t k = 0; k < sluice.round_rates.size(); ++k)
        std::printf(" %.2f", nginx.round_rates[k] > 0 ? sluice.round_rates[k] / nginx.round_rates[k] : NAN);
    }
    std::printf("\n");
  }
  if (o.row('2')) {
    // A proxy's p99 less the same round's direct p99 (the proxy's own p99 when direct was not measured).
    std::printf(direct.up ? "\nRow 2 by round (p99 ms: direct's, and what each proxy added to it in the same round):"
                          : "\nRow 2 by round (p99 ms):");
    for (int k = 0; k < 2; ++k) {
      auto of = [k](const Target& t) -> const std::vector<double>& { return k ? t.round_p99_3k : t.round_p99_1k; };
      const auto& d = of(direct);
      for (const Target* t : {&direct, &nginx, &sluice}) {
        if (of(*t).empty()) continue;
        std::printf("\n- %s req/s, %s:", k ? "3,000" : "1,000", t->name.c_str());
        for (std::size_t r = 0; r < of(*t).size(); ++r) {
          const bool own = t == &direct || r >= d.size();
          std::printf(own ? " %.3f" : " %+.3f", of(*t)[r] - (own ? 0 : d[r]));
        }
      }
    }
    std::printf("\n");
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&] { return i + 1 < argc ? std::string(argv[++i]) : std::string(); };
    if (a == "--seconds") o.seconds = std::atof(next().c_str());
    else if (a == "--rounds") o.rounds = std::max(1, std::atoi(next().c_str()));
    else if (a == "--streams") o.streams = std::atoi(next().c_str());
    else if (a == "--rows") {
      o.rows = next();
      if (o.rows.empty() || o.rows.find_first_not_of("12345") != std::string::npos) {
        std::fprintf(stderr, "%s: --rows takes row numbers, e.g. 4 or 135\n", argv[0]);
        return 2;
      }
    }
    else if (a == "--mock") {  // only the mock backend, on the given ports (for profiling by hand)
      std::uint16_t fast = static_cast<std::uint16_t>(std::atoi(next().c_str()));
      std::uint16_t slow = static_cast<std::uint16_t>(std::atoi(next().c_str()));
      int fast_fd = listen_on(fast), slow_fd = listen_on(slow);
      std::printf("mock backend: fast on %u, slow on %u\n", fast, slow);
      std::fflush(stdout);
      run_mock(fast_fd, slow_fd);
    }
    else if (a == "--only") {
      std::stringstream list(next());
      for (std::string x; std::getline(list, x, ',');) o.only.push_back(x);
    } else {
      std::fprintf(stderr,
                   "usage: %s [--seconds S] [--rounds N] [--streams N] [--only direct,nginx,sluice] [--rows 12345]\n"
                   "       %s --mock FAST_PORT SLOW_PORT   (the mock backend alone)\n",
                   argv[0], argv[0]);
      return 2;
    }
  }
  auto wanted = [&](const std::string& n) { return o.only.empty() || std::count(o.only.begin(), o.only.end(), n); };
  signal(SIGPIPE, SIG_IGN);
  rlimit files{};
  getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  setrlimit(RLIMIT_NOFILE, &files);
  if (files.rlim_cur < static_cast<rlim_t>(3 * o.streams + 200))
    std::fprintf(stderr, "proxy_bench: only %llu file descriptors; the stream row may fail\n",
                 static_cast<unsigned long long>(files.rlim_cur));

  char dir_template[] = "/tmp/sluice-bench-XXXXXX";
  std::string dir = mkdtemp(dir_template);

  // The backend: a fork, on core 1 (with the proxy under test).
  std::uint16_t fast = 0, slow = 0;
  int fast_fd = listen_on(fast), slow_fd = listen_on(slow);
  Proc mock{fork(), "mock"};
  if (mock.pid == 0) {
    pin_to(1);
    run_mock(fast_fd, slow_fd);
  }
  close(fast_fd);
  close(slow_fd);
  pin_to(0);

  Target direct, nginx, sluice;
  direct.name = "direct", nginx.name = "nginx", sluice.name = "sluice";
  direct.port = fast, direct.slow_port = slow;
  direct.up = wanted("direct");

  // Both proxies are started first and stay up until the end (idle while the other is measured), so that row
  // 1's rounds can alternate between them.
  std::string nginx_bin = find_nginx();
  if (wanted("nginx") && !nginx_bin.empty()) {
    nginx.port = free_port();
    nginx.slow_port = free_port();
    mkdir((dir + "/body").c_str(), 0755);
    mkdir((dir + "/proxy").c_str(), 0755);
    write_file(dir + "/nginx.conf", nginx_config(dir, nginx.port, nginx.slow_port, fast, slow, o.slow_idle()));
    nginx.proc = spawn("nginx", {nginx_bin, "-c", dir + "/nginx.conf", "-p", dir}, 1, dir + "/nginx.out");
    nginx.up = wait_listening(nginx.port, nginx.proc);
    if (!nginx.up) std::fprintf(stderr, "proxy_bench: nginx did not start (see %s/nginx.out)\n", dir.c_str());
  } else if (wanted("nginx")) {
    std::fprintf(stderr, "proxy_bench: nginx is not installed (make bench-deps); its column stays empty\n");
  }
  const char* other_binary = std::getenv("SLUICE_BINARY");
  const std::string sluice_binary = other_binary && *other_binary ? other_binary : SLUICE_BINARY;
  if (wanted("sluice")) {
    sluice.port = free_port();
    sluice.slow_port = sluice.port;
    sluice.admin = free_port();
    sluice.key = true;
    write_file(dir + "/sluice.yaml", sluice_config(sluice.port, sluice.admin, fast, slow, o.slow_idle()));
    sluice.proc = spawn("sluice", {sluice_binary, "serve", "--config", dir + "/sluice.yaml"}, 1,
                        dir + "/sluice.log");
    sluice.up = wait_listening(sluice.port, sluice.proc);
    if (!sluice.up) std::fprintf(stderr, "proxy_bench: sluice did not start (see %s/sluice.log)\n", dir.c_str());
  }

  measure_rounds({&direct, &nginx, &sluice}, o);
  if (direct.up) measure(direct, o, false);
  if (nginx.up) measure(nginx, o, false);
  if (sluice.up) measure(sluice, o, true);
  stop(nginx.proc);
  stop(sluice.proc);
  kill(mock.pid, SIGKILL);
  waitpid(mock.pid, nullptr, 0);

  std::printf("Sluice vs nginx (proxy_bench, %.0f s per measure after %.0f s warm-up; load generator on core 0, "
              "proxy and mock backend on core 1; Sluice: 1 worker, key + limits + budget + metrics + access log; "
              "nginx: 1 worker, proxy_buffering off, access log)\n",
              o.seconds, o.warmup);
  print_table(direct, nginx, sluice, o);
  std::printf("\nSluice binary: %s\nLogs and configs: %s\n", sluice_binary.c_str(), dir.c_str());
  return 0;
}
