#ifndef _GNU_SOURCE
#error "CSystemShims must be built with _GNU_SOURCE (Package.swift sets it)"
#endif

#include "CSystemShims.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <netinet/udp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <signal.h>
#if defined(__x86_64__)
#include <cpuid.h>
#include <emmintrin.h>
#endif

_Static_assert(sizeof(ee_mmsghdr) == sizeof(struct mmsghdr), "ee_mmsghdr must mirror struct mmsghdr");
_Static_assert(offsetof(ee_mmsghdr, msg_len) == offsetof(struct mmsghdr, msg_len), "msg_len offset");
_Static_assert(sizeof(struct sockaddr_in) == 16, "sockaddr_in is 16 bytes");

int ee_recvmmsg(int fd, ee_mmsghdr *msgs, unsigned int count) {
    int n = recvmmsg(fd, (struct mmsghdr *)msgs, count, MSG_DONTWAIT, NULL);
    return n < 0 ? -errno : n;
}

int ee_sendmmsg(int fd, ee_mmsghdr *msgs, unsigned int count) {
    int n = sendmmsg(fd, (struct mmsghdr *)msgs, count, MSG_DONTWAIT);
    return n < 0 ? -errno : n;
}

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* linux/udp.h; older libc headers lack it */
#endif

size_t ee_udp_gso_control_size(void) { return CMSG_SPACE(sizeof(uint16_t)); }

void ee_udp_set_gso(ee_mmsghdr *m, void *control, uint16_t segment) {
    if (segment == 0) {
        m->msg_hdr.msg_control = NULL;
        m->msg_hdr.msg_controllen = 0;
        return;
    }
    m->msg_hdr.msg_control = control;
    m->msg_hdr.msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    struct cmsghdr *c = CMSG_FIRSTHDR(&m->msg_hdr);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &segment, sizeof segment);
}

#ifndef UDP_GRO
#define UDP_GRO 104 /* linux/udp.h */
#endif

int ee_udp_enable_gro(int fd) {
    int one = 1;
    return setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof one) == 0 ? 0 : -errno;
}

size_t ee_udp_gro_control_size(void) { return CMSG_SPACE(sizeof(int)); }

void ee_udp_prepare_gro_receive(ee_mmsghdr *m, void *control) {
    m->msg_hdr.msg_control = control;
    m->msg_hdr.msg_controllen = CMSG_SPACE(sizeof(int));
    m->msg_hdr.msg_flags = 0;
}

int ee_udp_received_segment_size(const ee_mmsghdr *m) {
    if (m->msg_hdr.msg_flags & MSG_TRUNC) return -1;
    if (m->msg_hdr.msg_controllen == 0) return 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m->msg_hdr); c != NULL;
         c = CMSG_NXTHDR((struct msghdr *)&m->msg_hdr, c)) {
        if (c->cmsg_level != SOL_UDP || c->cmsg_type != UDP_GRO) continue;
        // The kernel writes an int (udp_cmsg_recv).
        if (c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int size;
            memcpy(&size, CMSG_DATA(c), sizeof size);
            return size;
        }
    }
    return 0;
}

void ee_make_sockaddr_in(void *out, uint32_t ip, uint16_t port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons(port);
    sa.sin_addr.s_addr = htonl(ip);
    memcpy(out, &sa, sizeof sa);
}

int ee_udp_open(uint32_t ip, uint16_t port, int buffer_bytes) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    if (buffer_bytes > 0) {
        // Best effort: the kernel caps these at net.core.{r,w}mem_max unless we are root (FORCE).
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buffer_bytes, sizeof buffer_bytes) != 0)
            (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buffer_bytes, sizeof buffer_bytes);
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buffer_bytes, sizeof buffer_bytes) != 0)
            (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer_bytes, sizeof buffer_bytes);
    }
    struct sockaddr_in sa;
    ee_make_sockaddr_in(&sa, ip, port);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int ee_socket_port(int fd) {
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    if (getsockname(fd, (struct sockaddr *)&sa, &len) != 0) return -errno;
    return ntohs(sa.sin_port);
}

int ee_pin_thread_to_cpu(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return -pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

int ee_current_cpu(void) { return sched_getcpu(); }

/* The CPUs the process may run on (taskset, cgroup cpusets), read from the main thread's mask so
   the answer does not change once a dispatch thread has pinned itself. */
static int allowed_cpus(cpu_set_t *set) { return sched_getaffinity(getpid(), sizeof *set, set); }

int ee_cpu_count(void) {
    cpu_set_t set;
    if (allowed_cpus(&set) == 0) return CPU_COUNT(&set);
    return (int)sysconf(_SC_NPROCESSORS_ONLN);
}

int ee_allowed_cpu(int index) {
    cpu_set_t set;
    if (allowed_cpus(&set) != 0) return index;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set) && index-- == 0) return cpu;
    }
    return -1;
}

uint64_t ee_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// glibc 2.36 copies 2 KiB and more with `rep movsb`, which on AMD Zen 3 runs about 20 times
// slower when the destination lies 1 to 63 bytes past the source modulo 4 KiB: each load waits on
// a store to the same page offset just before it ("4K aliasing"). Malloc'd arrays land at any
// offset, so a 4 KiB value copy took 2 µs instead of 0.1 µs at random. Copying backward, a load
// never meets an earlier store to its page offset. Intel's is not slowed that way: on an Emerald
// Rapids Xeon glibc copied 64 KiB at those distances in 1.7 µs and the backward loop in 3.5–3.8,
// so there ee_copy is memcpy.
static int rep_movsb_aliases(void) {
    static int cached = -1;  // a benign race: every thread computes the same answer
    if (cached < 0) {
        unsigned a, b, c, d;
        // "AuthenticAMD" in EBX, EDX, ECX.
        cached = __get_cpuid(0, &a, &b, &c, &d) && b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163;
    }
    return cached;
}

void ee_copy(void *restrict dst, const void *restrict src, size_t n) {
#if !defined(__x86_64__)
    memcpy(dst, src, n);
#else
    uintptr_t ahead = ((uintptr_t)dst - (uintptr_t)src) & 4095;
    if (n < 2048 || ahead == 0 || ahead >= 64 || !rep_movsb_aliases()) {
        memcpy(dst, src, n);
        return;
    }
    ee_copy_backward(dst, src, n);
#endif
}

void ee_copy_backward(void *restrict dst, const void *restrict src, size_t n) {
#if !defined(__x86_64__)
    memcpy(dst, src, n);
#else
    uint8_t *d = dst;
    const uint8_t *s = src;
    size_t i = n;
    while (i >= 64) {
        i -= 64;
        // Four loads before four stores: the 64-byte step never reads what it writes.
        __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
        _mm_storeu_si128((__m128i *)(d + i), a);
        _mm_storeu_si128((__m128i *)(d + i + 16), b);
        _mm_storeu_si128((__m128i *)(d + i + 32), c);
        _mm_storeu_si128((__m128i *)(d + i + 48), e);
    }
    memcpy(d, s, i);  // under 64 bytes: no rep movsb
#endif
}

void ee_libc_copy(void *restrict dst, const void *restrict src, size_t n) { memcpy(dst, src, n); }

void ee_set_thread_name(const char *name) {
    char buf[16];
    strncpy(buf, name, sizeof buf - 1);
    buf[sizeof buf - 1] = 0;
    (void)pthread_setname_np(pthread_self(), buf);
}

int ee_tcp_listen(uint32_t ip, uint16_t port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa;
    ee_make_sockaddr_in(&sa, ip, port);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

int ee_tcp_connect(uint32_t ip, uint16_t port, int timeout_ms) {
    return ee_tcp_connect_from(0, ip, port, timeout_ms);
}

int ee_tcp_connect_from(uint32_t source_ip, uint32_t ip, uint16_t port, int timeout_ms) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -errno;
    if (source_ip != 0) {
        struct sockaddr_in src;
        ee_make_sockaddr_in(&src, source_ip, 0);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) { int e = errno; close(fd); return -e; }
    }
    struct sockaddr_in sa;
    ee_make_sockaddr_in(&sa, ip, port);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        if (errno != EINPROGRESS) { int e = errno; close(fd); return -e; }
        struct pollfd p = { .fd = fd, .events = POLLOUT };
        int r = poll(&p, 1, timeout_ms);
        if (r <= 0) { close(fd); return r == 0 ? -ETIMEDOUT : -errno; }
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            close(fd);
            return err ? -err : -EIO;
        }
    }
    int flags = fcntl(fd, F_GETFL);
    (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)ee_set_io_timeout(fd, timeout_ms);
    return fd;
}

int ee_tcp_accept(int listen_fd, uint32_t *peer_ip) {
    int fd;
    struct sockaddr_in peer;
    socklen_t len = sizeof peer;
    memset(&peer, 0, sizeof peer);
    do { fd = accept4(listen_fd, (struct sockaddr *)&peer, &len, SOCK_CLOEXEC); } while (fd < 0 && errno == EINTR);
    if (fd < 0) return -errno;
    if (peer_ip) *peer_ip = peer.sin_family == AF_INET ? ntohl(peer.sin_addr.s_addr) : 0;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int ee_set_io_timeout(int fd, int timeout_ms) {
    struct timeval tv = { .tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000 };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) return -errno;
    return 0;
}

int ee_write_all(int fd, const void *buf, size_t len) {
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) { if (errno == EINTR) continue; return -errno; }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int ee_read_exact(int fd, void *buf, size_t len) {
    char *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n == 0) return -ECONNRESET;
        if (n < 0) { if (errno == EINTR) continue; return -errno; }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void ee_shutdown(int fd) { (void)shutdown(fd, SHUT_RDWR); }

int ee_resolve_ipv4(const char *host, uint32_t *out) {
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) == 1) { *out = ntohl(a.s_addr); return 0; }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET;
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL) return -1;
    *out = ntohl(((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr);
    freeaddrinfo(res);
    return 0;
}

uint64_t ee_thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint32_t ee_local_address_for(uint32_t remote) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    struct sockaddr_in sa;
    ee_make_sockaddr_in(&sa, remote, 9);  /* connect() on UDP sends nothing */
    uint32_t out = 0;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
        socklen_t len = sizeof sa;
        if (getsockname(fd, (struct sockaddr *)&sa, &len) == 0) out = ntohl(sa.sin_addr.s_addr);
    }
    close(fd);
    return out;
}

void ee_unblock_termination_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

int ee_fallocate(int fd, int64_t offset, int64_t length) {
    int r;
    do {
        r = fallocate(fd, 0, (off_t)offset, (off_t)length);
    } while (r != 0 && errno == EINTR);
    return r == 0 ? 0 : errno;
}

int ee_posix_fallocate(int fd, int64_t offset, int64_t length) {
    int r;
    do {
        r = posix_fallocate(fd, (off_t)offset, (off_t)length);
    } while (r == EINTR);
    return r;
}

int ee_probe_address_space(size_t length) {
    void *p = mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return errno;
    munmap(p, length);
    return 0;
}

int ee_doorbell_open(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

void ee_doorbell_ring(int fd) {
    uint64_t one = 1;
    // EAGAIN only if the counter is about to overflow: it is rung already.
    (void)!write(fd, &one, sizeof one);
}

void ee_doorbell_clear(int fd) {
    uint64_t value;
    (void)!read(fd, &value, sizeof value);
}

int ee_poll_two(int fd, int doorbell, int timeout_ms) {
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = doorbell, .events = POLLIN}};
    return poll(p, doorbell >= 0 ? 2 : 1, timeout_ms);
}
