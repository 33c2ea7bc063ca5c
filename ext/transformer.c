/*
** transformer.c — GPT-2's forward pass with per-sequence KV caches.
**
** Follows Hugging Face's GPT2LMHeadModel exactly (../shared/docs/gpt2-facts.md,
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
** Every matrix product is an OpenBLAS cblas_sgemm: Conv1D weights are
** [in, out] row-major, so X·W needs no transpose; the head [V, C] is used
** transposed. Attention runs per "run" of consecutive rows of one sequence:
** a prompt is one run of n rows (Q·Kᵀ is a real matrix product), a batched
** decode step is n runs of one row.
*/
#include "transformer.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SEQ_MIN_CAP 16 /* positions of a sequence's first cache allocation */

/* ---------------------------------------------------------------------------
** run state
*/

/* A float buffer that only grows. */
typedef struct FBuf {
  float *p;
  size_t cap; /* floats */
} FBuf;

struct Gpt2Scratch {
  FBuf x;    /* (n, C) residual stream */
  FBuf xn;   /* (n, C) layer-norm output; later ln_f of the wanted rows */
  FBuf qkv;  /* (n, 3C) [Q|K|V] per row */
  FBuf att;  /* (n, C) attention output, heads side by side */
  FBuf h;    /* (n, F) MLP hidden activations */
  FBuf y;    /* (n, C) block output before the residual add */
  FBuf s;    /* (len, T) attention probabilities of one run and head */
  int *pos;  /* (n) position of each row */
  size_t pos_cap;
};

static int fbuf_reserve(FBuf *b, size_t n) {
  if (n <= b->cap) return GPT2_OK;
  if (n > SIZE_MAX / sizeof(float)) return GPT2_NOMEM;
  float *p = malloc(n * sizeof(float)); /* contents need not survive */
  if (!p) return GPT2_NOMEM;
  free(b->p);
  b->p = p;
  b->cap = n;
  return GPT2_OK;
}

Gpt2Scratch *scratch_new(void) { return calloc(1, sizeof(Gpt2Scratch)); }

void scratch_free(Gpt2Scratch *s) {
  if (!s) return;
  free(s->x.p);
  free(s->xn.p);
  free(s->qkv.p);
  free(s->att.p);
  free(s->h.p);
  free(s->y.p);
  free(s->s.p);
  free(s->pos);
  free(s);
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

/* Make room for `need` positions: capacity doubles from SEQ_MIN_CAP up to
** n_positions, so short sequences stay small. Keeps the first n_pos. */
static int seq_reserve(Gpt2Seq *s, const Gpt2Model *m, int need) {
  if (need <= s->cap) return GPT2_OK;
  const Gpt2Config *c = &m->cfg;
  int cap = s->cap ? s->cap : SEQ_MIN_CAP;
  while (cap < need && cap < c->n_positions) cap = cap > c->n_positions / 2 ? c->n_positions : cap * 2;
  if (cap > c->n_positions) cap = c->n_positions;
  if (cap < need) return GPT2_ERROR; /* callers check positions first */
  size_t C = (size_t)c->n_embd, L = (size_t)c->n_layer;
  size_t n = mul(mul(L, (size_t)cap), C);
  if (n > SIZE_MAX / sizeof(float)) return GPT2_NOMEM;
  float *k = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
  if (!k || !v) {
    free(k);
    free(v);
    return GPT2_NOMEM;
  }
  for (size_t l = 0; l < L && s->n_pos > 0; l++) { /* (L, cap, C): re-lay each layer */
    memcpy(k + l * cap * C, s->k + l * (size_t)s->cap * C, (size_t)s->n_pos * C * sizeof(float));
    memcpy(v + l * cap * C, s->v + l * (size_t)s->cap * C, (size_t)s->n_pos * C * sizeof(float));
  }
  free(s->k);
  free(s->v);
  s->k = k;
  s->v = v;
  s->cap = cap;
  return GPT2_OK;
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
  size_t C = (size_t)m->cfg.n_embd;
  for (size_t l = 0; l < (size_t)m->cfg.n_layer && n_pos > 0; l++) {
    memcpy(dst->k + l * (size_t)dst->cap * C, src->k + l * (size_t)src->cap * C,
           (size_t)n_pos * C * sizeof(float));
    memcpy(dst->v + l * (size_t)dst->cap * C, src->v + l * (size_t)src->cap * C,
           (size_t)n_pos * C * sizeof(float));
  }
  dst->n_pos = n_pos;
  return GPT2_OK;
}

/* ---------------------------------------------------------------------------
** neural-net blocks
*/

/* out (n, O) = in (n, I) · W (I, O) + b (O): a Conv1D layer (gpt2-facts.md).
** One row goes through sgemv: OpenBLAS's sgemm packs all of W on every call,
** which made single-token decoding ~5x slower for M = 1 (measured: c_fc of
** 124M, 2.5 ms sgemm vs 0.45 ms sgemv). */
static void matmul(float *out, const float *in, const float *W, const float *b, int n, int di,
                   int dout) {
  for (int r = 0; r < n; r++) memcpy(out + (size_t)r * dout, b, (size_t)dout * sizeof(float));
  if (n == 1)
    cblas_sgemv(CblasRowMajor, CblasTrans, di, dout, 1.0f, W, dout, in, 1, 1.0f, out, 1);
  else
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, dout, di, 1.0f, in, di, W, dout,
                1.0f, out, dout);
}

/* out (n, C) = LayerNorm(x) * w + b, biased variance (gpt2-facts.md). */
static void layernorm(float *out, const float *x, const float *w, const float *b, int n, int C,
                      float eps) {
  for (int r = 0; r < n; r++) {
    const float *xr = x + (size_t)r * C;
    float *o = out + (size_t)r * C;
    double mean = 0, var = 0;
    for (int i = 0; i < C; i++) mean += xr[i];
    mean /= C;
    for (int i = 0; i < C; i++) var += (xr[i] - mean) * (xr[i] - mean);
    var /= C;
    float rstd = (float)(1.0 / sqrt(var + (double)eps));
    float mu = (float)mean;
    for (int i = 0; i < C; i++) o[i] = (xr[i] - mu) * rstd * w[i] + b[i];
  }
}

/* gelu_new, in place: 0.5·x·(1 + tanh(sqrt(2/π)·(x + 0.044715·x³))) (gpt2-facts.md). */
static void gelu(float *x, size_t n) {
  const float k = 0.7978845608028654f; /* sqrt(2/pi) */
  for (size_t i = 0; i < n; i++) {
    float v = x[i];
    x[i] = 0.5f * v * (1.0f + tanhf(k * (v + 0.044715f * v * v * v)));
  }
}

/* Row-wise softmax of s (len, T) where row i sees its first vis0+i entries
** and the rest are zeroed (the causal mask). Max-subtracted for stability. */
static void softmax_causal(float *s, int len, int T, int vis0) {
  for (int i = 0; i < len; i++) {
    float *row = s + (size_t)i * T;
    int vis = vis0 + i;
    float mx = row[0];
    for (int j = 1; j < vis; j++) mx = row[j] > mx ? row[j] : mx;
    float sum = 0;
    for (int j = 0; j < vis; j++) {
      row[j] = expf(row[j] - mx);
      sum += row[j];
    }
    float inv = 1.0f / sum;
    for (int j = 0; j < vis; j++) row[j] *= inv;
    for (int j = vis; j < T; j++) row[j] = 0;
  }
}

/* Causal self-attention for rows r0..r0+len-1, all of sequence s, whose
** first row sits at position p0; layer l's K and V for these rows are
** already in the cache. out (len, C) at att + r0*C.
**   S (len, T) = Q·Kᵀ · scale;  mask;  softmax;  out_h = S · V_h      */
static void attention(const Gpt2Config *c, Gpt2Scratch *sc, const Gpt2Seq *s, int l, int r0,
                      int len, int p0, float scale) {
  int C = c->n_embd, D = C / c->n_head, T = p0 + len;
  const float *K = s->k + (size_t)l * s->cap * C; /* (T, C) this layer's keys */
  const float *V = s->v + (size_t)l * s->cap * C; /* (T, C) values */
  const float *Q = sc->qkv.p + (size_t)r0 * 3 * C; /* (len, 3C), Q first */
  float *S = sc->s.p;
  for (int h = 0; h < c->n_head; h++) {
    /* head h owns columns h*D..(h+1)*D-1 of Q, K and V (gpt2-facts.md) */
    float *out = sc->att.p + (size_t)r0 * C + h * D;
    if (len == 1) { /* decode: matrix-vector products (see matmul) */
      cblas_sgemv(CblasRowMajor, CblasNoTrans, T, D, scale, K + h * D, C, Q + h * D, 1, 0.0f, S,
                  1);
      softmax_causal(S, 1, T, T);
      cblas_sgemv(CblasRowMajor, CblasTrans, T, D, 1.0f, V + h * D, C, S, 1, 0.0f, out, 1);
      continue;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, len, T, D, scale, Q + h * D, 3 * C,
                K + h * D, C, 0.0f, S, T);
    softmax_causal(S, len, T, p0 + 1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, len, D, T, 1.0f, S, T, V + h * D, C,
                0.0f, out, C);
  }
}

static void residual_add(float *x, const float *y, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] += y[i];
}

/* ---------------------------------------------------------------------------
** forward
*/

/* Check rows, compute positions, reserve caches and scratch. Nothing is
** changed that a failure would have to undo (caches only grow). */
static int prepare(const Gpt2Model *m, Gpt2Scratch *sc, int n, const int *tokens,
                   Gpt2Seq *const *seqs, size_t *s_need, char *err, size_t errlen) {
  const Gpt2Config *c = &m->cfg;
  if (n > 0 && (size_t)n > sc->pos_cap) {
    int *p = malloc((size_t)n * sizeof *p);
    if (!p) return GPT2_NOMEM;
    free(sc->pos);
    sc->pos = p;
    sc->pos_cap = (size_t)n;
  }
  *s_need = 0;
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
    int rc = seq_reserve(s, m, sc->pos[r1 - 1] + 1);
    if (rc) return rc;
    size_t need = mul((size_t)(r1 - r), (size_t)sc->pos[r1 - 1] + 1);
    if (need > *s_need) *s_need = need;
  }
  size_t C = (size_t)c->n_embd, N = (size_t)n;
  if (fbuf_reserve(&sc->x, mul(N, C)) || fbuf_reserve(&sc->xn, mul(N, C)) ||
      fbuf_reserve(&sc->qkv, mul(N, 3 * C)) || fbuf_reserve(&sc->att, mul(N, C)) ||
      fbuf_reserve(&sc->h, mul(N, (size_t)c->n_inner)) || fbuf_reserve(&sc->y, mul(N, C)) ||
      fbuf_reserve(&sc->s, *s_need))
    return GPT2_NOMEM;
  return GPT2_OK;
}

int gpt2_forward(const Gpt2Model *m, Gpt2Scratch *sc, int n, const int *tokens,
                 Gpt2Seq *const *seqs, const unsigned char *want, float *logits,
                 char *err, size_t errlen) {
  const Gpt2Config *c = &m->cfg;
  const int C = c->n_embd, F = c->n_inner, V = c->vocab_size;
  if (n < 0) return gpt2_errorf(err, errlen, "negative row count %d", n);
  if (n == 0) return GPT2_OK;
  size_t s_need;
  int rc = prepare(m, sc, n, tokens, seqs, &s_need, err, errlen);
  if (rc) return rc;
  float *x = sc->x.p, *xn = sc->xn.p, *qkv = sc->qkv.p;
  const size_t nC = (size_t)n * C;

  /* x = wte[token] + wpe[position] */
  for (int r = 0; r < n; r++) {
    const float *te = m->wte + (size_t)tokens[r] * C, *pe = m->wpe + (size_t)sc->pos[r] * C;
    float *xr = x + (size_t)r * C;
    for (int i = 0; i < C; i++) xr[i] = te[i] + pe[i];
  }

  for (int l = 0; l < c->n_layer; l++) {
    const Gpt2Layer *L = &m->layers[l];

    /* attention block: x += c_proj(attn(ln_1(x))) */
    layernorm(xn, x, L->ln1_w, L->ln1_b, n, C, c->ln_eps);
    matmul(qkv, xn, L->attn_w, L->attn_b, n, C, 3 * C); /* (n, 3C) */
    for (int r = 0; r < n; r++) { /* K, V -> cache (L, cap, C) at the row's position */
      Gpt2Seq *s = seqs[r];
      size_t at = ((size_t)l * s->cap + (size_t)sc->pos[r]) * C;
      memcpy(s->k + at, qkv + (size_t)r * 3 * C + C, (size_t)C * sizeof(float));
      memcpy(s->v + at, qkv + (size_t)r * 3 * C + 2 * C, (size_t)C * sizeof(float));
    }
    /* scores / sqrt(D) when scale_attn_weights; also / (l+1) when
    ** scale_attn_by_inverse_layer_idx (gpt2-facts.md, "Checkpoint directory") */
    float scale = 1.0f;
    if (c->scale_attn_weights) scale /= sqrtf((float)(C / c->n_head));
    if (c->scale_attn_by_inverse_layer_idx) scale /= (float)(l + 1);
    for (int r = 0, r1; r < n; r = r1) {
      for (r1 = r; r1 < n && seqs[r1] == seqs[r]; r1++) {}
      attention(c, sc, seqs[r], l, r, r1 - r, sc->pos[r], scale);
    }
    matmul(sc->y.p, sc->att.p, L->proj_w, L->proj_b, n, C, C);
    residual_add(x, sc->y.p, nC);

    /* MLP block: x += c_proj(gelu(c_fc(ln_2(x)))) */
    layernorm(xn, x, L->ln2_w, L->ln2_b, n, C, c->ln_eps);
    matmul(sc->h.p, xn, L->fc_w, L->fc_b, n, C, F); /* (n, F) */
    gelu(sc->h.p, (size_t)n * F);
    matmul(sc->y.p, sc->h.p, L->fcproj_w, L->fcproj_b, n, F, C);
    residual_add(x, sc->y.p, nC);
  }

  /* ln_f of the wanted rows, packed; logits = xf · lm_headᵀ (n_wanted, V) */
  int nw = 0;
  for (int r = 0; r < n; r++) {
    if (want ? !want[r] : r != n - 1) continue;
    layernorm(xn + (size_t)nw * C, x + (size_t)r * C, m->lnf_w, m->lnf_b, 1, C, c->ln_eps);
    nw++;
  }
  if (nw == 1 && logits)
    cblas_sgemv(CblasRowMajor, CblasNoTrans, V, C, 1.0f, m->lm_head, C, xn, 1, 0.0f, logits, 1);
  else if (nw > 1 && logits)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nw, V, C, 1.0f, xn, C, m->lm_head, C,
                0.0f, logits, V);

  /* commit: every sequence now holds its rows */
  for (int r = 0; r < n; r++) seqs[r]->n_pos = sc->pos[r] + 1;
  return GPT2_OK;
}
