/*
** score.h — scoring given tokens and pooled embeddings (owns: the sliding
** windows over texts longer than the context, batching the rows of many
** scored sequences into shared forward calls, the per-token log-softmax,
** ranks and top alternatives, and mean / last-token pooling).
**
** A scored sequence is ids[0..n): ids[0..s0) only condition (the context,
** or the eos token when there is none), ids[s0..n) are scored, each given
** everything before it: lp = log softmax(logits after ids[..i])[ids[i]],
** natural log, the log-sum-exp accumulated in float64. The last token is
** never fed (its logits would predict the token after the text).
**
** WINDOWS. Positions are absolute, so a sequence longer than the context is
** scored in windows of W = n_positions + 1 tokens (n_positions fed rows)
** starting at 0, stride, 2·stride, ...; each window scores the tokens no
** earlier window scored (Hugging Face's perplexity recipe: every token
** once, with at least W - stride tokens before it in its window). A window
** is recomputed from scratch: no KV state crosses windows.
**
** BATCHING. score_run feeds the fed rows of all windows of all jobs in
** order, packed into forward calls of up to SCORE_STEP_ROWS rows (rows of
** different windows are different sequences of one call), the LM head run
** only for the rows whose logits score a token. By the exactness contract
** (transformer.h) a token's logits, hence its log-probability, are bitwise
** the same however rows were grouped: batched equals one-by-one.
*/
#ifndef GPT2_SCORE_H
#define GPT2_SCORE_H

#include "generate.h"
#include "model.h"
#include "transformer.h"

/* Rows per forward call (bounds activations and the step's logits:
** SCORE_STEP_ROWS · vocab_size floats, 51 MB for GPT-2). */
#define SCORE_STEP_ROWS 256
/* Alternatives per token at most (score top lists). */
#define SCORE_MAX_TOP 20

typedef struct ScoreTop {
  int id;
  double logprob;
} ScoreTop;

typedef struct ScoreJob {
  const int *ids; /* the sequence: conditioning tokens, then the scored ones */
  int n;          /* tokens in ids */
  int s0;         /* first scored index, >= 1 */
  double *lp;     /* out (n - s0): lp[i - s0] = log p(ids[i] | ids[..i]) */
  int *rank;      /* out (n - s0) or NULL: 1 + tokens ranked above ids[i]
                     (higher logit, or equal logit and lower id: greedy's order) */
  int top_n;      /* alternatives per token, 0..SCORE_MAX_TOP */
  ScoreTop *top;  /* out (n - s0, top_n) or NULL: the top_n tokens, best first */
} ScoreJob;

typedef struct ScoreParams {
  int stride;               /* window stride, 1..n_positions */
  int (*stop)(void *arg);   /* asked before every forward call; nonzero: GPT2_INTERRUPTED */
  void *stop_arg;
} ScoreParams;

/* The default stride: half the context (every token sees at least
** n_positions / 2 + 1 tokens of its window; the cost is ~2x the rows of
** one pass over a long text). */
int score_default_stride(const Gpt2Model *m);

/* Score every job (n_jobs >= 0). pfx (may be NULL): a single job that
** fits one window starts from the positions pfx holds in common with it
** (its KV state is taken over) and leaves its own state there (ids[0..n-1)),
** so scoring several texts after one context computes the context once.
** Counters as gen: forward_calls, rows_computed, prefix_reused.
** GPT2_ERROR (a token out of range, n_positions < 1), GPT2_NOMEM,
** GPT2_INTERRUPTED. */
int score_run(const Gpt2Model *m, Gpt2Scratch *sc, Gpt2Counters *ctr, ScoreJob *jobs, int n_jobs,
              const ScoreParams *p, Gpt2Prefix *pfx, char *err, size_t errlen);

/* out (n_embd) = the final hidden states (after ln_f) of ids[0..n) fed from
** position 0 (1 <= n <= n_positions), pooled: mean over every token, or the
** last token's (last); then scaled to unit L2 norm when normalize (a zero
** vector stays zero). Pooling and norm in float64. */
int score_embed(const Gpt2Model *m, Gpt2Scratch *sc, Gpt2Counters *ctr, const int *ids, int n,
                int last, int normalize, const ScoreParams *p, float *out, char *err,
                size_t errlen);

#endif
