/*
** transformer.h — the GPT-2 forward pass (owns: per-sequence KV caches and
** the activation scratch space; reads a Gpt2Model, never writes it).
**
** One call advances any number of rows, each belonging to a sequence with
** its own KV cache and position: a prompt is n rows of one sequence (matrix-
** matrix products), a batched decode step is one row of each of n sequences.
** Pre-LN GPT-2 exactly as ../shared/docs/gpt2-facts.md, "Forward pass".
*/
#ifndef GPT2_TRANSFORMER_H
#define GPT2_TRANSFORMER_H

#include "model.h"

/* A sequence: its KV cache and how many positions it holds. */
typedef struct Gpt2Seq {
  int n_pos;    /* tokens already in the cache (= next position) */
  int cap;      /* positions allocated */
  float *k;     /* (n_layer, cap, C) keys, heads side by side */
  float *v;     /* (n_layer, cap, C) values */
} Gpt2Seq;

/* Activation buffers, grown as needed; one per thread of work. */
typedef struct Gpt2Scratch Gpt2Scratch;

Gpt2Seq *seq_new(const Gpt2Model *m);         /* NULL on OOM; cache grows lazily */
void seq_free(Gpt2Seq *s);
void seq_truncate(Gpt2Seq *s, int n_pos);     /* forget positions >= n_pos */
/* dst := the first n_pos positions of src (dst's old content is dropped;
** dst == src truncates). GPT2_ERROR when n_pos is not in [0, src->n_pos];
** GPT2_NOMEM leaves dst empty (n_pos 0). */
int seq_copy_prefix(Gpt2Seq *dst, const Gpt2Seq *src, const Gpt2Model *m, int n_pos);

Gpt2Scratch *scratch_new(void);
void scratch_free(Gpt2Scratch *s);

/* Run n rows. Row r feeds tokens[r] to seqs[r] at position seqs[r]->n_pos
** (rows of the same sequence must be consecutive and in order); afterwards
** each sequence's n_pos has grown by its number of rows. For every r with
** want[r] != 0 (want NULL: only the last row), the next-token logits (V
** floats) are written to logits + k*V, k counting the wanted rows in order.
** Fails (GPT2_ERROR) when a position would reach n_positions, a token id is
** out of range or a sequence's rows are not consecutive; GPT2_NOMEM when
** memory runs out. A failed call leaves every n_pos unchanged.
** Rounding: a lone row goes through BLAS matrix-vector products, several
** rows through matrix-matrix products, so the same position's logits can
** differ in the last bits (~1e-6 relative) depending on how rows were
** grouped (e.g. full prefill vs. reused prefix + one row). */
int gpt2_forward(const Gpt2Model *m, Gpt2Scratch *sc, int n, const int *tokens,
                 Gpt2Seq *const *seqs, const unsigned char *want, float *logits,
                 char *err, size_t errlen);

#endif
