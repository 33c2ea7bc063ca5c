/*
** tok_bpe.c — byte-pair encoding of one piece: find the lowest-ranked
** adjacent pair, merge every occurrence of it left to right in one pass,
** repeat. Exactly the rounds of OpenAI's encoder.py `bpe` (not a longest
** match, and not one occurrence at a time: with an arbitrary merges file the
** two can differ). Short pieces use a flat rank array, long pieces a heap.
*/
#include <stdlib.h>

#include "tok_private.h"

#define RANK_PENDING (-2) /* bpe_flat: rank not looked up yet */
#define UNIT_DEAD (-1)    /* bpe_heap: unit merged into its left neighbour */

void tk_work_free(Work *w) {
  free(w->id);
  free(w->nx);
  free(w->pv);
  free(w->heap);
  free(w->batch);
  w->id = w->nx = w->pv = w->batch = NULL;
  w->heap = NULL;
  w->cap = 0;
}

static int work_reserve(Work *w, size_t n) {
  if (n <= w->cap) return GPT2_OK;
  size_t cap = w->cap ? w->cap : 1024;
  while (cap < n) cap *= 2;
  if (cap > SIZE_MAX / (3 * sizeof(uint64_t)) || cap > INT32_MAX) return GPT2_NOMEM;
  tk_work_free(w);
  w->id = malloc(cap * sizeof *w->id);
  w->nx = malloc(cap * sizeof *w->nx);
  w->pv = malloc(cap * sizeof *w->pv);
  w->heap = malloc(3 * cap * sizeof *w->heap);
  w->batch = malloc(3 * cap * sizeof *w->batch);
  if (!w->id || !w->nx || !w->pv || !w->heap || !w->batch) {
    tk_work_free(w);
    return GPT2_NOMEM;
  }
  w->cap = cap;
  return GPT2_OK;
}

/* One round = the lowest-ranked pair present, merged at every occurrence,
** left to right, without overlaps (encoder.py's inner loop). A rank belongs
** to exactly one pair, so "r[i] == best" finds the occurrences. O(m) per
** round; only ranks next to a merge are looked up again. Returns new m. */
static size_t bpe_flat(const Tokenizer *t, int32_t *id, int32_t *r, size_t m) {
  for (size_t i = 0; i + 1 < m; i++) r[i] = RANK_PENDING;
  while (m > 1) {
    int32_t best = RANK_NONE;
    for (size_t i = 0; i + 1 < m; i++) {
      int32_t x = r[i];
      if (x == RANK_PENDING) x = r[i] = pair_rank(t, id[i], id[i + 1]);
      if (x < best) best = x;
    }
    if (best == RANK_NONE) break;
    int32_t to = t->merge_to[best];
    size_t w = 0;
    for (size_t i = 0; i < m;) {
      if (i + 1 < m && r[i] == best) {
        id[w] = to;
        r[w] = RANK_PENDING;
        if (w) r[w - 1] = RANK_PENDING;
        i += 2;
      } else {
        id[w] = id[i];
        r[w] = r[i];
        i++;
      }
      w++;
    }
    m = w;
  }
  return m;
}

static void heap_push(uint64_t *h, size_t *hn, uint64_t x) {
  size_t i = (*hn)++;
  while (i) {
    size_t p = (i - 1) / 2;
    if (h[p] <= x) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = x;
}

static uint64_t heap_pop(uint64_t *h, size_t *hn) {
  uint64_t top = h[0], x = h[--*hn];
  size_t n = *hn, i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && h[c + 1] < h[c]) c++;
    if (h[c] >= x) break;
    h[i] = h[c];
    i = c;
  }
  if (n) h[i] = x;
  return top;
}

/* The same rounds as bpe_flat in O(m log m), for long pieces: a heap holds
** (rank, unit) for every adjacent pair as it forms. A round pops every entry
** of the lowest rank (they come out left to right), then merges those still
** valid. A pair formed during a round never has the round's rank (a merged
** token is longer than either part), so it waits for a later round, as in
** encoder.py. Returns the number of units left in w->id. */
static size_t bpe_heap(const Tokenizer *t, Work *w, size_t m) {
  int32_t *id = w->id, *nx = w->nx, *pv = w->pv, *batch = w->batch;
  uint64_t *h = w->heap;
  size_t hn = 0;
  for (size_t i = 0; i < m; i++) {
    nx[i] = i + 1 < m ? (int32_t)(i + 1) : -1;
    pv[i] = (int32_t)i - 1;
    if (i + 1 < m) {
      int32_t rk = pair_rank(t, id[i], id[i + 1]);
      if (rk != RANK_NONE) heap_push(h, &hn, (uint64_t)rk << 32 | i);
    }
  }
  while (hn) {
    int32_t best = (int32_t)(h[0] >> 32);
    size_t nb = 0;
    while (hn && (int32_t)(h[0] >> 32) == best) batch[nb++] = (int32_t)(uint32_t)heap_pop(h, &hn);
    int32_t a = t->merge_a[best], b = t->merge_b[best], to = t->merge_to[best];
    for (size_t k = 0; k < nb; k++) {
      int32_t s = batch[k], u = nx[s];
      if (id[s] != a || u < 0 || id[u] != b) continue; /* stale */
      id[s] = to;
      id[u] = UNIT_DEAD;
      nx[s] = nx[u];
      if (nx[s] >= 0) pv[nx[s]] = s;
      if (pv[s] >= 0) {
        int32_t rk = pair_rank(t, id[pv[s]], to);
        if (rk != RANK_NONE) heap_push(h, &hn, (uint64_t)rk << 32 | (uint32_t)pv[s]);
      }
      if (nx[s] >= 0) {
        int32_t rk = pair_rank(t, to, id[nx[s]]);
        if (rk != RANK_NONE) heap_push(h, &hn, (uint64_t)rk << 32 | (uint32_t)s);
      }
    }
  }
  size_t k = 0;
  for (int32_t s = 0; s >= 0; s = nx[s]) id[k++] = id[s]; /* unit 0 always lives */
  return k;
}

int tk_bpe(const Tokenizer *t, Work *w, const unsigned char *p, size_t n, int32_t **units,
           size_t *m) {
  int32_t *id = w->fid;
  if (n > FLAT_MAX) {
    if (work_reserve(w, n)) return GPT2_NOMEM;
    id = w->id;
  }
  for (size_t i = 0; i < n; i++) id[i] = p[i]; /* unit b is the byte b */
  *m = n <= FLAT_MAX ? bpe_flat(t, id, w->fr, n) : bpe_heap(t, w, n);
  *units = id;
  return GPT2_OK;
}

