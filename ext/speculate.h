/*
** speculate.h — speculative decoding (owns: a draft model's KV cache and
** processor state beside a target generation, the draft / verify round,
** the accept / resample rule, and the tokens a round yields until they are
** taken).
**
** ROUND, for a generation whose last token t is not fed yet (k drafts):
**   1. the draft, whose cache holds a prefix of the target's tokens, is fed
**      what it misses plus t, then proposes d_0..d_{k-1}, one row a call,
**      each from its logits after the same processors and sampler settings
**      as the target's (processor state: as if d_0..d_{j-1} were generated);
**   2. the target runs t, d_0..d_{k-1} as k+1 rows of ONE gpt2_forward call
**      (the exactness contract: row i's logits are bitwise those a plain
**      decode step would give after t, d_0..d_{i-1});
**   3. row i's processed logits (state after d_0..d_{i-1}) judge d_i:
**      greedy: accepted when it is the argmax, else the argmax replaces it;
**      sampled (Leviathan et al. 2023, Chen et al. 2023): p = the target's
**      distribution, q = the draft's (sampler_probs), accepted with
**      probability min(1, p(d_i)/q(d_i)); the first rejected one is
**      replaced by a draw from normalize(max(0, p − q)) (q recomputed by
**      feeding the draft that row again); all k accepted: one more token
**      drawn from the last row's p;
**   4. both caches are cut back to the tokens kept (seq_truncate).
** A round yields 1..k+1 tokens; they are taken (counters, processor state,
** stop rules: gen_take) one per spec_next, so a stop string ends the
** generation at the same token as without a draft. Every random number
** comes from the generation's own RNG in a fixed order per sequence, so a
** seed reproduces the text, batched or not.
**
** LIMITS: k = min(draft_tokens, max_tokens − generated − 1, n_positions −
** 1 − position, the draft's n_positions − position), at least 0 (a round of
** k = 0 is a plain decode step); drafting stops after an eos draft. The
** first token of a generation comes from the prompt's logits as without a
** draft.
**
** BATCHES: the per-sequence work between calls (picks, the rule) runs on
** the scratch's threads (scratch_parallel); each sequence touches only its
** own state, so the result does not depend on the batch or the threads.
**
** COUNTERS (Gpt2Counters): draft_proposed += k and draft_accepted += the
** drafts kept, per round; verify_passes += 1 per round of each sequence.
** A round yields accepted + 1 tokens, or accepted ones only when an
** accepted draft is eos.
*/
#ifndef GPT2_SPECULATE_H
#define GPT2_SPECULATE_H

#include "generate.h"

#define SPEC_MAX_DRAFT 16 /* draft_tokens at most */
#define SPEC_DEFAULT_DRAFT 4

typedef struct Gpt2Spec {
  Gpt2Gen *g;              /* the target's generation (borrowed) */
  const Gpt2Model *d;      /* the draft (retained) */
  Gpt2Seq *dseq;           /* the draft's KV cache: a prefix of g->fed */
  int k;                   /* draft_tokens */
  Gpt2OptState os;         /* processor state within a round (g->os + drafts) */
  Gpt2Sampler samp;        /* the draft's ranking scratch */
  double *pv, *qv;         /* (V) target / draft probabilities (sampling only) */
  float *row;              /* (V) the target's logits of a rejected row (sampling) */
  /* the round in progress */
  int n_pos;               /* target positions when it started */
  int kr;                  /* drafts in it */
  int draft[SPEC_MAX_DRAFT];
  double qd[SPEC_MAX_DRAFT]; /* q(draft[i]) */
  int reject;              /* sampling: a rejection waits for q at this row, else -1 */
  int accepted;
  /* its tokens, out[at..n_out) not taken yet */
  int out[SPEC_MAX_DRAFT + 1];
  double out_lp[SPEC_MAX_DRAFT + 1];
  int n_out, at;
} Gpt2Spec;

/* Whether draft can draft for target: 0, or 1 with what differs written to
** why, the draft's value first ("vocab_size 400 vs 301", "eos token 5 vs
** 300", "token 17 is 'ab' vs 'cd'"): the vocabulary size, the eos id and
** every token's bytes must be equal. */
int spec_mismatch(const Gpt2Model *target, const Gpt2Model *draft, char *why, size_t n);

/* Attach a draft to g (after gen_start / gen_prepare; g must outlive s):
** k drafts a round, 1..SPEC_MAX_DRAFT. On failure too, free with spec_free. */
int spec_start(Gpt2Spec *s, Gpt2Gen *g, const Gpt2Model *draft, int k, char *err,
               size_t errlen);

/* gen_next with speculation: the next token of s->g (a round runs when the
** last one's tokens are all taken). */
int spec_next(Gpt2Spec *s, int *tok, double *logprob, char *err, size_t errlen);

/* gen_next_batch with speculation, for generations sharing one target and
** one draft model: pending prompts are fed (batched), then every live
** generation with no token left gets a round — the draft steps of all of
** them batched, their verify rows in one forward call (GEN_STEP_ROWS rows
** at most a call) — and each live one takes one token into toks[i] (-1 for
** those done). logprobs may be NULL. */
int spec_next_batch(Gpt2Spec *const *ss, int n, int *toks, double *logprobs, char *err,
                    size_t errlen);

/* Free what s holds (not g) and zero it; safe on a zeroed s. */
void spec_free(Gpt2Spec *s);

#endif
