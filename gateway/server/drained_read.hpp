#pragma once
// A socket read that remembers, as nginx does, when it emptied the socket, so the next read waits for the
// reactor instead of first asking the kernel for bytes that are not there.
//
// Asio's epoll reactor tries every read on a socket before it waits ("speculatively"), and stops doing so only
// after a read that ended the stream. Its send does better: a send that wrote less than it was given marks the
// socket full, and the next send waits for the reactor. A relay reads a backend's socket once per event, and
// nearly every read takes all there was, so each following read was a recv(2) that answered EAGAIN before the
// wait: one wasted system call per relayed event.
//
// async_read_drained is socket.async_read_some with that rule for reads. Its operation is Asio's own receive
// operation (the same completion), except that a read which provably emptied the socket reports "done and
// exhausted", as Asio's reads do at an end of stream: the reactor then waits for the socket's next edge before
// the next read. "Provably" needs three facts, because an edge-triggered reactor reports a socket once for all
// that happened to it before it looked:
//   - the kernel left no bytes behind (the read was short: recv(2) on a stream takes all there is, up to the
//     room it is given);
//   - no end of stream arrived before the reactor's last look (EPOLLRDHUP among the events it saw: a FIN that
//     came with the bytes leaves a read short, and would otherwise go unseen until some later edge);
//   - no reset or error arrived before that look (EPOLLERR/EPOLLHUP among them: a reset leaves the bytes
//     before it readable).
// Whatever arrives after the reactor's look raises a new edge, and the reactor turns trying first back on.
// (An earlier form read with recvmsg(2) for TCP_INQ's count of the bytes left, which also counts a FIN; asking
// for the count cost about 300 ns a read on a 2-core VM, against a plain recv(2) as nginx makes.)
//
// It reaches into Asio's reactor through its detail namespace (reactor_op, the reactor's start_op, the
// socket's implementation), reads the events the reactor saw for the descriptor and adds EPOLLRDHUP to those
// it registered the descriptor for, which Asio keeps private (drained_read.cpp, the one place that names
// private members). So it is used only where all of that is known, Boost 1.81's epoll reactor, and only on
// sockets registered for EPOLLRDHUP (enable_drained_reads). Anywhere else, and for a read whose handler has a
// cancellation slot (this operation registers none), it is socket.async_read_some itself.
#include <boost/asio/async_result.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/version.hpp>
#include <cstddef>
#include <cstdint>
#include <utility>

#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#define SLUICE_DRAINED_READ 1
#include <boost/asio/detail/bind_handler.hpp>
#include <boost/asio/detail/fenced_block.hpp>
#include <boost/asio/detail/handler_alloc_helpers.hpp>
#include <boost/asio/detail/handler_cont_helpers.hpp>
#include <boost/asio/detail/handler_work.hpp>
#include <boost/asio/detail/memory.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>
#include <boost/asio/detail/socket_ops.hpp>
#include <sys/socket.h>
#else
#define SLUICE_DRAINED_READ 0
#endif

namespace sluice {

#if SLUICE_DRAINED_READ
namespace drained_detail {

namespace ad = boost::asio::detail;

/// A drained read's system call and verdict (drained_read.cpp): reads into `buffer`, sets the operation's error
/// and byte count as Asio's receive does, and says "done and exhausted" when the read provably emptied the
/// socket (see above).
ad::reactor_op::status perform_read(ad::reactor_op& op, ad::socket_type socket, ad::reactor::per_descriptor_data descriptor,
                               boost::asio::mutable_buffer buffer);

/// A hang-up watch's system call (drained_read.cpp): a one-byte MSG_PEEK. Not done while the socket is empty; done
/// with one byte pending (a request the client sent ahead), or with an error: the end of the stream (eof) or the
/// socket's own. It never says "exhausted": the session's next read still tries the socket first.
ad::reactor_op::status perform_peek(ad::reactor_op& op, ad::socket_type socket);

/// The reactor that registered a descriptor (drained_read.cpp): the one Asio's own reads on the socket use.
ad::reactor& reactor_of(ad::reactor::per_descriptor_data descriptor);

/// Adds EPOLLRDHUP to the events the descriptor is registered for (drained_read.cpp). False when it is not
/// registered with epoll or the change failed.
bool watch_peer_close(ad::reactor::per_descriptor_data descriptor, ad::socket_type socket);

/// Reads on this thread that found the socket empty.
std::uint64_t empty_reads();

/// Asio's reactive_socket_recv_op for one buffer, but a read that emptied the socket says so (see above). With
/// Peek, a hang-up watch's operation (perform_peek), which reads nothing.
template <class Handler, class IoExecutor, bool Peek = false>
class RecvOp : public ad::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(RecvOp);

  RecvOp(const boost::system::error_code& success_ec, ad::socket_type socket,
         ad::reactor::per_descriptor_data descriptor, boost::asio::mutable_buffer buffer, Handler& handler,
         const IoExecutor& io_ex)
      : reactor_op(success_ec, &RecvOp::do_perform, &RecvOp::do_complete),
        socket_(socket),
        descriptor_(descriptor),
        buffer_(buffer),
        handler_(std::move(handler)),
        work_(handler_, io_ex) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<RecvOp*>(base);
    if constexpr (Peek)
      return perform_peek(*o, o->socket_);
    else
      return perform_read(*o, o->socket_, o->descriptor_, o->buffer_);
  }

  static void do_complete(void* owner, ad::operation* base, const boost::system::error_code&, std::size_t) {
    // As reactive_socket_recv_op::do_complete: free the operation before the upcall, keeping the handler.
    auto* o = static_cast<RecvOp*>(base);
    ptr p = {ad::addressof(o->handler_), o, o};
    ad::handler_work<Handler, IoExecutor> w(std::move(o->work_));
    ad::binder2<Handler, boost::system::error_code, std::size_t> handler(o->handler_, o->ec_, o->bytes_transferred_);
    p.h = ad::addressof(handler.handler_);
    p.reset();
    if (owner) {
      ad::fenced_block b(ad::fenced_block::half);
      w.complete(handler, handler.handler_);
    }
  }

 private:
  ad::socket_type socket_;
  ad::reactor::per_descriptor_data descriptor_;
  boost::asio::mutable_buffer buffer_;
  Handler handler_;
  ad::handler_work<Handler, IoExecutor> work_;
};

/// basic_socket keeps its implementation protected; a pointer to the member, formed through a derived class,
/// reads it on any socket of the type.
struct SocketAccess : boost::asio::ip::tcp::socket {
  static auto impl_member() { return &SocketAccess::impl_; }
};

/// Starts a RecvOp on `s`'s reactor, as Asio starts its own reads: tried at once unless the last read emptied
/// the socket, else queued for the descriptor's next edge (with no epoll_ctl(2): the descriptor is registered for
/// reading already, and an edge since the last read has the reactor try it first).
template <bool Peek, class Handler>
void start_recv(Handler&& handler, boost::asio::ip::tcp::socket* s, boost::asio::mutable_buffer buffer) {
  using H = std::decay_t<Handler>;
  auto& impl = ((*s).*SocketAccess::impl_member()).get_implementation();
  H h(std::forward<Handler>(handler));
  ad::reactor& reactor = reactor_of(impl.reactor_data_);
  const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(h);
  using Op = RecvOp<H, boost::asio::ip::tcp::socket::executor_type, Peek>;
  typename Op::ptr p = {ad::addressof(h), Op::ptr::allocate(h), 0};
  p.p = new (p.v) Op(boost::system::error_code(), impl.socket_, impl.reactor_data_, buffer, h, s->get_executor());
  // As reactive_socket_service_base::start_op: the descriptor is made non-blocking for the reactor first.
  if ((impl.state_ & ad::socket_ops::non_blocking) ||
      ad::socket_ops::set_internal_non_blocking(impl.socket_, impl.state_, true, p.p->ec_))
    reactor.start_op(ad::reactor::read_op, impl.socket_, impl.reactor_data_, p.p, is_continuation, true);
  else
    reactor.post_immediate_completion(p.p, is_continuation);
  p.v = p.p = 0;
}

struct Initiate {
  template <class Handler>
  void operator()(Handler&& handler, boost::asio::ip::tcp::socket* s, boost::asio::mutable_buffer buffer) const {
    auto& impl = ((*s).*SocketAccess::impl_member()).get_implementation();
    // A closed socket (no descriptor state), an empty buffer or a cancellable read: Asio's own read.
    if (!impl.reactor_data_ || buffer.size() == 0 ||
        boost::asio::get_associated_cancellation_slot(handler).is_connected()) {
      s->async_read_some(buffer, std::forward<Handler>(handler));
      return;
    }
    start_recv<false>(std::forward<Handler>(handler), s, buffer);
  }
};

}  // namespace drained_detail
#endif

/// Has the reactor tell a peer's end of stream apart (EPOLLRDHUP), which is how async_read_drained knows that
/// a short read from `s` emptied it. Without it those reads are socket.async_read_some's own. False when it is
/// not on (a socket not open, or not registered with epoll).
inline bool enable_drained_reads(boost::asio::ip::tcp::socket& s) {
#if SLUICE_DRAINED_READ
  auto& impl = ((s).*drained_detail::SocketAccess::impl_member()).get_implementation();
  return impl.reactor_data_ && drained_detail::watch_peer_close(impl.reactor_data_, impl.socket_);
#else
  (void)s;
  return false;
#endif
}

/// How many async_read_drained reads on this thread asked the kernel and found nothing (each one a recv(2)
/// spent before the wait). Tests read it; 0 where async_read_drained is async_read_some.
inline std::uint64_t drained_read_empty_reads() {
#if SLUICE_DRAINED_READ
  return drained_detail::empty_reads();
#else
  return 0;
#endif
}

/// Calls `handler(ec, pending)` when the client on `s` has something to say while it waits for an answer: a byte
/// it sent ahead (pending 1, ec clear), its end of stream (eof) or a reset, or the wait's cancellation
/// (operation_aborted). Unlike socket.async_wait, it makes no epoll_ctl(2) to re-arm the descriptor, and no
/// system call at all when the socket's last read emptied it (the next edge starts it). False, and nothing
/// started, where it does not apply (see above, and a socket not registered with the reactor): the caller then
/// waits with socket.async_wait. A socket not yet registered for EPOLLRDHUP is registered for it first.
template <class Handler>
bool async_wait_hangup(boost::asio::ip::tcp::socket& s, Handler&& handler) {
#if SLUICE_DRAINED_READ
  auto& impl = ((s).*drained_detail::SocketAccess::impl_member()).get_implementation();
  if (!impl.reactor_data_ || !drained_detail::watch_peer_close(impl.reactor_data_, impl.socket_)) return false;
  drained_detail::start_recv<true>(std::forward<Handler>(handler), &s, boost::asio::mutable_buffer());
  return true;
#else
  (void)s;
  (void)handler;
  return false;
#endif
}

/// socket.async_read_some(buffer, token), except that a read which leaves the socket empty lets the next read
/// wait for the reactor without first trying the socket (see above). Completes with (error_code, bytes).
template <class Token>
auto async_read_drained(boost::asio::ip::tcp::socket& s, boost::asio::mutable_buffer buffer, Token&& token) {
#if SLUICE_DRAINED_READ
  return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
      drained_detail::Initiate{}, token, &s, buffer);
#else
  return s.async_read_some(buffer, std::forward<Token>(token));
#endif
}

}  // namespace sluice
