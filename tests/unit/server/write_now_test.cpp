// write_now, the send every answer's first write makes (one sendmsg(2) through plain_calls.hpp), against a real
// loopback peer: the bytes arrive whole and in order, a sequence of more buffers than one call takes and a full
// socket buffer leave the rest to the caller without waiting, and a peer that reset answers an error, never a
// SIGPIPE.
#include "server/http_io.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/read.hpp>
#include <boost/beast/core/buffers_suffix.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace sluice {
namespace {

using namespace std::chrono_literals;

/// A connected pair of loopback sockets: `ours` writes, `peer` reads.
struct Pair {
  asio::io_context ctx;
  tcp::socket ours{ctx};
  tcp::socket peer{ctx};
  Pair() {
    tcp::acceptor acceptor(ctx, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
    ours.connect(acceptor.local_endpoint());
    peer = acceptor.accept();
  }
  std::string read_exactly(std::size_t n) {
    std::string got(n, '\0');
    asio::read(peer, asio::buffer(got));
    return got;
  }
};

TEST(WriteNow, SendsEveryBufferInOrderAndSkipsEmptyOnes) {
  Pair p;
  const std::string head = "HTTP/1.1 200 OK\r\n\r\n", body = "{\"ok\":true}";
  const std::array<asio::const_buffer, 3> out{asio::buffer(head), asio::const_buffer(), asio::buffer(body)};
  std::size_t sent = 99;
  auto done = write_now(p.ours, out, sent);
  ASSERT_TRUE(done.has_value());
  EXPECT_FALSE(std::get<0>(*done));
  EXPECT_EQ(std::get<1>(*done), head.size() + body.size());
  EXPECT_EQ(sent, head.size() + body.size());
  EXPECT_EQ(p.read_exactly(head.size() + body.size()), head + body);
}

TEST(WriteNow, NothingToSendIsDoneAtOnce) {
  Pair p;
  const std::array<asio::const_buffer, 2> out{asio::const_buffer(), asio::const_buffer()};
  std::size_t sent = 99;
  auto done = write_now(p.ours, out, sent);
  ASSERT_TRUE(done.has_value());
  EXPECT_FALSE(std::get<0>(*done));
  EXPECT_EQ(std::get<1>(*done), 0u);
  EXPECT_EQ(sent, 0u);
}

// One call takes sixteen buffers; the caller's next write (write_rest, or write_now again) sends what follows.
TEST(WriteNow, MoreBuffersThanOneCallTakesLeavesTheRestToTheNextWrite) {
  Pair p;
  std::vector<std::string> parts;
  for (int i = 0; i < 20; ++i) parts.push_back(std::string(1 + i % 3, static_cast<char>('a' + i)));
  std::vector<asio::const_buffer> out;
  std::string all;
  for (auto& s : parts) {
    out.push_back(asio::buffer(s));
    all += s;
  }
  std::size_t first16 = 0;
  for (int i = 0; i < 16; ++i) first16 += parts[static_cast<std::size_t>(i)].size();

  std::size_t sent = 0;
  EXPECT_FALSE(write_now(p.ours, out, sent).has_value());  // not all of it: the caller goes on
  EXPECT_EQ(sent, first16);
  beast::buffers_suffix<std::vector<asio::const_buffer>> rest(out);
  rest.consume(sent);
  std::size_t more = 0;
  auto done = write_now(p.ours, rest, more);
  ASSERT_TRUE(done.has_value());
  EXPECT_FALSE(std::get<0>(*done));
  EXPECT_EQ(sent + more, all.size());
  EXPECT_EQ(p.read_exactly(all.size()), all);
}

// A peer that reads nothing: the kernel takes what fits and the call returns at once with the count, then with
// nothing sent and no error; what the peer reads afterwards is exactly the bytes reported sent.
TEST(WriteNow, AFullSocketBufferReturnsWhatWentWithoutWaiting) {
  Pair p;
  std::string big(32u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  const std::array<asio::const_buffer, 1> out{asio::buffer(big)};
  const auto t0 = std::chrono::steady_clock::now();
  std::size_t sent = 0;
  EXPECT_FALSE(write_now(p.ours, out, sent).has_value());
  EXPECT_GT(sent, 0u);
  EXPECT_LT(sent, big.size());
  beast::buffers_suffix<std::array<asio::const_buffer, 1>> rest(out);
  rest.consume(sent);
  std::size_t again = 99;
  EXPECT_FALSE(write_now(p.ours, rest, again).has_value());  // the buffer is still full: EAGAIN, no error
  EXPECT_EQ(again, 0u);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 30s);  // it never blocked (a blocking send would hang here)
  EXPECT_EQ(p.read_exactly(sent), big.substr(0, sent));
}

// A reset peer: the send reports the error (EPIPE or ECONNRESET) and the process gets no SIGPIPE, which would
// end this test binary.
TEST(WriteNow, APeerThatResetIsAnErrorNotASignal) {
  Pair p;
  p.peer.set_option(asio::socket_base::linger(true, 0));
  p.peer.close();  // with linger 0: a reset
  const std::string line = "data: {}\n\n";
  const std::array<asio::const_buffer, 1> out{asio::buffer(line)};
  error_code last;
  for (int i = 0; i < 100 && !last; ++i) {
    std::size_t sent = 0;
    if (auto done = write_now(p.ours, out, sent)) last = std::get<0>(*done);
    if (!last) std::this_thread::sleep_for(10ms);  // the reset may take a moment to reach our side
  }
  EXPECT_TRUE(last == asio::error::broken_pipe || last == asio::error::connection_reset) << last.message();
}

}  // namespace
}  // namespace sluice
