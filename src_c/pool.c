/* pool.c - the engine's worker threads: started on first use, kept for the life of the process,
 * shared by every model and stream.
 *
 * frnn_parallel hands one region (a function split in n parts) to n - 1 workers and runs part 0
 * itself. One region runs at a time: a caller that finds the pool busy (another Python thread's
 * predict, or a region started from inside a region) runs its region serially instead of waiting,
 * so nothing ever blocks on the pool and the thread count is never oversubscribed.
 *
 * Workers spin for FRNN_SPIN_NS after their last region before sleeping on a condition variable:
 * back-to-back stream steps (a few µs apart) then start without a wake-up (~5-50 µs); an idle
 * process costs nothing. Barriers and the join spin ~20 µs, then yield the CPU at every check.
 * set_num_threads(n) assumes n free cores: on a machine busy with other processes, fewer
 * threads are faster.
 *
 * fork(): the child has no workers; pthread_atfork resets the pool there, and the child starts
 * its own on first use.
 */
#include "pool.h"
#include "kernels.h"
#include <pthread.h>
#include <sched.h>
#include <time.h>

#define FRNN_POOL_MAX 64
#define FRNN_SPIN_NS 200000L

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

static struct {
    pthread_mutex_t busy;             /* held for the whole of one region */
    pthread_mutex_t mu;               /* with cv: sleeping workers */
    pthread_cond_t cv;
    int nworkers;                     /* started (only grows; under busy) */
    unsigned gen0[FRNN_POOL_MAX];     /* gen when each worker was started */
    atomic_uint gen;                  /* region counter: a change wakes the workers */
    atomic_int sleepers;
    atomic_int pending;               /* parts of the current region still running in workers */
    /* the current region, written under busy while gen is odd: atomics (relaxed; gen's
     * acquire/release orders them), since a worker may read them while they are rewritten and
     * only then see gen moved on and drop what it read (a sequence lock) */
    _Atomic(frnn_task_fn) fn;
    _Atomic(void *) arg;
    atomic_int nt;
} P = {.busy = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

/* spin-wait step i of a wait that started at *t0: pause; after FRNN_YIELD_NS, yield the CPU.
 * Waits in a region are short when every part has a core (parts are balanced to ~1 µs); a longer
 * wait means a part lost its core to another process, and spinning would only delay it further
 * (measured with a competing process on one of 2 cores: LSTM 256 batch 1, 2 threads, 26 ms per
 * call with 200 µs of spinning per wait, 1 thread 3.6 ms). */
#define FRNN_YIELD_NS 20000L
static void backoff(int i, long *t0) {
    cpu_relax();
    if (i % 64 == 0) {
        if (!*t0) *t0 = now_ns();
        else if (now_ns() - *t0 > FRNN_YIELD_NS) sched_yield();
    }
}

/* Contention: the parts of a region wait for each other at the per-step barriers ("watched"),
 * about 1 µs when every part has a core. When another process takes one, a part stalls for a
 * scheduler slice (ms) and the others wait. The pool keeps a moving average of the fraction of
 * the regions' time spent waiting there; above 1/4 it runs the regions of the next
 * FRNN_SERIAL_NS serially, then tries threads again. An isolated hiccup (an interrupt, the
 * hypervisor) moves the average by little. Measured with a competing busy process on one of 2
 * cores, LSTM 256 batch 1 at 2 threads: 26 ms per call spinning, 5.5-7 ms yielding, against
 * 2.3 ms on 1 thread. */
#define FRNN_SERIAL_NS 100000000L
static atomic_long wait_ns;        /* waits at watched barriers in the current region */
static atomic_int watched;         /* watched waits in the current region */
static double wait_avg;            /* under P.busy */
static atomic_long serial_until;

/* P.gen is a sequence lock over the region fields: odd while frnn_parallel writes them, even
 * once published. A worker that reads them and then sees gen moved on was not a part of that
 * region (its caller could not have finished without it), so it just waits for the next one. */
static int published(unsigned g, unsigned seen) { return !(g & 1) && g != seen; }

static void *worker(void *idp) {
    const int id = (int)(long)idp;    /* runs part id + 1 */
    (void)frnn_fp_enter();            /* our thread: denormals flushed for good (kernels.h) */
    unsigned seen = P.gen0[id];       /* regions before this worker existed are not its */
    for (;;) {
        unsigned g = atomic_load_explicit(&P.gen, memory_order_acquire);
        long t0 = now_ns();
        for (int i = 1; !published(g, seen); i++) {
            cpu_relax();
            g = atomic_load_explicit(&P.gen, memory_order_acquire);
            if (i % 64 == 0 && now_ns() - t0 > FRNN_SPIN_NS) break;
        }
        if (!published(g, seen)) {
            pthread_mutex_lock(&P.mu);
            atomic_fetch_add(&P.sleepers, 1);          /* seq_cst: pairs with frnn_parallel */
            while (!published(g = atomic_load(&P.gen), seen)) pthread_cond_wait(&P.cv, &P.mu);
            atomic_fetch_sub(&P.sleepers, 1);
            pthread_mutex_unlock(&P.mu);
        }
        frnn_task_fn fn = atomic_load_explicit(&P.fn, memory_order_relaxed);
        void *arg = atomic_load_explicit(&P.arg, memory_order_relaxed);
        int nt = atomic_load_explicit(&P.nt, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);     /* the reads above before the check below */
        if (atomic_load_explicit(&P.gen, memory_order_relaxed) != g) continue;   /* a later region */
        seen = g;
        if (id + 1 < nt) {
            fn(arg, id + 1, nt);
            atomic_fetch_sub_explicit(&P.pending, 1, memory_order_release);
        }
    }
    return NULL;
}

static void after_fork_child(void) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    P.busy = m; P.mu = m; P.cv = c;
    P.nworkers = 0;
    atomic_store(&P.sleepers, 0);
    atomic_store(&P.pending, 0);
    atomic_store(&wait_ns, 0);
    atomic_store(&watched, 0);
    atomic_store(&serial_until, 0);
    wait_avg = 0;
}
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static void fork_init(void) { pthread_atfork(NULL, NULL, after_fork_child); }

static void barrier_init(frnn_barrier *b, int n) {
    if (!b) return;
    atomic_init(&b->count, 0);
    atomic_init(&b->phase, 0);
    b->n = n;
}

void frnn_parallel(int nt, frnn_task_fn fn, void *arg, frnn_barrier *bar) {
    if (nt > FRNN_POOL_MAX) nt = FRNN_POOL_MAX;
    if (nt > 1 && atomic_load_explicit(&serial_until, memory_order_relaxed) > now_ns()) nt = 1;
    if (nt <= 1 || pthread_mutex_trylock(&P.busy) != 0) {
        barrier_init(bar, 1);
        fn(arg, 0, 1);
        return;
    }
    pthread_once(&fork_once, fork_init);
    while (P.nworkers < nt - 1) {
        pthread_t t;
        pthread_attr_t at;
        int ok = pthread_attr_init(&at) == 0;
        if (ok) {
            P.gen0[P.nworkers] = atomic_load(&P.gen);   /* even: no region is being written */
            pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
            ok = pthread_create(&t, &at, worker, (void *)(long)P.nworkers) == 0;
            pthread_attr_destroy(&at);
        }
        if (!ok) break;
        P.nworkers++;
    }
    if (nt > P.nworkers + 1) nt = P.nworkers + 1;
    if (nt <= 1) {
        pthread_mutex_unlock(&P.busy);
        barrier_init(bar, 1);
        fn(arg, 0, 1);
        return;
    }
    barrier_init(bar, nt);
    const long t_start = now_ns();
    atomic_fetch_add(&P.gen, 1);                       /* odd: being written */
    atomic_thread_fence(memory_order_release);         /* pairs with the worker's acquire fence */
    atomic_store_explicit(&P.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&P.arg, arg, memory_order_relaxed);
    atomic_store_explicit(&P.nt, nt, memory_order_relaxed);
    atomic_store(&P.pending, nt - 1);
    atomic_fetch_add(&P.gen, 1);                       /* even, seq_cst: published */
    if (atomic_load(&P.sleepers) > 0) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.cv);
        pthread_mutex_unlock(&P.mu);
    }
    fn(arg, 0, nt);
    long t0 = 0;
    for (int i = 1; atomic_load_explicit(&P.pending, memory_order_acquire) > 0; i++) backoff(i, &t0);
    if (atomic_exchange(&watched, 0)) {
        const long t1 = now_ns();
        const double frac = (double)atomic_exchange(&wait_ns, 0) / ((double)(t1 - t_start) * nt);
        wait_avg = 0.9 * wait_avg + 0.1 * frac;
        if (wait_avg > 0.25) {
            atomic_store(&serial_until, t1 + FRNN_SERIAL_NS);
            wait_avg = 0;
        }
    }
    pthread_mutex_unlock(&P.busy);
}

void frnn_barrier_wait(frnn_barrier *b, int watch) {
    if (b->n <= 1) return;
    const int ph = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (atomic_fetch_add_explicit(&b->count, 1, memory_order_acq_rel) == b->n - 1) {
        atomic_store_explicit(&b->count, 0, memory_order_relaxed);
        atomic_store_explicit(&b->phase, ph + 1, memory_order_release);
        return;
    }
    long t0 = 0;
    const long arrived = watch ? now_ns() : 0;
    for (int i = 1; atomic_load_explicit(&b->phase, memory_order_acquire) == ph; i++) backoff(i, &t0);
    if (watch) {
        atomic_fetch_add_explicit(&wait_ns, now_ns() - arrived, memory_order_relaxed);
        atomic_store_explicit(&watched, 1, memory_order_relaxed);
    }
}
