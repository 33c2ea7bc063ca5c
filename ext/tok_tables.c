/*
** tok_tables.c — building the tokenizer's hash tables (raw bytes -> unit,
** unit pair -> merge rank) while loading; the lookups are inline in
** tok_private.h.
*/
#include <stdlib.h>

#include "tok_private.h"

int tk_tab_init(StrTab *tb, size_t want) {
  size_t cap = 16;
  while (cap < want * 2) cap *= 2; /* load <= 1/2 */
  if (cap > UINT32_MAX) return GPT2_NOMEM;
  tb->slot = malloc(cap * sizeof *tb->slot);
  if (!tb->slot) return GPT2_NOMEM;
  for (size_t i = 0; i < cap; i++) tb->slot[i].id = -1;
  tb->mask = (uint32_t)(cap - 1);
  tb->count = 0;
  return GPT2_OK;
}

void tk_tab_put_h(StrTab *tb, const void *p, size_t n, int32_t id, uint32_t hash) {
  uint32_t i = hash & tb->mask;
  while (tb->slot[i].id >= 0) i = (i + 1) & tb->mask;
  tb->slot[i] = (Slot){head8(p, n), id, (uint32_t)n};
  tb->count++;
}

int32_t tk_unit_intern(Tokenizer *t, const void *p, size_t n, uint32_t hash) {
  int32_t u = tab_find_h(&t->utab, t->ubytes, t->uspan, p, n, hash);
  if (u >= 0) return u;
  if ((size_t)t->utab.count * 2 >= (size_t)t->utab.mask + 1) { /* grow the hash */
    StrTab nt;
    if (tk_tab_init(&nt, (size_t)t->utab.mask + 1)) return -1;
    for (int32_t i = 0; i < t->n_units; i++)
      tk_tab_put_h(&nt, t->ubytes + t->uspan[i].off, t->uspan[i].len, i,
                   hash_bytes(t->ubytes + t->uspan[i].off, t->uspan[i].len));
    free(t->utab.slot);
    t->utab = nt;
  }
  if ((size_t)t->n_units == t->uspan_cap) {
    if (t->uspan_cap >= INT32_MAX / 2) return -1;
    Span *ns = realloc(t->uspan, 2 * t->uspan_cap * sizeof *ns);
    if (!ns) return -1;
    t->uspan = ns;
    t->uspan_cap *= 2;
  }
  size_t off = t->n_units ? t->uspan[t->n_units - 1].off + t->uspan[t->n_units - 1].len : 0;
  if (off + n > t->ucap) {
    size_t cap = t->ucap * 2;
    while (cap < off + n) cap *= 2;
    if (cap > UINT32_MAX) return -1;
    char *nb = realloc(t->ubytes, cap);
    if (!nb) return -1;
    t->ubytes = nb;
    t->ucap = cap;
  }
  memcpy(t->ubytes + off, p, n);
  u = t->n_units++;
  t->uspan[u] = (Span){(uint32_t)off, (uint32_t)n};
  tk_tab_put_h(&t->utab, p, n, u, hash);
  return u;
}

void tk_pair_set(Tokenizer *t, int32_t a, int32_t b, int32_t rank) {
  if ((a | b) < 256) {
    t->brank[a << 8 | b] = rank;
    return;
  }
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  uint32_t i = pair_home(t, a, b);
  while (t->pair[i].key != PAIR_EMPTY && t->pair[i].key != key) i = (i + 1) & t->pair_mask;
  t->pair[i].key = key;
  t->pair[i].rank = rank;
}

int32_t tk_find_raw(const Tokenizer *t, const void *p, size_t n) {
  int32_t u = tab_find_h(&t->utab, t->ubytes, t->uspan, p, n, hash_bytes(p, n));
  return u >= 0 ? t->vid[u] : -1;
}
