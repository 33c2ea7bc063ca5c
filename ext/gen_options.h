/*
** gen_options.h — generation options beyond the sampler's (owns: the
** option set, the logits processors — repetition, frequency and presence
** penalties, logit bias, min_tokens — and the stop-string search used to
** end generation and hold streamed text back).
**
** PROCESSORS, in this order, on a per-generation copy of the model's
** logits (never the shared output), before temperature / top-k / top-p and
** before greedy's argmax. Each reads a float32 logit l, computes in double,
** and stores the result rounded to float32:
**   1. repetition_penalty p (Hugging Face): for every distinct id in the
**      prompt (an empty prompt is the eos token) or the generated tokens,
**      l = l > 0 ? l / p : l * p;
**   2. frequency_penalty f, presence_penalty r (OpenAI): for every distinct
**      generated id j with count c_j > 0, l = l - (c_j * f + r);
**   3. logit_bias: l = l + bias[j] for each given id j;
**   4. min_tokens: the eos logit is -inf while fewer than min_tokens tokens
**      were generated.
** Ids are visited in ascending order; each entry is touched once per step,
** so the result depends on nothing but the logits, the tokens so far and the
** options (not on threads or batch).
*/
#ifndef GPT2_GEN_OPTIONS_H
#define GPT2_GEN_OPTIONS_H

#include "common.h"

#define GPT2_MAX_STOP 8          /* stop strings at most */
#define GPT2_MAX_STOP_BYTES 256  /* bytes in one stop string at most */

typedef struct Gpt2Bias {
  int id;
  double bias;
} Gpt2Bias;

typedef struct Gpt2Options {
  double repetition_penalty;  /* > 0; 1 = off */
  double frequency_penalty;   /* [-2, 2]; 0 = off */
  double presence_penalty;    /* [-2, 2]; 0 = off */
  Gpt2Bias *bias;             /* sorted by id, distinct ids (malloc'd) */
  int n_bias;
  int min_tokens;             /* eos suppressed until this many tokens */
  int n_stop;
  char stop[GPT2_MAX_STOP][GPT2_MAX_STOP_BYTES + 1]; /* valid UTF-8, 1..256 bytes */
  size_t stop_len[GPT2_MAX_STOP];
} Gpt2Options;

/* Defaults: every processor off, no stop strings. */
void opt_init(Gpt2Options *o);
void opt_free(Gpt2Options *o);
/* Nonzero when some processor changes logits. */
int opt_processes(const Gpt2Options *o);

/* Per-generation state of the processors. Zero-initialise; opt_state_free. */
typedef struct Gpt2OptState {
  float *work;    /* (V) processed logits */
  int *seen;      /* sorted distinct ids of prompt + generated tokens */
  int n_seen;
  int *gen_id;    /* sorted distinct generated ids ... */
  int *gen_cnt;   /* ... and their counts */
  int n_gen;
  int cap;        /* entries reserved in seen, gen_id, gen_cnt */
} Gpt2OptState;

/* Reserve everything the generation may need (a prompt of n ids, then up
** to max_tokens tokens), so that later calls never allocate. */
int opt_state_init(Gpt2OptState *s, const Gpt2Options *o, int V, const int *prompt, int n,
                   int max_tokens);
/* Record a generated (non-eos) token. */
void opt_state_add(Gpt2OptState *s, const Gpt2Options *o, int id);
/* The processed copy of logits (s->work), or logits itself when no
** processor is on. n_generated: tokens generated so far; eos < 0: none. */
const float *opt_apply(Gpt2OptState *s, const Gpt2Options *o, const float *logits, int V,
                       int eos, int n_generated);
void opt_state_free(Gpt2OptState *s);
/* dst := an empty state with src's room (for opt_state_copy); GPT2_NOMEM. */
int opt_state_clone_init(Gpt2OptState *dst, const Gpt2OptState *src, int V);
/* dst := src's tokens (dst made by opt_state_clone_init from src). A
** speculative round processes drafted tokens on such a copy, so the
** generation's own state only ever holds tokens that came out. */
void opt_state_copy(Gpt2OptState *dst, const Gpt2OptState *src);

/* The earliest position in s[0..n) where a stop string starts and is
** complete: 1 and *at, or 0. */
int opt_stop_find(const Gpt2Options *o, const char *s, size_t n, size_t *at);
/* Length of the longest suffix of s[0..n) that is a proper prefix of a stop
** string (text that may still turn into one). */
size_t opt_stop_hold(const Gpt2Options *o, const char *s, size_t n);

#endif
