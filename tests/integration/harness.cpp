#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>

extern char** environ;

namespace sluice::test {

using Clock = std::chrono::steady_clock;

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (cond()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return cond();
}

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// poll() for readability with a deadline; true when readable (or closed).
bool readable(int fd, std::chrono::milliseconds limit) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, static_cast<int>(limit.count())) > 0;
}

// A socket bound to an ephemeral 127.0.0.1 port (written to `port`); -1 when that fails.
int bind_loopback(std::uint16_t& port, bool reuse_address) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  if (reuse_address) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  port = ntohs(a.sin_port);
  return fd;
}

int listen_loopback(std::uint16_t& port) {
  int fd = bind_loopback(port, true);
  if (fd < 0 || ::listen(fd, 128) != 0) throw std::runtime_error("listen failed");
  return fd;
}

int connect_loopback(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

bool write_all(int fd, std::string_view bytes) {
  while (!bytes.empty()) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Index just past the blank line ending an HTTP head, or npos.
std::size_t head_end(const std::string& s) {
  auto p = s.find("\r\n\r\n");
  return p == std::string::npos ? p : p + 4;
}

std::size_t content_length(const std::string& head) {
  auto v = header_of(head, "content-length");
  return v.empty() ? 0 : std::stoul(v);
}

}  // namespace

// ---- UpstreamConn ----

UpstreamConn::~UpstreamConn() {
  if (fd_ >= 0) ::close(fd_);
}

std::string UpstreamConn::read_request(std::chrono::milliseconds limit) {
  auto end = Clock::now() + limit;
  char tmp[16384];
  for (;;) {
    auto he = head_end(buffered_);
    if (he != std::string::npos) {
      auto need = he + content_length(buffered_.substr(0, he));
      if (buffered_.size() >= need) {
        auto req = buffered_.substr(0, need);
        buffered_.erase(0, need);
        return req;
      }
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    if (left.count() <= 0 || !readable(fd_, left)) return {};
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return {};
    buffered_.append(tmp, static_cast<std::size_t>(n));
  }
}

bool UpstreamConn::write(std::string_view bytes) {
  return write_all(fd_, bytes);
}

bool UpstreamConn::write_sse_header() {
  return write(
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
      "Transfer-Encoding: chunked\r\n\r\n");
}

bool UpstreamConn::write_chunk(std::string_view bytes) {
  char head[32];
  std::snprintf(head, sizeof head, "%zx\r\n", bytes.size());
  return write(std::string(head) + std::string(bytes) + "\r\n");
}

bool UpstreamConn::wait_closed(std::chrono::milliseconds limit) {
  auto end = Clock::now() + limit;
  char tmp[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    if (left.count() <= 0) return false;
    if (!readable(fd_, left)) return false;
    ssize_t n = ::recv(fd_, tmp, sizeof tmp, MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) return true;
    if (n > 0) buffered_.append(tmp, static_cast<std::size_t>(n));
  }
}

void UpstreamConn::reset() {
  linger l{1, 0};
  setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd_);
  fd_ = -1;
}

// ---- ScriptedUpstream ----

ScriptedUpstream::ScriptedUpstream(Handler handler) : handler_(std::move(handler)) {
  listen_fd_ = listen_loopback(port_);
  acceptor_ = std::thread([this] {
    while (!stop_) {
      if (!readable(listen_fd_, 50ms)) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      ++accepted_;
      std::lock_guard lock(mutex_);
      conns_.emplace_back([this, fd] {
        UpstreamConn c(fd);
        handler_(c);
      });
    }
  });
}

ScriptedUpstream::~ScriptedUpstream() {
  stop_ = true;
  acceptor_.join();
  ::close(listen_fd_);
  std::vector<std::thread> conns;
  {
    std::lock_guard lock(mutex_);
    conns.swap(conns_);
  }
  for (auto& t : conns) t.join();
}

std::string ScriptedUpstream::url(const std::string& prefix) const {
  return "http://127.0.0.1:" + std::to_string(port_) + prefix;
}

std::vector<std::string> ScriptedUpstream::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

void ScriptedUpstream::record(const std::string& req) {
  std::lock_guard lock(mutex_);
  requests_.push_back(req);
}

std::string body_of(const std::string& raw) {
  auto he = head_end(raw);
  return he == std::string::npos ? std::string() : raw.substr(he);
}

std::string header_of(const std::string& raw, const std::string& name) {
  auto he = head_end(raw);
  std::string head = lower(raw.substr(0, he == std::string::npos ? raw.size() : he));
  auto key = "\r\n" + lower(name) + ":";
  auto p = head.find(key);
  if (p == std::string::npos) return {};
  auto start = p + key.size();
  auto end = head.find("\r\n", start);
  std::string v = raw.substr(start, end - start);
  while (!v.empty() && v.front() == ' ') v.erase(0, 1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\r')) v.pop_back();
  return v;
}

double metric_value(std::uint16_t admin_port, const std::string& series) {
  auto text = HttpClient(admin_port).request("GET", "/metrics").body;
  auto at = text.find("\n" + series + " ");
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + series.size() + 2));
}

// ---- HttpClient ----

std::string HttpResponse::header(const std::string& name) const {
  auto it = headers.find(lower(name));
  return it == headers.end() ? std::string() : it->second;
}

HttpClient::HttpClient(std::uint16_t port) : fd_(connect_loopback(port)) {}
HttpClient::~HttpClient() {
  close();
}

void HttpClient::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

bool HttpClient::send_raw(std::string_view bytes) {
  return fd_ >= 0 && write_all(fd_, bytes);
}

bool HttpClient::fill(std::chrono::milliseconds limit) {
  if (fd_ < 0 || !readable(fd_, limit)) return false;
  char tmp[65536];
  ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
  if (n <= 0) return false;
  buf_.append(tmp, static_cast<std::size_t>(n));
  return true;
}

HttpResponse HttpClient::read_head() {
  HttpResponse r;
  auto end = Clock::now() + 15s;
  while (head_end(buf_) == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    if (left.count() <= 0 || !fill(left)) return r;
  }
  auto he = head_end(buf_);
  std::string head = buf_.substr(0, he);
  buf_.erase(0, he);
  if (head.size() < 12) return r;
  r.status = std::stoi(head.substr(9, 3));
  std::size_t pos = head.find("\r\n") + 2;
  while (pos < head.size()) {
    auto eol = head.find("\r\n", pos);
    if (eol == pos) break;
    auto line = head.substr(pos, eol - pos);
    auto colon = line.find(':');
    if (colon != std::string::npos) {
      auto v = line.substr(colon + 1);
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      r.headers[lower(line.substr(0, colon))] = v;
    }
    pos = eol + 2;
  }
  return r;
}

std::string HttpClient::read_some(std::chrono::milliseconds limit) {
  if (buf_.empty()) fill(limit);
  std::string out;
  out.swap(buf_);
  return out;
}

HttpResponse HttpClient::read_response() {
  HttpResponse r = read_head();
  if (r.status == 0) return r;
  auto end = Clock::now() + 30s;
  auto left = [&] { return std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()); };
  if (lower(r.header("transfer-encoding")) == "chunked") {
    for (;;) {
      auto eol = buf_.find("\r\n");
      while (eol == std::string::npos) {
        if (left().count() <= 0 || !fill(left())) return r.status = 0, r;
        eol = buf_.find("\r\n");
      }
      std::size_t size = std::stoul(buf_.substr(0, eol), nullptr, 16);
      while (buf_.size() < eol + 2 + size + 2)
        if (left().count() <= 0 || !fill(left())) return r.status = 0, r;
      r.body.append(buf_, eol + 2, size);
      buf_.erase(0, eol + 2 + size + 2);
      if (size == 0) break;
    }
  } else if (!r.header("content-length").empty()) {
    std::size_t n = std::stoul(r.header("content-length"));
    while (buf_.size() < n)
      if (left().count() <= 0 || !fill(left())) return r.status = 0, r;
    r.body = buf_.substr(0, n);
    buf_.erase(0, n);
  } else {  // delimited by close
    while (fill(left())) {
    }
    r.body.swap(buf_);
  }
  return r;
}

HttpResponse HttpClient::request(const std::string& method, const std::string& target,
                                 const std::string& body, const std::map<std::string, std::string>& headers) {
  std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  bool has_ctype = false;
  for (const auto& [k, v] : headers) {
    req += k + ": " + v + "\r\n";
    if (lower(k) == "content-type") has_ctype = true;
  }
  if (!body.empty() && !has_ctype) req += "Content-Type: application/json\r\n";
  if (method == "POST") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  if (!send_raw(req)) return {};
  return read_response();
}

HttpResponse post_json(std::uint16_t port, const std::string& path, const std::string& body,
                       const std::string& key, const std::map<std::string, std::string>& headers) {
  HttpClient c(port);
  auto h = headers;
  if (!key.empty()) h["Authorization"] = "Bearer " + key;
  return c.request("POST", path, body, h);
}

std::string raw_post(const std::string& path, const std::string& body, const std::string& key,
                     const std::string& extra_headers) {
  return "POST " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + key + "\r\n" +
         extra_headers + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < body.size()) {
    auto eol = body.find('\n', pos);
    if (eol == std::string::npos) eol = body.size();
    auto line = body.substr(pos, eol - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.rfind("data: ", 0) == 0) out.push_back(line.substr(6));
    pos = eol + 1;
  }
  return out;
}

// ---- TestGateway ----

std::string test_config_yaml(const std::string& backends_and_models, const std::string& extra) {
  return "server: { listen: 127.0.0.1:0, admin_listen: 127.0.0.1:0, workers: 1, drain_timeout: 10s }\n"
         "log: { level: warn, format: text, access_log: false }\n" +
         backends_and_models +
         "keys:\n"
         "  - { name: tester, key_sha256: \"KEYDIGEST\" }\n" +
         extra;
}

TestGateway::TestGateway(const std::string& yaml_in) {
  spdlog::set_level(spdlog::level::warn);  // keep test output to what matters
  std::string yaml = yaml_in;
  // sha256("sk-test")
  for (auto p = yaml.find("KEYDIGEST"); p != std::string::npos; p = yaml.find("KEYDIGEST"))
    yaml.replace(p, 9, "f3abf2a6cc4f00987743db5f544ba345b4899ae31f326d8ee9c4816de153c9e0");
  auto r = load_config_text(yaml, [](const std::string&) { return std::nullopt; });
  if (!r.config) {
    std::string all;
    for (const auto& e : r.errors) all += e.to_string() + "; ";
    throw std::runtime_error("test config invalid: " + all);
  }
  gw_ = std::make_unique<server::Gateway>(std::move(*r.config));
  gw_->start();
}

TestGateway::~TestGateway() {
  gw_->stop();
  gw_->wait();
}

// ---- Child ----

Child::Child(const std::vector<std::string>& argv) {
  int out[2], err[2];
  if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) throw std::runtime_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  if (posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) throw std::runtime_error("spawn");
  posix_spawn_file_actions_destroy(&fa);
  ::close(out[1]);
  ::close(err[1]);
  out_fd_ = out[0];
  err_fd_ = err[0];
  fcntl(out_fd_, F_SETFL, O_NONBLOCK);
  fcntl(err_fd_, F_SETFL, O_NONBLOCK);
}

Child::~Child() {
  if (!exited_) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
  }
  ::close(out_fd_);
  ::close(err_fd_);
}

void Child::drain() {
  char tmp[4096];
  for (auto [fd, dst] : {std::pair{out_fd_, &out_}, std::pair{err_fd_, &err_}}) {
    for (;;) {
      ssize_t n = ::read(fd, tmp, sizeof tmp);
      if (n <= 0) break;
      dst->append(tmp, static_cast<std::size_t>(n));
    }
  }
}

std::string Child::wait_for_stderr(const std::string& needle, std::chrono::milliseconds limit) {
  auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    drain();
    auto p = err_.find(needle);
    if (p != std::string::npos) {
      auto start = err_.rfind('\n', p);
      start = start == std::string::npos ? 0 : start + 1;
      return err_.substr(start, err_.find('\n', p) - start);
    }
    if (!exited_ && waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    if (exited_) {
      drain();
      return {};
    }
    std::this_thread::sleep_for(5ms);
  }
  return {};
}

int Child::wait_exit(std::chrono::milliseconds limit) {
  auto end = Clock::now() + limit;
  while (!exited_ && Clock::now() < end) {
    drain();
    if (waitpid(pid_, &status_, WNOHANG) == pid_)
      exited_ = true;
    else
      std::this_thread::sleep_for(5ms);
  }
  drain();
  if (!exited_) {
    ::kill(pid_, SIGKILL);
    waitpid(pid_, &status_, 0);
    exited_ = true;
    return -1;
  }
  return WIFEXITED(status_) ? WEXITSTATUS(status_) : 128 + WTERMSIG(status_);
}

void Child::signal(int sig) {
  ::kill(pid_, sig);
}

const std::string& sluice_binary() {
  static const std::string path = [] {
    const char* other = std::getenv("SLUICE_BINARY");
    return std::string(other && *other ? other : SLUICE_BINARY);
  }();
  return path;
}

RunningGateway::RunningGateway(const std::string& config) : child({sluice_binary(), "serve", "--config", config}) {
  auto line = child.wait_for_stderr("listening on");
  std::smatch m;
  if (std::regex_search(line, m, std::regex(R"(listening on [^ ]+:(\d+) \(admin [^ ]+:(\d+)\))"))) {
    port = static_cast<std::uint16_t>(std::stoi(m[1]));
    admin = static_cast<std::uint16_t>(std::stoi(m[2]));
  }
}

std::pair<int, std::string> run_command(const std::vector<std::string>& argv) {
  Child c(argv);
  int code = c.wait_exit(30s);
  return {code, c.out() + c.err()};
}

// ---- RefusedPort ----

RefusedPort::RefusedPort() {
  // No SO_REUSEADDR: no other socket, listening or not, may bind this port while it is held.
  fd_ = bind_loopback(port_, false);
  if (fd_ < 0) throw std::runtime_error(std::string("RefusedPort: ") + std::strerror(errno));
}

RefusedPort::~RefusedPort() {
  if (fd_ >= 0) ::close(fd_);
}

// ---- StalledPort ----

StalledPort::StalledPort() {
  listen_fd_ = bind_loopback(port_, false);
  // A backlog of 0 holds one connection: the test's own fills it, and every SYN after it is dropped.
  if (listen_fd_ < 0 || ::listen(listen_fd_, 0) != 0) throw std::runtime_error("StalledPort: listen failed");
  filler_fd_ = connect_loopback(port_);
  if (filler_fd_ < 0) throw std::runtime_error("StalledPort: connect failed");
}

StalledPort::~StalledPort() {
  if (filler_fd_ >= 0) ::close(filler_fd_);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

bool StalledPort::wait_for_waiting_connect(std::chrono::milliseconds limit) const {
  char want[8];
  std::snprintf(want, sizeof want, ":%04X", port_);
  auto deadline = std::chrono::steady_clock::now() + limit;
  do {
    // "sl local_address rem_address st ...": a remote address ending in this port, in state 02 (SYN_SENT).
    std::ifstream in("/proc/net/tcp");
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string sl, local, remote, state;
      fields >> sl >> local >> remote >> state;
      if (state == "02" && remote.size() > 5 && remote.compare(remote.size() - 5, 5, want) == 0) return true;
    }
    std::this_thread::sleep_for(20ms);
  } while (std::chrono::steady_clock::now() < deadline);
  return false;
}

void StalledPort::release() {
  int fd = accept(5s);  // the filler's server side
  if (fd >= 0) ::close(fd);
}

int StalledPort::accept(std::chrono::milliseconds limit) {
  if (!readable(listen_fd_, limit)) return -1;
  return ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
}

// ---- TempDir ----

TempDir::TempDir() {
  char tmpl[] = "/tmp/sluice-test-XXXXXX";
  path_ = mkdtemp(tmpl);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string TempDir::write(const std::string& name, const std::string& content) const {
  auto p = path_ + "/" + name;
  std::ofstream(p) << content;
  return p;
}

// ---- RedisServer ----

namespace {

std::uint16_t free_loopback_port() {
  std::uint16_t port = 0;
  ::close(listen_loopback(port));
  return port;
}

// True when 127.0.0.1:port answers a PING: +PONG, or -NOAUTH when it wants a password first.
bool answers_ping(std::uint16_t port) {
  int fd = connect_loopback(port);
  if (fd < 0) return false;
  std::string got;
  if (write_all(fd, "PING\r\n")) {
    char tmp[256];
    while (got.find("\r\n") == std::string::npos && readable(fd, 500ms)) {
      ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) break;
      got.append(tmp, static_cast<std::size_t>(n));
    }
  }
  ::close(fd);
  return got.starts_with("+PONG") || got.starts_with("-NOAUTH");
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

RedisServer::RedisServer(const std::string& extra_args) {
  std::istringstream words(extra_args);
  for (std::string w; words >> w;) extra_.push_back(w);
  std::string why;
  for (int attempt = 0; attempt < 5; ++attempt) {  // another process may take the port before redis binds it
    port_ = free_loopback_port();
    if (launch(why)) return;
  }
  throw std::runtime_error("redis-server did not start: " + why);
}

RedisServer::~RedisServer() {
  stop();
}

std::string RedisServer::url() const {
  return "redis://127.0.0.1:" + std::to_string(port_) + "/0";
}

void RedisServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

void RedisServer::start() {
  stop();
  std::string why;
  for (int attempt = 0; attempt < 3; ++attempt)  // the port may be briefly busy (a client's connect attempt)
    if (launch(why)) return;
  throw std::runtime_error("redis-server did not restart on port " + std::to_string(port_) + ": " + why);
}

bool RedisServer::launch(std::string& why) {
  const std::string log = dir_.path() + "/redis.log";
  std::ofstream(log, std::ios::trunc).flush();  // a fresh log: readiness is read from it
  std::vector<std::string> argv{"/usr/bin/redis-server", "--port", std::to_string(port_)};
  argv.insert(argv.end(),
              {"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--loglevel", "notice"});
  argv.insert(argv.end(), {"--dir", dir_.path(), "--logfile", log});
  argv.insert(argv.end(), extra_.begin(), extra_.end());
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);  // not the test's sockets (Asio opens them inheritable)
  int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    pid_ = -1;
    why = "cannot spawn /usr/bin/redis-server";
    return false;
  }
  // Ready when our process says so (not some other server that took the port) and the port answers.
  auto end = Clock::now() + 10s;
  while (Clock::now() < end) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      why = "redis-server exited: " + file_text(log);
      return false;
    }
    if (file_text(log).find("Ready to accept connections") != std::string::npos && answers_ping(port_))
      return true;
    std::this_thread::sleep_for(5ms);
  }
  why = "redis-server did not answer within 10 s: " + file_text(log);
  stop();
  return false;
}

}  // namespace sluice::test
