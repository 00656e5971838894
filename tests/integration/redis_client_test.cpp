// RedisClient against a real redis-server: pipelining, scripts, login, and what callers see while
// Redis is down, stalled or coming back.
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <sstream>
#include <thread>

#include "harness.hpp"
#include "server/http_io.hpp"
#include "store/redis.hpp"

namespace sluice::store {
namespace {

using namespace std::chrono_literals;
using sluice::test::RedisServer;
using sluice::test::wait_until;
using Clock = std::chrono::steady_clock;
using Type = RedisReply::Type;
using Reply = std::optional<RedisReply>;

/// One worker thread running an io_context, as the gateway's workers do.
class Worker {
 public:
  Worker() : guard_(io_.get_executor()), thread_([this] { io_.run(); }) {}
  ~Worker() { finish(); }

  asio::any_io_executor executor() { return io_.get_executor(); }

  template <class T>
  std::future<T> spawn(asio::awaitable<T> a) {
    return asio::co_spawn(io_, std::move(a), asio::use_future);
  }
  /// Runs a coroutine on the worker and waits for its result.
  template <class T>
  T run(asio::awaitable<T> a) {
    return spawn(std::move(a)).get();
  }

  /// Lets the worker run out of work and end; false when it still had some after 10 s.
  bool finish() {
    if (!thread_.joinable()) return true;
    guard_.reset();
    bool ended = wait_until([&] { return io_.stopped(); }, 10s);
    halt();
    return ended;
  }
  /// Stops the worker at once, whatever it was doing.
  void halt() {
    io_.stop();
    if (thread_.joinable()) thread_.join();
  }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;
};

RedisUrl url_of(const std::string& url) {
  auto u = parse_redis_url(url);
  EXPECT_TRUE(u) << url;
  return u.value_or(RedisUrl{});
}

Reply cmd(Worker& w, RedisClient& c, std::vector<std::string> argv) {
  return w.run(c.command(std::move(argv)));
}

Reply eval(Worker& w, RedisClient& c, const std::string& script, const std::vector<std::string>& keys,
           const std::vector<std::string>& args) {
  return w.run(c.eval(script, keys, args));
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool is_pong(const Reply& r) {
  return r && r->type == Type::status && r->str == "PONG";
}

// The calls a command has had since the server started (from INFO commandstats).
long long calls_of(Worker& w, RedisClient& c, const std::string& command) {
  auto info = cmd(w, c, {"INFO", "commandstats"});
  if (!info || info->type != Type::string) return -1;
  auto key = "cmdstat_" + command + ":calls=";
  auto p = info->str.find(key);
  return p == std::string::npos ? 0 : std::stoll(info->str.substr(p + key.size()));
}

/// Captures what the default logger writes, for the duration of a test.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    auto logger = std::make_shared<spdlog::logger>("capture", sink);
    logger->set_level(spdlog::level::info);
    spdlog::set_default_logger(logger);
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() {
    spdlog::default_logger()->flush();
    return out_.str();
  }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::ostringstream out_;
};

// ---- URLs ----

TEST(RedisClient, ParsesUrls) {
  auto u = parse_redis_url("redis://127.0.0.1:6380/2");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 6380);
  EXPECT_EQ(u->db, 2);
  EXPECT_EQ(u->username, "");
  EXPECT_EQ(u->password, "");

  u = parse_redis_url("redis://cache.internal");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "cache.internal");
  EXPECT_EQ(u->port, 6379);
  EXPECT_EQ(u->db, 0);

  u = parse_redis_url("redis://:s3cret@redis:6379");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "redis");
  EXPECT_EQ(u->username, "");
  EXPECT_EQ(u->password, "s3cret");

  u = parse_redis_url("redis://alice:p%40ss:w0rd@10.0.0.5:7000/15");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->username, "alice");
  EXPECT_EQ(u->password, "p@ss:w0rd");
  EXPECT_EQ(u->host, "10.0.0.5");
  EXPECT_EQ(u->port, 7000);
  EXPECT_EQ(u->db, 15);

  u = parse_redis_url("redis://:p@ss/x@redis-1/");  // the last '@' ends the password
  ASSERT_TRUE(u);
  EXPECT_EQ(u->password, "p@ss/x");
  EXPECT_EQ(u->host, "redis-1");
  EXPECT_EQ(u->db, 0);

  u = parse_redis_url("REDIS://[::1]:6390/1");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 6390);
  EXPECT_EQ(u->db, 1);
}

TEST(RedisClient, RejectsMalformedUrls) {
  for (const char* bad : {"",
                          "127.0.0.1:6379",
                          "http://host",
                          "rediss://host",
                          "redis://",
                          "redis://:pw@",
                          "redis://host:",
                          "redis://host:0",
                          "redis://host:70000",
                          "redis://host:port",
                          "redis://host/x",
                          "redis://host/-1",
                          "redis://host/1/2",
                          "redis://user@host",
                          "redis://host?db=1",
                          "redis://[::1",
                          "redis://[::1]x",
                          "redis://a b",
                          "redis://:bad%zz@host",
                          "redis://:bad%4@host",
                          "redis://::1:6379"})
    EXPECT_FALSE(parse_redis_url(bad)) << bad;
}

// ---- commands ----

TEST(RedisClient, SetGetIncrAndNil) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient c(w.executor(), url_of(redis.url()), 2s, health);
  c.start();

  auto set = cmd(w, c, {"SET", "greeting", "hello"});  // waits for the connection being opened
  ASSERT_TRUE(set);
  EXPECT_EQ(set->type, Type::status);
  EXPECT_EQ(set->str, "OK");
  EXPECT_TRUE(c.connected());

  auto get = cmd(w, c, {"GET", "greeting"});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->type, Type::string);
  EXPECT_EQ(get->str, "hello");

  const std::string binary("a\0b\r\n$3\r\n", 10);  // arguments and replies are binary-safe
  ASSERT_TRUE(cmd(w, c, {"SET", "bin", binary}));
  get = cmd(w, c, {"GET", "bin"});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->str, binary);

  for (long long want : {1, 2, 3}) {
    auto incr = cmd(w, c, {"INCR", "counter"});
    ASSERT_TRUE(incr);
    EXPECT_EQ(incr->type, Type::integer);
    EXPECT_EQ(incr->integer, want);
  }

  auto missing = cmd(w, c, {"GET", "nothing-here"});
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->type, Type::nil);

  auto list = cmd(w, c, {"MGET", "greeting", "nothing-here"});
  ASSERT_TRUE(list);
  ASSERT_EQ(list->type, Type::array);
  ASSERT_EQ(list->elements.size(), 2u);
  EXPECT_EQ(list->elements[0].str, "hello");
  EXPECT_EQ(list->elements[1].type, Type::nil);

  EXPECT_TRUE(health.up());
  EXPECT_EQ(health.outages(), 0u);
}

TEST(RedisClient, ErrorRepliesAreRepliesNotFailures) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient c(w.executor(), url_of(redis.url()), 2s, health);
  c.start();

  ASSERT_TRUE(cmd(w, c, {"SET", "word", "abc"}));
  auto err = cmd(w, c, {"INCR", "word"});
  ASSERT_TRUE(err);
  EXPECT_EQ(err->type, Type::error);
  EXPECT_NE(err->str.find("not an integer"), std::string::npos) << err->str;

  auto unknown = cmd(w, c, {"NOSUCHCOMMAND"});
  ASSERT_TRUE(unknown);
  EXPECT_EQ(unknown->type, Type::error);

  auto after = cmd(w, c, {"GET", "word"});  // the connection is still in step
  ASSERT_TRUE(after);
  EXPECT_EQ(after->str, "abc");
  EXPECT_EQ(health.outages(), 0u);
}

struct Trio {
  Reply incr, set, get;
};

asio::awaitable<Trio> incr_set_get(RedisClient& c, int i) {
  std::vector<std::string> incr{"INCR", "counter"};
  std::vector<std::string> set{"SET", "key:" + std::to_string(i), "value:" + std::to_string(i)};
  std::vector<std::string> get{"GET", "key:" + std::to_string(i)};
  Trio out;
  out.incr = co_await c.command(incr);
  out.set = co_await c.command(set);
  out.get = co_await c.command(get);
  co_return out;
}

TEST(RedisClient, PipelinesConcurrentCallsInOrder) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient c(w.executor(), url_of(redis.url()), 5s, health);
  c.start();
  ASSERT_TRUE(is_pong(cmd(w, c, {"PING"})));

  // 200 coroutines on one worker, each with three commands in flight in turn.
  constexpr int kCallers = 200;
  std::vector<std::future<Trio>> results;
  for (int i = 0; i < kCallers; ++i) results.push_back(w.spawn(incr_set_get(c, i)));
  for (int i = 0; i < kCallers; ++i) {
    auto r = results[i].get();
    ASSERT_TRUE(r.incr && r.set && r.get) << i;
    ASSERT_EQ(r.incr->type, Type::integer) << i;
    EXPECT_EQ(r.incr->integer, i + 1) << "INCRs are written in call order";
    ASSERT_EQ(r.set->type, Type::status) << i;
    EXPECT_EQ(r.set->str, "OK");
    ASSERT_EQ(r.get->type, Type::string) << i;
    EXPECT_EQ(r.get->str, "value:" + std::to_string(i));
  }
  auto total = cmd(w, c, {"GET", "counter"});
  ASSERT_TRUE(total);
  EXPECT_EQ(total->str, "200");
  EXPECT_EQ(health.outages(), 0u);
}

// ---- scripts ----

const std::string kScript = R"(
redis.call('SET', KEYS[1], ARGV[1])
return {KEYS[1], redis.call('GET', KEYS[1]), tonumber(ARGV[2]) + 1, #KEYS, #ARGV})";

void expect_script_result(const Reply& r) {
  ASSERT_TRUE(r);
  ASSERT_EQ(r->type, Type::array) << r->str;
  ASSERT_EQ(r->elements.size(), 5u);
  EXPECT_EQ(r->elements[0].str, "bucket:a");
  EXPECT_EQ(r->elements[1].str, "tokens");
  EXPECT_EQ(r->elements[2].type, Type::integer);
  EXPECT_EQ(r->elements[2].integer, 42);
  EXPECT_EQ(r->elements[3].integer, 1);
  EXPECT_EQ(r->elements[4].integer, 2);
}

TEST(RedisClient, EvalPassesKeysAndArgs) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient c(w.executor(), url_of(redis.url()), 2s, health);
  c.start();

  expect_script_result(eval(w, c, kScript, {"bucket:a"}, {"tokens", "41"}));
  expect_script_result(eval(w, c, kScript, {"bucket:a"}, {"tokens", "41"}));
  // The script was sent once; afterwards Redis ran it by its SHA-1.
  EXPECT_EQ(calls_of(w, c, "eval"), 1);
  EXPECT_EQ(calls_of(w, c, "evalsha"), 2);

  auto err = eval(w, c, "return redis.error_reply('over limit')", {}, {});
  ASSERT_TRUE(err);
  EXPECT_EQ(err->type, Type::error);
  EXPECT_EQ(err->str, "over limit");
}

TEST(RedisClient, EvalReloadsFlushedScript) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient c(w.executor(), url_of(redis.url()), 2s, health);
  c.start();

  expect_script_result(eval(w, c, kScript, {"bucket:a"}, {"tokens", "41"}));
  auto flushed = cmd(w, c, {"SCRIPT", "FLUSH"});
  ASSERT_TRUE(flushed);
  EXPECT_EQ(flushed->str, "OK");
  expect_script_result(eval(w, c, kScript, {"bucket:a"}, {"tokens", "41"}));  // NOSCRIPT, then EVAL
  expect_script_result(eval(w, c, kScript, {"bucket:a"}, {"tokens", "41"}));
  EXPECT_EQ(calls_of(w, c, "eval"), 2);
  EXPECT_EQ(health.outages(), 0u);
}

// ---- logging in ----

TEST(RedisClient, AuthenticatesWithPassword) {
  RedisServer redis("--requirepass s3cret");
  Worker w;
  RedisHealth health;
  auto url = url_of("redis://:s3cret@127.0.0.1:" + std::to_string(redis.port()) + "/0");
  RedisClient c(w.executor(), url, 2s, health);
  c.start();

  ASSERT_TRUE(cmd(w, c, {"SET", "k", "v"}));
  auto get = cmd(w, c, {"GET", "k"});
  ASSERT_TRUE(get);
  EXPECT_EQ(get->str, "v");
  EXPECT_TRUE(health.up());
}

TEST(RedisClient, AuthenticatesWithUserAndPassword) {
  RedisServer redis("--user alice on >pw-alice ~* &* +@all");
  Worker w;
  RedisHealth health;
  auto url = url_of("redis://alice:pw-alice@127.0.0.1:" + std::to_string(redis.port()));
  RedisClient c(w.executor(), url, 2s, health);
  c.start();

  auto who = cmd(w, c, {"ACL", "WHOAMI"});
  ASSERT_TRUE(who);
  EXPECT_EQ(who->str, "alice");
}

TEST(RedisClient, WrongPasswordFailsAndMarksRedisDown) {
  RedisServer redis("--requirepass s3cret");
  LogCapture log;
  {
    Worker w;
    RedisHealth health;
    auto url = url_of("redis://:not-the-password@127.0.0.1:" + std::to_string(redis.port()) + "/0");
    RedisClient c(w.executor(), url, 2s, health);
    c.start();

    EXPECT_FALSE(cmd(w, c, {"PING"}));
    EXPECT_TRUE(wait_until([&] { return health.outages() == 1; }));
    EXPECT_FALSE(health.up());
    EXPECT_FALSE(c.connected());
    c.stop();
  }
  auto text = log.text();
  EXPECT_NE(text.find("WRONGPASS"), std::string::npos) << text;         // Redis's reason is logged...
  EXPECT_EQ(text.find("not-the-password"), std::string::npos) << text;  // ...the password never
}

TEST(RedisClient, SelectsDatabase) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient db3(w.executor(), url_of("redis://127.0.0.1:" + std::to_string(redis.port()) + "/3"), 2s,
                  health);
  RedisClient db0(w.executor(), url_of(redis.url()), 2s, health);
  db3.start();
  db0.start();

  ASSERT_TRUE(cmd(w, db3, {"SET", "where", "three"}));
  auto in3 = cmd(w, db3, {"GET", "where"});
  ASSERT_TRUE(in3);
  EXPECT_EQ(in3->str, "three");
  auto in0 = cmd(w, db0, {"GET", "where"});
  ASSERT_TRUE(in0);
  EXPECT_EQ(in0->type, Type::nil);
}

TEST(RedisClient, FailedSelectCountsAsFailedConnection) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  auto url = url_of("redis://127.0.0.1:" + std::to_string(redis.port()) + "/99");  // 16 databases by default
  RedisClient c(w.executor(), url, 2s, health);
  c.start();

  EXPECT_FALSE(cmd(w, c, {"PING"}));
  EXPECT_TRUE(wait_until([&] { return health.outages() == 1; }));
  EXPECT_FALSE(c.connected());
}

// ---- outages ----

TEST(RedisClient, UnreachableServerFailsFast) {
  std::uint16_t port;
  {
    RedisServer gone;  // a port where nothing listens any more
    port = gone.port();
  }
  Worker w;
  RedisHealth health;
  RedisClient c(w.executor(), url_of("redis://127.0.0.1:" + std::to_string(port)), 200ms, health);
  c.start();

  for (int i = 0; i < 20; ++i) {
    auto t = Clock::now();
    EXPECT_FALSE(cmd(w, c, {"PING"}));
    EXPECT_LT(seconds_since(t), 3.0);
  }
  EXPECT_TRUE(wait_until([&] { return health.outages() == 1; }));
  EXPECT_FALSE(health.up());
}

TEST(RedisClient, ServerKilledCallsFailFastWithOneOutage) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  std::atomic<int> downs{0}, ups{0};
  health.on_change = [&](bool up) { ++(up ? ups : downs); };
  RedisClient c(w.executor(), url_of(redis.url()), 200ms, health);
  c.start();
  ASSERT_TRUE(is_pong(cmd(w, c, {"PING"})));
  EXPECT_TRUE(health.up());

  redis.stop();
  for (int i = 0; i < 50; ++i) {
    auto t = Clock::now();
    EXPECT_FALSE(cmd(w, c, {"INCR", "n"}));
    EXPECT_LT(seconds_since(t), 3.0);
  }
  EXPECT_TRUE(wait_until([&] { return !health.up(); }));
  EXPECT_FALSE(c.connected());
  EXPECT_EQ(health.outages(), 1u);  // one outage, however many calls failed during it
  EXPECT_EQ(ups.load(), 1);
  EXPECT_EQ(downs.load(), 1);
}

TEST(RedisClient, RecoversWhenServerRestarts) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient c(w.executor(), url_of(redis.url()), 200ms, health);
  c.start();
  ASSERT_TRUE(cmd(w, c, {"SET", "before", "1"}));

  redis.stop();
  EXPECT_TRUE(wait_until([&] { return !cmd(w, c, {"PING"}) && !health.up(); }));
  redis.start();

  EXPECT_TRUE(wait_until([&] { return is_pong(cmd(w, c, {"PING"})); }, 10s));
  EXPECT_TRUE(health.up());
  EXPECT_TRUE(c.connected());
  EXPECT_EQ(health.outages(), 1u);
  auto set = cmd(w, c, {"SET", "after", "2"});
  ASSERT_TRUE(set);
  EXPECT_EQ(set->str, "OK");
}

TEST(RedisClient, StalledServerTimesOutThenRecovers) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient admin(w.executor(), url_of(redis.url()), 5s, health);
  RedisClient c(w.executor(), url_of(redis.url()), 200ms, health);
  admin.start();
  c.start();
  ASSERT_TRUE(is_pong(cmd(w, c, {"PING"})));

  auto paused = cmd(w, admin, {"CLIENT", "PAUSE", "3000"});  // every client's commands wait 3 s
  ASSERT_TRUE(paused);
  ASSERT_EQ(paused->str, "OK");

  auto t = Clock::now();
  EXPECT_FALSE(cmd(w, c, {"SET", "k", "v"}));
  double took = seconds_since(t);
  EXPECT_GE(took, 0.2);  // the deadline, not sooner...
  EXPECT_LT(took, 2.0);  // ...and not the pause
  EXPECT_TRUE(wait_until([&] { return health.outages() == 1; }));

  // Once the pause is over, the same client works again.
  EXPECT_TRUE(wait_until([&] { return is_pong(cmd(w, c, {"PING"})); }, 10s));
  auto get = cmd(w, c, {"GET", "k"});
  ASSERT_TRUE(get);
  EXPECT_TRUE(get->type == Type::nil || get->str == "v");  // the abandoned SET may or may not have run
  EXPECT_TRUE(health.up());
}

// ---- stopping ----

asio::awaitable<bool> stop_from_worker(RedisClient& c) {
  c.stop();  // on the client's own thread: runs inline, must not wait for itself
  co_return c.connected();
}

TEST(RedisClient, StopFailsPendingAndLaterCalls) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  RedisClient admin(w.executor(), url_of(redis.url()), 5s, health);
  RedisClient c(w.executor(), url_of(redis.url()), 10s, health);
  admin.start();
  c.start();
  ASSERT_TRUE(is_pong(cmd(w, c, {"PING"})));
  ASSERT_TRUE(cmd(w, admin, {"CLIENT", "PAUSE", "5000"}));

  auto t = Clock::now();
  std::vector<std::string> get{"GET", "k"};
  auto pending = w.spawn(c.command(get));  // waits on the paused server
  EXPECT_FALSE(w.run(stop_from_worker(c)));
  EXPECT_FALSE(pending.get());
  EXPECT_LT(seconds_since(t), 4.0);  // ended by stop(), not by the pause or the 10 s timeout
  EXPECT_FALSE(cmd(w, c, {"PING"}));
  EXPECT_FALSE(c.connected());
  EXPECT_EQ(health.outages(), 0u);  // stopping is not an outage
}

TEST(RedisClient, StoppedClientLetsItsWorkerFinish) {
  RedisServer redis;
  Worker w;
  RedisHealth health;
  {
    RedisClient c(w.executor(), url_of(redis.url()), 2s, health);
    c.start();
    ASSERT_TRUE(is_pong(cmd(w, c, {"PING"})));
    c.stop();
  }  // destroyed while its worker still runs
  EXPECT_TRUE(w.finish()) << "a background coroutine outlived stop()";
}

TEST(RedisClient, DestroyedAfterItsWorkerStopped) {
  RedisServer redis;
  auto w = std::make_unique<Worker>();
  RedisHealth health;
  auto c = std::make_unique<RedisClient>(w->executor(), url_of(redis.url()), 2s, health);
  c->start();
  ASSERT_TRUE(is_pong(cmd(*w, *c, {"PING"})));
  w->halt();  // the io_context no longer runs...
  c.reset();  // ...when the client goes
  w.reset();  // then the io_context itself, with whatever was still queued
}

}  // namespace
}  // namespace sluice::store
