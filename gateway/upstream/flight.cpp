#include "upstream/flight.hpp"

#include <boost/asio/post.hpp>

namespace sluice::upstream {

namespace {

// The timer belongs to the follower's worker: cancel it there (the shared_ptr keeps it alive until then).
void wake(std::vector<std::shared_ptr<Flight::Subscriber>>& subs) {
  for (auto& s : subs) asio::post(s->timer.get_executor(), [s] { s->timer.cancel(); });
}

}  // namespace

bool Flight::publish(std::string data, bool usage_only, bool generated) {
  std::vector<std::shared_ptr<Subscriber>> woken;
  {
    std::lock_guard lock(mutex_);
    if (overflow_ || state_ != State::running) return false;
    if (bytes_ + data.size() > kMaxBytes) {
      overflow_ = true;
      return false;
    }
    bytes_ += data.size();
    events_.push_back(FlightEvent{std::move(data), usage_only, generated});
    woken.swap(parked_);
  }
  wake(woken);
  return true;
}

void Flight::finish(Outcome outcome) {
  std::vector<std::shared_ptr<Subscriber>> woken;
  {
    std::lock_guard lock(mutex_);
    if (state_ != State::running) return;
    if (overflow_ && outcome.ok) {
      outcome.ok = false;
      outcome.completion.reset();
      outcome.error = openai::ApiError{502, "The answer was too large to share with identical requests.",
                                       "server_error", std::nullopt, "upstream_error"};
    }
    outcome_ = std::move(outcome);
    state_ = outcome_.ok ? State::done : State::failed;
    woken.swap(parked_);
  }
  wake(woken);
}

bool Flight::join() {
  std::lock_guard lock(mutex_);
  if (abandoned_) return false;
  followers_.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

void Flight::leave(const std::shared_ptr<Subscriber>& sub) {
  std::function<void()> close;
  std::optional<asio::any_io_executor> on;
  {
    std::lock_guard lock(mutex_);
    std::erase(parked_, sub);
    if (followers_.fetch_sub(1, std::memory_order_acq_rel) == 1 && close_) {
      abandoned_ = true;  // the last reader is gone and so is the leader's client
      close.swap(close_);
      on.swap(close_on_);
    }
  }
  if (close) asio::post(*on, std::move(close));
}

bool Flight::abandon_when_alone(const asio::any_io_executor& ex, std::function<void()> close) {
  std::lock_guard lock(mutex_);
  if (followers_.load(std::memory_order_acquire) == 0) {
    abandoned_ = true;
    return false;
  }
  close_on_ = ex;
  close_ = std::move(close);
  return true;
}

Flight::State Flight::read(std::size_t next, std::vector<const FlightEvent*>& out,
                           const std::shared_ptr<Subscriber>& sub) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = next; i < events_.size(); ++i) out.push_back(&events_[i]);
  if (next >= events_.size() && state_ == State::running &&
      std::find(parked_.begin(), parked_.end(), sub) == parked_.end())
    parked_.push_back(sub);
  return state_;
}

Flights::Joined Flights::join(const std::string& key) {
  auto& s = shard(key);
  std::lock_guard lock(s.mutex);
  auto [it, fresh] = s.flights.try_emplace(key);
  if (!fresh && it->second->join()) return {it->second, false};
  // None in progress, or one being abandoned: this request starts a new one (the old one's landing leaves it).
  it->second = std::make_shared<Flight>();
  return {it->second, true};
}

void Flights::land(const std::string& key, const Flight* flight) {
  auto& s = shard(key);
  std::lock_guard lock(s.mutex);
  if (auto it = s.flights.find(key); it != s.flights.end() && it->second.get() == flight) s.flights.erase(it);
}

std::size_t Flights::size() const {
  std::size_t n = 0;
  for (const auto& s : shards_) {
    std::lock_guard lock(s.mutex);
    n += s.flights.size();
  }
  return n;
}

}  // namespace sluice::upstream
