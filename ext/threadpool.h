/*
** threadpool.h — a tiny persistent fork-join pool (owns: its worker
** threads). One pool per Gpt2Scratch (per connection); no global state.
**
** pool_run(p, fn, arg) runs fn(arg, t, n) on n threads at once — the caller
** is thread 0, workers are 1..n-1 — and returns when all have returned.
** fn splits its work by t (or by an atomic counter in arg). Workers spin
** briefly after a job (decode issues ~60 jobs per token, microseconds
** apart), then sleep on a condition variable, so an idle pool costs nothing.
** A pool is driven by one thread at a time (a SQLite connection is). In a
** forked child the pool runs everything on the caller (its workers stayed
** in the parent).
*/
#ifndef GPT2_THREADPOOL_H
#define GPT2_THREADPOOL_H

typedef struct Pool Pool;
typedef void (*PoolFn)(void *arg, int t, int n);

#define POOL_MAX_THREADS 64

/* A pool of n threads (caller included; n-1 workers; n is clamped to
** 1 .. POOL_MAX_THREADS). If threads cannot be created the pool has fewer
** (at least 1, pool_threads tells): the result is NULL only on OOM. */
Pool *pool_new(int n);
/* Joins the workers. NULL is fine. */
void pool_free(Pool *p);
int pool_threads(const Pool *p);
/* fn(arg, t, n) for t = 0..n-1, t = 0 on the calling thread. */
void pool_run(Pool *p, PoolFn fn, void *arg);

#endif
