/* oom_ctl.h — the driver's controls of tests/oom/oom_alloc.c. */
#ifndef GPT2_OOM_CTL_H
#define GPT2_OOM_CTL_H

#include <stdatomic.h>

enum { OOM_ONCE = 0, OOM_PERSIST = 1 };

extern atomic_long oom_count;  /* allocations numbered since oom_arm */
extern atomic_long oom_failed; /* allocations refused since oom_arm */

/* Number allocations from 1; fail the n-th (ONCE) or the n-th and all later
** ones (PERSIST). */
void oom_arm(long n, int mode);
void oom_disarm(void);
/* Blocks allocated through oom_* and not yet freed. */
long oom_live(void);
/* Route SQLite's allocations through the counter (before sqlite3_initialize). */
int oom_sqlite_install(void);

void *oom_malloc(size_t n);
void oom_free(void *p);

#endif
