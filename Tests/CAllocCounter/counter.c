#include "CAllocCounter.h"

#include <errno.h>
#include <stddef.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

// glibc's real allocator, exported under these names: forwarding to them needs no dlsym and
// so no bootstrap arena (research/swift-style.md §1.6).
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static _Thread_local bool counting;
static _Thread_local ee_alloc_counts counts;

static inline void count_alloc(size_t n) {
    if (counting) { counts.mallocs++; counts.bytes += n; }
}

void *malloc(size_t n) {
    count_alloc(n);
    return __libc_malloc(n);
}

void free(void *p) {
    if (p && counting) counts.frees++;
    __libc_free(p);
}

void *calloc(size_t n, size_t size) {
    count_alloc(n * size);
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n) {
    if (counting) {
        counts.mallocs++;
        counts.bytes += n;
        if (p) counts.frees++;
    }
    return __libc_realloc(p, n);
}

void *memalign(size_t alignment, size_t n) {
    count_alloc(n);
    return __libc_memalign(alignment, n);
}

void *aligned_alloc(size_t alignment, size_t n) {
    count_alloc(n);
    return __libc_memalign(alignment, n);
}

int posix_memalign(void **out, size_t alignment, size_t n) {
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) return EINVAL;
    count_alloc(n);
    void *p = __libc_memalign(alignment, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}

void *valloc(size_t n) {
    count_alloc(n);
    return __libc_memalign((size_t)sysconf(_SC_PAGESIZE), n);
}

void ee_alloc_counting_start(void) {
    memset(&counts, 0, sizeof counts);
    counting = true;
}

ee_alloc_counts ee_alloc_counting_stop(void) {
    counting = false;
    return counts;
}
