// async_read_drained against a real loopback peer: every byte and the stream's end (FIN or reset) arrive, in
// every order of arrival and reactor wake-up, and a read that emptied the socket lets the next one wait
// without asking the kernel first.
#include "server/drained_read.hpp"

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace sluice {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;
constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);

enum class End { fin, reset };

/// One chunk the peer sends, after sleeping `pause` first.
struct Step {
  std::string bytes;
  std::chrono::microseconds pause;
};

struct Outcome {
  std::string got;
  error_code end;
  bool timed_out = false;
};

/// A listening socket on 127.0.0.1, port 0.
int listen_loopback(std::uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 4) != 0) return -1;
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  port = ntohs(a.sin_port);
  return fd;
}

/// The peer sends `steps` and ends with a FIN or a reset; the reader reads with async_read_drained into a
/// buffer of `room` bytes, pausing `reader_pause` between reads (its reactor then sees the socket's edges
/// with no read waiting). The reader gives up after a deadline far beyond the exchange's own length.
Outcome exchange(const std::vector<Step>& steps, End end, std::size_t room,
                 std::chrono::microseconds reader_pause, bool watched) {
  std::uint16_t port = 0;
  const int lfd = listen_loopback(port);
  EXPECT_GE(lfd, 0);
  std::thread peer([&] {
    const int fd = ::accept(lfd, nullptr, nullptr);
    int on = 1;  // each chunk leaves at once, so a reset cannot discard one Nagle still holds
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    for (const auto& s : steps) {
      std::this_thread::sleep_for(s.pause);
      EXPECT_EQ(::send(fd, s.bytes.data(), s.bytes.size(), MSG_NOSIGNAL), static_cast<ssize_t>(s.bytes.size()));
    }
    if (end == End::reset) {
      linger l{1, 0};  // close with a reset
      ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    ::close(fd);
  });

  asio::io_context ctx{1};
  tcp::socket sock(ctx);
  sock.connect({asio::ip::address_v4::loopback(), port});
  if (watched) enable_drained_reads(sock);
  Outcome out;
  asio::steady_timer deadline(ctx, 20s);
  deadline.async_wait([&](error_code ec) {
    if (ec) return;
    out.timed_out = true;
    sock.close();
  });
  asio::co_spawn(
      ctx,
      [&]() -> asio::awaitable<void> {
        std::vector<char> buf(room);
        asio::steady_timer pause(ctx);
        for (;;) {
          auto [ec, n] = co_await async_read_drained(sock, asio::buffer(buf), use_nothrow);
          out.got.append(buf.data(), n);
          if (ec) {
            out.end = ec;
            break;
          }
          if (reader_pause.count() > 0) {
            pause.expires_after(reader_pause);
            co_await pause.async_wait(use_nothrow);
          }
        }
        deadline.cancel();
      },
      asio::detached);
  ctx.run();
  peer.join();
  ::close(lfd);
  return out;
}

std::string text(std::mt19937& rng, std::size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>('a' + rng() % 26);
  return s;
}

TEST(DrainedRead, EveryByteAndTheEndArriveInEveryOrder) {
  std::mt19937 rng(20261125);
  for (int trial = 0; trial < 120; ++trial) {
    // Up to 12 chunks of 1 byte to 4 KiB, each after a pause of nothing up to 2 ms, so chunks, the FIN and the
    // reset arrive alone, together, before the reader's reactor looked and after it.
    std::vector<Step> steps(rng() % 13);
    std::string sent;
    for (auto& s : steps) {
      const bool large = rng() % 2;
      s.bytes = text(rng, 1 + rng() % (large ? 4096 : 64));
      s.pause = std::chrono::microseconds(rng() % 3 == 0 ? 0 : rng() % 2000);
      sent += s.bytes;
    }
    const End end = rng() % 2 ? End::fin : End::reset;
    std::size_t room = rng() % 2 ? 65536 : 1 + rng() % 512;  // short reads, and reads that fill the room
    const auto reader_pause = std::chrono::microseconds(rng() % 2 ? 0 : rng() % 3000);
    if (reader_pause.count() > 0) room = std::max(room, sent.size() / 32 + 1);  // at most ~45 pauses a trial
    const bool watched = trial % 8 != 7;  // registered for EPOLLRDHUP (else every read is Asio's own)
    SCOPED_TRACE("trial " + std::to_string(trial) + ": " + std::to_string(steps.size()) + " chunks, " +
                 (end == End::fin ? "FIN" : "reset") + ", room " + std::to_string(room) + ", reader pause " +
                 std::to_string(reader_pause.count()) + " us" + (watched ? "" : ", without EPOLLRDHUP"));
    const Outcome out = exchange(steps, end, room, reader_pause, watched);
    ASSERT_FALSE(out.timed_out) << "a read waited for an edge that had already been seen";
    EXPECT_EQ(out.got, sent);
    EXPECT_EQ(out.end, end == End::fin ? error_code(asio::error::eof) : error_code(asio::error::connection_reset))
        << out.end.message();
  }
}

TEST(DrainedRead, ABurstOfBytesAndTheResetBehindItEndsTheRead) {
  // The case a short read alone gets wrong: the bytes and the reset arrive before the reader's reactor looks, it
  // sees the socket once, and the read that takes the bytes is short.
  for (auto pause : {0us, 2000us}) {
    const Outcome out = exchange({{std::string(300, 'x'), 0us}}, End::reset, 65536, pause, true);
    ASSERT_FALSE(out.timed_out);
    EXPECT_EQ(out.got, std::string(300, 'x'));
    EXPECT_EQ(out.end, asio::error::connection_reset) << out.end.message();
  }
}

TEST(DrainedRead, AReadThatEmptiedTheSocketLetsTheNextWaitWithoutAskingTheKernel) {
  // 40 chunks 2 ms apart: every read takes one chunk and empties the socket. async_read_some would ask the
  // kernel once more before each wait (about 40 empty reads); a drained read asks only when it cannot know.
  if (!SLUICE_DRAINED_READ) GTEST_SKIP() << "async_read_drained is async_read_some in this build";
  std::vector<Step> steps(40, Step{"data: {\"tok\":1}\n\n", 2000us});
  {
    asio::io_context probe;
    tcp::socket s(probe);
    s.open(tcp::v4());
    if (!enable_drained_reads(s)) GTEST_SKIP() << "the socket could not be registered for EPOLLRDHUP";
  }
  for (bool watched : {true, false}) {
    const auto before = drained_read_empty_reads();
    const Outcome out = exchange(steps, End::fin, 65536, 0us, watched);
    const auto empty = drained_read_empty_reads() - before;
    ASSERT_FALSE(out.timed_out);
    EXPECT_EQ(out.got.size(), 40u * steps[0].bytes.size());
    if (watched)
      EXPECT_LE(empty, 5u) << "reads that found the socket empty";
    else  // without EPOLLRDHUP it reads as Asio does
      EXPECT_GE(empty, 10u) << "reads that found the socket empty";
  }
}

}  // namespace
}  // namespace sluice
