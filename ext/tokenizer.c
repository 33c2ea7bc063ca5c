/*
** tokenizer.c — GPT-2 byte-level BPE (implements tokenizer.h).
**
** HOW IT WORKS
**
**   Two id spaces. Vocabulary ids are vocab.json's. BPE runs on "units":
**   unit 0..255 is the single byte b, every other token named in merges.txt
**   gets the next unit number, then every remaining vocabulary token. One
**   hash maps raw bytes to a unit; vid[] maps a unit to its vocabulary id.
**   Keeping BPE in its own space lets merges.txt be loaded on a helper
**   thread while cJSON parses vocab.json.
**
**   Load (tok_load).
**     helper thread: merges.txt line k (after an optional "#version" line)
**       gives the pair (left, right) rank k; a hash maps the unit pair to its
**       rank (a dense 256x256 table for byte pairs). Compile the pattern.
**     this thread: vocab.json (keys in GPT-2's mapped spelling, gpt2-facts.md
**       "Tokenizer") -> each token's raw bytes.
**     then: each vocabulary token -> its unit (added if new; two keys with
**       one unit are a duplicate key); every merge's parts and result must
**       be in the vocabulary; special tokens.
**     Each unit's fast-path flag (do its own bytes BPE back to it? then a
**     whole piece equal to it skips BPE) is filled in lazily, the first time
**     encoding meets the unit: computing all 50k at load took ~17 ms, a third
**     of the load. Exact for any vocabulary: the flag is the BPE result.
**
**   Encode (tok_encode).
**     1. Split on special-token literals (leftmost, longest first), as
**        Hugging Face does for added tokens; each special gives its id.
**     2. Split each segment into maximal valid UTF-8 runs; every byte that is
**        not part of a valid character is a piece of its own.
**     3. Split each run with GPT-2's pattern (PCRE2, UTF+UCP, JIT): pieces.
**     4. BPE each piece's bytes: find the lowest-ranked adjacent pair, merge
**        every occurrence of it left to right in one pass, repeat: exactly
**        the rounds of OpenAI's encoder.py `bpe` (not a longest match, and not
**        one occurrence at a time: with an arbitrary merges file the two can
**        differ). Short pieces use a flat rank array, long pieces a heap.
**
**   Decode (tok_decode). Concatenate the tokens' bytes and replace each
**   maximal invalid UTF-8 subpart with U+FFFD (Python's errors="replace").
**
** Decisions on malformed input (each is an error naming the file and the key
** or line; nothing stays allocated):
**   vocab.json: not an object; no tokens; a duplicate key; an id that is not
**   an integer in [0, 10,000,000]; two keys with one id; an empty key; a key
**   with a character outside the 256 mapped characters (its bytes would be
**   undefined). Gaps in the ids are allowed (such ids are "unused").
**   merges.txt: a line that is not "left right" (one space); a part or the
**   merged token missing from the vocabulary; a blank line followed by more
**   merges. A repeated pair takes its last rank (as encoder.py's dict does).
**   Both files may use \r\n line ends. Files over 64 MiB are refused.
*/
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------------
** Limits and constants
*/

#define MAX_FILE ((size_t)64 << 20)  /* vocab.json, merges.txt */
#define MAX_CONFIG ((size_t)4 << 20) /* tokenizer_config.json, special_tokens_map.json */
#define MAX_ID 10000000
#define MAX_SPECIAL 8
#define RANK_NONE INT32_MAX   /* the pair has no merge */
#define RANK_PENDING (-2)     /* bpe_flat: rank not looked up yet */
#define UNIT_DEAD (-1)        /* bpe_heap: unit merged into its left neighbour */
#define FLAT_MAX 128          /* pieces up to this many bytes use bpe_flat */
#define PAIR_EMPTY UINT64_MAX /* units are < 2^31, so no real key has all bits set */
#define STR(x) #x
#define XSTR(x) STR(x)

/* GPT-2's pattern (gpt2-facts.md, "Tokenizer"),
**   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
** with \s spelled out as Unicode White_Space, [WS], and \S as [^WS]: that is
** Python regex's \s, while PCRE2's own \s (UCP) would add U+180E. */
#define WS   \
  "\\t-\\r " \
  "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                              "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";

/* ------------------------------------------------------------------------
** The tokenizer
*/

typedef struct Span {
  uint32_t off, len; /* bytes in an arena; len 0 = unused id (no empty tokens) */
} Span;

/* A byte-string hash table slot: the key's first 8 bytes and length are kept
** inline, so most probes touch one cache line. */
typedef struct Slot {
  uint64_t head; /* first min(len, 8) bytes, zero-padded */
  int32_t id;    /* -1 = empty */
  uint32_t len;
} Slot;

typedef struct StrTab {
  Slot *slot; /* (mask+1) */
  uint32_t mask;
  uint32_t count;
} StrTab;

typedef struct PairSlot {
  uint64_t key; /* a<<32 | b, or PAIR_EMPTY */
  int32_t rank;
  int32_t unused; /* (slots stay 16 bytes, 4 per cache line) */
} PairSlot;

typedef struct Special {
  const char *text; /* literal bytes (the token's own bytes, in vbytes) */
  size_t len;
  int id;
} Special;

struct Tokenizer {
  /* Vocabulary (vocab.json ids) */
  int vocab_size; /* max id + 1 */
  char *vbytes;   /* every token's raw bytes, back to back */
  Span *vspan;    /* (vocab_size) */
  /* Units: 0..255 the bytes, then the tokens of merges.txt, then the rest */
  int n_units;
  size_t uspan_cap;
  char *ubytes; /* (ucap) every unit's raw bytes */
  size_t ucap;
  Span *uspan;    /* (n_units) */
  StrTab utab;    /* raw bytes -> unit */
  int32_t *vid;   /* (n_units) vocabulary id of a unit; -1 only for bytes */
  _Atomic uint8_t *self; /* (n_units) SELF_*: does BPE(bytes(u)) == [u]? Set
                            lazily by encoders, relaxed: any thread that
                            computes it computes the same value. */
  int32_t *brank; /* (65536) rank of the byte pair (a, b) at a*256+b */
  PairSlot *pair; /* (pair_mask+1) rank of other unit pairs */
  uint32_t pair_mask;
  int pair_shift;      /* 64 - log2(pair_mask+1) */
  int32_t *merge_a;    /* (n_merges) left unit by rank */
  int32_t *merge_b;    /* (n_merges) right unit by rank */
  int32_t *merge_to;   /* (n_merges) merged unit by rank */
  int32_t *merge_line; /* (n_merges) line in merges.txt, for messages */
  int n_merges;
  /* Encoding */
  Special special[MAX_SPECIAL]; /* literals split out before the pattern */
  int n_special;
  int unk_id;     /* vocabulary id used for a byte without a token, or -1 */
  pcre2_code *re; /* the pattern, JIT-compiled when possible */
  int jit;        /* 1 when it was */
};

/* ------------------------------------------------------------------------
** Byte <-> printable character mapping (gpt2-facts.md, "Tokenizer"):
** bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF map to themselves; the other 68,
** in increasing order, to U+0100 + n.
*/

static int byte_is_printable(unsigned b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

static uint32_t byte_to_cp(unsigned b) {
  if (byte_is_printable(b)) return b;
  if (b <= 0x20) return 0x100 + b;                            /* n = 0..32 */
  if (b >= 0x7F && b <= 0xA0) return 0x100 + 33 + (b - 0x7F); /* n = 33..66 */
  return 0x100 + 67;                                          /* 0xAD */
}

/* The byte a mapped character stands for, or -1. */
static int cp_to_byte(uint32_t cp) {
  if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
  if (cp > 0x100 + 67) return -1;
  unsigned n = cp - 0x100;
  if (n <= 32) return (int)n;
  if (n <= 66) return (int)(0x7F + n - 33);
  return 0xAD;
}

/* ------------------------------------------------------------------------
** UTF-8 (Unicode 15, table 3-7: well-formed byte sequences)
*/

/* Decode the character at s[0..n). Returns its length (1..4), or 0 when the
** bytes are not a valid character; then *sub is the length of the maximal
** subpart (>= 1) and *cut is 1 when that subpart was stopped only by the end
** of the input (more bytes could complete it). *cp gets the code point. */
static size_t utf8_char(const unsigned char *s, size_t n, uint32_t *cp, size_t *sub, int *cut) {
  unsigned b = s[0];
  *cut = 0;
  *sub = 1;
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  unsigned need, lo = 0x80, hi = 0xBF;
  uint32_t c;
  if (b >= 0xC2 && b <= 0xDF)
    need = 1, c = b & 0x1F;
  else if (b >= 0xE0 && b <= 0xEF) {
    need = 2, c = b & 0x0F;
    if (b == 0xE0)
      lo = 0xA0; /* no overlongs */
    else if (b == 0xED)
      hi = 0x9F; /* no surrogates */
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3, c = b & 0x07;
    if (b == 0xF0)
      lo = 0x90; /* no overlongs */
    else if (b == 0xF4)
      hi = 0x8F; /* nothing above U+10FFFF */
  } else
    return 0; /* 0x80..0xC1, 0xF5..0xFF never start a character */
  for (unsigned i = 1; i <= need; i++) {
    if (i >= n) {
      *sub = i;
      *cut = 1;
      return 0;
    }
    unsigned x = s[i];
    if (x < lo || x > hi) {
      *sub = i;
      return 0;
    }
    c = c << 6 | (x & 0x3F);
    lo = 0x80, hi = 0xBF;
  }
  *cp = c;
  return need + 1;
}

/* Length of the longest valid UTF-8 prefix of s[0..n). */
static size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) { /* ASCII, eight bytes at a time */
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (!(w & 0x8080808080808080ull)) {
        i += 8;
        continue;
      }
    }
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    uint32_t cp;
    size_t sub;
    int cut;
    size_t k = utf8_char(s + i, n - i, &cp, &sub, &cut);
    if (!k) return i;
    i += k;
  }
  return n;
}

int utf8_append_sanitized(ByteBuf *out, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t v = utf8_valid_prefix(u + i, n - i);
    if (v && buf_append(out, u + i, v)) return GPT2_NOMEM;
    i += v;
    if (i == n) break;
    uint32_t cp;
    size_t sub;
    int cut;
    utf8_char(u + i, n - i, &cp, &sub, &cut);
    if (buf_append(out, "\xEF\xBF\xBD", 3)) return GPT2_NOMEM; /* one U+FFFD per maximal subpart */
    i += sub;
  }
  if (!out->p && buf_append(out, "", 0)) return GPT2_NOMEM;
  return GPT2_OK;
}

size_t utf8_complete_prefix(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  /* Only the last character can be cut: find its first byte (at most 3
  ** continuation bytes back) and hold it back if more bytes could complete it. */
  size_t p = n;
  while (p > 0 && n - p < 3) {
    p--;
    if ((u[p] & 0xC0) != 0x80) {
      uint32_t cp;
      size_t sub;
      int cut;
      if (!utf8_char(u + p, n - p, &cp, &sub, &cut) && cut && p + sub == n) return p;
      return n;
    }
  }
  return n;
}

/* ------------------------------------------------------------------------
** Hash tables: raw bytes -> id, and (unit, unit) -> rank
*/

static uint32_t hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  if (i < n) {
    uint64_t w = 0;
    memcpy(&w, s + i, n - i);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  h *= 0xC4CEB9FE1A85EC53ull;
  return (uint32_t)(h >> 32);
}

static uint64_t head8(const void *p, size_t n) {
  uint64_t h = 0;
  memcpy(&h, p, n < 8 ? n : 8);
  return h;
}

static int tab_init(StrTab *tb, size_t want) {
  size_t cap = 16;
  while (cap < want * 2) cap *= 2; /* load <= 1/2 */
  if (cap > UINT32_MAX) return GPT2_NOMEM;
  tb->slot = malloc(cap * sizeof *tb->slot);
  if (!tb->slot) return GPT2_NOMEM;
  for (size_t i = 0; i < cap; i++) tb->slot[i].id = -1;
  tb->mask = (uint32_t)(cap - 1);
  tb->count = 0;
  return GPT2_OK;
}

/* Id of the bytes p[0..n), or -1. arena/span hold the keys' bytes. */
static int32_t tab_find_h(const StrTab *tb, const char *arena, const Span *span, const void *p,
                          size_t n, uint32_t hash) {
  uint64_t head = head8(p, n);
  for (uint32_t i = hash & tb->mask;; i = (i + 1) & tb->mask) {
    const Slot *s = &tb->slot[i];
    if (s->id < 0) return -1;
    if (s->len == n && s->head == head &&
        (n <= 8 || memcmp(arena + span[s->id].off + 8, (const char *)p + 8, n - 8) == 0))
      return s->id;
  }
}

static int32_t tab_find(const StrTab *tb, const char *arena, const Span *span, const void *p,
                        size_t n) {
  return tab_find_h(tb, arena, span, p, n, hash_bytes(p, n));
}

/* Add a key known to be absent, hashing to hash (the caller keeps the load
** <= 1/2). */
static void tab_put_h(StrTab *tb, const void *p, size_t n, int32_t id, uint32_t hash) {
  uint32_t i = hash & tb->mask;
  while (tb->slot[i].id >= 0) i = (i + 1) & tb->mask;
  tb->slot[i] = (Slot){head8(p, n), id, (uint32_t)n};
  tb->count++;
}

static void tab_put(StrTab *tb, const void *p, size_t n, int32_t id) {
  tab_put_h(tb, p, n, id, hash_bytes(p, n));
}

static inline uint32_t pair_home(const Tokenizer *t, int32_t a, int32_t b) {
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> t->pair_shift);
}

static inline int32_t pair_rank(const Tokenizer *t, int32_t a, int32_t b) {
  if ((a | b) < 256) return t->brank[a << 8 | b];
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  for (uint32_t i = pair_home(t, a, b);; i = (i + 1) & t->pair_mask) {
    const PairSlot *s = &t->pair[i];
    if (s->key == key) return s->rank;
    if (s->key == PAIR_EMPTY) return RANK_NONE;
  }
}

static void pair_prefetch(const Tokenizer *t, int32_t a, int32_t b) {
#if defined(__GNUC__)
  if ((a | b) >= 256) __builtin_prefetch(&t->pair[pair_home(t, a, b)]);
#else
  (void)t, (void)a, (void)b;
#endif
}

/* Insert, or update a repeated pair (the last line wins). */
static void pair_set(Tokenizer *t, int32_t a, int32_t b, int32_t rank) {
  if ((a | b) < 256) {
    t->brank[a << 8 | b] = rank;
    return;
  }
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  uint32_t i = pair_home(t, a, b);
  while (t->pair[i].key != PAIR_EMPTY && t->pair[i].key != key) i = (i + 1) & t->pair_mask;
  t->pair[i].key = key;
  t->pair[i].rank = rank;
}

/* ------------------------------------------------------------------------
** BPE on one piece
*/

/* Scratch for one tok_encode call (or one load): never shared. */
typedef struct Work {
  int32_t *id;    /* (cap) units */
  int32_t *nx;    /* (cap) bpe_heap: next live unit, -1 at the end */
  int32_t *pv;    /* (cap) bpe_heap: previous live unit, -1 at the start */
  uint64_t *heap; /* (3*cap) bpe_heap: rank<<32 | unit, a min-heap */
  int32_t *batch; /* (3*cap) bpe_heap: units where the round's pair starts */
  size_t cap;
  int32_t fid[FLAT_MAX]; /* bpe_flat: units of a short piece (no allocation) */
  int32_t fr[FLAT_MAX];  /* bpe_flat: rank of the pair starting at each unit */
} Work;

static void work_free(Work *w) {
  free(w->id);
  free(w->nx);
  free(w->pv);
  free(w->heap);
  free(w->batch);
  w->id = w->nx = w->pv = w->batch = NULL;
  w->heap = NULL;
  w->cap = 0;
}

static int work_reserve(Work *w, size_t n) {
  if (n <= w->cap) return GPT2_OK;
  size_t cap = w->cap ? w->cap : 1024;
  while (cap < n) cap *= 2;
  if (cap > SIZE_MAX / (3 * sizeof(uint64_t)) || cap > INT32_MAX) return GPT2_NOMEM;
  work_free(w);
  w->id = malloc(cap * sizeof *w->id);
  w->nx = malloc(cap * sizeof *w->nx);
  w->pv = malloc(cap * sizeof *w->pv);
  w->heap = malloc(3 * cap * sizeof *w->heap);
  w->batch = malloc(3 * cap * sizeof *w->batch);
  if (!w->id || !w->nx || !w->pv || !w->heap || !w->batch) {
    work_free(w);
    return GPT2_NOMEM;
  }
  w->cap = cap;
  return GPT2_OK;
}

/* One round = the lowest-ranked pair present, merged at every occurrence,
** left to right, without overlaps (encoder.py's inner loop). A rank belongs
** to exactly one pair, so "r[i] == best" finds the occurrences. O(m) per
** round; only ranks next to a merge are looked up again. Returns new m. */
static size_t bpe_flat(const Tokenizer *t, int32_t *id, int32_t *r, size_t m) {
  for (size_t i = 0; i + 1 < m; i++) r[i] = RANK_PENDING;
  while (m > 1) {
    int32_t best = RANK_NONE;
    for (size_t i = 0; i + 1 < m; i++) {
      int32_t x = r[i];
      if (x == RANK_PENDING) x = r[i] = pair_rank(t, id[i], id[i + 1]);
      if (x < best) best = x;
    }
    if (best == RANK_NONE) break;
    int32_t to = t->merge_to[best];
    size_t w = 0;
    for (size_t i = 0; i < m;) {
      if (i + 1 < m && r[i] == best) {
        id[w] = to;
        r[w] = RANK_PENDING;
        if (w) r[w - 1] = RANK_PENDING;
        i += 2;
      } else {
        id[w] = id[i];
        r[w] = r[i];
        i++;
      }
      w++;
    }
    m = w;
  }
  return m;
}

static void heap_push(uint64_t *h, size_t *hn, uint64_t x) {
  size_t i = (*hn)++;
  while (i) {
    size_t p = (i - 1) / 2;
    if (h[p] <= x) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = x;
}

static uint64_t heap_pop(uint64_t *h, size_t *hn) {
  uint64_t top = h[0], x = h[--*hn];
  size_t n = *hn, i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && h[c + 1] < h[c]) c++;
    if (h[c] >= x) break;
    h[i] = h[c];
    i = c;
  }
  if (n) h[i] = x;
  return top;
}

/* The same rounds as bpe_flat in O(m log m), for long pieces: a heap holds
** (rank, unit) for every adjacent pair as it forms. A round pops every entry
** of the lowest rank (they come out left to right), then merges those still
** valid. A pair formed during a round never has the round's rank (a merged
** token is longer than either part), so it waits for a later round, as in
** encoder.py. Returns the number of units left in w->id. */
static size_t bpe_heap(const Tokenizer *t, Work *w, size_t m) {
  int32_t *id = w->id, *nx = w->nx, *pv = w->pv, *batch = w->batch;
  uint64_t *h = w->heap;
  size_t hn = 0;
  for (size_t i = 0; i < m; i++) {
    nx[i] = i + 1 < m ? (int32_t)(i + 1) : -1;
    pv[i] = (int32_t)i - 1;
    if (i + 1 < m) {
      int32_t rk = pair_rank(t, id[i], id[i + 1]);
      if (rk != RANK_NONE) heap_push(h, &hn, (uint64_t)rk << 32 | i);
    }
  }
  while (hn) {
    int32_t best = (int32_t)(h[0] >> 32);
    size_t nb = 0;
    while (hn && (int32_t)(h[0] >> 32) == best) batch[nb++] = (int32_t)(uint32_t)heap_pop(h, &hn);
    int32_t a = t->merge_a[best], b = t->merge_b[best], to = t->merge_to[best];
    for (size_t k = 0; k < nb; k++) {
      int32_t s = batch[k], u = nx[s];
      if (id[s] != a || u < 0 || id[u] != b) continue; /* stale */
      id[s] = to;
      id[u] = UNIT_DEAD;
      nx[s] = nx[u];
      if (nx[s] >= 0) pv[nx[s]] = s;
      if (pv[s] >= 0) {
        int32_t rk = pair_rank(t, id[pv[s]], to);
        if (rk != RANK_NONE) heap_push(h, &hn, (uint64_t)rk << 32 | (uint32_t)pv[s]);
      }
      if (nx[s] >= 0) {
        int32_t rk = pair_rank(t, to, id[nx[s]]);
        if (rk != RANK_NONE) heap_push(h, &hn, (uint64_t)rk << 32 | (uint32_t)s);
      }
    }
  }
  size_t k = 0;
  for (int32_t s = 0; s >= 0; s = nx[s]) id[k++] = id[s]; /* unit 0 always lives */
  return k;
}

/* BPE the bytes p[0..n) (n >= 1): *units points at the result (in w), *m
** is its length. */
static int bpe(const Tokenizer *t, Work *w, const unsigned char *p, size_t n, int32_t **units,
               size_t *m) {
  int32_t *id = w->fid;
  if (n > FLAT_MAX) {
    if (work_reserve(w, n)) return GPT2_NOMEM;
    id = w->id;
  }
  for (size_t i = 0; i < n; i++) id[i] = p[i]; /* unit b is the byte b */
  *m = n <= FLAT_MAX ? bpe_flat(t, id, w->fr, n) : bpe_heap(t, w, n);
  *units = id;
  return GPT2_OK;
}

/* ------------------------------------------------------------------------
** Encoding
*/

/* Per-call memo of recent pieces (direct-mapped by hash): in long texts
** most pieces repeat, and this small table stays in cache where the unit
** hash does not. */
#define MEMO_MIN_TEXT 4096      /* shorter texts do without */
#define MEMO_MAX_SLOTS 16384    /* about one slot per 32 bytes of text up to this */
#define MEMO_MAX_IDS (1u << 20) /* then start afresh */

typedef struct MemoSlot {
  uint64_t head;          /* first min(len, 8) bytes of the piece */
  const unsigned char *p; /* the piece, in the caller's text; NULL = empty */
  uint32_t len, hash;
  uint32_t off, n; /* its ids: memo_ids.v[off .. off+n) */
} MemoSlot;

typedef struct EncCtx {
  const Tokenizer *t;
  Work w;
  pcre2_match_data *md;
  MemoSlot *memo; /* (memo_mask+1) or NULL */
  uint32_t memo_mask;
  IdVec memo_ids;
  IdVec *out;
  char *err;
  size_t errlen;
} EncCtx;

/* Vocabulary id of unit u: only a byte can lack one. */
enum { SELF_UNKNOWN = 0, SELF_YES = 1, SELF_NO = 2 };

static int emit_unit(EncCtx *c, int32_t u) {
  int32_t id = c->t->vid[u];
  if (id < 0) {
    if (c->t->unk_id < 0)
      return gpt2_errorf(c->err, c->errlen,
                         "no token for byte 0x%02X and no unknown token declared", (unsigned)u);
    id = c->t->unk_id;
  }
  return idvec_push(c->out, id);
}

/* Ids of one piece (n >= 2), without the memo. */
static int encode_piece(EncCtx *c, const unsigned char *p, size_t n, uint32_t hash) {
  const Tokenizer *t = c->t;
  int32_t u = tab_find_h(&t->utab, t->ubytes, t->uspan, p, n, hash);
  int flag = u >= 0 ? atomic_load_explicit(&t->self[u], memory_order_relaxed) : SELF_NO;
  if (flag == SELF_YES) return emit_unit(c, u); /* whole piece is one token */
  int32_t *units;
  size_t m;
  if (bpe(t, &c->w, p, n, &units, &m)) return GPT2_NOMEM;
  if (flag == SELF_UNKNOWN)
    atomic_store_explicit(&t->self[u], m == 1 && units[0] == u ? SELF_YES : SELF_NO,
                          memory_order_relaxed);
  for (size_t k = 0; k < m; k++) {
    int e = emit_unit(c, units[k]);
    if (e) return e;
  }
  return GPT2_OK;
}

static int emit_piece(EncCtx *c, const unsigned char *p, size_t n) {
  if (n == 1) return emit_unit(c, p[0]);
  uint32_t hash = hash_bytes(p, n);
  if (!c->memo) return encode_piece(c, p, n, hash);
  MemoSlot *ms = &c->memo[hash & c->memo_mask];
  IdVec *out = c->out;
  uint64_t head = head8(p, n);
  if (ms->p && ms->hash == hash && ms->len == n && ms->head == head &&
      (n <= 8 || memcmp(ms->p + 8, p + 8, n - 8) == 0)) {
    if (idvec_reserve(out, out->n + ms->n)) return GPT2_NOMEM;
    memcpy(out->v + out->n, c->memo_ids.v + ms->off, ms->n * sizeof *out->v);
    out->n += ms->n;
    return GPT2_OK;
  }
  size_t start = out->n;
  int rc = encode_piece(c, p, n, hash);
  size_t k = out->n - start;
  if (rc || k > 64) return rc;
  if (c->memo_ids.n + k > MEMO_MAX_IDS) {
    memset(c->memo, 0, (c->memo_mask + 1) * sizeof *c->memo);
    c->memo_ids.n = 0;
  }
  if (idvec_reserve(&c->memo_ids, c->memo_ids.n + k)) return GPT2_NOMEM;
  memcpy(c->memo_ids.v + c->memo_ids.n, out->v + start, k * sizeof *out->v);
  *ms = (MemoSlot){head, p, (uint32_t)n, hash, (uint32_t)c->memo_ids.n, (uint32_t)k};
  c->memo_ids.n += k;
  return GPT2_OK;
}

/* Pieces of a valid UTF-8 run, as Python's findall gives them. */
static int encode_run(EncCtx *c, const unsigned char *s, size_t n) {
  size_t off = 0;
  while (off < n) {
    int rc = c->t->jit ? pcre2_jit_match(c->t->re, s, n, off, 0, c->md, NULL)
                       : pcre2_match(c->t->re, s, n, off, PCRE2_NO_UTF_CHECK, c->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
      rc = pcre2_match(c->t->re, s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, c->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) break; /* cannot happen: every character matches */
    if (rc < 0) {
      PCRE2_UCHAR msg[120];
      pcre2_get_error_message(rc, msg, sizeof msg);
      return gpt2_errorf(c->err, c->errlen, "pre-tokenizer pattern failed: %s", (char *)msg);
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(c->md);
    int e = emit_piece(c, s + ov[0], ov[1] - ov[0]);
    if (e) return e;
    off = ov[1];
  }
  return GPT2_OK;
}

/* A segment between special tokens: valid runs, and single invalid bytes. */
static int encode_segment(EncCtx *c, const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t v = utf8_valid_prefix(s + i, n - i);
    if (v) {
      int e = encode_run(c, s + i, v);
      if (e) return e;
      i += v;
    }
    if (i < n) {
      int e = emit_piece(c, s + i, 1);
      if (e) return e;
      i++;
    }
  }
  return GPT2_OK;
}

static size_t find_special(const Special *sp, const char *text, size_t n, size_t from) {
  const char *p = memmem(text + from, n - from, sp->text, sp->len);
  return p ? (size_t)(p - text) : n;
}

int tok_encode(const Tokenizer *t, const char *text, size_t n, IdVec *out, char *err,
               size_t errlen) {
  EncCtx c = {.t = t, .out = out, .err = err, .errlen = errlen};
  size_t n0 = out->n;
  if (!text) text = "", n = 0;
  c.md = pcre2_match_data_create_from_pattern(t->re, NULL);
  if (n >= MEMO_MIN_TEXT) {
    size_t slots = 128;
    while (slots < MEMO_MAX_SLOTS && slots * 32 < n) slots *= 2;
    c.memo = calloc(slots, sizeof *c.memo); /* optional: NULL is fine */
    c.memo_mask = (uint32_t)(slots - 1);
  }
  if (!c.md) {
    free(c.memo);
    return GPT2_NOMEM;
  }
  size_t next[MAX_SPECIAL]; /* next occurrence of each special at or after pos (n: none) */
  for (int i = 0; i < t->n_special; i++) next[i] = find_special(&t->special[i], text, n, 0);
  size_t pos = 0;
  int rc = GPT2_OK;
  while (!rc) {
    size_t at = n;
    int which = -1;
    for (int i = 0; i < t->n_special; i++) {
      if (next[i] < pos) next[i] = find_special(&t->special[i], text, n, pos);
      if (next[i] < at ||
          (next[i] == at && which >= 0 && t->special[i].len > t->special[which].len)) {
        at = next[i];
        which = i;
      }
    }
    rc = encode_segment(&c, (const unsigned char *)text + pos, at - pos);
    if (rc || which < 0) break;
    rc = idvec_push(out, t->special[which].id);
    pos = at + t->special[which].len;
  }
  pcre2_match_data_free(c.md);
  free(c.memo);
  idvec_free(&c.memo_ids);
  work_free(&c.w);
  if (rc) out->n = n0;
  return rc;
}

/* ------------------------------------------------------------------------
** Lookup and decoding
*/

int tok_vocab_size(const Tokenizer *t) {
  return t->vocab_size;
}

const char *tok_bytes(const Tokenizer *t, int id, size_t *len) {
  if (id < 0 || id >= t->vocab_size || !t->vspan[id].len) {
    *len = 0;
    return NULL;
  }
  *len = t->vspan[id].len;
  return t->vbytes + t->vspan[id].off;
}

/* Mapped spelling -> raw bytes (out has room for n bytes, *outn gets the
** count). Returns 0; or UNMAP_CHAR with *bad the first character outside the
** mapping; or UNMAP_UTF8 for invalid UTF-8. */
enum { UNMAP_CHAR = 1, UNMAP_UTF8 = 2 };

static int unmap(const char *s, size_t n, unsigned char *out, size_t *outn, uint32_t *bad) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0, k = 0;
  *outn = 0;
  while (i < n) {
    uint32_t cp;
    size_t sub;
    int cut;
    size_t len = utf8_char(u + i, n - i, &cp, &sub, &cut);
    if (!len) return UNMAP_UTF8;
    int b = cp_to_byte(cp);
    if (b < 0) {
      *bad = cp;
      return UNMAP_CHAR;
    }
    out[k++] = (unsigned char)b;
    i += len;
  }
  *outn = k;
  return 0;
}

static int32_t find_vocab(const Tokenizer *t, const void *p, size_t n) {
  int32_t u = tab_find(&t->utab, t->ubytes, t->uspan, p, n);
  return u >= 0 ? t->vid[u] : -1;
}

int tok_find(const Tokenizer *t, const char *mapped, size_t n) {
  if (!n) return -1;
  unsigned char small[256];
  unsigned char *buf = n <= sizeof small ? small : malloc(n);
  if (!buf) return -1;
  size_t k;
  uint32_t bad;
  int id = unmap(mapped, n, buf, &k, &bad) == 0 ? find_vocab(t, buf, k) : -1;
  if (buf != small) free(buf);
  return id;
}

int tok_decode(const Tokenizer *t, const int *ids, size_t n, ByteBuf *out, char *err,
               size_t errlen) {
  ByteBuf raw = {0};
  for (size_t i = 0; i < n; i++) {
    int id = ids[i];
    if (id < 0 || id >= t->vocab_size) {
      buf_free(&raw);
      return gpt2_errorf(err, errlen, "id %d is outside the vocabulary (size %d)", id,
                         t->vocab_size);
    }
    if (!t->vspan[id].len) {
      buf_free(&raw);
      return gpt2_errorf(err, errlen, "id %d is not used by the vocabulary (size %d)", id,
                         t->vocab_size);
    }
    if (buf_append(&raw, t->vbytes + t->vspan[id].off, t->vspan[id].len)) {
      buf_free(&raw);
      return GPT2_NOMEM;
    }
  }
  size_t n0 = out->n;
  int rc = utf8_append_sanitized(out, raw.p ? raw.p : "", raw.n);
  if (rc && out->p) out->n = n0, out->p[n0] = 0;
  buf_free(&raw);
  return rc;
}

/* ------------------------------------------------------------------------
** Loading: helpers
*/

void tok_free(Tokenizer *t) {
  if (!t) return;
  free(t->vbytes);
  free(t->vspan);
  free(t->ubytes);
  free(t->uspan);
  free(t->utab.slot);
  free(t->vid);
  free((void *)t->self);
  free(t->brank);
  free(t->pair);
  free(t->merge_a);
  free(t->merge_b);
  free(t->merge_to);
  free(t->merge_line);
  if (t->re) pcre2_code_free(t->re);
  free(t);
}

/* Bytes of s[0..n) that fit in max, cut at a character boundary (for
** quoting keys and lines in messages). */
static int clip(const char *s, size_t n, size_t max) {
  if (n <= max) return (int)n;
  while (max && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
  return (int)max;
}

/* Raw bytes back in mapped spelling, for messages (NUL-terminated, cut). */
static const char *mapped(const char *p, size_t n, char *buf, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 3 < cap; i++) {
    uint32_t cp = byte_to_cp((unsigned char)p[i]);
    if (cp < 0x80)
      buf[k++] = (char)cp;
    else {
      buf[k++] = (char)(0xC0 | cp >> 6);
      buf[k++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  buf[k] = 0;
  return buf;
}

/* Parse a JSON file (*size: its length); errors name the file, and the key
** of a duplicate. */
static int load_json(const char *path, size_t max, json_t **out, size_t *size, char *err,
                     size_t errlen) {
  char *text;
  size_t n;
  int rc = gpt2_read_file(path, &text, &n, max, err, errlen);
  if (rc) return rc;
  *size = n;
  json_error_t je;
  *out = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
  if (*out) {
    free(text);
    return GPT2_OK;
  }
  if (json_error_code(&je) == json_error_out_of_memory) {
    free(text);
    return GPT2_NOMEM;
  }
  rc = gpt2_errorf(err, errlen, "%s: invalid JSON at line %d column %d: %s", path, je.line,
                   je.column, je.text);
  /* Jansson reports the offset just past the repeated key: find its opening
  ** quote (the first unescaped '"' before it) and let Jansson decode it. */
  if (json_error_code(&je) == json_error_duplicate_key && je.position >= 2 &&
      (size_t)je.position <= n && text[je.position - 1] == '"') {
    size_t q = (size_t)je.position - 1;
    while (q > 0) {
      q--;
      if (text[q] != '"') continue;
      size_t bs = 0;
      while (bs < q && text[q - 1 - bs] == '\\') bs++;
      if (bs % 2 == 0) break;
    }
    json_t *k = json_loadb(text + q, (size_t)je.position - q, JSON_DECODE_ANY, NULL);
    if (json_is_string(k)) {
      const char *ks = json_string_value(k);
      rc = gpt2_errorf(err, errlen, "%s: duplicate key \"%.*s\" (line %d)", path,
                       clip(ks, json_string_length(k), 200), ks, je.line);
    }
    json_decref(k);
  }
  free(text);
  return rc;
}

/* ------------------------------------------------------------------------
** Loading: vocab.json (cJSON: about three times faster than Jansson here, and
** this parse is the critical path of tok_load). cJSON keeps duplicate keys,
** does not check UTF-8, cuts a string at "\u0000", stops at the end of the
** first value and skips a UTF-8 BOM: each is checked below instead.
*/

/* 1-based line and byte column of text[pos]. */
static void line_col(const char *text, size_t pos, int *line, int *col) {
  size_t l = 1, start = 0;
  for (const char *p = text; (p = memchr(p, '\n', pos - (size_t)(p - text))); p++) {
    l++;
    start = (size_t)(p - text) + 1;
  }
  *line = l > INT_MAX ? INT_MAX : (int)l;
  *col = pos - start + 1 > INT_MAX ? INT_MAX : (int)(pos - start + 1);
}

/* Offset of the first NUL byte or "\u0000" escape (either would cut a cJSON
** string short), or n. A backslash outside a string is a syntax error anyway. */
static size_t find_nul(const char *text, size_t n) {
  const char *z = memchr(text, 0, n);
  size_t limit = z ? (size_t)(z - text) : n;
  size_t i = 0;
  while (i < limit) {
    const char *b = memchr(text + i, '\\', limit - i);
    if (!b) break;
    i = (size_t)(b - text);
    if (i + 6 <= limit && memcmp(b + 1, "u0000", 5) == 0) return i;
    i += 2; /* past the escaped character */
  }
  return limit;
}

static int json_syntax_error(const char *path, const char *text, size_t pos, const char *what,
                             char *err, size_t errlen) {
  int line, col;
  line_col(text, pos, &line, &col);
  return gpt2_errorf(err, errlen, "%s: invalid JSON at line %d column %d: %s", path, line, col,
                     what);
}

static int load_vocab(Tokenizer *t, const char *path, char *err, size_t errlen) {
  char *text;
  size_t size;
  int rc = gpt2_read_file(path, &text, &size, MAX_FILE, err, errlen);
  if (rc) return rc;
  cJSON *root = NULL;
  int32_t *ids = NULL;
  Span *spans = NULL;
  size_t nul = find_nul(text, size);
  if (nul < size) {
    rc = json_syntax_error(path, text, nul, "NUL characters (\\u0000) are not supported", err,
                           errlen);
    goto done;
  }
  if (size >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) {
    rc = json_syntax_error(path, text, 0, "byte order mark", err, errlen);
    goto done;
  }
  const char *end = NULL;
  root = cJSON_ParseWithLengthOpts(text, size, &end, 0);
  if (!root) { /* cJSON does not tell a syntax error from an allocation failure */
    size_t pos = end && end >= text && end <= text + size ? (size_t)(end - text) : 0;
    rc = json_syntax_error(path, text, pos,
                           "syntax error (or nesting deeper than " XSTR(CJSON_NESTING_LIMIT)
                           ", or out of memory)",
                           err, errlen);
    goto done;
  }
  size_t pos = (size_t)(end - text);
  while (pos < size && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' ||
                        text[pos] == '\r'))
    pos++;
  if (pos < size) {
    rc = json_syntax_error(path, text, pos, "end of file expected", err, errlen);
    goto done;
  }
  if (!cJSON_IsObject(root)) {
    rc = gpt2_errorf(err, errlen, "%s: expected a JSON object mapping tokens to ids", path);
    goto done;
  }
  size_t count = 0, k = 0;
  for (const cJSON *it = root->child; it; it = it->next) count++;
  if (!count) {
    rc = gpt2_errorf(err, errlen, "%s: the vocabulary is empty", path);
    goto done;
  }
  /* One pass over the keys in file order: raw bytes into the arena (no
  ** longer in total than the file: an escape decodes to fewer bytes). */
  ids = malloc(count * sizeof *ids);
  spans = malloc(count * sizeof *spans);
  t->vbytes = malloc(size + 1);
  if (!ids || !spans || !t->vbytes) {
    rc = GPT2_NOMEM;
    goto done;
  }
  int32_t max_id = -1;
  size_t used = 0;
  for (const cJSON *it = root->child; it; it = it->next, k++) {
    const char *key = it->string ? it->string : "";
    size_t kn = strlen(key), bn; /* no NUL inside: find_nul */
    uint32_t bad;
    unsigned char *raw = (unsigned char *)t->vbytes + used;
    int um = unmap(key, kn, raw, &bn, &bad);
    size_t ok = um == UNMAP_UTF8 ? utf8_valid_prefix((const unsigned char *)key, kn) : kn;
    if (ok < kn) {
      rc = gpt2_errorf(err, errlen,
                       "%s: invalid JSON: key %zu (in file order), \"%.*s\" then byte 0x%02X, "
                       "is not valid UTF-8",
                       path, k + 1, clip(key, ok, 200), key, (unsigned)(unsigned char)key[ok]);
      goto done;
    }
    /* A number is a double: only an integral one in range is an id (this
    ** also rejects NaN; valueint would saturate, so it is not used). */
    double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
    if (!(d >= 0 && d <= MAX_ID && d == (double)(int32_t)d)) {
      rc = gpt2_errorf(err, errlen, "%s: key \"%.*s\": id must be an integer from 0 to %d", path,
                       clip(key, kn, 200), key, MAX_ID);
      goto done;
    }
    int32_t id = (int32_t)d;
    if (!kn) {
      rc = gpt2_errorf(err, errlen, "%s: empty key (id %d)", path, (int)id);
      goto done;
    }
    if (um) { /* UTF-8 was checked: a character */
      rc = gpt2_errorf(err, errlen,
                       "%s: key \"%.*s\" contains U+%04lX, which is not one of GPT-2's 256 "
                       "byte characters",
                       path, clip(key, kn, 200), key, (unsigned long)bad);
      goto done;
    }
    spans[k] = (Span){(uint32_t)used, (uint32_t)bn};
    ids[k] = id; /* duplicate keys are found when units are linked */
    used += bn;
    if (id > max_id) max_id = id;
  }
  cJSON_Delete(root); /* before the next allocation: the tree is ~10x the file */
  root = NULL;
  t->vocab_size = (int)max_id + 1;
  t->vspan = calloc((size_t)t->vocab_size, sizeof *t->vspan);
  if (!t->vspan) {
    rc = GPT2_NOMEM;
    goto done;
  }
  for (size_t i = 0; i < count; i++) {
    Span *s = &t->vspan[ids[i]];
    if (s->len) {
      char a[256], b[256];
      rc = gpt2_errorf(err, errlen, "%s: keys \"%s\" and \"%s\" both have id %d", path,
                       mapped(t->vbytes + s->off, s->len, a, sizeof a),
                       mapped(t->vbytes + spans[i].off, spans[i].len, b, sizeof b), ids[i]);
      goto done;
    }
    *s = spans[i];
  }
done:
  free(ids);
  free(spans);
  cJSON_Delete(root);
  free(text);
  return rc;
}

/* ------------------------------------------------------------------------
** Loading: merges.txt (helper thread; touches only the unit fields)
*/

#define LOOKAHEAD 8 /* keys hashed (and their slots fetched) ahead of use */

typedef struct MergeJob {
  Tokenizer *t;
  const char *path;
  int rc;                /* GPT2_NOMEM, or GPT2_ERROR with a message */
  int stop_line;         /* the line that stopped parsing (0: none) */
  char err[GPT2_ERRLEN]; /* its message */
} MergeJob;

/* Hash of the bytes p[0..n), and start fetching their slot: the tables are
** bigger than the caches, so the loads below pipeline their lookups by
** hashing a few keys ahead. */
static uint32_t tab_prefetch(const StrTab *tb, const void *p, size_t n) {
  uint32_t h = hash_bytes(p, n);
#if defined(__GNUC__)
  __builtin_prefetch(&tb->slot[h & tb->mask]);
#else
  (void)tb;
#endif
  return h;
}

/* Unit of the bytes p[0..n) (hashing to hash), added when new. Returns -1
** on OOM. */
static int32_t unit_intern(Tokenizer *t, const void *p, size_t n, uint32_t hash) {
  int32_t u = tab_find_h(&t->utab, t->ubytes, t->uspan, p, n, hash);
  if (u >= 0) return u;
  if ((size_t)t->utab.count * 2 >= (size_t)t->utab.mask + 1) { /* grow the hash */
    StrTab nt;
    if (tab_init(&nt, (size_t)t->utab.mask + 1)) return -1;
    for (int32_t i = 0; i < t->n_units; i++)
      tab_put(&nt, t->ubytes + t->uspan[i].off, t->uspan[i].len, i);
    free(t->utab.slot);
    t->utab = nt;
  }
  if ((size_t)t->n_units == t->uspan_cap) {
    if (t->uspan_cap >= INT32_MAX / 2) return -1;
    Span *ns = realloc(t->uspan, 2 * t->uspan_cap * sizeof *ns);
    if (!ns) return -1;
    t->uspan = ns;
    t->uspan_cap *= 2;
  }
  size_t off = t->n_units ? t->uspan[t->n_units - 1].off + t->uspan[t->n_units - 1].len : 0;
  if (off + n > t->ucap) {
    size_t cap = t->ucap * 2;
    while (cap < off + n) cap *= 2;
    if (cap > UINT32_MAX) return -1;
    char *nb = realloc(t->ubytes, cap);
    if (!nb) return -1;
    t->ubytes = nb;
    t->ucap = cap;
  }
  memcpy(t->ubytes + off, p, n);
  u = t->n_units++;
  t->uspan[u] = (Span){(uint32_t)off, (uint32_t)n};
  tab_put_h(&t->utab, p, n, u, hash);
  return u;
}

/* One merges.txt line, unmapped: left bytes then right bytes at raw+off. */
typedef struct MergeText {
  uint32_t off, alen, blen, line;
} MergeText;

/* Parse merges.txt into units and ranks. A malformed line stops the parse
** (job->stop_line, job->err): earlier lines are still checked against the
** vocabulary first, so the first bad line in the file is the one reported. */
static int parse_merges(MergeJob *job) {
  Tokenizer *t = job->t;
  char *text;
  size_t n;
  int rc = gpt2_read_file(job->path, &text, &n, MAX_FILE, job->err, sizeof job->err);
  if (rc) return rc;
  size_t lines = 1;
  for (const char *p = text; (p = memchr(p, '\n', n - (size_t)(p - text))); p++) lines++;
  size_t pslots = 16;
  while (pslots < lines * 2) pslots *= 2;
  unsigned char *raw = malloc(n + 1);
  MergeText *mt = malloc(lines * sizeof *mt);
  t->ucap = 2 * n + 256;
  t->ubytes = malloc(t->ucap);
  t->uspan_cap = 1024 + lines; /* about one new unit per line; both grow */
  t->uspan = malloc(t->uspan_cap * sizeof *t->uspan);
  t->brank = malloc(65536 * sizeof *t->brank);
  t->pair = malloc(pslots * sizeof *t->pair);
  t->merge_a = malloc(lines * sizeof *t->merge_a);
  t->merge_b = malloc(lines * sizeof *t->merge_b);
  t->merge_to = malloc(lines * sizeof *t->merge_to);
  t->merge_line = malloc(lines * sizeof *t->merge_line);
  if (!raw || !mt || !t->ubytes || !t->uspan || !t->brank || !t->pair || !t->merge_a ||
      !t->merge_b || !t->merge_to || !t->merge_line || tab_init(&t->utab, t->uspan_cap)) {
    rc = GPT2_NOMEM;
    goto done;
  }
  /* Pass 1: split and unmap the lines. */
  size_t blank = 0, line = 0, nm = 0, used = 0;
  for (size_t i = 0; i < n;) {
    const char *s = text + i;
    const char *nl = memchr(s, '\n', n - i);
    size_t len = nl ? (size_t)(nl - s) : n - i;
    i += len + 1;
    line++;
    if (len && s[len - 1] == '\r') len--;
    if (!len) {
      if (!blank) blank = line;
      continue;
    }
    if (blank) {
      job->stop_line = (int)blank;
      gpt2_errorf(job->err, sizeof job->err, "%s line %zu: blank line before more merges",
                  job->path, blank);
      break;
    }
    if (len >= 8 && memcmp(s, "#version", 8) == 0) continue;
    const char *sp = memchr(s, ' ', len);
    size_t an = sp ? (size_t)(sp - s) : 0, bn = sp ? len - an - 1 : 0, ab, bb;
    if (!an || !bn || memchr(sp + 1, ' ', bn)) {
      job->stop_line = (int)line;
      gpt2_errorf(job->err, sizeof job->err,
                  "%s line %zu: expected two tokens separated by one space, got \"%.*s\"",
                  job->path, line, clip(s, len, 200), s);
      break;
    }
    uint32_t badc;
    int bad = unmap(s, an, raw + used, &ab, &badc);
    const char *which = s;
    size_t wn = an;
    if (!bad) {
      bad = unmap(sp + 1, bn, raw + used + ab, &bb, &badc);
      which = sp + 1, wn = bn;
    }
    if (bad) { /* a character no vocabulary key can contain */
      job->stop_line = (int)line;
      if (bad == UNMAP_UTF8)
        gpt2_errorf(job->err, sizeof job->err, "%s line %zu: not valid UTF-8", job->path, line);
      else
        gpt2_errorf(job->err, sizeof job->err,
                    "%s line %zu: \"%.*s\" is not in the vocabulary (U+%04lX is not one of "
                    "GPT-2's 256 byte characters)",
                    job->path, line, clip(which, wn, 200), which, (unsigned long)badc);
      break;
    }
    mt[nm++] = (MergeText){(uint32_t)used, (uint32_t)ab, (uint32_t)bb, (uint32_t)line};
    used += ab + bb;
  }
  /* Pass 2: units and ranks, looking a few lines ahead. */
  for (int i = 0; i < 65536; i++) t->brank[i] = RANK_NONE;
  for (size_t i = 0; i < pslots; i++) t->pair[i].key = PAIR_EMPTY;
  t->pair_mask = (uint32_t)(pslots - 1);
  t->pair_shift = 64;
  for (size_t s = pslots; s > 1; s >>= 1) t->pair_shift--;
  for (int b = 0; b < 256; b++) {
    unsigned char c = (unsigned char)b;
    unit_intern(t, &c, 1, hash_bytes(&c, 1)); /* unit b = byte b; room was reserved */
  }
  uint32_t hq[LOOKAHEAD][3]; /* hashes of the lines j .. j+LOOKAHEAD-1 */
  for (size_t k = 0; k < nm + LOOKAHEAD; k++) {
    uint32_t *h = hq[k % LOOKAHEAD]; /* line j = k-LOOKAHEAD's, then line k's */
    if (k >= LOOKAHEAD) {
      size_t j = k - LOOKAHEAD;
      const MergeText *m = &mt[j];
      const unsigned char *p = raw + m->off;
      int32_t a = unit_intern(t, p, m->alen, h[0]);
      int32_t b = unit_intern(t, p + m->alen, m->blen, h[1]);
      int32_t to = a < 0 || b < 0 ? -1 : unit_intern(t, p, m->alen + m->blen, h[2]);
      if (to < 0) {
        rc = GPT2_NOMEM;
        goto done;
      }
      t->merge_a[j] = a;
      t->merge_b[j] = b;
      t->merge_to[j] = to;
      t->merge_line[j] = (int32_t)m->line;
    }
    if (k < nm) {
      const MergeText *f = &mt[k];
      h[0] = tab_prefetch(&t->utab, raw + f->off, f->alen);
      h[1] = tab_prefetch(&t->utab, raw + f->off + f->alen, f->blen);
      h[2] = tab_prefetch(&t->utab, raw + f->off, f->alen + f->blen);
    }
  }
  t->n_merges = (int)nm;
  for (size_t k = 0; k < nm; k++) { /* rank k; a repeated pair keeps its last rank */
    if (k + 8 < nm) pair_prefetch(t, t->merge_a[k + 8], t->merge_b[k + 8]);
    pair_set(t, t->merge_a[k], t->merge_b[k], (int32_t)k);
  }
done:
  free(mt);
  free(raw);
  free(text);
  return rc;
}

static int compile_pattern(Tokenizer *t, char *err, size_t errlen) {
  int ec;
  PCRE2_SIZE eo;
  t->re = pcre2_compile((PCRE2_SPTR)PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo,
                        NULL);
  if (!t->re) {
    if (ec == PCRE2_ERROR_HEAP_FAILED || ec == PCRE2_ERROR_NOMEMORY) return GPT2_NOMEM;
    PCRE2_UCHAR msg[120];
    pcre2_get_error_message(ec, msg, sizeof msg);
    return gpt2_errorf(err, errlen, "cannot compile the pre-tokenizer pattern: %s", (char *)msg);
  }
  t->jit = pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE) == 0; /* else the interpreter runs it */
  return GPT2_OK;
}

static void *merge_job(void *arg) {
  MergeJob *job = arg;
  job->rc = parse_merges(job);
  if (!job->rc) job->rc = compile_pattern(job->t, job->err, sizeof job->err);
  return NULL;
}

/* Give every vocabulary token its unit (a token no merge names becomes a
** unit of its own); then every merge's parts and result must have an id. */
static int link_vocab(Tokenizer *t, const MergeJob *job, const char *vocab_path, char *err,
                      size_t errlen) {
  int32_t *unit = malloc((size_t)t->vocab_size * sizeof *unit);
  if (!unit) return GPT2_NOMEM;
  uint32_t hq[LOOKAHEAD]; /* hashes of the ids k-LOOKAHEAD .. k-1 */
  for (int k = 0; k < t->vocab_size + LOOKAHEAD; k++) {
    uint32_t *h = &hq[k % LOOKAHEAD]; /* id k-LOOKAHEAD's, then id k's */
    if (k >= LOOKAHEAD) {
      int id = k - LOOKAHEAD;
      const Span *s = &t->vspan[id];
      unit[id] = s->len ? unit_intern(t, t->vbytes + s->off, s->len, *h) : -1;
      if (s->len && unit[id] < 0) {
        free(unit);
        return GPT2_NOMEM;
      }
    }
    if (k < t->vocab_size) {
      const Span *f = &t->vspan[k];
      *h = f->len ? tab_prefetch(&t->utab, t->vbytes + f->off, f->len) : 0;
    }
  }
  t->vid = malloc((size_t)t->n_units * sizeof *t->vid);
  /* all SELF_UNKNOWN (zero bytes are a valid atomic uint8_t on every
  ** platform we build for) */
  t->self = calloc((size_t)t->n_units, sizeof *t->self);
  if (!t->vid || !t->self) {
    free(unit);
    return GPT2_NOMEM;
  }
  for (int32_t u = 0; u < t->n_units; u++) t->vid[u] = -1;
  for (int id = 0; id < t->vocab_size; id++) {
    int32_t u = unit[id];
    if (u < 0) continue;
    if (t->vid[u] >= 0) { /* equal raw bytes <=> equal keys: the mapping is 1:1 */
      char m[256];
      free(unit);
      return gpt2_errorf(err, errlen, "%s: duplicate key \"%s\" (ids %d and %d)", vocab_path,
                         mapped(t->vbytes + t->vspan[id].off, t->vspan[id].len, m, sizeof m),
                         (int)t->vid[u], id);
    }
    t->vid[u] = id;
  }
  free(unit);
  for (int r = 0; r < t->n_merges; r++) {
    int32_t parts[3] = {t->merge_a[r], t->merge_b[r], t->merge_to[r]};
    for (int k = 0; k < 3; k++) {
      if (t->vid[parts[k]] >= 0) continue;
      char m[256];
      return gpt2_errorf(
          err, errlen, "%s line %d: %s\"%s\" is not in the vocabulary", job->path, t->merge_line[r],
          k == 2 ? "the merged token " : "",
          mapped(t->ubytes + t->uspan[parts[k]].off, t->uspan[parts[k]].len, m, sizeof m));
    }
  }
  if (job->stop_line) return gpt2_errorf(err, errlen, "%s", job->err);
  return GPT2_OK;
}

/* ------------------------------------------------------------------------
** Loading: special tokens (tokenizer_config.json, special_tokens_map.json)
*/

/* A declared token: a string, an object with "content", or null/absent
** (*s NULL). */
static int config_token(json_t *root, const char *path, const char *key, const char **s, char *err,
                        size_t errlen) {
  *s = NULL;
  json_t *v = root ? json_object_get(root, key) : NULL;
  if (!v || json_is_null(v)) return GPT2_OK;
  if (json_is_object(v)) v = json_object_get(v, "content");
  if (!json_is_string(v))
    return gpt2_errorf(err, errlen,
                       "%s: \"%s\" must be a string or an object with a \"content\" string", path,
                       key);
  *s = json_string_value(v);
  return GPT2_OK;
}

static int load_config(const char *dir, const char *name, json_t **root, char **pathp, char *err,
                       size_t errlen) {
  *root = NULL;
  *pathp = gpt2_path_join(dir, name);
  if (!*pathp) return GPT2_NOMEM;
  struct stat st;
  if (stat(*pathp, &st) != 0 && errno == ENOENT) return GPT2_OK; /* optional */
  size_t size;
  int rc = load_json(*pathp, MAX_CONFIG, root, &size, err, errlen);
  if (!rc && !json_is_object(*root))
    rc = gpt2_errorf(err, errlen, "%s: expected a JSON object", *pathp);
  return rc;
}

static void add_special(Tokenizer *t, const char *s) {
  if (!s || !*s || t->n_special == MAX_SPECIAL) return;
  int id = find_vocab(t, s, strlen(s));
  if (id < 0) return; /* declared but not in the vocabulary: plain text */
  for (int i = 0; i < t->n_special; i++)
    if (t->special[i].id == id) return;
  /* The literal is the token's bytes (for "<|endoftext|>": itself, ASCII). */
  t->special[t->n_special++] = (Special){t->vbytes + t->vspan[id].off, t->vspan[id].len, id};
}

/* special_tokens_map.json overrides tokenizer_config.json, as in Hugging
** Face's from_pretrained. */
static int load_specials(Tokenizer *t, const char *dir, char *err, size_t errlen) {
  static const char *const names[] = {"special_tokens_map.json", "tokenizer_config.json"};
  static const char *const keys[] = {"unk_token", "eos_token", "bos_token"};
  json_t *roots[2] = {NULL, NULL};
  char *paths[2] = {NULL, NULL};
  int rc = GPT2_OK;
  for (int f = 0; f < 2 && !rc; f++)
    rc = load_config(dir, names[f], &roots[f], &paths[f], err, errlen);
  t->unk_id = -1;
  add_special(t, "<|endoftext|>"); /* gpt2-facts.md, "Tokenizer" */
  for (int k = 0; k < 3 && !rc; k++) {
    const char *s = NULL;
    for (int f = 0; f < 2 && !rc && !s; f++)
      rc = config_token(roots[f], paths[f], keys[k], &s, err, errlen);
    if (rc) break;
    add_special(t, s);
    if (k == 0 && s && *s) t->unk_id = find_vocab(t, s, strlen(s));
  }
  for (int f = 0; f < 2; f++) {
    json_decref(roots[f]);
    free(paths[f]);
  }
  return rc;
}

/* ------------------------------------------------------------------------
** tok_load
*/

int tok_load(const char *dir, Tokenizer **out, char *err, size_t errlen) {
  *out = NULL;
  Tokenizer *t = calloc(1, sizeof *t);
  char *vpath = gpt2_path_join(dir, "vocab.json");
  char *mpath = gpt2_path_join(dir, "merges.txt");
  if (!t || !vpath || !mpath) {
    free(t);
    free(vpath);
    free(mpath);
    return GPT2_NOMEM;
  }
  /* merges.txt on a helper thread while cJSON parses vocab.json here
  ** (without a thread, the same work runs in turn). */
  MergeJob job = {.t = t, .path = mpath};
  pthread_t th;
  int threaded = pthread_create(&th, NULL, merge_job, &job) == 0;
  int rc = load_vocab(t, vpath, err, errlen);
  if (threaded)
    pthread_join(th, NULL);
  else
    merge_job(&job);
  if (!rc && job.rc == GPT2_ERROR) rc = gpt2_errorf(err, errlen, "%s", job.err);
  if (!rc) rc = job.rc;
  if (!rc) rc = link_vocab(t, &job, vpath, err, errlen);
  if (!rc) rc = load_specials(t, dir, err, errlen);
  free(vpath);
  free(mpath);
  if (rc) {
    tok_free(t);
    return rc;
  }
  *out = t;
  return GPT2_OK;
}
