/*
** transformer.c — GPT-2's forward pass with per-sequence KV caches.
**
** Follows Hugging Face's GPT2LMHeadModel exactly (docs/formats.md,
** "Forward pass"); shapes use n = rows in this call, C = n_embd, H = n_head,
** D = C/H, F = n_inner, V = vocab_size, T = keys visible to a row.
**
**   x = wte[id] + wpe[pos]                                   (n, C)
**   for each layer l:
**     qkv = ln_1(x) · c_attn.W + c_attn.b                    (n, 3C) = [Q|K|V]
**     K, V of every row -> its sequence's cache at its position
**     a = softmax(Q·Kᵀ·scale + causal mask) · V, per head    (n, C)
**     x += a · attn.c_proj.W + b
**     x += gelu_new(ln_2(x) · c_fc.W + b) · mlp.c_proj.W + b
**   logits = ln_f(x[wanted]) · lm_headᵀ                      (n_wanted, V)
**
** BATCH INVARIANCE (see transformer.h): every step is a per-row computation
** whose floating-point operations do not depend on the other rows of the
** call, on the thread count or on the CPU path:
**   - products go through kernels.h (one FMA chain per output, over all of
**     K, in order); threads split output panels, never k;
**   - attention is computed row by row with the same kernels: scores over
**     the transposed key cache (chain over d), softmax with the exact k_exp
**     and the fixed-order k_sum16, then p·V (chain over the row's own T
**     positions). Rows of a prompt share the score product only as extra
**     rows of one call, which changes no chain;
**   - layer norm, the residual adds and GELU are elementwise or per row.
** So a position's logits are bitwise the same whether it was computed in a
** 512-row prefill, as one decode row, or as one row of a batched step.
**
** Threads: a per-scratch pool (threadpool.h) runs each product over panels
** (each thread from its own contiguous range first), attention over (run,
** head) pairs (each pair also stores its K and V in the cache) and layer
** norm over rows; work is taken from atomic counters, which is safe because
** no result depends on who computes it. No BLAS: its results depend on the
** shape of a call (README, "Kernels and exactness").
*/
#include "transformer.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "threadpool.h"

#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__) && !defined(__STRICT_ANSI__)
#pragma GCC optimize("fp-contract=off")
#endif

#define SEQ_MIN_CAP 16     /* positions of a sequence's first cache allocation */
#define ATT_RB 32          /* prompt rows per score product in attention */
#define DEFAULT_THREADS_MAX 8

/* ---------------------------------------------------------------------------
** run state
*/

/* A float buffer that only grows. */
typedef struct FBuf {
  float *p;
  size_t cap; /* floats */
} FBuf;

struct Gpt2Scratch {
  FBuf x;        /* (n, C) residual stream */
  FBuf xn;       /* (n, C) layer-norm output; later ln_f of the wanted rows */
  FBuf qkv;      /* (n, 3C) [Q|K|V] per row */
  FBuf att;      /* (n, C) attention output, heads side by side */
  FBuf h;        /* (n, F) MLP hidden activations */
  FBuf tb;       /* (threads, tb_stride) per-thread attention buffers */
  FBuf out;      /* the caller's (scratch_out) */
  size_t tb_stride;
  int *pos;      /* (n) position of each row */
  int *run0;     /* (n+1) first row of each run of one sequence, then n */
  size_t pos_cap;
  KPath path;    /* CPU path of the kernels (scratch_set_kernel) */
  int threads;   /* threads to use (scratch_set_threads) */
  Pool *pool;    /* created on the first call that wants threads */
};

static int fbuf_reserve(FBuf *b, size_t n) {
  if (n <= b->cap) return GPT2_OK;
  if (n > SIZE_MAX / sizeof(float) - 16) return GPT2_NOMEM;
  size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
  float *p = aligned_alloc(64, bytes); /* contents need not survive */
  if (!p) return GPT2_NOMEM;
  free(b->p);
  b->p = p;
  b->cap = n;
  return GPT2_OK;
}

int scratch_default_threads(void) {
  int n = 0;
  cpu_set_t cs;
  if (sched_getaffinity(0, sizeof cs, &cs) == 0) n = CPU_COUNT(&cs);
  if (n < 1) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
  if (n < 1) n = 1;
  return n > DEFAULT_THREADS_MAX ? DEFAULT_THREADS_MAX : n;
}

Gpt2Scratch *scratch_new(void) {
  Gpt2Scratch *s = calloc(1, sizeof(Gpt2Scratch));
  if (!s) return NULL;
  s->path = kpath_choose(NULL);
  s->threads = scratch_default_threads();
  return s;
}

int scratch_set_threads(Gpt2Scratch *s, int n) {
  if (n < 1) n = scratch_default_threads();
  if (n > POOL_MAX_THREADS) n = POOL_MAX_THREADS;
  if (s->pool && pool_threads(s->pool) != n) {
    pool_free(s->pool);
    s->pool = NULL;
  }
  s->threads = n;
  return n;
}

int scratch_threads(const Gpt2Scratch *s) { return s->threads; }

const char *scratch_set_kernel(Gpt2Scratch *s, const char *name) {
  s->path = kpath_choose(name);
  return kpath_name(s->path);
}

const char *scratch_kernel(const Gpt2Scratch *s) { return kpath_name(s->path); }

void scratch_free(Gpt2Scratch *s) {
  if (!s) return;
  pool_free(s->pool);
  free(s->x.p);
  free(s->xn.p);
  free(s->qkv.p);
  free(s->att.p);
  free(s->h.p);
  free(s->tb.p);
  free(s->out.p);
  free(s->pos);
  free(s->run0);
  free(s);
}

float *scratch_out(Gpt2Scratch *s, size_t n) {
  return fbuf_reserve(&s->out, n) ? NULL : s->out.p;
}

/* Checked a*b (size_t); SIZE_MAX on overflow, which no reservation satisfies. */
static size_t mul(size_t a, size_t b) { return b && a > SIZE_MAX / b ? SIZE_MAX : a * b; }

Gpt2Seq *seq_new(const Gpt2Model *m) {
  (void)m; /* the cache is allocated on first use */
  return calloc(1, sizeof(Gpt2Seq));
}

void seq_free(Gpt2Seq *s) {
  if (!s) return;
  free(s->k);
  free(s->v);
  free(s);
}

void seq_truncate(Gpt2Seq *s, int n_pos) {
  if (n_pos < 0) n_pos = 0;
  if (n_pos < s->n_pos) s->n_pos = n_pos;
}

/* Copy the first n positions of a cache laid out with capacity scap into one
** with capacity dcap: keys (L·C rows of cap), values (L·H blocks of cap·D);
** L·C = L·H·D. */
static void cache_copy(float *dk, float *dv, int dcap, const float *sk, const float *sv, int scap,
                       size_t LC, size_t D, int n) {
  for (size_t i = 0; i < LC; i++)
    memcpy(dk + i * dcap, sk + i * scap, (size_t)n * sizeof(float));
  for (size_t i = 0; i < LC / D; i++)
    memcpy(dv + i * dcap * D, sv + i * scap * D, (size_t)n * D * sizeof(float));
}

size_t seq_bytes(const Gpt2Model *m, int n_pos) {
  const Gpt2Config *c = &m->cfg;
  if (n_pos < 0) n_pos = 0;
  /* keys and values: (n_layer, C, cap) and (n_layer, H, cap, D) floats each */
  return mul(2 * sizeof(float), mul(mul((size_t)c->n_layer, (size_t)c->n_embd), (size_t)n_pos));
}

/* Reallocate s to hold cap positions, keeping the first n_pos. Large caches
** go on huge pages (gpt2_alloc_large): the transposed key writes stride by
** cap floats, and a long prompt fills many fresh pages at once. */
static int seq_resize(Gpt2Seq *s, const Gpt2Model *m, int cap) {
  const Gpt2Config *c = &m->cfg;
  size_t C = (size_t)c->n_embd, L = (size_t)c->n_layer, bytes = seq_bytes(m, cap);
  if (bytes == SIZE_MAX) return GPT2_NOMEM;
  float *k = gpt2_alloc_large(bytes / 2), *v = gpt2_alloc_large(bytes / 2);
  if (!k || !v) {
    free(k);
    free(v);
    return GPT2_NOMEM;
  }
  if (s->n_pos > 0)
    cache_copy(k, v, cap, s->k, s->v, s->cap, L * C, C / (size_t)c->n_head, s->n_pos);
  free(s->k);
  free(s->v);
  s->k = k;
  s->v = v;
  s->cap = cap;
  return GPT2_OK;
}

/* Make room for `need` positions as a sequence fills: capacity doubles from
** SEQ_MIN_CAP up to n_positions, so short sequences stay small. */
static int seq_grow(Gpt2Seq *s, const Gpt2Model *m, int need) {
  if (need <= s->cap) return GPT2_OK;
  const Gpt2Config *c = &m->cfg;
  int cap = s->cap ? s->cap : SEQ_MIN_CAP;
  while (cap < need && cap < c->n_positions) cap = cap > c->n_positions / 2 ? c->n_positions : cap * 2;
  if (cap > c->n_positions) cap = c->n_positions;
  if (cap < need) return GPT2_ERROR; /* callers check positions first */
  return seq_resize(s, m, cap);
}

int seq_reserve(Gpt2Seq *s, const Gpt2Model *m, int need) {
  if (need <= s->cap) return GPT2_OK;
  if (need > m->cfg.n_positions) return GPT2_ERROR;
  return seq_resize(s, m, need);
}

int seq_copy_prefix(Gpt2Seq *dst, const Gpt2Seq *src, const Gpt2Model *m, int n_pos) {
  if (n_pos < 0 || n_pos > src->n_pos) return GPT2_ERROR;
  if (dst == src) {
    seq_truncate(dst, n_pos);
    return GPT2_OK;
  }
  dst->n_pos = 0; /* nothing of dst's old content survives */
  int rc = seq_reserve(dst, m, n_pos);
  if (rc) return rc;
  if (n_pos > 0)
    cache_copy(dst->k, dst->v, dst->cap, src->k, src->v, src->cap,
               (size_t)m->cfg.n_layer * (size_t)m->cfg.n_embd,
               (size_t)(m->cfg.n_embd / m->cfg.n_head), n_pos);
  dst->n_pos = n_pos;
  return GPT2_OK;
}

/* ---------------------------------------------------------------------------
** parallel steps (each a pool job; work items taken from an atomic counter)
*/

static void run_job(Gpt2Scratch *sc, PoolFn fn, void *arg) {
  if (sc->threads > 1 && !sc->pool) sc->pool = pool_new(sc->threads); /* NULL: run alone */
  if (sc->pool) pool_run(sc->pool, fn, arg);
  else fn(arg, 0, 1);
}

/* Work items 0..n-1 as one contiguous range per thread, each taken front
** to back, so a thread's consecutive items touch consecutive memory (a
** product's next panel is the one a row block prefetches; attention's next
** head is the next block of the same cache); a thread done with its range
** takes from the others' (a core shared with other work may run slow). */
typedef struct Range {
  _Alignas(64) atomic_int next; /* next item of this range */
  int end;
} Range;

typedef struct Ranges {
  int n;
  Range r[POOL_MAX_THREADS];
} Ranges;

static void ranges_init(Ranges *g, int items, int nt) {
  g->n = nt < items ? nt : items;
  for (int u = 0; u < g->n; u++) {
    atomic_init(&g->r[u].next, (int)((long long)items * u / g->n));
    g->r[u].end = (int)((long long)items * (u + 1) / g->n);
  }
}

/* The next item for thread t, or -1 when all are taken; *u (from 0) is the
** range being drained, the thread's own first. */
static int ranges_take(Ranges *g, int t, int *u) {
  for (; *u < g->n; ++*u) {
    Range *rg = &g->r[(t + *u) % g->n];
    int i = atomic_fetch_add(&rg->next, 1);
    if (i < rg->end) return i;
  }
  return -1;
}

/* Threads of a job: the pool's when it exists (it may have fewer than asked). */
static int job_threads(const Gpt2Scratch *sc) {
  return sc->pool ? pool_threads(sc->pool) : sc->threads;
}

/* y = epi(x · W + b) with items = (panel chunk, row group). */
typedef struct MatJob {
  KPath path;
  const KMat *W;
  const float *b;       /* (N) or NULL */
  const float *x;       /* (M, K) */
  float *y;             /* (M, ldy) */
  size_t ldy;
  int M, epi;
  int chunk;            /* panels per item */
  int groups;           /* row groups per panel chunk */
  int items;
  Ranges rg;
} MatJob;

static void mat_one(const MatJob *j, int i) {
  int p0 = i / j->groups * j->chunk, g = i % j->groups;
  int p1 = p0 + j->chunk < j->W->np ? p0 + j->chunk : j->W->np;
  int r0 = (int)((long long)j->M * g / j->groups), r1 = (int)((long long)j->M * (g + 1) / j->groups);
  k_matmul(j->path, j->W, j->b, r1 - r0, j->x + (size_t)r0 * j->W->K, (size_t)j->W->K,
           j->y + (size_t)r0 * j->ldy, j->ldy, (KEpi)j->epi, p0, p1);
}

static void mat_item(void *arg, int t, int nt) {
  (void)nt;
  MatJob *j = arg;
  for (int u = 0, i; (i = ranges_take(&j->rg, t, &u)) >= 0;) mat_one(j, i);
}

/* y (M, N) [ldy] = epi(x (M, K) · W + b), x dense. */
static void matmul(Gpt2Scratch *sc, const KMat *W, const float *b, int M, const float *x, float *y,
                   size_t ldy, KEpi epi) {
  MatJob j = {.path = sc->path, .W = W, .b = b, .x = x, .y = y, .ldy = ldy, .M = M, .epi = epi};
  int nt = job_threads(sc);
  /* ~16 items per thread balance uneven progress (the LM head: ~0.3 ms
  ** each); split rows too when a prompt meets a matrix with few panels */
  j.chunk = W->np / (16 * nt) > 0 ? W->np / (16 * nt) : 1;
  int chunks = (W->np + j.chunk - 1) / j.chunk;
  j.groups = chunks < 2 * nt && M >= 16 * nt ? nt : 1;
  j.items = chunks * j.groups;
  ranges_init(&j.rg, j.items, nt);
  if (j.items == 1 || nt == 1) mat_item(&j, 0, 1);
  else run_job(sc, mat_item, &j);
}

typedef struct ForJob {
  void (*fn)(void *arg, int i);
  void *arg;
  Ranges rg;
} ForJob;

static void for_item(void *arg, int t, int nt) {
  (void)nt;
  ForJob *j = arg;
  for (int u = 0, i; (i = ranges_take(&j->rg, t, &u)) >= 0;) j->fn(j->arg, i);
}

void scratch_parallel(Gpt2Scratch *sc, int n, void (*fn)(void *arg, int i), void *arg) {
  if (n <= 0) return;
  ForJob j = {.fn = fn, .arg = arg};
  int nt = job_threads(sc);
  ranges_init(&j.rg, n, nt);
  if (n == 1 || nt == 1) for_item(&j, 0, 1);
  else run_job(sc, for_item, &j);
}

void scratch_matmul(Gpt2Scratch *sc, const KMat *W, const float *b, int M, const float *x,
                    float *y, int epi) {
  matmul(sc, W, b, M, x, y, (size_t)W->N, (KEpi)epi);
}

const float *scratch_hidden(const Gpt2Scratch *sc) { return sc->xn.p; }

typedef struct LnJob {
  KPath path;
  float *out;
  const float *x;
  const float *w, *b;
  int n, C;
  float eps;
} LnJob;

static void ln_part(void *arg, int t, int nt) {
  LnJob *j = arg;
  for (int r = j->n * t / nt; r < j->n * (t + 1) / nt; r++)
    k_layernorm(j->path, j->out + (size_t)r * j->C, j->x + (size_t)r * j->C, j->w, j->b, j->C,
                j->eps);
}

/* out (C) = LayerNorm(x) * w + b per row, biased variance (docs/formats.md,
** "Forward pass"; the exact order: kernels.h, k_layernorm). */
static void layernorm(Gpt2Scratch *sc, float *out, const float *x, const float *w, const float *b,
                      int n, int C, float eps) {
  LnJob j = {sc->path, out, x, w, b, n, C, eps};
  if (n >= 8 && sc->threads > 1) run_job(sc, ln_part, &j);
  else ln_part(&j, 0, 1);
}

/* Attention for one run of rows (one sequence) and one head. */
typedef struct AttJob {
  const Gpt2Config *c;
  Gpt2Scratch *sc;
  Gpt2Seq *const *seqs;
  int l, nruns, items;
  float scale;
  Ranges rg;
} AttJob;

/* Rows r0..r1-1 of sequence s (positions pos[r0]..), head h; tb: this
** thread's buffer: (ATT_RB, D) scaled queries, (ATT_RB) 1/sums, (ATT_RB, T)
** scores. Per chunk of rows, with T_i = pos_i + 1 keys visible to row i:
**   S = (Q·scale) · Kt_h      (rb, T)  chain over d; Kt_h = (D, cap) of the cache
**   E_i = exp(S_i - max S_i)  over the row's own T_i keys (causal)
**   O_i = (E_i · V_h) / Σ E_i (1, D)   chain over t = 0..T_i-1; V_h = (cap, D)
** O's chains first run over the T_0 keys all rows of the chunk see (one
** multi-row product), then each row continues its own chain from the
** stored accumulators over its remaining keys: bitwise the chain of a lone
** decode row (kernels.h, k_gemm), at matrix-product speed. */
static void attend(const Gpt2Config *c, Gpt2Scratch *sc, Gpt2Seq *s, int l, int h, int r0,
                   int r1, float scale, float *tb) {
  const int C = c->n_embd, D = C / c->n_head;
  const KPath path = sc->path;
  float *Kt = s->k + ((size_t)l * C + (size_t)h * D) * s->cap; /* (D, cap) */
  float *Vh = s->v + ((size_t)l * c->n_head + (size_t)h) * s->cap * D; /* (T, D) */
  float *qs = tb, *inv = tb + (size_t)ATT_RB * D, *S = inv + ATT_RB;
  /* first this head's K and V of rows r0..r1-1 into the cache (a run's
  ** positions are contiguous): the thread that reads them writes them, so
  ** the cache lines a new K column dirties are the ones the scores read
  ** next, instead of a separate pass over the cache */
  const float *kv = sc->qkv.p + (size_t)r0 * 3 * C + (size_t)h * D;
  for (int d = 0; d < D; d++)
    for (int r = r0; r < r1; r++)
      Kt[(size_t)d * s->cap + (size_t)sc->pos[r]] = kv[(size_t)(r - r0) * 3 * C + C + d];
  for (int r = r0; r < r1; r++)
    memcpy(Vh + (size_t)sc->pos[r] * D, kv + (size_t)(r - r0) * 3 * C + 2 * C, (size_t)D * sizeof(float));
  for (int i0 = r0; i0 < r1; i0 += ATT_RB) {
    int i1 = i0 + ATT_RB < r1 ? i0 + ATT_RB : r1, rb = i1 - i0;
    int Tmax = sc->pos[i1 - 1] + 1, T0 = sc->pos[i0] + 1;
    for (int i = 0; i < rb; i++) {
      const float *q = sc->qkv.p + (size_t)(i0 + i) * 3 * C + (size_t)h * D;
      for (int d = 0; d < D; d++) qs[(size_t)i * D + d] = q[d] * scale;
    }
    k_gemm(path, rb, D, Tmax, qs, (size_t)D, Kt, (size_t)s->cap, NULL, S, (size_t)Tmax, KEPI_STORE);
    for (int i = 0; i < rb; i++) {
      int T = sc->pos[i0 + i] + 1;
      float *e = S + (size_t)i * Tmax;
      k_exp_sub(path, e, T, k_max(path, e, T));
      inv[i] = 1.0f / k_sum16(path, e, T);
    }
    float *O = sc->att.p + (size_t)i0 * C + (size_t)h * D; /* (rb, D), row stride C */
    k_gemm(path, rb, T0, D, S, (size_t)Tmax, Vh, (size_t)D, NULL, O, (size_t)C, KEPI_STORE);
    for (int i = 0; i < rb; i++) {
      int T = sc->pos[i0 + i] + 1;
      float *o = O + (size_t)i * C;
      if (T > T0) /* continue row i's chains over keys T0..T-1 */
        k_gemm(path, 1, T - T0, D, S + (size_t)i * Tmax + T0, (size_t)Tmax, Vh + (size_t)T0 * D,
               (size_t)D, o, o, (size_t)C, KEPI_STORE);
      for (int d = 0; d < D; d++) o[d] *= inv[i];
    }
  }
}

static void att_item(void *arg, int t, int nt) {
  (void)nt;
  AttJob *j = arg;
  float *tb = j->sc->tb.p + (size_t)t * j->sc->tb_stride;
  for (int u = 0, i; (i = ranges_take(&j->rg, t, &u)) >= 0;) {
    int run = i / j->c->n_head, h = i % j->c->n_head;
    int r0 = j->sc->run0[run], r1 = j->sc->run0[run + 1];
    attend(j->c, j->sc, j->seqs[r0], j->l, h, r0, r1, j->scale, tb);
  }
}

/* Per-row steps split in equal parts over the threads (prompts only). */
typedef struct RowJob {
  const Gpt2Model *m;
  Gpt2Scratch *sc;
  const int *tokens;
  int n;
} RowJob;

static void split_rows(Gpt2Scratch *sc, PoolFn fn, RowJob *j, int n) {
  if (n >= 8 && sc->threads > 1) run_job(sc, fn, j);
  else fn(j, 0, 1);
}

/* x[r] = wte[token] + wpe[position] for this part's rows; a tied wte is read
** from the head's panels (a strided gather: worth splitting for prompts). */
static void embed_part(void *arg, int t, int nt) {
  RowJob *j = arg;
  const int C = j->m->cfg.n_embd;
  for (int r = j->n * t / nt; r < j->n * (t + 1) / nt; r++) {
    float *xr = j->sc->x.p + (size_t)r * C;
    const float *pe = j->m->wpe + (size_t)j->sc->pos[r] * C;
    if (j->m->wte) memcpy(xr, j->m->wte + (size_t)j->tokens[r] * C, (size_t)C * sizeof(float));
    else kmat_col(&j->m->head, j->tokens[r], xr);
    for (int i = 0; i < C; i++) xr[i] = xr[i] + pe[i];
  }
}

/* ---------------------------------------------------------------------------
** forward
*/

/* Check rows, compute positions and runs, reserve caches and scratch.
** Nothing is changed that a failure would have to undo (caches only grow). */
static int prepare(const Gpt2Model *m, Gpt2Scratch *sc, int n, const int *tokens,
                   Gpt2Seq *const *seqs, int *nruns, char *err, size_t errlen) {
  const Gpt2Config *c = &m->cfg;
  if (n > 0 && (size_t)n > sc->pos_cap) {
    int *p = malloc((size_t)n * sizeof *p), *r = malloc(((size_t)n + 1) * sizeof *r);
    if (!p || !r) {
      free(p);
      free(r);
      return GPT2_NOMEM;
    }
    free(sc->pos);
    free(sc->run0);
    sc->pos = p;
    sc->run0 = r;
    sc->pos_cap = (size_t)n;
  }
  int nr = 0, tmax = 0;
  for (int r = 0, r1; r < n; r = r1) {
    Gpt2Seq *s = seqs[r];
    if (!s) return gpt2_errorf(err, errlen, "row %d has no sequence", r);
    for (r1 = r; r1 < n && seqs[r1] == s; r1++) {
      if (tokens[r1] < 0 || tokens[r1] >= c->vocab_size)
        return gpt2_errorf(err, errlen, "token id %d is out of range [0, %d)", tokens[r1],
                           c->vocab_size);
      sc->pos[r1] = s->n_pos + (r1 - r);
      if (sc->pos[r1] >= c->n_positions)
        return gpt2_errorf(err, errlen, "position %d is past the context length (n_positions %d)",
                           sc->pos[r1], c->n_positions);
    }
    for (int q = 0; q < r; q++) /* a sequence's rows must be one consecutive run */
      if (seqs[q] == s)
        return gpt2_errorf(err, errlen, "rows %d and %d of one sequence are not consecutive", q, r);
    int rc = seq_grow(s, m, sc->pos[r1 - 1] + 1);
    if (rc) return rc;
    sc->run0[nr++] = r;
    if (sc->pos[r1 - 1] + 1 > tmax) tmax = sc->pos[r1 - 1] + 1;
  }
  sc->run0[nr] = n;
  *nruns = nr;
  size_t C = (size_t)c->n_embd, N = (size_t)n, D = C / (size_t)c->n_head;
  size_t stride = ((size_t)ATT_RB * (D + 1 + (size_t)tmax) + 15) / 16 * 16; /* 64-byte multiples */
  sc->tb_stride = stride;
  if (fbuf_reserve(&sc->x, mul(N, C)) || fbuf_reserve(&sc->xn, mul(N, C)) ||
      fbuf_reserve(&sc->qkv, mul(N, 3 * C)) || fbuf_reserve(&sc->att, mul(N, C)) ||
      fbuf_reserve(&sc->h, mul(N, (size_t)c->n_inner)) ||
      fbuf_reserve(&sc->tb, mul(stride, (size_t)sc->threads)))
    return GPT2_NOMEM;
  return GPT2_OK;
}

int gpt2_forward(const Gpt2Model *m, Gpt2Scratch *sc, int n, const int *tokens,
                 Gpt2Seq *const *seqs, const unsigned char *want, float *logits,
                 char *err, size_t errlen) {
  const Gpt2Config *c = &m->cfg;
  const int C = c->n_embd, H = c->n_head, D = C / H, V = c->vocab_size;
  if (n < 0) return gpt2_errorf(err, errlen, "negative row count %d", n);
  if (n == 0) return GPT2_OK;
  int nruns = 0;
  int rc = prepare(m, sc, n, tokens, seqs, &nruns, err, errlen);
  if (rc) return rc;
  float *x = sc->x.p, *xn = sc->xn.p, *qkv = sc->qkv.p;

  /* x = wte[token] + wpe[position] */
  RowJob ej = {.m = m, .sc = sc, .tokens = tokens, .n = n};
  split_rows(sc, embed_part, &ej, n);

  for (int l = 0; l < c->n_layer; l++) {
    const Gpt2Layer *L = &m->layers[l];

    /* attention block: x += c_proj(attn(ln_1(x))) */
    layernorm(sc, xn, x, L->ln1_w, L->ln1_b, n, C, c->ln_eps);
    matmul(sc, &L->attn, L->attn_b, n, xn, qkv, (size_t)3 * C, KEPI_STORE); /* (n, 3C) */
    /* scores / sqrt(D) when scale_attn_weights; also / (l+1) when
    ** scale_attn_by_inverse_layer_idx (docs/formats.md, "config.json") */
    float scale = 1.0f;
    if (c->scale_attn_weights) scale /= sqrtf((float)D);
    if (c->scale_attn_by_inverse_layer_idx) scale /= (float)(l + 1);
    AttJob aj = {.c = c, .sc = sc, .seqs = seqs, .l = l, .nruns = nruns, .items = nruns * H,
                 .scale = scale};
    ranges_init(&aj.rg, aj.items, job_threads(sc));
    run_job(sc, att_item, &aj);
    matmul(sc, &L->proj, L->proj_b, n, sc->att.p, x, (size_t)C, KEPI_ADD); /* x += */

    /* MLP block: x += c_proj(gelu(c_fc(ln_2(x)))) */
    layernorm(sc, xn, x, L->ln2_w, L->ln2_b, n, C, c->ln_eps);
    matmul(sc, &L->fc, L->fc_b, n, xn, sc->h.p, (size_t)c->n_inner, KEPI_GELU); /* (n, F) */
    matmul(sc, &L->fcproj, L->fcproj_b, n, sc->h.p, x, (size_t)C, KEPI_ADD);
  }

  /* ln_f of the wanted rows, packed; logits = xf · lm_headᵀ (n_wanted, V) */
  int nw = 0;
  for (int r = 0; r < n; r++) {
    if (want ? !want[r] : r != n - 1) continue;
    k_layernorm(sc->path, xn + (size_t)nw * C, x + (size_t)r * C, m->lnf_w, m->lnf_b, C, c->ln_eps);
    nw++;
  }
  if (nw > 0 && logits) matmul(sc, &m->head, NULL, nw, xn, logits, (size_t)V, KEPI_STORE);

  /* commit: every sequence now holds its rows */
  for (int r = 0; r < n; r++) seqs[r]->n_pos = sc->pos[r] + 1;
  return GPT2_OK;
}
