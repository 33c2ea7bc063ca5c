/*
** oom_alloc.c — the failing allocator of the OOM test build (see oom_alloc.h).
**
** Every allocation made by the extension's code (oom_malloc & co.), by Jansson
** (json_set_alloc_funcs) and SQLite (SQLITE_CONFIG_MALLOC, oom_sqlite_install)
** takes a number from one counter while injection is armed; allocation number
** `fail_at` fails (mode ONCE), or every one from `fail_at` on (mode PERSIST).
** The extension's and Jansson's live blocks are kept in a pointer set, so the
** driver can check that a failed call freed what it allocated; SQLite's own
** accounting (sqlite3_memory_used) covers its blocks. Pointers that were not
** allocated here (realpath's result, PCRE2's) are passed to the real free().
** Thread-safe: tok_load parses merges.txt on a helper thread. With OOM_TRACE
** set, the stack of the first refused allocation is printed.
*/
#include "oom_alloc.h"

#undef malloc
#undef calloc
#undef realloc
#undef aligned_alloc
#undef strdup
#undef free

#include <execinfo.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#include "sqlite3.h"

#include "oom_ctl.h"

atomic_long oom_count;       /* allocations numbered since oom_arm */
atomic_long oom_fail_at;     /* 0: disarmed */
atomic_int oom_mode;         /* OOM_ONCE or OOM_PERSIST */
atomic_long oom_failed;      /* allocations refused since oom_arm */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uintptr_t *set;       /* open addressing; 0 empty, 1 deleted */
static size_t set_cap, set_used, set_live;

void oom_arm(long n, int mode) {
  atomic_store(&oom_count, 0);
  atomic_store(&oom_failed, 0);
  atomic_store(&oom_mode, mode);
  atomic_store(&oom_fail_at, n);
}

void oom_disarm(void) { atomic_store(&oom_fail_at, 0); }

/* Nonzero: this allocation must fail. */
static int should_fail(void) {
  long at = atomic_load(&oom_fail_at);
  if (!at) return 0;
  long k = atomic_fetch_add(&oom_count, 1) + 1;
  int f = atomic_load(&oom_mode) == OOM_PERSIST ? k >= at : k == at;
  if (f && atomic_fetch_add(&oom_failed, 1) == 0 && getenv("OOM_TRACE")) {
    void *bt[32]; /* OOM_TRACE=1: where the first refused allocation came from */
    fprintf(stderr, "oom: allocation %ld refused at:\n", k);
    backtrace_symbols_fd(bt, backtrace(bt, 32), 2);
  }
  return f;
}

static size_t slot(uintptr_t p, size_t cap) {
  uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull;
  return (size_t)(h >> 20) & (cap - 1);
}

static void set_grow(void) {
  size_t ncap = set_cap ? set_cap * 2 : 1 << 16;
  uintptr_t *n = calloc(ncap, sizeof *n);
  if (!n) abort();
  for (size_t i = 0; i < set_cap; i++)
    if (set[i] > 1) {
      size_t j = slot(set[i], ncap);
      while (n[j]) j = (j + 1) & (ncap - 1);
      n[j] = set[i];
    }
  free(set);
  set = n;
  set_cap = ncap;
  set_used = set_live;
}

static void set_add(void *p) {
  if (!p) return;
  pthread_mutex_lock(&mu);
  if ((set_used + 1) * 2 > set_cap) set_grow();
  size_t j = slot((uintptr_t)p, set_cap);
  while (set[j] > 1) j = (j + 1) & (set_cap - 1);
  if (!set[j]) set_used++;
  set[j] = (uintptr_t)p;
  set_live++;
  pthread_mutex_unlock(&mu);
}

/* Remove p; 1 if it was there. */
static int set_del(void *p) {
  int found = 0;
  pthread_mutex_lock(&mu);
  if (set_cap) {
    size_t j = slot((uintptr_t)p, set_cap);
    while (set[j]) {
      if (set[j] == (uintptr_t)p) {
        set[j] = 1;
        set_live--;
        found = 1;
        break;
      }
      j = (j + 1) & (set_cap - 1);
    }
  }
  pthread_mutex_unlock(&mu);
  return found;
}

long oom_live(void) {
  pthread_mutex_lock(&mu);
  long n = (long)set_live;
  pthread_mutex_unlock(&mu);
  return n;
}

void *oom_malloc(size_t n) {
  if (should_fail()) return NULL;
  void *p = malloc(n);
  set_add(p);
  return p;
}

void *oom_calloc(size_t n, size_t size) {
  if (should_fail()) return NULL;
  void *p = calloc(n, size);
  set_add(p);
  return p;
}

void *oom_realloc(void *p, size_t n) {
  if (should_fail()) return NULL; /* p stays valid, as with a real failure */
  if (p && !set_del(p)) {
    fprintf(stderr, "oom_realloc of a pointer not allocated here\n");
    abort();
  }
  void *q = realloc(p, n);
  if (q) set_add(q);
  else if (p) set_add(p);
  return q;
}

void *oom_aligned_alloc(size_t align, size_t n) {
  if (should_fail()) return NULL;
  void *p = aligned_alloc(align, n);
  set_add(p);
  return p;
}

char *oom_strdup(const char *s) {
  if (should_fail()) return NULL;
  char *p = strdup(s);
  set_add(p);
  return p;
}

void oom_free(void *p) {
  if (!p) return;
  set_del(p); /* absent: allocated by libc (realpath) or another library */
  free(p);
}

/* SQLite's allocator, wrapped (it keeps its own size header and statistics). */
static sqlite3_mem_methods orig;

static void *sq_malloc(int n) { return should_fail() ? NULL : orig.xMalloc(n); }
static void sq_free(void *p) { orig.xFree(p); }
static void *sq_realloc(void *p, int n) { return should_fail() ? NULL : orig.xRealloc(p, n); }
static int sq_size(void *p) { return orig.xSize(p); }
static int sq_roundup(int n) { return orig.xRoundup(n); }
static int sq_init(void *a) { return orig.xInit(a); }
static void sq_shutdown(void *a) { orig.xShutdown(a); }

int oom_sqlite_install(void) {
  if (sqlite3_config(SQLITE_CONFIG_GETMALLOC, &orig) != SQLITE_OK) return 1;
  static sqlite3_mem_methods m;
  m = orig;
  m.xMalloc = sq_malloc;
  m.xFree = sq_free;
  m.xRealloc = sq_realloc;
  m.xSize = sq_size;
  m.xRoundup = sq_roundup;
  m.xInit = sq_init;
  m.xShutdown = sq_shutdown;
  return sqlite3_config(SQLITE_CONFIG_MALLOC, &m) != SQLITE_OK;
}
