/*
** threadpool.c — see threadpool.h.
**
** Hand-off without locks on the hot path: the caller publishes (fn, arg)
** and bumps `gen`; workers spinning on `gen` start at once. A worker that
** has spun SPIN_NS without news sleeps on `wake`; the caller only takes the
** mutex when `sleepers` says someone sleeps. Completion is the mirror image
** (`pending`, `caller_sleeping`, `done`). Both hand-offs are Dekker-style
** (store own flag, then load the other's, all seq_cst), so a wake-up can
** never be missed.
*/
#include "threadpool.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define SPIN_NS 200000 /* ~0.2 ms: longer than the gaps between a token's jobs */

typedef struct Worker {
  struct Pool *p;
  int t; /* thread index, 1..n-1 */
} Worker;

struct Pool {
  int n;                      /* threads including the caller */
  pthread_t th[POOL_MAX_THREADS];
  Worker w[POOL_MAX_THREADS];
  pthread_mutex_t mu;
  pthread_cond_t wake;        /* sleeping workers wait here */
  pthread_cond_t done;        /* a sleeping caller waits here */
  atomic_uint gen;            /* job generation; bumped once per job */
  atomic_int pending;         /* workers still running the current job */
  atomic_int sleepers;        /* workers blocked on wake */
  atomic_int caller_sleeping; /* caller blocked on done */
  int quit;                   /* set (before a gen bump) to stop workers */
  pid_t pid;                  /* creator: a forked child has no workers */
  PoolFn fn;                  /* current job */
  void *arg;
};

static void relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Spin until cond(p) is false for SPIN_NS; 1 if it became false. */
#define SPIN_WHILE(cond)                                        \
  do {                                                          \
    long long t0_ = 0;                                          \
    for (unsigned i_ = 1; (cond); i_++) {                       \
      relax();                                                  \
      if ((i_ & 63) == 0) {                                     \
        long long t_ = now_ns();                                \
        if (!t0_) t0_ = t_;                                     \
        else if (t_ - t0_ > SPIN_NS) break;                     \
      }                                                         \
    }                                                           \
  } while (0)

static void *worker_main(void *a) {
  Worker *w = a;
  Pool *p = w->p;
  unsigned seen = 0; /* gen starts at 0, before any worker exists */
  for (;;) {
    SPIN_WHILE(atomic_load(&p->gen) == seen);
    if (atomic_load(&p->gen) == seen) {
      pthread_mutex_lock(&p->mu);
      atomic_fetch_add(&p->sleepers, 1);
      while (atomic_load(&p->gen) == seen) pthread_cond_wait(&p->wake, &p->mu);
      atomic_fetch_sub(&p->sleepers, 1);
      pthread_mutex_unlock(&p->mu);
    }
    seen = atomic_load(&p->gen);
    if (p->quit) break;
    p->fn(p->arg, w->t, p->n);
    if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeping)) {
      pthread_mutex_lock(&p->mu);
      pthread_cond_signal(&p->done);
      pthread_mutex_unlock(&p->mu);
    }
  }
  return NULL;
}

Pool *pool_new(int n) {
  Pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  if (n < 1) n = 1;
  if (n > POOL_MAX_THREADS) n = POOL_MAX_THREADS;
  p->n = 1;
  p->pid = getpid();
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->wake, NULL);
  pthread_cond_init(&p->done, NULL);
  /* workers never take the host's signals */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (int t = 1; t < n; t++) {
    p->w[t].p = p;
    p->w[t].t = t;
    if (pthread_create(&p->th[t], NULL, worker_main, &p->w[t])) break; /* run with fewer */
    p->n = t + 1;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return p;
}

int pool_threads(const Pool *p) { return p ? p->n : 1; }

void pool_run(Pool *p, PoolFn fn, void *arg) {
  if (!p || p->n == 1 || getpid() != p->pid) { /* after fork() only the caller exists */
    fn(arg, 0, 1);
    return;
  }
  p->fn = fn;
  p->arg = arg;
  atomic_store(&p->pending, p->n - 1);
  atomic_fetch_add(&p->gen, 1); /* publishes fn, arg, pending */
  if (atomic_load(&p->sleepers) > 0) {
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
  }
  fn(arg, 0, p->n);
  SPIN_WHILE(atomic_load(&p->pending) > 0);
  if (atomic_load(&p->pending) > 0) {
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->caller_sleeping, 1);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->mu);
    atomic_store(&p->caller_sleeping, 0);
    pthread_mutex_unlock(&p->mu);
  }
}

void pool_free(Pool *p) {
  if (!p) return;
  if (p->n > 1 && getpid() == p->pid) {
    p->quit = 1;
    atomic_fetch_add(&p->gen, 1);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int t = 1; t < p->n; t++) pthread_join(p->th[t], NULL);
  }
  pthread_cond_destroy(&p->done);
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->mu);
  free(p);
}
