/*
** sampler.c — seeded PRNG and next-token selection (see sampler.h for the
** exact definition of a draw).
**
** Candidates are ranked by one 64-bit key per token: the logit mapped to an
** order-preserving unsigned integer in the high half, the bit-inverted id in
** the low half. Sorting keys descending gives "logit descending, lower id
** first" with no ties left, so the ranking (hence the draw) is the same
** whatever sort is used. top_k > 0 selects with a size-k min-heap (O(V log k))
** and sorts only those k; top_k = 0 radix-sorts all V keys.
*/
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------
** PRNG: xoshiro256** (Blackman & Vigna), seeded through splitmix64.
*/

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void rng_seed(Gpt2Rng *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t rng_next(Gpt2Rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

double rng_uniform(Gpt2Rng *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* ---------------------------------------------------------------------------
** ranking
*/

/* Logit with NaN as -inf and -0 as +0 (so equal logits get equal keys). */
static float clean(float x) {
  if (isnan(x)) return -INFINITY;
  return x == 0.0f ? 0.0f : x;
}

static uint64_t rank_key(float logit, int id) {
  float f = clean(logit);
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* order-preserving */
  return ((uint64_t)u << 32) | (uint32_t)~(uint32_t)id;
}

static int key_id(uint64_t key) { return (int)(uint32_t)~(uint32_t)key; }

/* Sort n keys descending (LSD radix, 8 bits a pass; constant digits skipped). */
static void sort_desc(uint64_t *a, uint64_t *tmp, size_t n) {
  size_t cnt[8][256];
  memset(cnt, 0, sizeof cnt);
  for (size_t i = 0; i < n; i++) {
    uint64_t k = ~a[i];
    for (int p = 0; p < 8; p++) cnt[p][(k >> (8 * p)) & 0xff]++;
  }
  uint64_t *src = a, *dst = tmp;
  for (int p = 0; p < 8; p++) {
    size_t *c = cnt[p];
    if (n == 0 || c[(~src[0] >> (8 * p)) & 0xff] == n) continue; /* one digit value */
    size_t sum = 0;
    for (int d = 0; d < 256; d++) {
      size_t t = c[d];
      c[d] = sum;
      sum += t;
    }
    for (size_t i = 0; i < n; i++) dst[c[(~src[i] >> (8 * p)) & 0xff]++] = src[i];
    uint64_t *t = src;
    src = dst;
    dst = t;
  }
  if (src != a) memcpy(a, src, n * sizeof *a);
}

/* Min-heap of keys (root = smallest kept). */
static void heap_down(uint64_t *h, size_t n, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && h[l] < h[m]) m = l;
    if (r < n && h[r] < h[m]) m = r;
    if (m == i) return;
    uint64_t t = h[i];
    h[i] = h[m];
    h[m] = t;
    i = m;
  }
}

/* key[0..k) = the k largest keys of logits, sorted descending. */
static void top_keys(Gpt2Sampler *s, const float *logits, int V, int k) {
  uint64_t *h = s->key;
  size_t n = 0, K = (size_t)k;
  if (k >= V) { /* everything: no selection needed */
    for (int id = 0; id < V; id++) h[id] = rank_key(logits[id], id);
    sort_desc(h, s->tmp, (size_t)V);
    return;
  }
  for (int id = 0; id < V; id++) {
    uint64_t key = rank_key(logits[id], id);
    if (n < K) {
      h[n++] = key;
      if (n == K) /* heapify once full */
        for (size_t i = K / 2; i-- > 0;) heap_down(h, K, i);
    } else if (key > h[0]) {
      h[0] = key;
      heap_down(h, K, 0);
    }
  }
  sort_desc(h, s->tmp, n);
}

/* ---------------------------------------------------------------------------
** picking
*/

/* The first id of the largest logit (NaN counts as -inf, so a NaN first
** logit wins only when nothing is above -inf). One pass in blocks of
** ARGMAX_BLOCK, each block's maximum over 16 running maxima, which
** vectorise (a single running maximum is one serial dependency chain);
** the first block whose maximum beats every earlier one holds the first id
** of the maximum (NaN never compares greater), so only it is searched.
** Greedy batched steps make one of these per row. */
static int argmax(const float *logits, int V) {
  enum { ARGMAX_BLOCK = 256 };
  float m = -INFINITY;
  int at = -1;
  for (int i0 = 0; i0 < V; i0 += ARGMAX_BLOCK) {
    int n = V - i0 < ARGMAX_BLOCK ? V - i0 : ARGMAX_BLOCK, i = 0;
    const float *x = logits + i0;
    float lm[16];
    for (int j = 0; j < 16; j++) lm[j] = -INFINITY;
    for (; i + 16 <= n; i += 16)
#pragma GCC unroll 16
      for (int j = 0; j < 16; j++) lm[j] = x[i + j] > lm[j] ? x[i + j] : lm[j];
    float bm = -INFINITY;
    for (; i < n; i++) bm = x[i] > bm ? x[i] : bm;
    for (int j = 0; j < 16; j++) bm = lm[j] > bm ? lm[j] : bm;
    if (bm > m) {
      m = bm;
      at = i0;
    }
  }
  int i0 = at < 0 ? 0 : at, i1 = at < 0 || at + ARGMAX_BLOCK > V ? V : at + ARGMAX_BLOCK;
  for (int i = i0; i < i1; i++)
    if (clean(logits[i]) == m) return i;
  return 0; /* every logit NaN */
}

/* log softmax(logits)[id], in double. */
double sampler_logprob(const float *logits, int V, int id) {
  double mx = -INFINITY;
  for (int i = 0; i < V; i++) mx = fmax(mx, (double)clean(logits[i]));
  if (mx == -INFINITY) return -log((double)V); /* all -inf: uniform */
  double sum = 0;
  for (int i = 0; i < V; i++) sum += exp((double)clean(logits[i]) - mx);
  return (double)clean(logits[id]) - mx - log(sum);
}

int sampler_reserve(Gpt2Sampler *s, int V, const Gpt2SampleParams *p) {
  if (!(p->temperature > 0) || V <= s->cap) return GPT2_OK; /* greedy needs none */
  uint64_t *k = malloc((size_t)V * sizeof *k), *t = malloc((size_t)V * sizeof *t);
  double *w = malloc((size_t)V * sizeof *w);
  if (!k || !t || !w) {
    free(k);
    free(t);
    free(w);
    return GPT2_NOMEM;
  }
  sampler_free(s);
  s->key = k;
  s->tmp = t;
  s->w = w;
  s->cap = V;
  return GPT2_OK;
}

void sampler_free(Gpt2Sampler *s) {
  free(s->key);
  free(s->tmp);
  free(s->w);
  memset(s, 0, sizeof *s);
}

/* Steps 1-3 of a draw (sampler.h): s->key[0..*kept) the kept candidates in
** rank order, s->w[0..*kept) their weights; the sum of the kept weights. */
static double candidates(Gpt2Sampler *s, const float *logits, int V, const Gpt2SampleParams *p,
                         int *kept_out) {
  /* 1. candidates in rank order */
  int n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
  top_keys(s, logits, V, n);
  /* 2. weights at temperature, relative to the best logit */
  double mx = clean(logits[key_id(s->key[0])]), T = p->temperature, z = 0;
  for (int i = 0; i < n; i++) {
    double w = mx == -INFINITY ? (i == 0) : exp(((double)clean(logits[key_id(s->key[i])]) - mx) / T);
    s->w[i] = w == w ? w : 0; /* NaN (inf/inf) -> 0 */
    z += s->w[i];
  }
  /* 3. nucleus: shortest prefix reaching top_p of the mass */
  int kept = n;
  if (p->top_p < 1) {
    double target = p->top_p > 0 ? p->top_p * z : 0, cum = 0;
    for (kept = 0; kept < n;) {
      cum += s->w[kept++];
      if (cum >= target) break;
    }
  }
  double zk = 0;
  for (int i = 0; i < kept; i++) zk += s->w[i];
  *kept_out = kept;
  return zk;
}

int sampler_pick(Gpt2Sampler *s, const float *logits, int V, const Gpt2SampleParams *p,
                 Gpt2Rng *rng, double *logprob) {
  if (V <= 0) return -1;
  int id;
  if (!(p->temperature > 0)) {
    id = argmax(logits, V);
  } else {
    if (sampler_reserve(s, V, p)) return -1;
    int kept;
    double zk = candidates(s, logits, V, p, &kept);
    /* 4. one uniform draw over the kept prefix */
    double u = rng_uniform(rng) * zk, cum = 0;
    int pick = 0;
    for (int i = 0; i < kept; i++) {
      if (s->w[i] > 0) pick = i; /* fallback: last with weight, for rounding */
      cum += s->w[i];
      if (cum > u) {
        pick = i;
        break;
      }
    }
    id = key_id(s->key[pick]);
  }
  if (logprob) *logprob = sampler_logprob(logits, V, id);
  return id;
}

int sampler_probs(Gpt2Sampler *s, const float *logits, int V, const Gpt2SampleParams *p,
                  double *probs) {
  if (V <= 0) return GPT2_ERROR;
  memset(probs, 0, (size_t)V * sizeof *probs);
  if (!(p->temperature > 0)) {
    probs[argmax(logits, V)] = 1;
    return GPT2_OK;
  }
  if (sampler_reserve(s, V, p)) return GPT2_NOMEM;
  int kept;
  double zk = candidates(s, logits, V, p, &kept);
  if (!(zk > 0)) { /* cannot happen (the best candidate weighs 1); the first then */
    probs[key_id(s->key[0])] = 1;
    return GPT2_OK;
  }
  for (int i = 0; i < kept; i++) probs[key_id(s->key[i])] = s->w[i] / zk;
  return GPT2_OK;
}

int sampler_draw(const double *w, int V, Gpt2Rng *rng) {
  double z = 0;
  for (int i = 0; i < V; i++) z += w[i] > 0 ? w[i] : 0;
  double u = rng_uniform(rng) * z, cum = 0;
  int pick = -1;
  for (int i = 0; i < V; i++) {
    if (!(w[i] > 0)) continue;
    pick = i; /* fallback: the last with weight, for rounding */
    cum += w[i];
    if (cum > u) break;
  }
  return pick;
}
