/*
** transformer.h — the GPT-2 forward pass (owns: per-sequence KV caches and
** the activation scratch space; reads a Gpt2Model, never writes it).
**
** One call advances any number of rows, each belonging to a sequence with
** its own KV cache and position: a prompt is n rows of one sequence (matrix-
** matrix products), a batched decode step is one row of each of n sequences.
** Pre-LN GPT-2 exactly as docs/formats.md, "Forward pass".
**
** EXACTNESS CONTRACT: the logits of a row are a function of its sequence's
** tokens only, bitwise: they do not depend on how rows were grouped into
** calls (whole prompt, prefix reused from a cache + the rest, one decode row,
** one row of a batched gpt2_complete step), on the thread count, or on the
** CPU path (scratch_set_kernel). Every product goes through kernels.h (one FMA
** chain per output element over all of K, in order), and attention, layer
** norm, GELU and softmax are per-row computations with fixed operation
** order (transformer.c, "BATCH INVARIANCE"). Hence gpt2_complete equals
** gpt2_generate and prefix reuse equals recomputation, token for token.
** The values differ from a float64 reference by ~1e-6 relative.
**
** Threads and CPU path: each scratch owns a small pool (threadpool.h),
** created on the first call that can use it and joined by scratch_free. A
** new scratch uses scratch_default_threads() threads and the best kernel
** path this CPU has; the caller changes either with scratch_set_threads /
** scratch_set_kernel (the SQL layer passes the connection's settings and
** the GPT2_THREADS / GPT2_KERNEL environment it read). The core reads no
** environment.
*/
#ifndef GPT2_TRANSFORMER_H
#define GPT2_TRANSFORMER_H

#include "model.h"

/* A sequence: its KV cache and how many positions it holds. */
typedef struct Gpt2Seq {
  int n_pos;    /* tokens already in the cache (= next position) */
  int cap;      /* positions allocated */
  float *k;     /* (n_layer, C, cap) keys, transposed: channel-major, so
                   a head's keys are a (D, cap) row-major matrix for q·Kᵀ */
  float *v;     /* (n_layer, n_head, cap, D) values: a head's values are
                   one contiguous (T, D) stream for p·V */
} Gpt2Seq;

/* Activation buffers, grown as needed, plus the thread pool and the CPU
** path; one per connection (driven by one thread at a time). */
typedef struct Gpt2Scratch Gpt2Scratch;

Gpt2Seq *seq_new(const Gpt2Model *m);         /* NULL on OOM; cache grows lazily */
void seq_free(Gpt2Seq *s);
void seq_truncate(Gpt2Seq *s, int n_pos);     /* forget positions >= n_pos */
/* Room for need positions now (the cache otherwise doubles as it fills,
** copying itself each time); keeps the content. GPT2_ERROR when need is
** above n_positions, GPT2_NOMEM. */
int seq_reserve(Gpt2Seq *s, const Gpt2Model *m, int need);
/* Bytes the KV cache of one sequence takes with room for n_pos positions
** (keys and values, float32, every layer: what seq_reserve(s, m, n_pos)
** allocates, before rounding to pages). SIZE_MAX if that overflows. */
size_t seq_bytes(const Gpt2Model *m, int n_pos);
/* dst := the first n_pos positions of src (dst's old content is dropped;
** dst == src truncates). GPT2_ERROR when n_pos is not in [0, src->n_pos];
** GPT2_NOMEM leaves dst empty (n_pos 0). */
int seq_copy_prefix(Gpt2Seq *dst, const Gpt2Seq *src, const Gpt2Model *m, int n_pos);

/* A scratch on scratch_default_threads() threads and the best kernel path
** this CPU has. NULL on OOM. */
Gpt2Scratch *scratch_new(void);
void scratch_free(Gpt2Scratch *s);             /* joins the pool's threads */
/* The default thread count: the CPUs this process may run on (its affinity
** mask), at most 8. */
int scratch_default_threads(void);
/* Threads for later calls (n < 1: the default); returns the count set. A
** pool of another size is joined now and the new one made on next use. */
int scratch_set_threads(Gpt2Scratch *s, int n);
int scratch_threads(const Gpt2Scratch *s);
/* Kernel path by name (kpath_choose: "portable", "avx2", "avx512"; NULL or
** another name: the best); a path the CPU lacks falls back to the best
** below it. Returns the name of the path now in use. */
const char *scratch_set_kernel(Gpt2Scratch *s, const char *name);
const char *scratch_kernel(const Gpt2Scratch *s);
/* A grow-only buffer of n floats for the caller (the logits of a batched
** step: megabytes, which a fresh allocation per step would page-fault in
** each time); valid until the next call; NULL on OOM. */
float *scratch_out(Gpt2Scratch *s, size_t n);
/* fn(arg, i) for i = 0 .. n-1 on this scratch's threads (the caller is
** one of them): for per-sequence work between forward steps, such as the
** picks of a batched step. fn must be safe to run at once for different i. */
void scratch_parallel(Gpt2Scratch *s, int n, void (*fn)(void *arg, int i), void *arg);
/* y (M, N) = epi(x (M, K) · W + b) (b may be NULL, epi a KEpi) on this
** scratch's threads and path: the product the forward pass uses, exposed
** for the kernel tests and benchmarks. */
void scratch_matmul(Gpt2Scratch *sc, const KMat *W, const float *b, int M, const float *x,
                    float *y, int epi);

/* Run n rows. Row r feeds tokens[r] to seqs[r] at position seqs[r]->n_pos
** (rows of the same sequence must be consecutive and in order); afterwards
** each sequence's n_pos has grown by its number of rows. For every r with
** want[r] != 0 (want NULL: only the last row), the next-token logits (V
** floats) are written to logits + k*V, k counting the wanted rows in order.
** Fails (GPT2_ERROR) when a position would reach n_positions, a token id is
** out of range or a sequence's rows are not consecutive; GPT2_NOMEM when
** memory runs out. A failed call leaves every n_pos unchanged.
** Logits obey the exactness contract above whatever the grouping. */
int gpt2_forward(const Gpt2Model *m, Gpt2Scratch *sc, int n, const int *tokens,
                 Gpt2Seq *const *seqs, const unsigned char *want, float *logits,
                 char *err, size_t errlen);

/* The final hidden states (after ln_f) of the last gpt2_forward call's
** wanted rows, packed (n_wanted, n_embd) in row order: computed by every
** call, logits or not (embeddings pass logits NULL to skip the LM head).
** Valid until the next call on sc. */
const float *scratch_hidden(const Gpt2Scratch *sc);

#endif
