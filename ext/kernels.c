/*
** kernels.c — packed-panel matrix products and exact elementwise helpers,
** one implementation per CPU path (see kernels.h for the contract).
**
** Layout of a product: for each panel (KNB = 64 output columns, a (K, 64)
** stream), rows are taken MR at a time (AVX-512: 6 rows x 4 zmm = 24
** accumulators; AVX2: 4 rows x 2 ymm per 16-column group; portable: one
** row); for each k, the panel row is loaded once and FMA'd into every row's
** accumulators with x[r][k] broadcast (a Q4 panel row is widened to floats
** once per k: AVX-512 through an in-register table of -8..7, AVX2 by
** mask, subtract and convert). The chain of every element runs over
** all of K in increasing k, inside a register (parked in memory between
** K chunks, exactly), so blocking never changes a result.
** Single rows (decode) are bound by memory bandwidth: their row block
** prefetches the panel ahead (K_PREFETCH). Batches of rows (M > 6) run
** GEMM-style over L1-resident tiles of K_TILE panel rows, every row block
** reusing each tile, 16- and 8-bit tiles widened once; meanwhile the row
** blocks prefetch the next tile, so DRAM streaming overlaps with compute.
**
** Paths are compiled with per-function target attributes, so the .so runs
** on any x86-64 (and the portable path builds anywhere); the choice is made
** at run time (__builtin_cpu_supports; cpuid for F16C).
*/
#include "kernels.h"

#include <math.h>
#include <string.h>

/* No contraction of a*b+c into an FMA behind our back: the paths must
** perform exactly the operations written (gcc in ISO C mode already
** defaults to off; clang defaults to on). */
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__) && !defined(__STRICT_ANSI__)
#pragma GCC optimize("fp-contract=off")
#endif

#if defined(__x86_64__) || defined(__i386__)
#define K_X86 1
#include <cpuid.h>
#include <immintrin.h>
#define T_AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define T_AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
#else
#define K_X86 0
#endif

/* ---------------------------------------------------------------------------
** constants shared by every path (the scalar code is the definition)
*/

#define EXP_HI 88.0f            /* clamp: 2^127·p stays finite */
#define EXP_LO (-88.0f)         /* below: 2^-127 scale -> 0 or tiny */
#define LOG2E 1.44269502f
#define LN2_HI 0.693145751953125f  /* ln 2 split; n·LN2_HI is exact */
#define LN2_LO 1.42860677e-6f
#define RMAGIC 12582912.0f      /* 1.5·2^23: t + RMAGIC rounds t to an integer */
#define RMAGIC_BITS 0x4B400000u /* bits of RMAGIC; low bits then hold n */
/* Cephes expf polynomial on |r| <= ln2/2 */
#define EP0 1.9875691500e-4f
#define EP1 1.3981999507e-3f
#define EP2 8.3334519073e-3f
#define EP3 4.1665795894e-2f
#define EP4 1.6666665459e-1f
#define EP5 5.0000001201e-1f
#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */
/* Decode streams each panel once from DRAM; the hardware prefetcher alone
** keeps too few lines in flight for 16- and 8-bit panels (one or two lines
** per k), so the first row block prefetches this far ahead (README,
** "Speed"). */
#define K_PREFETCH 4096
#define K_CHUNK_ROWS 64 /* rows per group of a batched product: 16 KB of parked chains */
#define GELU_C 0.044715f
/* Batched rows (M > 6) run over K tiles of K_TILE rows of a panel (32 KB
** of f32: L1-resident while every row block of up to K_CHUNK_ROWS rows
** reads it); 16- and 8-bit tiles are widened to f32 once per tile, not once
** per row block. A multiple of KQB. */
#define K_TILE 128
/* Internal element types of widened tiles: the Q8 / Q4 chain over f32 q
** (Q4's f16 scales widened to f32 too). */
enum { KT_Q8F = 16, KT_Q4F = 17 };

/* ---------------------------------------------------------------------------
** portable path (scalar; the definition of every operation sequence)
*/

float k_exp(float x) {
  x = x < EXP_HI ? x : EXP_HI; /* = minps(x, HI), NaN -> HI */
  x = x > EXP_LO ? x : EXP_LO; /* = maxps(x, LO) */
  float kf = x * LOG2E + RMAGIC; /* two roundings: mul, then add (no contraction) */
  float n = kf - RMAGIC;
  float r = fmaf(n, -LN2_HI, x);
  r = fmaf(n, -LN2_LO, r);
  float p = EP0;
  p = fmaf(p, r, EP1);
  p = fmaf(p, r, EP2);
  p = fmaf(p, r, EP3);
  p = fmaf(p, r, EP4);
  p = fmaf(p, r, EP5);
  float y = fmaf(p, r * r, r) + 1.0f;
  uint32_t kb;
  memcpy(&kb, &kf, 4);
  uint32_t sb = (kb - RMAGIC_BITS + 127u) << 23; /* 2^n, n in [-127, 127] */
  float s;
  memcpy(&s, &sb, 4);
  return y * s;
}

/* gelu_new (docs/formats.md, "Forward pass"): 0.5·x·(1 + tanh(u)) = x / (1 + e^(-2u)), exact
** identity; this form needs only exp and has no cancellation near 0. */
float k_gelu(float x) {
  float x3 = x * x * x;
  float u = GELU_K * (x + GELU_C * x3);
  float e = k_exp(u * -2.0f);
  return x / (1.0f + e);
}

static float epi1(float acc, float old, int epi) {
  return epi == KEPI_ADD ? old + acc : epi == KEPI_GELU ? k_gelu(acc) : acc;
}

float k_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, man = h & 0x3ffu, u;
  if (e == 0 && man == 0) u = sign;
  else if (e == 0) { /* subnormal: man·2^-24, renormalised */
    e = 113;
    while (!(man & 0x400u)) {
      man <<= 1;
      e--;
    }
    u = sign | (e << 23) | ((man & 0x3ffu) << 13);
  } else if (e == 31) u = sign | 0x7f800000u | (man << 13);
  else u = sign | ((e + 112) << 23) | (man << 13);
  float f;
  memcpy(&f, &u, 4);
  return f;
}

uint16_t k_f32_to_f16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); /* NaN */
  if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7bffu); /* would round to inf: ±65504 */
  if (a < 0x38800000u) { /* below 2^-14: a subnormal half, m·2^-24 */
    float v;
    memcpy(&v, &a, 4);
    return (uint16_t)(sign | (uint16_t)rintf(v * 16777216.0f)); /* exact scaling, RNE */
  }
  uint32_t r = a + 0xfffu + ((a >> 13) & 1u); /* round to nearest even at bit 13 */
  return (uint16_t)(sign | ((r - (112u << 23)) >> 13));
}

uint16_t k_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float k_bf16_to_f32(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Bytes of one k (KNB elements) of a packed panel; Q4 packs two a byte. */
static size_t panel_row_bytes(int type) {
  return type == KT_F32 ? 4 * KNB : type == KT_Q8 ? KNB : type == KT_Q4 ? KNB / 2 : 2 * KNB;
}

/* w[0..n) = elements i.. of W as f32 (exact for every type but Q4; Q8: q). */
static void row_f32(int type, const void *W, size_t i, int n, float *w) {
  for (int j = 0; j < n; j++)
    w[j] = type == KT_F16    ? k_f16_to_f32(((const uint16_t *)W)[i + j])
           : type == KT_BF16 ? k_bf16_to_f32(((const uint16_t *)W)[i + j])
           : type == KT_Q8   ? (float)((const int8_t *)W)[i + j]
                             : ((const float *)W)[i + j];
}

/* w[0..n) = the q of columns 0..n-1 of a Q4 panel row (32 bytes). */
static void q4_row(const uint8_t *row, int n, float *w) {
  for (int j = 0; j < n; j++) w[j] = (float)((j < 32 ? row[j] & 15 : row[j - 32] >> 4) - 8);
}

/* y (M, N <= KNB) = epi(b + x·W), one row at a time; S: block scales
** (nkb, KNB), f32 for Q8, f16 for Q4. */
static void blk_portable(int M, int K, int N, int type, const float *x, size_t ldx, const void *W,
                         size_t ldw, const void *S, const float *b, float *y, size_t ldy,
                         int epi) {
  const int bs = type == KT_Q4 ? KQ4B : KQB; /* rows per scale block */
  for (int r = 0; r < M; r++) {
    float acc[KNB], part[KNB], w[KNB];
    const float *xr = x + (size_t)r * ldx;
    for (int j = 0; j < N; j++) acc[j] = b ? b[j] : 0.0f;
    if (type == KT_Q8 || type == KT_Q4) {
      for (int k0 = 0, kb = 0; k0 < K; k0 += bs, kb++) {
        int k1 = k0 + bs < K ? k0 + bs : K;
        for (int j = 0; j < N; j++) part[j] = 0.0f;
        for (int k = k0; k < k1; k++) {
          if (type == KT_Q4) q4_row((const uint8_t *)W + (size_t)k * (ldw / 2), N, w);
          else row_f32(type, W, (size_t)k * ldw, N, w);
          for (int j = 0; j < N; j++) part[j] = fmaf(xr[k], w[j], part[j]);
        }
        for (int j = 0; j < N; j++) {
          size_t i = (size_t)kb * KNB + (size_t)j;
          float sj = type == KT_Q4 ? k_f16_to_f32(((const uint16_t *)S)[i]) : ((const float *)S)[i];
          acc[j] = fmaf(part[j], sj, acc[j]);
        }
      }
    } else {
      for (int k = 0; k < K; k++) {
        row_f32(type, W, (size_t)k * ldw, N, w);
        for (int j = 0; j < N; j++) acc[j] = fmaf(xr[k], w[j], acc[j]);
      }
    }
    float *yr = y + (size_t)r * ldy;
    for (int j = 0; j < N; j++) yr[j] = epi1(acc[j], epi == KEPI_ADD ? yr[j] : 0.0f, epi);
  }
}

static float sum16_portable(const float *x, int n) {
  float l[16] = {0};
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; j++) l[j] += x[i + j];
  if (i < n)
    for (int j = 0; j < 16; j++) l[j] += i + j < n ? x[i + j] : 0.0f;
  for (int j = 0; j < 8; j++) l[j] += l[j + 8];
  for (int j = 0; j < 4; j++) l[j] += l[j + 4];
  for (int j = 0; j < 2; j++) l[j] += l[j + 2];
  return l[0] + l[1];
}

/* The fixed tree of k_sum16 over 16 double lanes. */
static double tree16d(double *l) {
  for (int j = 0; j < 8; j++) l[j] += l[j + 8];
  for (int j = 0; j < 4; j++) l[j] += l[j + 4];
  for (int j = 0; j < 2; j++) l[j] += l[j + 2];
  return l[0] + l[1];
}

/* k_layernorm's lane sums over elements i0..C-1, added to l (lane i & 15):
** of x (dev 0) or of (x - mean)^2 (dev 1). Each path sums the whole blocks
** of 16 its own way (LnLanes, from fresh lanes) and leaves the tail here. */
static void ln_tail(double *l, const float *x, int i0, int C, double mean, int dev) {
  for (int i = i0; i < C; i++) {
    const double v = (double)x[i];
    l[i & 15] += dev ? (v - mean) * (v - mean) : v;
  }
}

/* o[i] for i0 <= i < C, in float, left to right. */
static void ln_norm_portable(float *o, const float *x, const float *w, const float *b, int i0,
                             int C, float mu, float rstd) {
  for (int i = i0; i < C; i++) o[i] = (x[i] - mu) * rstd * w[i] + b[i];
}

/* ---------------------------------------------------------------------------
** AVX-512 path
*/
#if K_X86

T_AVX512 INLINE __m512 exp512(__m512 x) {
  x = _mm512_min_ps(x, _mm512_set1_ps(EXP_HI));
  x = _mm512_max_ps(x, _mm512_set1_ps(EXP_LO));
  __m512 kf = _mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(LOG2E)), _mm512_set1_ps(RMAGIC));
  __m512 n = _mm512_sub_ps(kf, _mm512_set1_ps(RMAGIC));
  __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
  r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
  __m512 p = _mm512_set1_ps(EP0);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EP5));
  __m512 y = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), _mm512_set1_ps(1.0f));
  __m512i sb = _mm512_sub_epi32(_mm512_castps_si512(kf), _mm512_set1_epi32((int)RMAGIC_BITS));
  sb = _mm512_slli_epi32(_mm512_add_epi32(sb, _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(sb));
}

T_AVX512 INLINE __m512 gelu512(__m512 x) {
  __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  __m512 u = _mm512_mul_ps(_mm512_set1_ps(GELU_K),
                           _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(GELU_C), x3)));
  __m512 e = exp512(_mm512_mul_ps(u, _mm512_set1_ps(-2.0f)));
  return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

/* 16 weights at element i of W, as f32 (exact conversions). */
T_AVX512 INLINE __m512 ld512(const int type, const void *W, size_t i) {
  if (type == KT_F16)
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)W + i)));
  if (type == KT_BF16)
    return _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)W + i))), 16));
  if (type == KT_Q8)
    return _mm512_cvtepi32_ps(
        _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)((const int8_t *)W + i))));
  return _mm512_loadu_ps((const float *)W + i);
}

/* Later row blocks prefetch the panel after W (pbytes long) to L2 at an
** even rate over all of them: block position q = k0 + k (k0 = the block's
** first position, counting every later block's K steps) takes lines
** (q·step .. (q+1)·step) >> 16, step = lines per k in Q16. Spread over
** every later block rather than a line per k from the first ones: a faster
** request rate stalls the blocks behind DRAM. */
INLINE void pf_next(const char *base, long nbytes, long k0, long step, int k) {
  long q = k0 + k, l = (q * step) >> 16, l1 = ((q + 1) * step) >> 16;
  for (; l < l1 && 64 * l < nbytes; l++) _mm_prefetch(base + 64 * l, _MM_HINT_T1);
}

/* The 64 weights of panel row k as f32, exactly: 16-bit and 8-bit types
** through ld512; Q4's 32-byte row by one table lookup per 16 lanes
** (vpermps reads the low 4 bits of each index: the byte widened to 32 bits
** picks its low nibble's float as it is, its high nibble's after a shift
** by 4). Widened tiles (KT_Q8F, KT_Q4F) are f32. */
T_AVX512 INLINE void ldrow512(const int type, const void *W, size_t ldw, int k, __m512 *w0,
                              __m512 *w1, __m512 *w2, __m512 *w3) {
  if (type == KT_Q4) {
    const __m512 lut = _mm512_setr_ps(-8.0f, -7.0f, -6.0f, -5.0f, -4.0f, -3.0f, -2.0f, -1.0f, 0.0f,
                                      1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f);
    const char *wr = (const char *)W + (size_t)k * (ldw / 2);
    __m512i e0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)wr));
    __m512i e1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(wr + 16)));
    *w0 = _mm512_permutexvar_ps(e0, lut);
    *w1 = _mm512_permutexvar_ps(e1, lut);
    *w2 = _mm512_permutexvar_ps(_mm512_srli_epi32(e0, 4), lut);
    *w3 = _mm512_permutexvar_ps(_mm512_srli_epi32(e1, 4), lut);
    return;
  }
  const int t = type == KT_Q8F || type == KT_Q4F ? KT_F32 : type;
  const size_t i = (size_t)k * ldw;
  *w0 = ld512(t, W, i);
  *w1 = ld512(t, W, i + 16);
  *w2 = ld512(t, W, i + 32);
  *w3 = ld512(t, W, i + 48);
}

/* MR rows x 64 columns; mk: lanes of each zmm inside N; wfull: W rows are
** readable over all 64 columns (packed panels are zero-padded; always so
** for 16-, 8- and 4-bit types). S: block scales (nkb, KNB), f32 for Q8, f16
** for Q4. pf 1: prefetch
** this panel (the first row block: it still comes from DRAM); pf 2: the
** NEXT panel, see pf_next (later row blocks compute from L2 meanwhile, so
** streaming and computing overlap; pn, pnb: the region to prefetch instead,
** when not NULL). a0: chains to continue (rows of KNB), else they start
** from b. KT_Q8F: the Q8 chain over a tile of q already widened to f32. */
T_AVX512 INLINE void mk512(const int MR, const int type, int K, const float *x, size_t ldx,
                           const void *W, size_t ldw, const void *S, const __m512 *b,
                           const __mmask16 *mk, const int wfull, const int pf, long pfn,
                           long pstep, const char *pn, long pnb, const float *a0, float *y,
                           size_t ldy, int epi, const int wt, float *tw) {
  const size_t es = type == KT_F32 || type == KT_Q8F ? 4 : type == KT_Q8 ? 1 : 2;
  /* a packed panel (Q4: half a byte per element) */
  const long pbytes = (long)K * (type == KT_Q4 ? (long)ldw / 2 : (long)ldw * (long)es);
  const char *pbase = pn ? pn : (const char *)W + pbytes;
  const long plen = pn ? pnb : pbytes;
  __m512 acc[6][4];
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++)
      acc[r][j] = a0 ? _mm512_maskz_loadu_ps(mk[j], a0 + (size_t)r * KNB + 16 * j) : b[j];
  if (type == KT_Q8 || type == KT_Q4 || type == KT_Q8F || type == KT_Q4F) {
    /* the block chain: a partial sum per scale block, then one FMA with
    ** the block's scale (Q4 with f16 scales, the others f32) */
    const int qb = type == KT_Q4 || type == KT_Q4F ? KQ4B : KQB; /* rows per scale block */
    for (int k0 = 0, kb = 0; k0 < K; k0 += qb, kb++) {
      int k1 = k0 + qb < K ? k0 + qb : K;
      __m512 part[6][4];
#pragma GCC unroll 6
      for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) part[r][j] = _mm512_setzero_ps();
      for (int k = k0; k < k1; k++) {
        if (pf == 1 && type == KT_Q4 && !(k & 1)) /* 32-byte rows: two a line */
          _mm_prefetch((const char *)W + (size_t)k * (ldw / 2) + K_PREFETCH, _MM_HINT_T0);
        else if (pf == 1 && type != KT_Q4)
          _mm_prefetch((const char *)W + (size_t)k * ldw + K_PREFETCH, _MM_HINT_T0);
        if (pf == 2) pf_next(pbase, plen, pfn, pstep, k);
        __m512 w[4];
        ldrow512(type, W, ldw, k, &w[0], &w[1], &w[2], &w[3]);
        if (wt)
          for (int j = 0; j < 4; j++) _mm512_store_ps(tw + (size_t)k * KNB + 16 * j, w[j]);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) {
          __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);
          part[r][0] = _mm512_fmadd_ps(xb, w[0], part[r][0]);
          part[r][1] = _mm512_fmadd_ps(xb, w[1], part[r][1]);
          part[r][2] = _mm512_fmadd_ps(xb, w[2], part[r][2]);
          part[r][3] = _mm512_fmadd_ps(xb, w[3], part[r][3]);
        }
      }
#pragma GCC unroll 4
      for (int j = 0; j < 4; j++) {
        const size_t si = (size_t)kb * KNB + 16 * j;
        __m512 s = type == KT_Q4 ? _mm512_cvtph_ps(_mm256_loadu_si256(
                                       (const __m256i *)((const uint16_t *)S + si)))
                                 : _mm512_loadu_ps((const float *)S + si);
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++) acc[r][j] = _mm512_fmadd_ps(part[r][j], s, acc[r][j]);
      }
    }
  } else {
    for (int k = 0; k < K; k++) {
      const size_t i = (size_t)k * ldw;
      __m512 w0, w1, w2, w3;
      if (pf == 2) pf_next(pbase, plen, pfn, pstep, k);
      if (pf == 1) { /* the panel row's 2 (16-bit) or 4 (f32) lines, K_PREFETCH ahead */
        const char *pp = (const char *)W + i * (type == KT_F32 ? 4 : 2) + K_PREFETCH;
        _mm_prefetch(pp, _MM_HINT_T0);
        _mm_prefetch(pp + 64, _MM_HINT_T0);
        if (type == KT_F32) {
          _mm_prefetch(pp + 128, _MM_HINT_T0);
          _mm_prefetch(pp + 192, _MM_HINT_T0);
        }
      }
      if (wfull) {
        w0 = ld512(type, W, i);
        w1 = ld512(type, W, i + 16);
        w2 = ld512(type, W, i + 32);
        w3 = ld512(type, W, i + 48);
      } else { /* f32 only */
        const float *wk = (const float *)W + i;
        w0 = _mm512_maskz_loadu_ps(mk[0], wk);
        w1 = _mm512_maskz_loadu_ps(mk[1], wk + 16);
        w2 = _mm512_maskz_loadu_ps(mk[2], wk + 32);
        w3 = _mm512_maskz_loadu_ps(mk[3], wk + 48);
      }
      if (wt) {
        float *t = tw + (size_t)k * KNB;
        _mm512_store_ps(t, w0);
        _mm512_store_ps(t + 16, w1);
        _mm512_store_ps(t + 32, w2);
        _mm512_store_ps(t + 48, w3);
      }
#pragma GCC unroll 6
      for (int r = 0; r < MR; r++) {
        __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);
        acc[r][0] = _mm512_fmadd_ps(xb, w0, acc[r][0]);
        acc[r][1] = _mm512_fmadd_ps(xb, w1, acc[r][1]);
        acc[r][2] = _mm512_fmadd_ps(xb, w2, acc[r][2]);
        acc[r][3] = _mm512_fmadd_ps(xb, w3, acc[r][3]);
      }
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; r++) {
    float *yr = y + (size_t)r * ldy;
#pragma GCC unroll 4
    for (int j = 0; j < 4; j++) {
      if (!mk[j]) continue;
      __m512 v = acc[r][j];
      if (epi == KEPI_ADD) v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk[j], yr + 16 * j), v);
      else if (epi == KEPI_GELU) v = gelu512(v);
      _mm512_mask_storeu_ps(yr + 16 * j, mk[j], v);
    }
  }
}

/* Every instance the block loop calls, as separate (non-inlined)
** functions: register allocation then sees only the loop (inlined into
** the block function, the row offsets spilled and were reloaded every k).
** Indexed [type][MR - 1][prefetch]; f32 with masked loads for ragged
** attention blocks separately. */
typedef void (*Mk512Fn)(int K, const float *x, size_t ldx, const void *W, size_t ldw,
                        const void *S, const __m512 *b, const __mmask16 *mk, long pfn, long pstep,
                        const char *pn, long pnb, const float *a0, float *y, size_t ldy, int epi,
                        float *tw);
#define MK512_FN(T, MR, WF, PF)                                                                  \
  T_AVX512 __attribute__((noinline)) static void mk512_##T##_##MR##_##WF##_##PF(                 \
      int K, const float *x, size_t ldx, const void *W, size_t ldw, const void *S,              \
      const __m512 *b, const __mmask16 *mk, long pfn, long pstep, const char *pn, long pnb,       \
      const float *a0, float *y, size_t ldy, int epi, float *tw) {                               \
    (void)tw;                                                                                    \
    mk512(MR, T, K, x, ldx, W, ldw, S, b, mk, WF, PF, pfn, pstep, pn, pnb, a0, y, ldy, epi, 0,    \
          NULL);                                                                                 \
  }
#define MK512_TYPE(T)                                                                            \
  MK512_FN(T, 1, 1, 0) MK512_FN(T, 2, 1, 0) MK512_FN(T, 3, 1, 0) MK512_FN(T, 4, 1, 0)            \
  MK512_FN(T, 5, 1, 0) MK512_FN(T, 6, 1, 0) MK512_FN(T, 1, 1, 1) MK512_FN(T, 2, 1, 1)            \
  MK512_FN(T, 3, 1, 1) MK512_FN(T, 4, 1, 1) MK512_FN(T, 5, 1, 1) MK512_FN(T, 6, 1, 1)            \
  MK512_FN(T, 1, 1, 2) MK512_FN(T, 2, 1, 2) MK512_FN(T, 3, 1, 2) MK512_FN(T, 4, 1, 2)            \
  MK512_FN(T, 5, 1, 2) MK512_FN(T, 6, 1, 2)
MK512_TYPE(KT_F32)
MK512_TYPE(KT_F16)
MK512_TYPE(KT_BF16)
MK512_TYPE(KT_Q8)
MK512_TYPE(KT_Q4)
/* widened tiles of batched rows (blk_tiled_avx512) */
#define MK512_TILE(T)                                                                            \
  MK512_FN(T, 1, 1, 2) MK512_FN(T, 2, 1, 2) MK512_FN(T, 3, 1, 2) MK512_FN(T, 4, 1, 2)            \
  MK512_FN(T, 5, 1, 2) MK512_FN(T, 6, 1, 2)                                                      \
  static const Mk512Fn MK512_##T[6] = {mk512_##T##_1_1_2, mk512_##T##_2_1_2, mk512_##T##_3_1_2,  \
                                       mk512_##T##_4_1_2, mk512_##T##_5_1_2, mk512_##T##_6_1_2};
MK512_TILE(KT_Q8F)
MK512_TILE(KT_Q4F)
MK512_FN(KT_F32, 1, 0, 0)
MK512_FN(KT_F32, 4, 0, 0)
#define MK512_ROW(T)                                                                             \
  {{mk512_##T##_1_1_0, mk512_##T##_1_1_1, mk512_##T##_1_1_2},                                    \
   {mk512_##T##_2_1_0, mk512_##T##_2_1_1, mk512_##T##_2_1_2},                                    \
   {mk512_##T##_3_1_0, mk512_##T##_3_1_1, mk512_##T##_3_1_2},                                    \
   {mk512_##T##_4_1_0, mk512_##T##_4_1_1, mk512_##T##_4_1_2},                                    \
   {mk512_##T##_5_1_0, mk512_##T##_5_1_1, mk512_##T##_5_1_2},                                    \
   {mk512_##T##_6_1_0, mk512_##T##_6_1_1, mk512_##T##_6_1_2}}
static const Mk512Fn MK512[5][6][3] = {MK512_ROW(KT_F32), MK512_ROW(KT_F16), MK512_ROW(KT_BF16),
                                       MK512_ROW(KT_Q8), MK512_ROW(KT_Q4)};

/* The first row block of a group over a 16-, 8- or 4-bit tile: computes
** from the packed source and writes the exactly widened rows to tw (f32;
** Q4: q, as mk512 unpacks it) for the later blocks, so widening costs no
** pass of its own. Indexed [type - KT_F16][MR - 1]. */
#define MK512_WFN(T, MR)                                                                         \
  T_AVX512 __attribute__((noinline)) static void mk512w_##T##_##MR(                              \
      int K, const float *x, size_t ldx, const void *W, size_t ldw, const void *S,              \
      const __m512 *b, const __mmask16 *mk, long pfn, long pstep, const char *pn, long pnb,       \
      const float *a0, float *y, size_t ldy, int epi, float *tw) {                               \
    mk512(MR, T, K, x, ldx, W, ldw, S, b, mk, 1, 2, pfn, pstep, pn, pnb, a0, y, ldy, epi, 1, tw); \
  }
#define MK512_WTYPE(T)                                                                           \
  MK512_WFN(T, 1) MK512_WFN(T, 2) MK512_WFN(T, 3) MK512_WFN(T, 4) MK512_WFN(T, 5) MK512_WFN(T, 6)
MK512_WTYPE(KT_F16)
MK512_WTYPE(KT_BF16)
MK512_WTYPE(KT_Q8)
MK512_WTYPE(KT_Q4)
#define MK512_WROW(T)                                                                            \
  {mk512w_##T##_1, mk512w_##T##_2, mk512w_##T##_3, mk512w_##T##_4, mk512w_##T##_5, mk512w_##T##_6}
static const Mk512Fn MK512W[4][6] = {MK512_WROW(KT_F16), MK512_WROW(KT_BF16), MK512_WROW(KT_Q8),
                                     MK512_WROW(KT_Q4)};

/* Batched rows over packed panels: rows in groups of up to K_CHUNK_ROWS;
** for each group, the panel in tiles of K_TILE rows; every row block of
** the group runs over the tile (from L1) and parks its chains in part
** until the next tile (exactly: a chain continued from memory is the same
** chain). A 16-, 8- or 4-bit tile is widened to f32 by the group's first
** row block, which computes from the packed source and stores the widened
** rows as it goes (MK512W); the later blocks read the f32 tile (the values
** are exact, so F16/BF16 run the F32 chain, Q8 and Q4 their own chains over
** f32 q, Q4's f16 scales widened too). Meanwhile the row blocks prefetch the
** next tile's source into L2, spread evenly over them (pf_next), so DRAM
** streaming overlaps computing. */
T_AVX512 static void blk_tiled_avx512(int M, int K, int type, const float *x, size_t ldx,
                                      const void *W, const void *S, const __m512 *bv,
                                      const __mmask16 *mk, float *y, size_t ldy, int epi) {
  const size_t rb = panel_row_bytes(type); /* bytes per k of a panel */
  float part[K_CHUNK_ROWS * KNB] __attribute__((aligned(64)));
  float tile[K_TILE * KNB] __attribute__((aligned(64)));
  float stile[K_TILE / KQ4B * KNB] __attribute__((aligned(64))); /* Q4 scales as f32 */
  for (int g0 = 0; g0 < M; g0 += K_CHUNK_ROWS) {
    const int gm = M - g0 < K_CHUNK_ROWS ? M - g0 : K_CHUNK_ROWS, lastg = g0 + gm == M;
    const int nb = gm / 6 + (gm % 6 != 0); /* row blocks, as split below */
    for (int k0 = 0; k0 < K; k0 += K_TILE) {
      const int kc = K - k0 < K_TILE ? K - k0 : K_TILE, first = k0 == 0, last = k0 + kc == K;
      const char *src = (const char *)W + (size_t)k0 * rb;
      const long cbytes = (long)((size_t)kc * rb);
      /* the next tile's source follows this one (the next panel's first
      ** tile after the last; the same panel's first tile for a later row
      ** group is still in L2) */
      const long nbytes = last && !lastg ? 0 : (long)(K_TILE * rb);
      const long span = (long)nb * kc;
      const long pstep = (((nbytes / 64) << 16) + span - 1) / span;
      const void *Wt = type == KT_F32 ? (const void *)src : tile, *S0 = NULL, *Sc = NULL;
      if (type == KT_Q8) S0 = Sc = (const float *)S + (size_t)(k0 / KQB) * KNB;
      if (type == KT_Q4) {
        const uint16_t *h = (const uint16_t *)S + (size_t)(k0 / KQ4B) * KNB;
        for (int i = 0; i < (kc + KQ4B - 1) / KQ4B * KNB; i += 16)
          _mm512_store_ps(stile + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + i))));
        S0 = h;
        Sc = stile;
      }
      for (int b = 0, r0 = 0, r1; r0 < gm; b++, r0 = r1) {
        r1 = r0 + (gm - r0 == 7 || gm - r0 == 8 ? 4 : gm - r0 < 6 ? gm - r0 : 6);
        const int mr = r1 - r0, wt = b == 0 && type != KT_F32;
        const Mk512Fn f = wt              ? MK512W[type - KT_F16][mr - 1]
                          : type == KT_Q8 ? MK512_KT_Q8F[mr - 1]
                          : type == KT_Q4 ? MK512_KT_Q4F[mr - 1]
                                          : MK512[KT_F32][mr - 1][2];
        float *pr = part + (size_t)r0 * KNB;
        const size_t row = (size_t)(g0 + r0);
        f(kc, x + row * ldx + k0, ldx, wt ? (const void *)src : Wt, KNB, wt ? S0 : Sc, bv, mk,
          (long)b * kc, pstep, src + cbytes, nbytes, first ? NULL : pr,
          last ? y + row * ldy : pr, last ? ldy : KNB, last ? epi : KEPI_STORE, tile);
      }
    }
  }
}

T_AVX512 static void blk_avx512(int M, int K, int N, int type, const float *x, size_t ldx,
                                const void *W, size_t ldw, int wpad, const void *S,
                                const float *b, float *y, size_t ldy, int epi) {
  __mmask16 mk[4];
  __m512 bv[4];
  for (int j = 0; j < 4; j++) {
    int c = N - 16 * j;
    mk[j] = c >= 16 ? (__mmask16)0xFFFF : c <= 0 ? (__mmask16)0 : (__mmask16)((1u << c) - 1);
    bv[j] = b ? _mm512_maskz_loadu_ps(mk[j], b + 16 * j) : _mm512_setzero_ps();
  }
  if (wpad && M > 6) {
    blk_tiled_avx512(M, K, type, x, ldx, W, S, bv, mk, y, ldy, epi);
    return;
  }
  if (!wpad && N < KNB) { /* ragged f32 W (attention): masked loads */
    int r = 0;
    for (; r + 4 <= M; r += 4)
      mk512_KT_F32_4_0_0(K, x + r * ldx, ldx, W, ldw, S, bv, mk, 0, 0, NULL, 0, NULL, y + r * ldy,
                         ldy, epi, NULL);
    for (; r < M; r++)
      mk512_KT_F32_1_0_0(K, x + r * ldx, ldx, W, ldw, S, bv, mk, 0, 0, NULL, 0, NULL, y + r * ldy,
                         ldy, epi, NULL);
    return;
  }
  if (wpad) { /* up to 6 rows (decode): one row block streams the panel, prefetching ahead */
    MK512[type][M - 1][1](K, x, ldx, W, KNB, S, bv, mk, 0, 0, NULL, 0, NULL, y, ldy, epi, NULL);
    return;
  }
  /* plain f32 W of 64 full columns (attention): blocks of 6 rows as in
  ** the tiled loop */
  for (int r0 = 0, r1; r0 < M; r0 = r1) {
    r1 = r0 + (M - r0 == 7 || M - r0 == 8 ? 4 : M - r0 < 6 ? M - r0 : 6);
    MK512[KT_F32][r1 - r0 - 1][0](K, x + (size_t)r0 * ldx, ldx, W, ldw, S, bv, mk, 0, 0, NULL, 0,
                                  NULL, y + (size_t)r0 * ldy, ldy, epi, NULL);
  }
}

T_AVX512 static float sum16_avx512(const float *x, int n) {
  __m512 acc = _mm512_setzero_ps();
  int i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(x + i));
  if (i < n) acc = _mm512_add_ps(acc, _mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1), x + i));
  __m256 lo = _mm512_castps512_ps256(acc);
  __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1));
  __m256 s8 = _mm256_add_ps(lo, hi);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

/* k_layernorm's lanes over the first n elements (n a multiple of 16) as
** two zmm of 8 doubles (lanes 0-7, 8-15); then its normalisation of whole
** blocks of 16 (returns how many elements it did; ln_norm_portable ends). */
T_AVX512 static void ln_lanes_avx512(const float *x, int n, double mean, int dev, double *l) {
  const __m512d m = _mm512_set1_pd(mean);
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  for (int i = 0; i < n; i += 16) {
    __m512d a = _mm512_cvtps_pd(_mm256_loadu_ps(x + i));
    __m512d c = _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8));
    if (dev) {
      a = _mm512_sub_pd(a, m);
      c = _mm512_sub_pd(c, m);
      a = _mm512_mul_pd(a, a);
      c = _mm512_mul_pd(c, c);
    }
    s0 = _mm512_add_pd(s0, a);
    s1 = _mm512_add_pd(s1, c);
  }
  _mm512_storeu_pd(l, s0);
  _mm512_storeu_pd(l + 8, s1);
}

T_AVX512 static int ln_norm_avx512(float *o, const float *x, const float *w, const float *b,
                                   int C, float mu, float rstd) {
  const __m512 mv = _mm512_set1_ps(mu), rv = _mm512_set1_ps(rstd);
  int i = 0;
  for (; i + 16 <= C; i += 16) {
    __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv), rv);
    v = _mm512_add_ps(_mm512_mul_ps(v, _mm512_loadu_ps(w + i)), _mm512_loadu_ps(b + i));
    _mm512_storeu_ps(o + i, v);
  }
  return i;
}

T_AVX512 static float max_avx512(const float *x, int n) {
  __m512 m = _mm512_set1_ps(x[0]);
  int i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  if (i < n) { /* lanes past n keep m */
    __mmask16 k = (__mmask16)((1u << (n - i)) - 1);
    m = _mm512_mask_max_ps(m, k, m, _mm512_maskz_loadu_ps(k, x + i));
  }
  return _mm512_reduce_max_ps(m);
}

T_AVX512 static void exp_sub_avx512(float *x, int n, float sub) {
  __m512 s = _mm512_set1_ps(sub);
  int i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), s)));
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), s)));
  }
}

T_AVX512 static void gelu_avx512(float *x, size_t n) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, gelu512(_mm512_loadu_ps(x + i)));
  if (i < n) {
    __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(x + i, m, gelu512(_mm512_maskz_loadu_ps(m, x + i)));
  }
}

/* ---------------------------------------------------------------------------
** AVX2 path (16 ymm registers: 4 rows x 16 columns per inner block)
*/

T_AVX2 INLINE __m256 exp256(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(EXP_HI));
  x = _mm256_max_ps(x, _mm256_set1_ps(EXP_LO));
  __m256 kf = _mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(LOG2E)), _mm256_set1_ps(RMAGIC));
  __m256 n = _mm256_sub_ps(kf, _mm256_set1_ps(RMAGIC));
  __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
  __m256 p = _mm256_set1_ps(EP0);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EP5));
  __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
  __m256i sb = _mm256_sub_epi32(_mm256_castps_si256(kf), _mm256_set1_epi32((int)RMAGIC_BITS));
  sb = _mm256_slli_epi32(_mm256_add_epi32(sb, _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(sb));
}

T_AVX2 INLINE __m256 gelu256(__m256 x) {
  __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  __m256 u = _mm256_mul_ps(_mm256_set1_ps(GELU_K),
                           _mm256_add_ps(x, _mm256_mul_ps(_mm256_set1_ps(GELU_C), x3)));
  __m256 e = exp256(_mm256_mul_ps(u, _mm256_set1_ps(-2.0f)));
  return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

/* Lane mask for columns c0..c0+7 below N. */
T_AVX2 INLINE __m256i mask256(int left) {
  static const int32_t ramp[8] = {0, 1, 2, 3, 4, 5, 6, 7};
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_loadu_si256((const __m256i *)ramp));
}

/* 8 weights at element i of W, as f32 (exact conversions). */
T_AVX2 INLINE __m256 ld256(const int type, const void *W, size_t i) {
  if (type == KT_F16)
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)W + i)));
  if (type == KT_BF16)
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)W + i))), 16));
  if (type == KT_Q8)
    return _mm256_cvtepi32_ps(
        _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)((const int8_t *)W + i))));
  return _mm256_loadu_ps((const float *)W + i);
}

/* The 16 weights of the column group at W in panel row k as f32, exactly:
** Q8 through ld256; Q4 from 16 bytes of the 32-byte row (W points at the
** group's bytes), low nibbles or, when hi, high ones. */
T_AVX2 INLINE void ldrow256(const int type, const void *W, size_t ldw, int k, int hi, __m256 *w0,
                            __m256 *w1) {
  if (type == KT_Q4) {
    const __m256i lo4 = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
    __m128i by = _mm_loadu_si128((const __m128i *)((const char *)W + (size_t)k * (ldw / 2)));
    __m256i e0 = _mm256_cvtepu8_epi32(by), e1 = _mm256_cvtepu8_epi32(_mm_srli_si128(by, 8));
    e0 = hi ? _mm256_srli_epi32(e0, 4) : _mm256_and_si256(e0, lo4);
    e1 = hi ? _mm256_srli_epi32(e1, 4) : _mm256_and_si256(e1, lo4);
    *w0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(e0, eight));
    *w1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(e1, eight));
    return;
  }
  *w0 = ld256(type, W, (size_t)k * ldw);
  *w1 = ld256(type, W, (size_t)k * ldw + 8);
}

/* MR rows x 16 columns (two ymm); m0/m1: lanes of each ymm inside N. S:
** block scales (f32 for Q8, f16 for Q4) of the 16 columns. Q4: W points
** at the group's 16 bytes of a panel row, hi: the columns are those
** bytes' high nibbles (the group starts at column 32 or 48). */
T_AVX2 INLINE void mk256(const int MR, const int type, int K, const float *x, size_t ldx,
                         const void *W, size_t ldw, const void *S, __m256 b0, __m256 b1,
                         __m256i m0, __m256i m1, const int wfull, int pf, int hi, float *y,
                         size_t ldy, int epi, int live1) {
  const size_t es = type == KT_F32 ? 4 : type == KT_Q8 ? 1 : 2; /* element bytes */
  __m256 a0[4], a1[4];
#pragma GCC unroll 4
  for (int r = 0; r < MR; r++) {
    a0[r] = b0;
    a1[r] = b1;
  }
  if (type == KT_Q8 || type == KT_Q4) { /* the block chain, as mk512's */
    const int qb = type == KT_Q4 ? KQ4B : KQB;
    for (int k0 = 0, kb = 0; k0 < K; k0 += qb, kb++) {
      int k1 = k0 + qb < K ? k0 + qb : K;
      __m256 p0[4], p1[4];
#pragma GCC unroll 4
      for (int r = 0; r < MR; r++) p0[r] = p1[r] = _mm256_setzero_ps();
      for (int k = k0; k < k1; k++) {
        if (pf && type == KT_Q4 && !(k & 1)) /* 32-byte rows: two a line */
          _mm_prefetch((const char *)W + (size_t)k * (ldw / 2) + K_PREFETCH, _MM_HINT_T0);
        else if (pf && type == KT_Q8)
          _mm_prefetch((const char *)W + (size_t)k * ldw + K_PREFETCH, _MM_HINT_T0);
        __m256 w0, w1;
        ldrow256(type, W, ldw, k, hi, &w0, &w1);
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) {
          __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k);
          p0[r] = _mm256_fmadd_ps(xb, w0, p0[r]);
          p1[r] = _mm256_fmadd_ps(xb, w1, p1[r]);
        }
      }
      __m256 s0, s1;
      if (type == KT_Q4) {
        const uint16_t *Sk = (const uint16_t *)S + (size_t)kb * KNB;
        s0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)Sk));
        s1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(Sk + 8)));
      } else {
        const float *Sk = (const float *)S + (size_t)kb * KNB;
        s0 = _mm256_loadu_ps(Sk);
        s1 = _mm256_loadu_ps(Sk + 8);
      }
#pragma GCC unroll 4
      for (int r = 0; r < MR; r++) {
        a0[r] = _mm256_fmadd_ps(p0[r], s0, a0[r]);
        a1[r] = _mm256_fmadd_ps(p1[r], s1, a1[r]);
      }
    }
  } else {
    for (int k = 0; k < K; k++) {
      const size_t i = (size_t)k * ldw;
      if (pf) /* the whole 64-column panel row: later column groups find it in L2 */
        for (size_t b = 0; b < KNB * es; b += 64)
          _mm_prefetch((const char *)W + i * es + K_PREFETCH + b, _MM_HINT_T0);
      __m256 w0 = wfull ? ld256(type, W, i) : _mm256_maskload_ps((const float *)W + i, m0);
      __m256 w1 = wfull ? ld256(type, W, i + 8) : _mm256_maskload_ps((const float *)W + i + 8, m1);
#pragma GCC unroll 4
      for (int r = 0; r < MR; r++) {
        __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k);
        a0[r] = _mm256_fmadd_ps(xb, w0, a0[r]);
        a1[r] = _mm256_fmadd_ps(xb, w1, a1[r]);
      }
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < MR; r++) {
    float *yr = y + (size_t)r * ldy;
    __m256 v0 = a0[r], v1 = a1[r];
    if (epi == KEPI_ADD) {
      v0 = _mm256_add_ps(_mm256_maskload_ps(yr, m0), v0);
      if (live1) v1 = _mm256_add_ps(_mm256_maskload_ps(yr + 8, m1), v1);
    } else if (epi == KEPI_GELU) {
      v0 = gelu256(v0);
      if (live1) v1 = gelu256(v1);
    }
    _mm256_maskstore_ps(yr, m0, v0);
    if (live1) _mm256_maskstore_ps(yr + 8, m1, v1);
  }
}

#define PF256 (wpad && c == 0 && r == 0) /* first pass over a packed panel */
#define ROWS256(T, WF)                                                                       \
  do {                                                                                       \
    for (; r + 4 <= M; r += 4)                                                               \
      mk256(4, T, K, x + r * ldx, ldx, Wc, ldw, Sc, b0, b1, m0, m1, WF, PF256, hi, yc + r * ldy, ldy, epi, live1); \
    switch (M - r) {                                                                         \
      case 3: mk256(3, T, K, x + r * ldx, ldx, Wc, ldw, Sc, b0, b1, m0, m1, WF, PF256, hi, yc + r * ldy, ldy, epi, live1); break; \
      case 2: mk256(2, T, K, x + r * ldx, ldx, Wc, ldw, Sc, b0, b1, m0, m1, WF, PF256, hi, yc + r * ldy, ldy, epi, live1); break; \
      case 1: mk256(1, T, K, x + r * ldx, ldx, Wc, ldw, Sc, b0, b1, m0, m1, WF, PF256, hi, yc + r * ldy, ldy, epi, live1); break; \
      default: break;                                                                        \
    }                                                                                        \
  } while (0)

T_AVX2 static void blk_avx2(int M, int K, int N, int type, const float *x, size_t ldx,
                            const void *W, size_t ldw, int wpad, const void *S, const float *b,
                            float *y, size_t ldy, int epi) {
  const size_t es = type == KT_F32 ? 4 : type == KT_Q8 ? 1 : 2; /* element bytes */
  for (int c = 0; c < N; c += 16) { /* 16-column groups of the <= 64-column block */
    __m256i m0 = mask256(N - c), m1 = mask256(N - c - 8);
    int live1 = N - c > 8;
    __m256 b0 = b ? _mm256_maskload_ps(b + c, m0) : _mm256_setzero_ps();
    __m256 b1 = b && live1 ? _mm256_maskload_ps(b + c + 8, m1) : _mm256_setzero_ps();
    /* Q4: columns c..c+15 are nibbles of bytes (c & 31).., high ones from 32 */
    const int hi = type == KT_Q4 && c >= 32;
    const void *Wc = (const char *)W + (type == KT_Q4 ? (size_t)(c & 31) : (size_t)c * es);
    const void *Sc = !S ? NULL
                     : type == KT_Q4 ? (const void *)((const uint16_t *)S + c)
                                     : (const void *)((const float *)S + c);
    float *yc = y + c;
    int r = 0;
    if (wpad || N - c >= 16) {
      switch (type) {
        case KT_F16: ROWS256(KT_F16, 1); break;
        case KT_BF16: ROWS256(KT_BF16, 1); break;
        case KT_Q8: ROWS256(KT_Q8, 1); break;
        case KT_Q4: ROWS256(KT_Q4, 1); break;
        default: ROWS256(KT_F32, 1); break;
      }
    } else { /* ragged f32 */
      for (; r < M; r++)
        mk256(1, KT_F32, K, x + r * ldx, ldx, Wc, ldw, Sc, b0, b1, m0, m1, 0, 0, 0, yc + r * ldy,
              ldy, epi, live1);
    }
  }
}

T_AVX2 static float sum16_avx2(const float *x, int n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(); /* lanes 0-7, 8-15 */
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
    a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
  }
  if (i < n) {
    a0 = _mm256_add_ps(a0, _mm256_maskload_ps(x + i, mask256(n - i)));
    a1 = _mm256_add_ps(a1, _mm256_maskload_ps(x + i + 8, mask256(n - i - 8)));
  }
  __m256 s8 = _mm256_add_ps(a0, a1);
  __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

/* k_layernorm's lanes as four ymm of 4 doubles (lanes 0-3, ..., 12-15), and
** its normalisation of whole blocks of 8; as ln_lanes_avx512. */
T_AVX2 static void ln_lanes_avx2(const float *x, int n, double mean, int dev, double *l) {
  const __m256d m = _mm256_set1_pd(mean);
  __m256d s[4];
  for (int j = 0; j < 4; j++) s[j] = _mm256_setzero_pd();
  for (int i = 0; i < n; i += 16)
    for (int j = 0; j < 4; j++) {
      __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * j));
      if (dev) {
        a = _mm256_sub_pd(a, m);
        a = _mm256_mul_pd(a, a);
      }
      s[j] = _mm256_add_pd(s[j], a);
    }
  for (int j = 0; j < 4; j++) _mm256_storeu_pd(l + 4 * j, s[j]);
}

T_AVX2 static int ln_norm_avx2(float *o, const float *x, const float *w, const float *b, int C,
                               float mu, float rstd) {
  const __m256 mv = _mm256_set1_ps(mu), rv = _mm256_set1_ps(rstd);
  int i = 0;
  for (; i + 8 <= C; i += 8) {
    __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv), rv);
    v = _mm256_add_ps(_mm256_mul_ps(v, _mm256_loadu_ps(w + i)), _mm256_loadu_ps(b + i));
    _mm256_storeu_ps(o + i, v);
  }
  return i;
}

T_AVX2 static float max_avx2(const float *x, int n) {
  __m256 m = _mm256_set1_ps(x[0]);
  int i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float t[8];
  _mm256_storeu_ps(t, m);
  float r = t[0];
  for (int j = 1; j < 8; j++) r = t[j] > r ? t[j] : r;
  for (; i < n; i++) r = x[i] > r ? x[i] : r;
  return r;
}

T_AVX2 static void exp_sub_avx2(float *x, int n, float sub) {
  __m256 s = _mm256_set1_ps(sub);
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(x + i, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
  if (i < n) {
    __m256i m = mask256(n - i);
    _mm256_maskstore_ps(x + i, m, exp256(_mm256_sub_ps(_mm256_maskload_ps(x + i, m), s)));
  }
}

T_AVX2 static void gelu_avx2(float *x, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, gelu256(_mm256_loadu_ps(x + i)));
  if (i < n) {
    __m256i m = mask256((int)(n - i));
    _mm256_maskstore_ps(x + i, m, gelu256(_mm256_maskload_ps(x + i, m)));
  }
}

#endif /* K_X86 */

/* ---------------------------------------------------------------------------
** dispatch
*/

/* F16C (AVX2 path's half conversions): cpuid, as clang 14's
** __builtin_cpu_supports does not know "f16c". */
static int has_f16c(void) {
#if K_X86
  unsigned a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
#else
  return 0;
#endif
}

int kpath_available(KPath p) {
  switch (p) {
    case KPATH_PORTABLE: return 1;
#if K_X86
    case KPATH_AVX2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case KPATH_AVX512:
      return __builtin_cpu_supports("avx512f") && kpath_available(KPATH_AVX2);
#endif
    default: return 0;
  }
}

int kpath_parse(const char *name, KPath *out) {
  static const KPath all[] = {KPATH_PORTABLE, KPATH_AVX2, KPATH_AVX512};
  for (size_t i = 0; name && i < sizeof all / sizeof all[0]; i++)
    if (strcmp(name, kpath_name(all[i])) == 0) {
      *out = all[i];
      return 0;
    }
  return -1;
}

KPath kpath_choose(const char *force) {
  KPath p = KPATH_AVX512;
  if (kpath_parse(force, &p) != 0) p = KPATH_AVX512;
  while (p > KPATH_PORTABLE && !kpath_available(p)) p = (KPath)(p - 1);
  return p;
}

const char *kpath_name(KPath p) {
  return p == KPATH_AVX512 ? "avx512" : p == KPATH_AVX2 ? "avx2" : "portable";
}

/* One block of N <= KNB columns. wpad: W rows readable over KNB columns. */
static void blk(KPath path, int M, int K, int N, int type, const float *x, size_t ldx,
                const void *W, size_t ldw, int wpad, const void *S, const float *b, float *y,
                size_t ldy, int epi) {
#if K_X86
  if (path == KPATH_AVX512) {
    blk_avx512(M, K, N, type, x, ldx, W, ldw, wpad, S, b, y, ldy, epi);
    return;
  }
  if (path == KPATH_AVX2) {
    blk_avx2(M, K, N, type, x, ldx, W, ldw, wpad, S, b, y, ldy, epi);
    return;
  }
#endif
  (void)wpad;
  blk_portable(M, K, N, type, x, ldx, W, ldw, S, b, y, ldy, epi);
}

static size_t round64(size_t n) { return (n + 63) / 64 * 64; }
static int n_kblocks(int K) { return (K + KQB - 1) / KQB; }
static int n_q4blocks(int K) { return (K + KQ4B - 1) / KQ4B; }

void k_matmul(KPath path, const KMat *W, const float *bias, int M, const float *x, size_t ldx,
              float *y, size_t ldy, KEpi epi, int p0, int p1) {
  const size_t ps = (size_t)W->K * panel_row_bytes(W->type); /* bytes per panel */
  const size_t ss = (size_t)n_kblocks(W->K) * KNB;            /* Q8 scales per panel */
  const size_t hs = (size_t)n_q4blocks(W->K) * KNB;           /* Q4 scales per panel */
  for (int p = p0; p < p1; p++) {
    int n0 = p * KNB, nb = W->N - n0 < KNB ? W->N - n0 : KNB;
    const void *S = W->scale    ? (const void *)(W->scale + (size_t)p * ss)
                    : W->hscale ? (const void *)(W->hscale + (size_t)p * hs)
                                : NULL;
    blk(path, M, W->K, nb, W->type, x, ldx, (const char *)W->w + (size_t)p * ps, KNB, 1, S,
        bias ? bias + n0 : NULL, y + n0, ldy, (int)epi);
  }
}

void k_gemm(KPath path, int M, int K, int N, const float *x, size_t ldx, const float *W,
            size_t ldw, const float *bias, float *y, size_t ldy, KEpi epi) {
  for (int n0 = 0; n0 < N; n0 += KNB) {
    int nb = N - n0 < KNB ? N - n0 : KNB;
    blk(path, M, K, nb, KT_F32, x, ldx, W + n0, ldw, 0, NULL, bias ? bias + n0 : NULL, y + n0,
        ldy, (int)epi);
  }
}

float k_max(KPath path, const float *x, int n) {
#if K_X86
  if (path == KPATH_AVX512) return max_avx512(x, n);
  if (path == KPATH_AVX2) return max_avx2(x, n);
#endif
  (void)path;
  float m = x[0];
  for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
  return m;
}

void k_exp_sub(KPath path, float *x, int n, float sub) {
#if K_X86
  if (path == KPATH_AVX512) {
    exp_sub_avx512(x, n, sub);
    return;
  }
  if (path == KPATH_AVX2) {
    exp_sub_avx2(x, n, sub);
    return;
  }
#endif
  (void)path;
  for (int i = 0; i < n; i++) x[i] = k_exp(x[i] - sub);
}

void k_gelu_n(KPath path, float *x, size_t n) {
#if K_X86
  if (path == KPATH_AVX512) {
    gelu_avx512(x, n);
    return;
  }
  if (path == KPATH_AVX2) {
    gelu_avx2(x, n);
    return;
  }
#endif
  (void)path;
  for (size_t i = 0; i < n; i++) x[i] = k_gelu(x[i]);
}

typedef void (*LnLanes)(const float *x, int n, double mean, int dev, double *l);
typedef int (*LnNorm)(float *o, const float *x, const float *w, const float *b, int C, float mu,
                      float rstd);

/* k_layernorm with a path's lanes and normalisation (NULL: all portable):
** the mean and the variance run through the same lane code. */
static void layernorm_with(LnLanes lanes, LnNorm norm, float *o, const float *x, const float *w,
                           const float *b, int C, float eps) {
  const int i0 = lanes ? C / 16 * 16 : 0;
  double l[16], st[2] = {0, 0}; /* mean, variance */
  for (int dev = 0; dev < 2; dev++) {
    if (lanes) lanes(x, i0, st[0], dev, l);
    else memset(l, 0, sizeof l);
    ln_tail(l, x, i0, C, st[0], dev);
    st[dev] = tree16d(l) / C;
  }
  const float mu = (float)st[0], rstd = (float)(1.0 / sqrt(st[1] + (double)eps));
  ln_norm_portable(o, x, w, b, norm ? norm(o, x, w, b, C, mu, rstd) : 0, C, mu, rstd);
}

void k_layernorm(KPath path, float *o, const float *x, const float *w, const float *b, int C,
                 float eps) {
#if K_X86
  if (path == KPATH_AVX512) {
    layernorm_with(ln_lanes_avx512, ln_norm_avx512, o, x, w, b, C, eps);
    return;
  }
  if (path == KPATH_AVX2) {
    layernorm_with(ln_lanes_avx2, ln_norm_avx2, o, x, w, b, C, eps);
    return;
  }
#endif
  (void)path;
  layernorm_with(NULL, NULL, o, x, w, b, C, eps);
}

float k_sum16(KPath path, const float *x, int n) {
#if K_X86
  if (path == KPATH_AVX512) return sum16_avx512(x, n);
  if (path == KPATH_AVX2) return sum16_avx2(x, n);
#endif
  (void)path;
  return sum16_portable(x, n);
}

/* ---------------------------------------------------------------------------
** packing
*/

size_t kmat_bytes(int type, int K, int N) {
  size_t np = ((size_t)N + KNB - 1) / KNB;
  size_t b = round64(np * (size_t)K * panel_row_bytes(type));
  if (type == KT_Q8) b += round64(np * (size_t)n_kblocks(K) * KNB * sizeof(float));
  if (type == KT_Q4) b += round64(np * (size_t)n_q4blocks(K) * KNB * sizeof(uint16_t));
  return b;
}

void kmat_init(KMat *m, int type, int K, int N, void *mem) {
  m->K = K;
  m->N = N;
  m->np = (N + KNB - 1) / KNB;
  m->type = type;
  m->w = mem;
  char *after = (char *)mem + round64((size_t)m->np * K * panel_row_bytes(type));
  m->scale = type == KT_Q8 ? (const float *)after : NULL;
  m->hscale = type == KT_Q4 ? (const uint16_t *)after : NULL;
}

/* Store v (f32) as element i of m's panels (not Q8). */
static void put(KMat *m, size_t i, float v) {
  if (m->type == KT_F16) ((uint16_t *)m->w)[i] = k_f32_to_f16(v);
  else if (m->type == KT_BF16) ((uint16_t *)m->w)[i] = k_f32_to_bf16(v);
  else ((float *)m->w)[i] = v;
}

/* Q8: quantize column j of panel p over rows k0..k1-1 (one scale block,
** k0 a multiple of KQB) from src[t * ld] (t = 0..k1-k0-1); NULL src: zeros. */
static void quant_block(KMat *m, int p, int j, int k0, int k1, const float *src, size_t ld) {
  int8_t *q = (int8_t *)m->w + (size_t)p * m->K * KNB + j;
  float amax = 0.0f;
  for (int k = k0; src && k < k1; k++) {
    float a = fabsf(src[(size_t)(k - k0) * ld]);
    amax = a > amax ? a : amax;
  }
  float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  for (int k = k0; k < k1; k++) {
    float v = src ? rintf(src[(size_t)(k - k0) * ld] * inv) : 0.0f;
    q[(size_t)k * KNB] = (int8_t)(v > 127.0f ? 127 : v < -127.0f ? -127 : v == v ? (int)v : 0);
  }
  float *s = (float *)m->scale;
  s[((size_t)p * n_kblocks(m->K) + (size_t)(k0 / KQB)) * KNB + j] = amax / 127.0f;
}

/* Q4: quantize rows k0..k0+nk-1 (nk <= KQ4B, k0 a multiple of KQ4B) of
** panel p, whose element (k0 + t, j) is src[t * sk + j * sj] for columns
** j < nj; columns from nj on are padding (q = 0, scale 0). Writes the rows'
** bytes and the block's scales (kernels.h, "PACKED WEIGHTS"). */
static void quant_block4(KMat *m, int p, int k0, int nk, const float *src, size_t sk, size_t sj,
                         int nj) {
  uint8_t u[KQ4B][KNB]; /* q + 8 */
  uint16_t *s = (uint16_t *)m->hscale + ((size_t)p * n_q4blocks(m->K) + (size_t)(k0 / KQ4B)) * KNB;
  for (int j = 0; j < KNB; j++) {
    float mx = 0.0f, amax = -1.0f; /* NaN is never > amax */
    for (int t = 0; j < nj && t < nk; t++) {
      float w = src[(size_t)t * sk + (size_t)j * sj], a = fabsf(w);
      if (a > amax) {
        amax = a;
        mx = w;
      }
    }
    s[j] = k_f32_to_f16(mx / -8.0f);
    float sf = k_f16_to_f32(s[j]);
    for (int t = 0; t < nk; t++) {
      float v = j < nj && sf != 0.0f ? rintf(src[(size_t)t * sk + (size_t)j * sj] / sf) : 0.0f;
      int q = v > 7.0f ? 7 : v < -8.0f ? -8 : v == v ? (int)v : 0;
      u[t][j] = (uint8_t)(q + 8);
    }
  }
  uint8_t *row = (uint8_t *)m->w + ((size_t)p * (size_t)m->K + (size_t)k0) * (KNB / 2);
  for (int t = 0; t < nk; t++)
    for (int j = 0; j < KNB / 2; j++)
      row[(size_t)t * (KNB / 2) + (size_t)j] = (uint8_t)(u[t][j] | u[t][j + KNB / 2] << 4);
}

void kmat_pack_rows(KMat *m, const float *src, size_t lds, int k0, int k1) {
  const size_t ps = (size_t)m->K * KNB;
  if (m->type == KT_Q4) {
    for (int b0 = k0; b0 < k1; b0 += KQ4B) {
      int nk = k1 - b0 < KQ4B ? k1 - b0 : KQ4B;
      for (int p = 0; p < m->np; p++) {
        int n0 = p * KNB;
        quant_block4(m, p, b0, nk, src + (size_t)(b0 - k0) * lds + (size_t)n0, lds, 1,
                     m->N - n0 < KNB ? m->N - n0 : KNB);
      }
    }
    return;
  }
  if (m->type == KT_Q8) {
    for (int b0 = k0; b0 < k1; b0 += KQB) {
      int b1 = b0 + KQB < k1 ? b0 + KQB : k1;
      for (int p = 0; p < m->np; p++)
        for (int j = 0; j < KNB; j++) {
          int n = p * KNB + j;
          quant_block(m, p, j, b0, b1, n < m->N ? src + (size_t)(b0 - k0) * lds + n : NULL, lds);
        }
    }
    return;
  }
  for (int k = k0; k < k1; k++) {
    const float *s = src + (size_t)(k - k0) * lds;
    for (int p = 0; p < m->np; p++) {
      size_t d = (size_t)p * ps + (size_t)k * KNB;
      int n0 = p * KNB, nb = m->N - n0 < KNB ? m->N - n0 : KNB;
      if (m->type == KT_F32) {
        memcpy((float *)m->w + d, s + n0, (size_t)nb * sizeof(float));
        if (nb < KNB) memset((float *)m->w + d + nb, 0, (size_t)(KNB - nb) * sizeof(float));
      } else {
        for (int j = 0; j < KNB; j++) put(m, d + (size_t)j, j < nb ? s[n0 + j] : 0.0f);
      }
    }
  }
}

void kmat_pack_cols(KMat *m, const float *src, size_t lds, int n0, int n1) {
  const size_t ps = (size_t)m->K * KNB;
  const int K = m->K;
  for (int p = n0 / KNB; p * KNB < n1; p++) {
    int c0 = p * KNB, nb = n1 - c0 < KNB ? n1 - c0 : KNB;
    int pad = nb < KNB && c0 + nb >= m->N; /* the matrix's last panel */
    if (m->type == KT_Q4) { /* whole panel rows: the columns past nb are padding */
      for (int b0 = 0; b0 < K; b0 += KQ4B)
        quant_block4(m, p, b0, K - b0 < KQ4B ? K - b0 : KQ4B,
                     src + (size_t)(c0 - n0) * lds + (size_t)b0, 1, lds, nb);
      continue;
    }
    if (m->type == KT_Q8) {
      for (int j = 0; j < (pad ? KNB : nb); j++)
        for (int b0 = 0; b0 < K; b0 += KQB)
          quant_block(m, p, j, b0, b0 + KQB < K ? b0 + KQB : K,
                      j < nb ? src + (size_t)(c0 + j - n0) * lds + b0 : NULL, 1);
      continue;
    }
    /* transpose (nb, K) rows of src into (K, KNB): blocks of 16 k keep the
    ** written lines in L1 */
    for (int kb = 0; kb < K; kb += 16) {
      int ke = kb + 16 < K ? kb + 16 : K;
      for (int j = 0; j < nb; j++) {
        const float *s = src + (size_t)(c0 + j - n0) * lds;
        if (m->type == KT_F32)
          for (int k = kb; k < ke; k++) ((float *)m->w)[(size_t)p * ps + (size_t)k * KNB + j] = s[k];
        else
          for (int k = kb; k < ke; k++) put(m, (size_t)p * ps + (size_t)k * KNB + j, s[k]);
      }
    }
    if (pad)
      for (int k = 0; k < K; k++)
        for (int j = nb; j < KNB; j++) put(m, (size_t)p * ps + (size_t)k * KNB + j, 0.0f);
  }
}

void kmat_col(const KMat *m, int n, float *out) {
  if (m->type == KT_Q4) {
    const int j = n % KNB;
    const uint8_t *b = (const uint8_t *)m->w + (size_t)(n / KNB) * m->K * (KNB / 2) + (j & 31);
    const uint16_t *s = m->hscale + (size_t)(n / KNB) * n_q4blocks(m->K) * KNB + j;
    for (int k = 0; k < m->K; k++) {
      int u = j < 32 ? b[(size_t)k * (KNB / 2)] & 15 : b[(size_t)k * (KNB / 2)] >> 4;
      out[k] = (float)(u - 8) * k_f16_to_f32(s[(size_t)(k / KQ4B) * KNB]);
    }
    return;
  }
  const size_t i0 = (size_t)(n / KNB) * m->K * KNB + (size_t)(n % KNB);
  for (int k = 0; k < m->K; k++) row_f32(m->type, m->w, i0 + (size_t)k * KNB, 1, out + k);
  if (m->type == KT_Q8) {
    const float *s = m->scale + (size_t)(n / KNB) * n_kblocks(m->K) * KNB + (size_t)(n % KNB);
    for (int k = 0; k < m->K; k++) out[k] = out[k] * s[(size_t)(k / KQB) * KNB];
  }
}
