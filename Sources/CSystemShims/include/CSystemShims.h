// C shims for the calls Swift's Glibc module cannot see: it is built without _GNU_SOURCE, so
// recvmmsg/sendmmsg, struct mmsghdr and the CPU-affinity calls are invisible to Swift.
#ifndef EE_SYSTEM_SHIMS_H
#define EE_SYSTEM_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>

/// Mirror of glibc's `struct mmsghdr` (checked with _Static_assert in shims.c).
typedef struct ee_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
} ee_mmsghdr;

/// recvmmsg(2), non-blocking (MSG_DONTWAIT). Returns the number of datagrams or -errno.
int ee_recvmmsg(int fd, ee_mmsghdr *msgs, unsigned int count);
/// sendmmsg(2), non-blocking (MSG_DONTWAIT). Returns the number sent or -errno.
int ee_sendmmsg(int fd, ee_mmsghdr *msgs, unsigned int count);

/// Bytes of control buffer one UDP_SEGMENT (GSO) cmsg takes.
size_t ee_udp_gso_control_size(void);
/// Makes `m` carry `control` (ee_udp_gso_control_size() bytes, owned by the caller) asking the
/// kernel to cut the datagram into `segment`-byte datagrams (UDP GSO); segment 0 clears it.
void ee_udp_set_gso(ee_mmsghdr *m, void *control, uint16_t segment);

/// Asks the kernel to hand this socket runs of same-size datagrams as one buffer (UDP GRO):
/// on loopback a GSO send then arrives whole instead of being cut into datagrams at the
/// socket. Returns 0 or -errno (an old kernel).
int ee_udp_enable_gro(int fd);
/// Bytes of control buffer one received UDP_GRO cmsg takes.
size_t ee_udp_gro_control_size(void);
/// Points `m` at `control` (ee_udp_gro_control_size() bytes, owned by the caller) before a
/// receive; recvmmsg shrinks msg_controllen, so this runs before every call.
void ee_udp_prepare_gro_receive(ee_mmsghdr *m, void *control);
/// After a receive: the size of each datagram in `m`'s buffer if the kernel coalesced several
/// (UDP_GRO cmsg), else 0. -1 if the datagram did not fit the buffer (MSG_TRUNC).
int ee_udp_received_segment_size(const ee_mmsghdr *m);

/// Opens a non-blocking IPv4 UDP socket bound to `ip:port` (network byte order not required:
/// `ip` and `port` are host order). Port 0 picks a free port. Returns the fd or -errno.
int ee_udp_open(uint32_t ip_host_order, uint16_t port, int buffer_bytes);
/// The bound port of a socket (host order), or -errno.
int ee_socket_port(int fd);

/// Fills a sockaddr_in (16 bytes at `out`).
void ee_make_sockaddr_in(void *out, uint32_t ip_host_order, uint16_t port);

/// Pins the calling thread to one CPU. Returns 0 or -errno.
int ee_pin_thread_to_cpu(int cpu);
/// The CPU the calling thread runs on, or -1.
int ee_current_cpu(void);
/// How many CPUs this process may run on (its affinity mask, not the machine's count).
int ee_cpu_count(void);
/// The index-th CPU of that mask, or -1.
int ee_allowed_cpu(int index);

/// CLOCK_MONOTONIC in nanoseconds (vDSO: no syscall).
uint64_t ee_now_ns(void);

/// memcpy for payloads (non-overlapping): avoids glibc's `rep movsb` where it is pathologically
/// slow on AMD CPUs (destination 1–63 bytes past the source modulo 4 KiB) by copying backward;
/// memcpy itself on other CPUs.
void ee_copy(void *restrict dst, const void *restrict src, size_t n);
/// The backward copy ee_copy uses there on AMD CPUs (64-byte steps from the end).
void ee_copy_backward(void *restrict dst, const void *restrict src, size_t n);
/// Asks the CPU to start loading [p, p + n) into its caches (one prefetch per 64-byte line).
static inline void ee_prefetch(const void *p, size_t n) {
    for (size_t i = 0; i < n; i += 64) __builtin_prefetch((const char *)p + i, 0, 3);
}
/// glibc's memcpy behind a call the Swift compiler cannot see through (for `eekv bench copy`).
void ee_libc_copy(void *restrict dst, const void *restrict src, size_t n);

/// Sets a name on the calling thread (for top/perf). Best effort.
void ee_set_thread_name(const char *name);

// MARK: Blocking TCP helpers for the session-management channel (control plane only).

/// Listens on `ip:port` (host order; port 0 picks one). Returns the fd or -errno.
int ee_tcp_listen(uint32_t ip_host_order, uint16_t port);
/// Connects to `ip:port` with a timeout in milliseconds. Returns the fd or -errno.
int ee_tcp_connect(uint32_t ip_host_order, uint16_t port, int timeout_ms);
/// Same, from `source_ip` (host order; 0: the kernel picks), e.g. another loopback address in tests.
int ee_tcp_connect_from(uint32_t source_ip_host_order, uint32_t ip_host_order, uint16_t port, int timeout_ms);
/// Accepts one connection (blocking). Returns the fd or -errno; `peer_ip` (may be NULL) gets the
/// peer's IPv4 address in host order.
int ee_tcp_accept(int listen_fd, uint32_t *peer_ip);
/// Sets SO_RCVTIMEO and SO_SNDTIMEO.
int ee_set_io_timeout(int fd, int timeout_ms);
/// Writes all `len` bytes. Returns 0 or -errno.
int ee_write_all(int fd, const void *buf, size_t len);
/// Reads exactly `len` bytes. Returns 0, -ECONNRESET on EOF, or -errno.
int ee_read_exact(int fd, void *buf, size_t len);
/// shutdown(fd, SHUT_RDWR), used to wake a thread blocked in accept().
void ee_shutdown(int fd);

/// The local IPv4 address (host order) the kernel would send from to reach `remote`; 0 if none.
uint32_t ee_local_address_for(uint32_t remote_host_order);

/// Unblocks SIGINT and SIGTERM in the calling thread (a parent may have started us with them
/// blocked, as libdispatch's threads have them).
void ee_unblock_termination_signals(void);

/// Resolves a host name or dotted quad to an IPv4 address (host order). Returns 0 or -1.
int ee_resolve_ipv4(const char *host, uint32_t *out_ip_host_order);



/// The CPU's spin-wait hint (PAUSE on x86); returns 0.
static inline int ee_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    return 0;
}

/// Asks for the cache line at `p` in exclusive state ahead of a write (an AES worker fetches the
/// completion words of a batch of jobs at once instead of missing on each in turn).
/// x86-64 needs PREFETCHW spelled out: without -mprfchw, `__builtin_prefetch(p, 1)` compiles to
/// PREFETCHT0, which brings the line in shared state, and each locked claim then pays its own
/// ownership round trip in turn. CPUs without PREFETCHW execute it as a NOP.
static inline void ee_prefetch_for_write(const void *p) {
#if defined(__x86_64__)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1, 3);
#endif
}

/// CPU time consumed by the calling thread, in nanoseconds.
uint64_t ee_thread_cpu_ns(void);

/// A non-blocking eventfd that another thread rings to wake a dispatch thread sleeping in
/// ee_poll_two; -errno on failure.
int ee_doorbell_open(void);
/// Rings it (thread-safe, async-signal-safe).
void ee_doorbell_ring(int fd);
/// Clears it (after a wake-up).
void ee_doorbell_clear(int fd);
/// poll() on `fd` (POLLIN) and, if `doorbell` >= 0, on it too, for up to `timeout_ms`.
int ee_poll_two(int fd, int doorbell, int timeout_ms);

/// Allocates the file's blocks for [offset, offset + length) (fallocate mode 0: holes get
/// blocks, the size grows if needed). 0, or the errno (ENOSPC when the file system is full).
int ee_fallocate(int fd, int64_t offset, int64_t length);
/// posix_fallocate: where the file system has no fallocate (some NFS, older ZFS), glibc writes a
/// zero byte into each block instead (only where the byte is zero already). Returns 0 or an errno.
int ee_posix_fallocate(int fd, int64_t offset, int64_t length);

/// Whether `length` bytes of address space can be mapped at once right now: maps and unmaps an
/// inaccessible, unreserved anonymous region. 0, or the errno.
int ee_probe_address_space(size_t length);
#endif
