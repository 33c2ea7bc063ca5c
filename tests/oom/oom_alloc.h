/*
** oom_alloc.h — forced into every extension source of the OOM test build
** (clang -include tests/oom/oom_alloc.h, see mk/hardening.mk, test-oom); never
** part of the real extension.
**
** Renames the C allocator so that each of the extension's own allocations goes
** through tests/oom/oom_alloc.c, which can fail the N-th one. Object-like
** macros, so that `free` passed as a destructor (sqlite3_result_text(..., free))
** is renamed too. <stdlib.h> and <string.h> are included first, so the system
** declarations keep their names; sqlite3ext.h's api->malloc / api->free members
** are renamed consistently in every file, which leaves the struct layout as is.
*/
#ifndef GPT2_OOM_ALLOC_H
#define GPT2_OOM_ALLOC_H

#include <stdlib.h>
#include <string.h>

void *oom_malloc(size_t n);
void *oom_calloc(size_t n, size_t size);
void *oom_realloc(void *p, size_t n);
void *oom_aligned_alloc(size_t align, size_t n);
char *oom_strdup(const char *s);
void oom_free(void *p);

#define malloc oom_malloc
#define calloc oom_calloc
#define realloc oom_realloc
#define aligned_alloc oom_aligned_alloc
#define strdup oom_strdup
#define free oom_free

#endif
