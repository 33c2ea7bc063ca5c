/*
** kernels.h — the hand-written numeric kernels (owns: the packed weight
** layout, the batch-invariant matrix product, exact vector exp / GELU /
** sum / layer norm, the 16-bit float conversions, CPU-feature dispatch and
** the names of the CPU paths). Single-threaded: callers split the work
** (transformer.c splits panels, i.e. output columns, across its pool).
**
** CONTRACT: BATCH INVARIANCE BY CONSTRUCTION
**   Every product y = x·W + b of this module computes each output element as
**       acc = b[n]            (+0.0f when there is no bias)
**       for k = 0 .. K-1:  acc = fma(x[r][k], W[k][n], acc)   (one rounding each)
**       y[r][n] = epi(acc)    (store, y + acc, or GELU(acc); see KEpi)
**   one chain per element, in increasing k, never split or reassociated. The
**   sequence of floating-point operations for y[r][n] therefore depends only
**   on row r of x and column n of W — not on M (rows per call), not on which
**   thread computes it (callers split columns or heads, never k), and not on
**   the CPU path: AVX-512, AVX2+FMA and portable C (fmaf(), which is
**   correctly rounded everywhere) produce bitwise the same floats. Register
**   blocking (several rows share each weight load) and K chunking (a chain
**   stored to memory after one range of k and reloaded for the next, which
**   is exact) change only the order in which independent chains advance,
**   not any chain.
**   k_exp, k_gelu, k_sum16 and k_layernorm are likewise one fixed sequence
**   of IEEE operations (+ - * / fma sqrt, float <-> double conversion,
**   compare-select, exponent-bit scaling), written once per path; the
**   scalar versions are the definition.
**
** PACKED WEIGHTS (KMat)
**   W (K, N) is stored as ceil(N/KNB) panels of KNB columns, (np, K, KNB),
**   panel-major, columns past N zero, 64-byte aligned: a panel is one linear
**   stream, so a decode step (one row) reads memory front to back, and a
**   block of rows reuses each loaded panel row for all of them.
**   Element types: F32; F16 and BF16 (converted to f32 in registers, exactly,
**   so the chain above is unchanged: W[k][n] is the 16-bit value); Q8: int8
**   with one f32 scale per block of KQB rows and column, s[j][n] =
**   max|W[k][n]| / 127 over the block, q = rint(W · 127 / max) (a NaN
**   weight is ignored by the max and stored as q = 0; an infinite one makes
**   its block's scale infinite, so that block column's products are NaN,
**   as an f32 infinity would make them Inf or NaN). For Q8 the
**   chain of an element is, per block j in increasing order,
**       part = 0;  for k in block j:  part = fma(x[r][k], (float)q[k][n], part)
**       acc  = fma(part, s[j][n], acc)
**   again one fixed sequence for all M, threads and paths.
**   Q4: 4-bit integers q in [-8, 7] with one IEEE f16 scale per block of
**   KQ4B rows and column (sf = the scale widened to f32); the chain is Q8's
**   with KQ4B-row blocks and sf in place of s. A panel row (64 columns) is
**   32 bytes: byte j holds column j in its low nibble and column j + 32 in
**   its high nibble, each nibble u standing for q = u - 8 (padding columns
**   q = 0). The scales, (np, ceil(K/KQ4B), KNB) f16, follow the nibbles,
**   64-byte aligned: 0.5 + 2/32 bytes per weight.
**   Quantizing a block of column n: m = its element of largest |w| (the
**   first in k order on ties, sign kept); s = f16(m / -8) (round to
**   nearest even, saturating at ±65504); q = 0 when sf == 0, else
**   clamp(rint(w / sf), -8, 7), so the extreme element gets -8 (unless s
**   is an f16 subnormal, |m| < 2^-11, whose rounding can be coarser).
**   Non-finite weights: a NaN is never the maximum and is stored as q = 0
**   (as in Q8); an infinite one is the maximum, so the f16 scale saturates
**   (q = -8 for it, finite values of its block mostly round to 0).
*/
#ifndef GPT2_KERNELS_H
#define GPT2_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define KNB 64 /* panel width in columns (4 zmm, 8 ymm, 256 bytes of f32) */
#define KQB 64 /* rows per Q8 scale block */
#define KQ4B 32 /* rows per Q4 scale block */

/* CPU paths, in order of preference. */
typedef enum KPath { KPATH_PORTABLE = 0, KPATH_AVX2 = 1, KPATH_AVX512 = 2 } KPath;

/* What happens to a finished chain. */
typedef enum KEpi {
  KEPI_STORE = 0, /* y = acc */
  KEPI_ADD = 1,   /* y = y + acc (residual add fused into the product) */
  KEPI_GELU = 2   /* y = k_gelu(acc) */
} KEpi;

/* Element type of packed panels. */
typedef enum KType { KT_F32 = 0, KT_F16 = 1, KT_BF16 = 2, KT_Q8 = 3, KT_Q4 = 4 } KType;

/* A packed weight matrix: y = x·W, W logically (K, N). */
typedef struct KMat {
  int K, N;        /* logical shape */
  int np;          /* panels: ceil(N / KNB) */
  int type;        /* KType */
  const void *w;   /* (np, K, KNB) elements of type (Q4: (np, K, KNB/2) bytes) */
  const float *scale; /* Q8: (np, ceil(K/KQB), KNB) block scales; else NULL */
  const uint16_t *hscale; /* Q4: (np, ceil(K/KQ4B), KNB) f16 block scales; else NULL */
} KMat;

/* ---- CPU-feature dispatch ---------------------------------------------- */

/* Nonzero when this CPU (and compiler) can run path p. */
int kpath_available(KPath p);
/* 0 and *out = the path when name is exactly "portable", "avx2" or
** "avx512" (whether or not this CPU has it); else -1, *out unchanged. */
int kpath_parse(const char *name, KPath *out);
/* The path to use: the one `force` names (kpath_parse) when this CPU has
** it, a named path it lacks falling back to the best one below it; NULL,
** "" or any other name: the best this CPU has. The core reads no
** environment: the caller (the SQL layer) passes what it was asked for. */
KPath kpath_choose(const char *force);
const char *kpath_name(KPath p);

/* ---- packing ------------------------------------------------------------ */

/* Bytes of a packed (K, N) matrix of type t (scales included; a multiple
** of 64). */
size_t kmat_bytes(int type, int K, int N);
/* Describe (K, N) panels of type t at mem (kmat_bytes long, 64-aligned). */
void kmat_init(KMat *m, int type, int K, int N, void *mem);
/* Fill rows k0..k1-1 of W from f32 src (rows of W, row stride lds floats):
** W[k][n] = src[(k - k0) * lds + n], converted to the type (F16: round to
** nearest even, saturating at ±65504; BF16: round to nearest even; Q8 / Q4:
** k0 and k1 on KQB / KQ4B boundaries or k1 = K). Pads columns past N with
** zeros. */
void kmat_pack_rows(KMat *m, const float *src, size_t lds, int k0, int k1);
/* Fill columns n0..n1-1 of W from src holding rows of Wᵀ (stride lds):
** W[k][n] = src[(n - n0) * lds + k] (the tied LM head: Wᵀ = wte (V, C)).
** n0 must be a multiple of KNB; when n1 < np*KNB is the matrix end the
** padding columns are zeroed. */
void kmat_pack_cols(KMat *m, const float *src, size_t lds, int n0, int n1);
/* out (K) = column n of W as f32 (the stored value; Q8: q·s; Q4: q·sf), the
** embedding lookup from the tied head. */
void kmat_col(const KMat *m, int n, float *out);
/* The project's one implementation of the 16-bit float conversions (the
** kernels, packing and safetensors.c's reading of F16 / BF16 files).
** Widening is exact (subnormals, infinities and NaN payloads kept);
** narrowing rounds to nearest even. */
float k_f16_to_f32(uint16_t h);
float k_bf16_to_f32(uint16_t h);
uint16_t k_f32_to_f16(float f); /* saturates to ±65504; NaN stays NaN */
uint16_t k_f32_to_bf16(float f); /* NaN stays a quiet NaN */

/* ---- products ------------------------------------------------------------ */

/* y (M, N) [ldy] = epi(bias + x (M, K) [ldx] · W) for the columns of panels
** p0..p1-1 only (n in [p0*KNB, min(p1*KNB, N))). bias: N floats or NULL.
** Any KType. */
void k_matmul(KPath path, const KMat *W, const float *bias, int M, const float *x, size_t ldx,
              float *y, size_t ldy, KEpi epi, int p0, int p1);

/* Same contract for a plain row-major f32 W (K, N) with row stride ldw (used by
** attention: scores = q·Kᵀ over the transposed key cache, out = p·V).
** bias may alias y when M == 1: a chain can be continued from a stored
** partial result (bias = y = the accumulators so far, x and W advanced to
** the next k), which gives bitwise the chain run in one call. */
void k_gemm(KPath path, int M, int K, int N, const float *x, size_t ldx, const float *W,
            size_t ldw, const float *bias, float *y, size_t ldy, KEpi epi);

/* ---- exact elementwise helpers ----------------------------------------- */

/* max of x[0..n-1] (n >= 1); exact, so order does not matter. */
float k_max(KPath path, const float *x, int n);
/* x[i] = k_exp(x[i] - sub) for i < n. */
void k_exp_sub(KPath path, float *x, int n, float sub);
/* x[i] = k_gelu(x[i]) for i < n. */
void k_gelu_n(KPath path, float *x, size_t n);
/* Sum of x[0..n-1]: lane j (0..15) adds the elements i ≡ j (mod 16) in
** increasing i (the last block padded with +0), then the lanes are combined
** by the fixed tree ((l[j]+l[j+8]) -> +4 -> +2 -> +1). */
float k_sum16(KPath path, const float *x, int n);

/* o = LayerNorm(x)·w + b over C channels: in double,
** mean = Σx / C and var = Σ(x − mean)² / C (biased), each sum over 16 lanes
** (lane j: the elements i ≡ j (mod 16) in increasing i) combined by
** k_sum16's tree; then in float, o[i] = (x[i] − (float)mean) · rstd · w[i]
** + b[i] left to right, rstd = (float)(1 / sqrt(var + eps)). */
void k_layernorm(KPath path, float *o, const float *x, const float *w, const float *b, int C,
                 float eps);

/* Scalar definitions (portable path; also the tests' reference). */
float k_exp(float x);  /* 2^n·p(r), |rel err| < 2e-7 on [-87, 88]; clamps outside */
float k_gelu(float x); /* gelu_new as x / (1 + exp(-2u)), u = sqrt(2/π)(x + 0.044715x³) */

#endif
