/* pool.h - internal: the engine's persistent worker threads and the barrier of a parallel region
 * (pool.c). */
#ifndef FRNN_POOL_H
#define FRNN_POOL_H
#include <stdatomic.h>

/* One part of a parallel region: tid in [0, nt). Every part must also work when the region runs
 * with nt = 1 (then it does all the work itself). */
typedef void (*frnn_task_fn)(void *arg, int tid, int nt);

/* A barrier for the parts of one region. */
typedef struct {
    atomic_int count, phase;
    int n;
} frnn_barrier;
/* watch: the parts arrive within ~1 µs of each other when each has a core (per-step barriers);
 * a long wait there means they do not, and the pool runs serially for a while (pool.c). */
void frnn_barrier_wait(frnn_barrier *b, int watch);

/* Run fn(arg, tid, n) for every tid in [0, n) at once, n <= nt, the caller taking tid 0; returns
 * when every part has returned. n is nt unless the pool is busy (a region already running: nested
 * or from another thread) or threads could not be started, then fewer, down to 1 (fn(arg, 0, 1)
 * in the caller: the region degrades to serial, it never waits for the pool). bar (or NULL) is
 * set up for the n parts before any starts. */
void frnn_parallel(int nt, frnn_task_fn fn, void *arg, frnn_barrier *bar);
#endif
