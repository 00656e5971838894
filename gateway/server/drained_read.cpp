// The system call and the verdict of async_read_drained (drained_read.hpp), and the one place where Sluice names
// private members of Asio's epoll reactor: the events it last saw for a descriptor, the events it registered
// the descriptor for (with its lock), the descriptor's reactor and that reactor's epoll descriptor.
#include "server/drained_read.hpp"

#if SLUICE_DRAINED_READ
#include <sys/epoll.h>

#include "server/plain_calls.hpp"

#include <cerrno>
#include <cstring>

namespace sluice::drained_detail {
namespace {

thread_local std::uint64_t empty_read_count = 0;

/// Reads a private member: an explicit instantiation may name it (access is not checked there), and the friend
/// it defines hands the member pointer out. Instantiated once, here.
template <auto Member, class Tag>
struct Expose {
  friend constexpr auto exposed(Tag) { return Member; }
};

/// The events the reactor last saw for a descriptor: the descriptor's state is an operation whose task_result_
/// carries them to perform_io (set by the reactor's run on the worker's one thread, before perform_io).
struct TaskResult {
  friend constexpr auto exposed(TaskResult);
};
template struct Expose<&ad::scheduler_operation::task_result_, TaskResult>;

/// The reactor a descriptor's state belongs to.
struct OwningReactor {
  friend constexpr auto exposed(OwningReactor);
};
template struct Expose<&ad::reactor::descriptor_state::reactor_, OwningReactor>;

/// The events the reactor registered the descriptor for (Asio keeps them, and re-registers with them when it
/// adds EPOLLOUT), and the lock they are kept under.
struct RegisteredEvents {
  friend constexpr auto exposed(RegisteredEvents);
};
template struct Expose<&ad::reactor::descriptor_state::registered_events_, RegisteredEvents>;
struct DescriptorLock {
  friend constexpr auto exposed(DescriptorLock);
};
template struct Expose<&ad::reactor::descriptor_state::mutex_, DescriptorLock>;

/// The reactor's epoll descriptor.
struct EpollDescriptor {
  friend constexpr auto exposed(EpollDescriptor);
};
template struct Expose<&ad::epoll_reactor::epoll_fd_, EpollDescriptor>;

unsigned seen_events(ad::reactor::per_descriptor_data d) {
  return ((ad::scheduler_operation*)d)->*exposed(TaskResult{});  // NOLINT: a cast may reach a private base
}

std::uint32_t& registered_events(ad::reactor::per_descriptor_data d) {
  return d->*exposed(RegisteredEvents{});
}

}  // namespace

bool watch_peer_close(ad::reactor::per_descriptor_data descriptor, ad::socket_type socket) {
  ad::conditionally_enabled_mutex::scoped_lock lock(descriptor->*exposed(DescriptorLock{}));
  std::uint32_t& events = registered_events(descriptor);
  if (events == 0) return false;  // not registered with epoll (Asio then does no reactor reads on it at all)
  if (events & EPOLLRDHUP) return true;
  epoll_event ev{};
  ev.events = events | EPOLLRDHUP;
  ev.data.ptr = descriptor;
  const int epoll_fd = reactor_of(descriptor).*exposed(EpollDescriptor{});
  if (::epoll_ctl(epoll_fd, EPOLL_CTL_MOD, socket, &ev) != 0) return false;
  events = ev.events;  // kept by Asio's own later changes (EPOLLOUT), which start from these
  return true;
}

ad::reactor_op::status perform_read(ad::reactor_op& op, ad::socket_type socket, ad::reactor::per_descriptor_data descriptor,
                               boost::asio::mutable_buffer buffer) {
  // A plain recv, as nginx reads (without glibc's cancellation bookkeeping: plain_calls.hpp): a read that took
  // less than it had room for left the socket empty.
  ssize_t n;
  do n = plain::recv(socket, buffer.data(), buffer.size(), 0);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {  // the reactor waits for the socket
      ++empty_read_count;
      return ad::reactor_op::not_done;
    }
    op.ec_ = boost::system::error_code(errno, boost::asio::error::get_system_category());
    op.bytes_transferred_ = 0;
    return ad::reactor_op::done;
  }
  if (n == 0) {  // as Asio: the end of the stream, after which it never tries a read first again
    op.ec_ = boost::asio::error::eof;
    return ad::reactor_op::done_and_exhausted;
  }
  op.bytes_transferred_ = static_cast<std::size_t>(n);
  // Emptied (a short read), with no end of stream and no reset among what the reactor saw last (an end or a reset
  // that came after that raises an edge of its own): the reactor waits for the next edge before the next read.
  // Only on a descriptor registered for EPOLLRDHUP (watch_peer_close), without which an end of stream that came
  // with the bytes would look like nothing.
  if (static_cast<std::size_t>(n) < buffer.size() && (registered_events(descriptor) & EPOLLRDHUP) != 0 &&
      (seen_events(descriptor) & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) == 0)
    return ad::reactor_op::done_and_exhausted;
  return ad::reactor_op::done;
}

ad::reactor_op::status perform_peek(ad::reactor_op& op, ad::socket_type socket) {
  char c;
  ssize_t n;
  do n = plain::recv(socket, &c, 1, MSG_PEEK);
  while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return ad::reactor_op::not_done;  // the reactor waits
    op.ec_ = boost::system::error_code(errno, boost::asio::error::get_system_category());
  } else if (n == 0) {
    op.ec_ = boost::asio::error::eof;
  }
  op.bytes_transferred_ = n > 0 ? 1 : 0;
  return ad::reactor_op::done;
}

ad::reactor& reactor_of(ad::reactor::per_descriptor_data descriptor) {
  return *(descriptor->*exposed(OwningReactor{}));
}

std::uint64_t empty_reads() { return empty_read_count; }

}  // namespace sluice::drained_detail
#endif
