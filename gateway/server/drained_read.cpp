// The system call and the verdict of async_read_drained (drained_read.hpp), and the one place where Sluice names
// private members of Asio's epoll reactor: the events it last saw for a descriptor, and the descriptor's reactor.
#include "server/drained_read.hpp"

#if SLUICE_DRAINED_READ
#include <sys/epoll.h>

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

unsigned seen_events(ad::reactor::per_descriptor_data d) {
  return ((ad::scheduler_operation*)d)->*exposed(TaskResult{});  // NOLINT: a cast may reach a private base
}

/// The kernel says nothing is left: no bytes, and no end of stream received (it counts one as a byte left, so
/// the reader goes on to see it). Without the count (TCP_INQ off) this is never said.
bool left_nothing(const msghdr& msg) {
  for (const cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(const_cast<msghdr*>(&msg), const_cast<cmsghdr*>(c)))
    if (c->cmsg_level == SOL_TCP && c->cmsg_type == TCP_CM_INQ && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
      int inq;
      std::memcpy(&inq, CMSG_DATA(c), sizeof inq);
      return inq == 0;
    }
  return false;
}

}  // namespace

ad::reactor_op::status perform_read(ad::reactor_op& op, ad::socket_type socket, ad::reactor::per_descriptor_data descriptor,
                               boost::asio::mutable_buffer buffer) {
  // recvmsg, for the kernel's count of what the read left behind (TCP_INQ, turned on by enable_drained_reads).
  iovec iov{buffer.data(), buffer.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(socket, &msg, 0);
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
  // Emptied, with no end of stream (the count) and no reset (the events) waiting: the reactor waits for the next
  // edge before the next read.
  if (left_nothing(msg) && (seen_events(descriptor) & (EPOLLERR | EPOLLHUP)) == 0)
    return ad::reactor_op::done_and_exhausted;
  return ad::reactor_op::done;
}

ad::reactor& reactor_of(ad::reactor::per_descriptor_data descriptor) {
  return *(descriptor->*exposed(OwningReactor{}));
}

std::uint64_t empty_reads() { return empty_read_count; }

}  // namespace sluice::drained_detail
#endif
