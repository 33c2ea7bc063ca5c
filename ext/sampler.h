/*
** sampler.h — choosing the next token (owns: the seeded PRNG, greedy,
** temperature, top-k and top-p, and the distributions they draw from).
** Same seed, same choices on any machine.
*/
#ifndef GPT2_SAMPLER_H
#define GPT2_SAMPLER_H

#include "common.h"

/* xoshiro256** seeded through splitmix64: portable, 64-bit exact. */
typedef struct Gpt2Rng {
  uint64_t s[4];
} Gpt2Rng;

void rng_seed(Gpt2Rng *r, uint64_t seed);
uint64_t rng_next(Gpt2Rng *r);
double rng_uniform(Gpt2Rng *r);   /* [0, 1) with 53 random bits */

typedef struct Gpt2SampleParams {
  double temperature;  /* 0 = greedy (argmax, lowest id wins ties) */
  int top_k;           /* 0 = off */
  double top_p;        /* 1 = off; in (0, 1] */
} Gpt2SampleParams;

/* Scratch for ranking candidates; reused across calls. Zero-initialise
** ({0}) before first use; release with sampler_free. */
typedef struct Gpt2Sampler {
  uint64_t *key;   /* (V) candidate sort keys: ordered logit << 32 | ~id */
  uint64_t *tmp;   /* (V) radix-sort buffer */
  double *w;       /* (V) candidate weights, then cumulative sums */
  int cap;         /* entries allocated in each */
} Gpt2Sampler;

void sampler_free(Gpt2Sampler *s);
/* The memory a pick with params p over V logits needs (none for greedy).
** sampler_pick makes it itself; reserving first means the pick allocates
** nothing. GPT2_OK or GPT2_NOMEM. */
int sampler_reserve(Gpt2Sampler *s, int V, const Gpt2SampleParams *p);

/* Pick the next token from V logits. *logprob (if not NULL) receives the
** natural log of the probability the unmodified softmax(logits) gives the
** chosen token. Returns the id, or -1 on OOM (or V <= 0).
**
** temperature <= 0: argmax, lowest id on ties (no random number drawn).
** Otherwise, with every step in double precision:
**   1. candidates: all tokens ranked by logit descending, lower id first on
**      ties; top_k > 0 keeps the first top_k (partial selection, no full sort);
**   2. w_i = exp((logit_i - logit_max) / temperature) over the candidates;
**   3. top_p < 1 keeps the shortest prefix whose cumulative weight reaches
**      top_p * (sum of w) (at least one token);
**   4. one u = rng_uniform(); the first kept candidate whose cumulative
**      weight exceeds u * (kept sum) is chosen.
** NaN logits count as -infinity. Only IEEE double arithmetic (fixed order:
** sums run in rank order) and libm's exp()/log() are involved, so a given
** seed and logits give the same token wherever exp() returns the same
** doubles (one glibc version: its exp is not guaranteed correctly rounded,
** so a different libm could, very rarely, flip a draw at a boundary). */
int sampler_pick(Gpt2Sampler *s, const float *logits, int V,
                 const Gpt2SampleParams *p, Gpt2Rng *rng, double *logprob);

/* The distribution sampler_pick draws from, as V probabilities in probs
** (by id): kept candidates get w_i / (kept sum) of steps 1-3 above, the
** rest 0; greedy (temperature <= 0) puts 1 on the argmax. For the
** speculative accept/resample rule (speculate.h). GPT2_OK, GPT2_NOMEM. */
int sampler_probs(Gpt2Sampler *s, const float *logits, int V, const Gpt2SampleParams *p,
                  double *probs);

/* One draw from weights w[0..V) (not necessarily normalized; entries <= 0
** or NaN never drawn): one u = rng_uniform(), the first id (ascending)
** whose cumulative weight exceeds u * (sum of w). -1 when no weight is
** positive. */
int sampler_draw(const double *w, int V, Gpt2Rng *rng);

/* log softmax(logits)[id] in double (NaN counts as -inf), as sampler_pick
** reports it. */
double sampler_logprob(const float *logits, int V, int id);

#endif
