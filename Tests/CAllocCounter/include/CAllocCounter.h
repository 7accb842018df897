// Test-only malloc interposer. Linked into a test executable, the definitions in counter.c win
// process-wide over glibc's (ELF symbol resolution), so every allocation, the Swift runtime's
// included, passes through them. Counters are per thread, so a test can assert that one
// thread (an Rpc's dispatch thread) allocated nothing while other threads do as they like.
#ifndef EE_ALLOC_COUNTER_H
#define EE_ALLOC_COUNTER_H
#include <stdint.h>

typedef struct ee_alloc_counts {
    uint64_t mallocs;   // malloc, calloc, realloc(new block), memalign family
    uint64_t frees;
    uint64_t bytes;
} ee_alloc_counts;

/// Resets this thread's counters and starts counting on this thread.
void ee_alloc_counting_start(void);
/// Stops counting on this thread and returns what was counted since the start.
ee_alloc_counts ee_alloc_counting_stop(void);

#endif
