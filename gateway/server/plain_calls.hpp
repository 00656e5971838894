#pragma once
// The socket calls of a worker's hot path, made without glibc's cancellation bookkeeping.
//
// glibc's recv(2), sendmsg(2) and the other calls that POSIX makes cancellation points switch the calling
// thread to asynchronous cancellation around the system call whenever the process has more than one thread:
// an atomic compare-and-exchange on the thread's cancel state before the call and another after it
// (__pthread_enable_asynccancel, __pthread_disable_asynccancel; about 1% of a worker's samples in row 1's
// profile, where a single-threaded nginx skips them). Sluice never cancels a thread, so the reads and writes
// that every request makes go to the kernel through syscall(2): the same system call, with none of that.
// Elsewhere than Linux they are the plain calls.
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sluice::plain {

/// recv(2): the bytes read, 0 at the end of the stream, -1 with errno set.
inline ssize_t recv(int fd, void* data, std::size_t size, int flags) noexcept {
#if defined(__linux__)
  return static_cast<ssize_t>(::syscall(SYS_recvfrom, fd, data, size, flags, nullptr, nullptr));
#else
  return ::recv(fd, data, size, flags);
#endif
}

/// sendmsg(2) of `count` buffers, with MSG_NOSIGNAL (a closed peer is an EPIPE, never a SIGPIPE): the bytes
/// written, -1 with errno set.
inline ssize_t send_gather(int fd, const ::iovec* buffers, std::size_t count) noexcept {
  ::msghdr msg{};
  msg.msg_iov = const_cast<::iovec*>(buffers);
  msg.msg_iovlen = count;
#if defined(__linux__)
  return static_cast<ssize_t>(::syscall(SYS_sendmsg, fd, &msg, MSG_NOSIGNAL));
#else
  return ::sendmsg(fd, &msg, MSG_NOSIGNAL);
#endif
}

}  // namespace sluice::plain
