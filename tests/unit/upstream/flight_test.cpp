// Flights (request coalescing): who leads and who follows, events read at each follower's own pace, how a
// flight ends, and followers woken on their own executor when the leader publishes from another thread.
#include "upstream/flight.hpp"

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <thread>

namespace sluice::upstream {
namespace {

TEST(Flights, TheFirstRequestLeadsAndIdenticalOnesFollowUntilItLands) {
  Flights flights;
  auto a = flights.join("k");
  ASSERT_TRUE(a.leader);
  EXPECT_EQ(a.flight->followers(), 0);
  auto b = flights.join("k");
  auto c = flights.join("k");
  EXPECT_FALSE(b.leader);
  EXPECT_FALSE(c.leader);
  EXPECT_EQ(b.flight, a.flight);
  EXPECT_EQ(a.flight->followers(), 2);
  auto other = flights.join("other");
  EXPECT_TRUE(other.leader);
  EXPECT_EQ(flights.size(), 2u);

  flights.land("k", a.flight.get());
  EXPECT_EQ(flights.size(), 1u);
  auto d = flights.join("k");  // a new flight: the old one has landed
  EXPECT_TRUE(d.leader);
  EXPECT_NE(d.flight, a.flight);
  flights.land("k", a.flight.get());  // an old flight's landing does not remove the new one
  EXPECT_EQ(flights.size(), 2u);
}

TEST(Flight, EachFollowerReadsFromItsOwnCursorAndSeesHowItEnded) {
  Flight f;
  asio::io_context io;
  auto fast = std::make_shared<Flight::Subscriber>(io.get_executor());
  auto slow = std::make_shared<Flight::Subscriber>(io.get_executor());
  f.join();
  f.join();
  EXPECT_TRUE(f.publish("one", false, true));
  EXPECT_TRUE(f.publish("two", false, true));

  std::vector<const FlightEvent*> got;
  EXPECT_EQ(f.read(0, got, fast), Flight::State::running);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0]->data, "one");
  EXPECT_EQ(got[1]->data, "two");
  const FlightEvent* first = got[0];

  // The leader goes on however far behind a follower is; earlier events stay where they were.
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(f.publish("more", false, true));
  EXPECT_TRUE(f.publish(R"({"usage":{}})", true, false));
  got.clear();
  f.read(0, got, slow);
  ASSERT_EQ(got.size(), 1003u);
  EXPECT_EQ(got[0], first);
  EXPECT_TRUE(got.back()->usage_only);
  EXPECT_FALSE(got.back()->generated);

  Flight::Outcome out;
  out.ok = true;
  out.completion = "{}";
  out.usage = openai::Usage{3, 4};
  f.finish(out);
  got.clear();
  EXPECT_EQ(f.read(1003, got, fast), Flight::State::done);
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(f.outcome().completion, "{}");
  EXPECT_EQ(f.outcome().usage->completion_tokens, 4u);
  EXPECT_FALSE(f.publish("late", false, true));  // nothing after the end
  f.finish({});                                   // a second end changes nothing
  EXPECT_EQ(f.read(0, got, fast), Flight::State::done);
  f.leave(fast);
  f.leave(slow);
  EXPECT_EQ(f.followers(), 0);
}

TEST(Flight, AFlightThatEndsWithoutAnAnswerFailsWithTheLeadersError) {
  Flight f;
  asio::io_context io;
  auto sub = std::make_shared<Flight::Subscriber>(io.get_executor());
  Flight::Outcome out;
  out.error = openai::ApiError{400, "bad", "invalid_request_error", std::nullopt, std::nullopt};
  out.retry = false;
  f.finish(out);
  std::vector<const FlightEvent*> got;
  EXPECT_EQ(f.read(0, got, sub), Flight::State::failed);
  EXPECT_EQ(f.outcome().error->status, 400);
  EXPECT_FALSE(f.outcome().retry);
}

TEST(Flight, AnAnswerTooLargeToKeepFailsForFollowersInsteadOfGrowingWithoutBound) {
  Flight f;
  asio::io_context io;
  auto sub = std::make_shared<Flight::Subscriber>(io.get_executor());
  std::string big(Flight::kMaxBytes / 2, 'x');
  EXPECT_TRUE(f.publish(big, false, true));
  EXPECT_TRUE(f.publish(big, false, true));
  EXPECT_FALSE(f.publish("one byte too many", false, true));
  Flight::Outcome out;
  out.ok = true;
  out.completion = "{}";
  f.finish(out);
  std::vector<const FlightEvent*> got;
  EXPECT_EQ(f.read(2, got, sub), Flight::State::failed);
  EXPECT_FALSE(f.outcome().completion);
  ASSERT_TRUE(f.outcome().error);
}

TEST(Flight, AParkedFollowerIsWokenOnItsOwnExecutorWhenTheLeaderPublishesFromAnotherThread) {
  Flight f;
  asio::io_context io;
  auto sub = std::make_shared<Flight::Subscriber>(io.get_executor());
  f.join();
  std::vector<const FlightEvent*> got;
  ASSERT_EQ(f.read(0, got, sub), Flight::State::running);  // nothing yet: parked
  ASSERT_TRUE(got.empty());
  bool woken = false;
  sub->timer.expires_after(std::chrono::minutes(5));
  sub->timer.async_wait([&](error_code ec) { woken = ec == asio::error::operation_aborted; });
  std::thread leader([&] { f.publish("hello", false, true); });
  leader.join();
  auto started = std::chrono::steady_clock::now();
  io.run_for(std::chrono::seconds(30));  // returns as soon as the wait ended
  EXPECT_TRUE(woken);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(30));
  EXPECT_EQ(f.read(0, got, sub), Flight::State::running);
  ASSERT_EQ(got.size(), 1u);

  // The end wakes it too; a follower that left is not woken any more.
  got.clear();
  ASSERT_EQ(f.read(1, got, sub), Flight::State::running);  // parked again
  f.leave(sub);
  bool fired = false;
  sub->timer.expires_after(std::chrono::milliseconds(50));
  sub->timer.async_wait([&](error_code ec) { fired = !ec; });  // expires on its own: nobody cancels it
  f.finish({});
  io.restart();
  io.run_for(std::chrono::seconds(30));
  EXPECT_TRUE(fired);
}

TEST(Flight, AnAbandonedFlightClosesWhenItsLastFollowerLeavesAndTakesNoNewOnes) {
  Flights flights;
  asio::io_context io;
  // Nobody follows when the leader's client leaves: the caller closes at once; the next request leads anew.
  auto a = flights.join("k");
  EXPECT_FALSE(a.flight->abandon_when_alone(io.get_executor(), [] {}));
  auto b = flights.join("k");
  EXPECT_TRUE(b.leader);
  EXPECT_NE(b.flight, a.flight);

  // With a follower: the close waits for it to leave, then runs on the leader's executor.
  auto c = flights.join("k");
  ASSERT_FALSE(c.leader);
  bool closed = false;
  EXPECT_TRUE(b.flight->abandon_when_alone(io.get_executor(), [&] { closed = true; }));
  auto d = flights.join("k");  // still followed: others may join
  ASSERT_FALSE(d.leader);
  auto sub = std::make_shared<Flight::Subscriber>(io.get_executor());
  b.flight->leave(sub);
  io.poll();
  EXPECT_FALSE(closed);
  b.flight->leave(sub);
  io.restart();
  io.poll();
  EXPECT_TRUE(closed);
  EXPECT_TRUE(flights.join("k").leader);  // abandoned: a new flight
}

}  // namespace
}  // namespace sluice::upstream
