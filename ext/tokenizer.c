/*
** tokenizer.c — GPT-2 byte-level BPE (implements tokenizer.h).
**
** HOW IT WORKS
**
**   Load (tok_load). vocab.json is parsed by Jansson. Each key is in GPT-2's
**   mapped spelling (gpt2-facts.md, "Tokenizer": byte b <-> a printable
**   character); we store the token's raw bytes, so encoding and decoding never
**   see the mapped form again. Raw bytes -> id is an open-addressing hash.
**   merges.txt line k (after an optional "#version" line) gives the pair
**   (left, right) rank k; a second hash maps the id pair to its rank, and
**   per-rank arrays give the parts and the merged id. Finally every token's
**   own bytes are run through BPE once: a token that BPEs to itself is
**   flagged, so a whole piece equal to it can skip BPE (exact for any
**   vocabulary, because the flag is the BPE result).
**
**   Encode (tok_encode).
**     1. Split on special-token literals (leftmost, longest first), as
**        Hugging Face does for added tokens; each special gives its id.
**     2. Split each segment into maximal valid UTF-8 runs; every byte that is
**        not part of a valid character is a piece of its own.
**     3. Split each run with GPT-2's pattern (PCRE2, UTF+UCP, JIT): a piece.
**     4. BPE each piece's bytes: find the lowest-ranked adjacent pair, merge
**        every occurrence of it left to right in one pass, repeat; exactly
**        the rounds of OpenAI's encoder.py `bpe` (not a longest match, and not
**        one occurrence at a time: with an arbitrary merges file the two can
**        differ). Short pieces use a flat rank array; long pieces a heap.
**   Decode (tok_decode). Concatenate the tokens' bytes and replace each
**   maximal invalid UTF-8 subpart with U+FFFD (Python's errors="replace").
**
** Decisions on malformed input (each is an error naming file and key/line):
**   vocab.json: not an object; no tokens; duplicate key; an id that is not an
**   integer in [0, 10,000,000]; two keys with one id; an empty key; a key
**   with a character outside the 256 mapped characters (its bytes would be
**   undefined). Gaps in the ids are allowed (such ids are "unused").
**   merges.txt: a line that is not "left right" (one space); a part or the
**   merged token missing from the vocabulary; a blank line followed by more
**   merges. A repeated pair takes its last rank (as encoder.py's dict does).
**   Both files may use \r\n line ends. Files over 64 MiB are refused.
*/
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <pcre2.h>
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
#define RANK_NONE INT32_MAX   /* pair has no merge */
#define RANK_PENDING (-2)     /* bpe_flat: rank not computed yet */
#define UNIT_DEAD INT32_MIN   /* bpe_heap: unit merged into its left neighbour */
#define FLAT_MAX 128          /* pieces up to this many bytes use bpe_flat */
#define PAIR_EMPTY UINT64_MAX /* ids are < 2^31, so no real key has all bits set */

/* GPT-2's pattern with \s spelled as Unicode White_Space (Python regex's \s;
** PCRE2's UCP \s would add U+180E — gpt2-facts.md, "Tokenizer"). */
#define WS "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS
    "])|[" WS "]+";

/* ------------------------------------------------------------------------
** The tokenizer
*/

typedef struct Special {
  const char *text; /* literal bytes (points into arena) */
  size_t len;
  int id;
} Special;

struct Tokenizer {
  int vocab_size;           /* max id + 1 */
  char *arena;              /* every token's raw bytes, back to back */
  uint32_t *off;            /* (vocab_size) token bytes start in arena */
  uint32_t *len;            /* (vocab_size) token byte length; 0 = id unused */
  uint8_t *self;            /* (vocab_size) 1 when BPE(bytes(id)) == [id] */
  int32_t *slot_id;         /* (slot_mask+1) bytes hash: id, or -1 if empty */
  uint32_t *slot_hash;      /* (slot_mask+1) hash of that token's bytes */
  uint32_t slot_mask;
  int32_t byte_id[256];     /* single-byte token per byte, -1 if none */
  uint64_t *pair_key;       /* (pair_mask+1) merges hash: a<<32|b or PAIR_EMPTY */
  int32_t *pair_rank;       /* (pair_mask+1) rank of that pair */
  uint32_t pair_mask;
  int pair_shift;           /* 64 - log2(pair_mask+1) */
  int32_t *merge_a;         /* (n_merges) left part by rank */
  int32_t *merge_b;         /* (n_merges) right part by rank */
  int32_t *merge_to;        /* (n_merges) merged token by rank */
  int n_merges;
  Special special[MAX_SPECIAL]; /* literals split out before the pattern */
  int n_special;
  int unk_id;               /* unknown token for bytes without one, or -1 */
  pcre2_code *re;           /* the pattern, JIT-compiled when possible */
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
  if (b <= 0x20) return 0x100 + b;               /* n = 0..32 */
  if (b >= 0x7F && b <= 0xA0) return 0x100 + 33 + (b - 0x7F); /* n = 33..66 */
  return 0x100 + 67;                             /* 0xAD */
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
  if (b >= 0xC2 && b <= 0xDF) need = 1, c = b & 0x1F;
  else if (b >= 0xE0 && b <= 0xEF) {
    need = 2, c = b & 0x0F;
    if (b == 0xE0) lo = 0xA0;      /* no overlongs */
    else if (b == 0xED) hi = 0x9F; /* no surrogates */
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3, c = b & 0x07;
    if (b == 0xF0) lo = 0x90;      /* no overlongs */
    else if (b == 0xF4) hi = 0x8F; /* nothing above U+10FFFF */
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
    if (buf_append(out, "\xEF\xBF\xBD", 3)) return GPT2_NOMEM; /* U+FFFD per maximal subpart */
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
** Hash tables: raw bytes -> id, and (id, id) -> rank
*/

static uint32_t hash_bytes(const unsigned char *p, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a, then a final mix for the low bits */
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
  h ^= h >> 16;
  h *= 0x85EBCA6Bu;
  h ^= h >> 13;
  return h;
}

static int find_bytes(const Tokenizer *t, const void *p, size_t n) {
  uint32_t h = hash_bytes(p, n);
  for (uint32_t i = h & t->slot_mask;; i = (i + 1) & t->slot_mask) {
    int32_t id = t->slot_id[i];
    if (id < 0) return -1;
    if (t->slot_hash[i] == h && t->len[id] == n && memcmp(t->arena + t->off[id], p, n) == 0)
      return id;
  }
}

/* Insert id (its bytes already in the arena); the caller checked absence. */
static void insert_bytes(Tokenizer *t, int id) {
  uint32_t h = hash_bytes((const unsigned char *)t->arena + t->off[id], t->len[id]);
  uint32_t i = h & t->slot_mask;
  while (t->slot_id[i] >= 0) i = (i + 1) & t->slot_mask;
  t->slot_id[i] = id;
  t->slot_hash[i] = h;
}

static inline uint32_t pair_slot(const Tokenizer *t, uint64_t key) {
  return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> t->pair_shift) & t->pair_mask;
}

static inline int32_t pair_rank(const Tokenizer *t, int32_t a, int32_t b) {
  if ((a | b) < 0) return RANK_NONE; /* a byte without a token never merges */
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  for (uint32_t i = pair_slot(t, key);; i = (i + 1) & t->pair_mask) {
    uint64_t k = t->pair_key[i];
    if (k == key) return t->pair_rank[i];
    if (k == PAIR_EMPTY) return RANK_NONE;
  }
}

/* Insert or (for a repeated pair: the last line wins) update. */
static void pair_set(Tokenizer *t, int32_t a, int32_t b, int32_t rank) {
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  uint32_t i = pair_slot(t, key);
  while (t->pair_key[i] != PAIR_EMPTY && t->pair_key[i] != key) i = (i + 1) & t->pair_mask;
  t->pair_key[i] = key;
  t->pair_rank[i] = rank;
}

/* ------------------------------------------------------------------------
** BPE on one piece
*/

/* Scratch for one tok_encode call (or one tok_load): never shared. */
typedef struct Work {
  int32_t *id;    /* (cap) units: token ids; -1-b for a byte b without a token */
  int32_t *r;     /* (cap) bpe_flat: rank of pair (i, i+1) */
  int32_t *nx;    /* (cap) bpe_heap: next live unit, -1 at the end */
  int32_t *pv;    /* (cap) bpe_heap: previous live unit, -1 at the start */
  uint64_t *heap; /* (3*cap) bpe_heap: rank<<32 | unit, min-heap */
  int32_t *batch; /* (3*cap) bpe_heap: units of the round's pair */
  size_t cap;
  int32_t fid[FLAT_MAX]; /* units and ranks of a short piece (no allocation) */
  int32_t fr[FLAT_MAX];
} Work;

static void work_free(Work *w) {
  free(w->id);
  free(w->r);
  free(w->nx);
  free(w->pv);
  free(w->heap);
  free(w->batch);
  memset(w, 0, sizeof *w);
}

static int work_reserve(Work *w, size_t n) {
  if (n <= w->cap) return GPT2_OK;
  size_t cap = w->cap ? w->cap : 256;
  while (cap < n) cap *= 2;
  if (cap > SIZE_MAX / (3 * sizeof(uint64_t))) return GPT2_NOMEM;
  work_free(w);
  w->id = malloc(cap * sizeof *w->id);
  w->r = malloc(cap * sizeof *w->r);
  w->nx = malloc(cap * sizeof *w->nx);
  w->pv = malloc(cap * sizeof *w->pv);
  w->heap = malloc(3 * cap * sizeof *w->heap);
  w->batch = malloc(3 * cap * sizeof *w->batch);
  if (!w->id || !w->r || !w->nx || !w->pv || !w->heap || !w->batch) {
    work_free(w);
    return GPT2_NOMEM;
  }
  w->cap = cap;
  return GPT2_OK;
}

/* One round = the lowest-ranked pair present, merged at every occurrence,
** left to right, without overlaps (encoder.py's inner loop). Ranks belong to
** exactly one pair, so "r[i] == best" identifies an occurrence. O(m) per
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

/* Same rounds as bpe_flat in O(m log m), for long pieces: a heap of
** (rank, unit) for every adjacent pair as it forms. A round pops every entry
** of the lowest rank (they come out left to right), then merges those still
** valid. Pairs formed during a round never have the round's rank (a merged
** token is longer than either part), and wait for later rounds, as in
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

/* BPE the bytes p[0..n) (n >= 1). *ids gets the units (in w), *m their count. */
static int bpe(const Tokenizer *t, Work *w, const unsigned char *p, size_t n, int32_t **ids,
               size_t *m) {
  int32_t *id = w->fid;
  if (n > FLAT_MAX) {
    if (work_reserve(w, n)) return GPT2_NOMEM;
    id = w->id;
  }
  for (size_t i = 0; i < n; i++) {
    int32_t b = t->byte_id[p[i]];
    id[i] = b >= 0 ? b : -1 - (int32_t)p[i];
  }
  *m = n <= FLAT_MAX ? bpe_flat(t, id, w->fr, n) : bpe_heap(t, w, n);
  *ids = id;
  return GPT2_OK;
}

/* ------------------------------------------------------------------------
** Encoding
*/

typedef struct EncCtx {
  const Tokenizer *t;
  Work w;
  pcre2_match_data *md;
  IdVec *out;
  char *err;
  size_t errlen;
} EncCtx;

static int emit_piece(EncCtx *c, const unsigned char *p, size_t n) {
  const Tokenizer *t = c->t;
  if (n == 1 && t->byte_id[*p] >= 0) return idvec_push(c->out, t->byte_id[*p]);
  if (n > 1) {
    int id = find_bytes(t, p, n);
    if (id >= 0 && t->self[id]) return idvec_push(c->out, id); /* fast path */
  }
  size_t m;
  int32_t *ids;
  if (bpe(t, &c->w, p, n, &ids, &m)) return GPT2_NOMEM;
  for (size_t k = 0; k < m; k++) {
    int32_t id = ids[k];
    if (id < 0) {
      if (t->unk_id < 0)
        return gpt2_errorf(c->err, c->errlen,
                           "no token for byte 0x%02X and no unknown token declared",
                           (unsigned)(-1 - id));
      id = t->unk_id;
    }
    if (idvec_push(c->out, id)) return GPT2_NOMEM;
  }
  return GPT2_OK;
}

/* Pieces of a valid UTF-8 run, as findall would give them. */
static int encode_run(EncCtx *c, const unsigned char *s, size_t n) {
  size_t off = 0;
  while (off < n) {
    int rc = pcre2_match(c->t->re, s, n, off, PCRE2_NO_UTF_CHECK, c->md, NULL);
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
  EncCtx c = {t, {0}, NULL, out, err, errlen};
  size_t n0 = out->n;
  c.md = pcre2_match_data_create_from_pattern(t->re, NULL);
  if (!c.md) return GPT2_NOMEM;
  size_t next[MAX_SPECIAL]; /* next occurrence of each special at or after pos */
  for (int i = 0; i < t->n_special; i++) next[i] = find_special(&t->special[i], text, n, 0);
  size_t pos = 0;
  int rc = GPT2_OK;
  while (!rc && pos <= n) {
    size_t at = n;
    int which = -1;
    for (int i = 0; i < t->n_special; i++) {
      if (next[i] < pos) next[i] = find_special(&t->special[i], text, n, pos);
      if (next[i] < at || (next[i] == at && which >= 0 && t->special[i].len > t->special[which].len)) {
        at = next[i];
        which = next[i] < n ? i : -1;
      }
    }
    rc = encode_segment(&c, (const unsigned char *)text + pos, at - pos);
    if (rc || which < 0) break;
    rc = idvec_push(out, t->special[which].id);
    pos = at + t->special[which].len;
  }
  pcre2_match_data_free(c.md);
  work_free(&c.w);
  if (rc) out->n = n0;
  return rc;
}

/* ------------------------------------------------------------------------
** Lookup and decoding
*/

int tok_vocab_size(const Tokenizer *t) { return t->vocab_size; }

const char *tok_bytes(const Tokenizer *t, int id, size_t *len) {
  if (id < 0 || id >= t->vocab_size || !t->len[id]) {
    *len = 0;
    return NULL;
  }
  *len = t->len[id];
  return t->arena + t->off[id];
}

/* Mapped spelling -> raw bytes (out has room for n bytes). Returns 0, or the
** first character outside the mapping (-1 for invalid UTF-8). */
static long unmap(const char *s, size_t n, unsigned char *out, size_t *outn) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0, k = 0;
  while (i < n) {
    uint32_t cp;
    size_t sub;
    int cut;
    size_t len = utf8_char(u + i, n - i, &cp, &sub, &cut);
    if (!len) return -1;
    int b = cp_to_byte(cp);
    if (b < 0) return (long)cp;
    out[k++] = (unsigned char)b;
    i += len;
  }
  *outn = k;
  return 0;
}

int tok_find(const Tokenizer *t, const char *mapped, size_t n) {
  if (!n) return -1;
  unsigned char small[256];
  unsigned char *buf = n <= sizeof small ? small : malloc(n);
  if (!buf) return -1;
  size_t k;
  int id = unmap(mapped, n, buf, &k) == 0 ? find_bytes(t, buf, k) : -1;
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
    if (!t->len[id]) {
      buf_free(&raw);
      return gpt2_errorf(err, errlen, "id %d is not used by the vocabulary (size %d)", id,
                         t->vocab_size);
    }
    if (buf_append(&raw, t->arena + t->off[id], t->len[id])) {
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
** Loading
*/

void tok_free(Tokenizer *t) {
  if (!t) return;
  free(t->arena);
  free(t->off);
  free(t->len);
  free(t->self);
  free(t->slot_id);
  free(t->slot_hash);
  free(t->pair_key);
  free(t->pair_rank);
  free(t->merge_a);
  free(t->merge_b);
  free(t->merge_to);
  if (t->re) pcre2_code_free(t->re);
  free(t);
}

/* Bytes of a string that fit in max, cut at a character boundary (for
** quoting keys and lines in messages). */
static int clip(const char *s, size_t n, size_t max) {
  if (n <= max) return (int)n;
  while (max && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
  return (int)max;
}

/* Token bytes back in mapped spelling, for messages. */
static void map_for_message(const Tokenizer *t, int id, char *buf, size_t cap) {
  size_t k = 0;
  for (uint32_t i = 0; i < t->len[id] && k + 3 < cap; i++) {
    uint32_t cp = byte_to_cp((unsigned char)t->arena[t->off[id] + i]);
    if (cp < 0x80) buf[k++] = (char)cp;
    else {
      buf[k++] = (char)(0xC0 | cp >> 6);
      buf[k++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  buf[k] = 0;
}

static size_t pow2_at_least(size_t n) {
  size_t p = 16;
  while (p < n) p *= 2;
  return p;
}

/* Parse a JSON file; names the file, and the key of a duplicate. */
static int load_json(const char *path, size_t max, json_t **out, char *err, size_t errlen) {
  char *text;
  size_t n;
  int rc = gpt2_read_file(path, &text, &n, max, err, errlen);
  if (rc) return rc;
  json_error_t je;
  *out = json_loadb(text, n, JSON_REJECT_DUPLICATES, &je);
  if (*out) {
    free(text);
    return GPT2_OK;
  }
  rc = gpt2_errorf(err, errlen, "%s: invalid JSON at line %d column %d: %s", path, je.line,
                   je.column, je.text);
  /* Jansson reports the offset just past the repeated key: find its opening
  ** quote (the first unescaped '"' before it) and decode it with Jansson. */
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

static int load_vocab(Tokenizer *t, const char *path, char *err, size_t errlen) {
  json_t *root;
  int rc = load_json(path, MAX_FILE, &root, err, errlen);
  if (rc) return rc;
  const char *key;
  json_t *val;
  size_t count = json_is_object(root) ? json_object_size(root) : 0;
  if (!json_is_object(root)) {
    rc = gpt2_errorf(err, errlen, "%s: expected a JSON object mapping tokens to ids", path);
    goto done;
  }
  if (!count) {
    rc = gpt2_errorf(err, errlen, "%s: the vocabulary is empty", path);
    goto done;
  }
  /* Pass 1: ids and sizes. */
  json_int_t max_id = -1;
  size_t total = 0;
  json_object_foreach(root, key, val) {
    size_t kn = strlen(key);
    if (!json_is_integer(val) || json_integer_value(val) < 0 ||
        json_integer_value(val) > MAX_ID) {
      rc = gpt2_errorf(err, errlen,
                       "%s: key \"%.*s\": id must be an integer from 0 to %d", path,
                       clip(key, kn, 200), key, MAX_ID);
      goto done;
    }
    if (!kn) {
      rc = gpt2_errorf(err, errlen, "%s: empty key (id %lld)", path,
                       (long long)json_integer_value(val));
      goto done;
    }
    if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
    total += kn;
  }
  t->vocab_size = (int)max_id + 1;
  size_t vs = (size_t)t->vocab_size, slots = pow2_at_least(count * 2);
  t->arena = malloc(total + 1);
  t->off = calloc(vs, sizeof *t->off);
  t->len = calloc(vs, sizeof *t->len);
  t->self = calloc(vs, 1);
  t->slot_id = malloc(slots * sizeof *t->slot_id);
  t->slot_hash = malloc(slots * sizeof *t->slot_hash);
  if (!t->arena || !t->off || !t->len || !t->self || !t->slot_id || !t->slot_hash) {
    rc = GPT2_NOMEM;
    goto done;
  }
  memset(t->slot_id, 0xFF, slots * sizeof *t->slot_id);
  t->slot_mask = (uint32_t)(slots - 1);
  /* Pass 2: raw bytes into the arena, then the hash. */
  size_t used = 0;
  json_object_foreach(root, key, val) {
    size_t kn = strlen(key), bn;
    int id = (int)json_integer_value(val);
    long bad = unmap(key, kn, (unsigned char *)t->arena + used, &bn);
    if (bad) {
      rc = gpt2_errorf(err, errlen,
                       "%s: key \"%.*s\" contains U+%04lX, which is not one of GPT-2's 256 "
                       "byte characters",
                       path, clip(key, kn, 200), key, (unsigned long)bad);
      goto done;
    }
    if (t->len[id]) {
      char prev[256];
      map_for_message(t, id, prev, sizeof prev);
      rc = gpt2_errorf(err, errlen, "%s: keys \"%s\" and \"%.*s\" both have id %d", path, prev,
                       clip(key, kn, 200), key, id);
      goto done;
    }
    t->off[id] = (uint32_t)used;
    t->len[id] = (uint32_t)bn;
    used += bn;
    insert_bytes(t, id); /* keys are distinct strings, so distinct bytes */
  }
  for (int b = 0; b < 256; b++) {
    unsigned char c = (unsigned char)b;
    t->byte_id[b] = find_bytes(t, &c, 1);
  }
done:
  json_decref(root);
  return rc;
}

/* Fill a token's raw bytes for a mapped part of a merges line. */
static int merge_part(const Tokenizer *t, const char *path, size_t line, const char *s,
                      size_t n, unsigned char *buf, size_t *bn, int *id, char *err,
                      size_t errlen) {
  long bad = unmap(s, n, buf, bn);
  *id = bad ? -1 : find_bytes(t, buf, *bn);
  if (bad == -1)
    return gpt2_errorf(err, errlen, "%s line %zu: not valid UTF-8", path, line);
  if (*id < 0)
    return gpt2_errorf(err, errlen, "%s line %zu: \"%.*s\" is not in the vocabulary", path,
                       line, clip(s, n, 200), s);
  return GPT2_OK;
}

static int load_merges(Tokenizer *t, const char *path, char *err, size_t errlen) {
  char *text;
  size_t n;
  int rc = gpt2_read_file(path, &text, &n, MAX_FILE, err, errlen);
  if (rc) return rc;
  size_t lines = 1;
  for (size_t i = 0; i < n; i++) lines += text[i] == '\n';
  size_t slots = pow2_at_least(lines * 2);
  unsigned char *buf = malloc(n + 1);
  t->pair_key = malloc(slots * sizeof *t->pair_key);
  t->pair_rank = malloc(slots * sizeof *t->pair_rank);
  t->merge_a = malloc(lines * sizeof *t->merge_a);
  t->merge_b = malloc(lines * sizeof *t->merge_b);
  t->merge_to = malloc(lines * sizeof *t->merge_to);
  if (!buf || !t->pair_key || !t->pair_rank || !t->merge_a || !t->merge_b || !t->merge_to) {
    rc = GPT2_NOMEM;
    goto done;
  }
  memset(t->pair_key, 0xFF, slots * sizeof *t->pair_key);
  t->pair_mask = (uint32_t)(slots - 1);
  t->pair_shift = 64;
  for (size_t s = slots; s > 1; s >>= 1) t->pair_shift--;
  size_t blank = 0; /* first blank line seen, if any */
  size_t line = 0;
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
      rc = gpt2_errorf(err, errlen, "%s line %zu: blank line before more merges", path, blank);
      goto done;
    }
    if (len >= 8 && memcmp(s, "#version", 8) == 0) continue;
    const char *sp = memchr(s, ' ', len);
    if (!sp || sp == s || sp + 1 == s + len || memchr(sp + 1, ' ', len - (size_t)(sp + 1 - s))) {
      rc = gpt2_errorf(err, errlen,
                       "%s line %zu: expected two tokens separated by one space, got \"%.*s\"",
                       path, line, clip(s, len, 200), s);
      goto done;
    }
    size_t an = (size_t)(sp - s), bn;
    size_t ab, bb;
    int a, b;
    rc = merge_part(t, path, line, s, an, buf, &ab, &a, err, errlen);
    if (!rc) rc = merge_part(t, path, line, sp + 1, len - an - 1, buf + ab, &bb, &b, err, errlen);
    if (rc) goto done;
    bn = ab + bb;
    int to = find_bytes(t, buf, bn);
    if (to < 0) {
      rc = gpt2_errorf(err, errlen,
                       "%s line %zu: the merged token \"%.*s%.*s\" is not in the vocabulary",
                       path, line, clip(s, an, 200), s, clip(sp + 1, len - an - 1, 200), sp + 1);
      goto done;
    }
    int32_t rank = t->n_merges++;
    t->merge_a[rank] = a;
    t->merge_b[rank] = b;
    t->merge_to[rank] = to;
    pair_set(t, a, b, rank);
  }
done:
  free(buf);
  free(text);
  return rc;
}

/* Flag each token whose own bytes BPE back to it (the whole-piece fast path). */
static int compute_self(Tokenizer *t) {
  Work w = {0};
  for (int id = 0; id < t->vocab_size; id++) {
    if (!t->len[id]) continue;
    size_t m;
    int32_t *ids;
    if (bpe(t, &w, (const unsigned char *)t->arena + t->off[id], t->len[id], &ids, &m)) {
      work_free(&w);
      return GPT2_NOMEM;
    }
    t->self[id] = m == 1 && ids[0] == id;
  }
  work_free(&w);
  return GPT2_OK;
}

/* A declared special token: a string, an object with "content", or null.
** Returns GPT2_OK with *s NULL when absent. */
static int config_token(json_t *root, const char *path, const char *key, const char **s,
                        char *err, size_t errlen) {
  *s = NULL;
  json_t *v = root ? json_object_get(root, key) : NULL;
  if (!v || json_is_null(v)) return GPT2_OK;
  if (json_is_object(v)) v = json_object_get(v, "content");
  if (!json_is_string(v))
    return gpt2_errorf(err, errlen,
                       "%s: \"%s\" must be a string or an object with a \"content\" string",
                       path, key);
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
  int rc = load_json(*pathp, MAX_CONFIG, root, err, errlen);
  if (!rc && !json_is_object(*root))
    rc = gpt2_errorf(err, errlen, "%s: expected a JSON object", *pathp);
  return rc;
}

static void add_special(Tokenizer *t, const char *s) {
  if (!s || !*s || t->n_special == MAX_SPECIAL) return;
  int id = find_bytes(t, s, strlen(s));
  if (id < 0) return; /* declared but not in the vocabulary: plain text */
  for (int i = 0; i < t->n_special; i++)
    if (t->special[i].id == id) return;
  /* Literal = the token's bytes (for "<|endoftext|>": itself, ASCII). */
  t->special[t->n_special++] = (Special){t->arena + t->off[id], t->len[id], id};
}

/* Special tokens and the unknown token. special_tokens_map.json overrides
** tokenizer_config.json, as in Hugging Face's from_pretrained. */
static int load_specials(Tokenizer *t, const char *dir, char *err, size_t errlen) {
  static const char *const names[] = {"special_tokens_map.json", "tokenizer_config.json"};
  static const char *const keys[] = {"unk_token", "eos_token", "bos_token"};
  json_t *roots[2] = {NULL, NULL};
  char *paths[2] = {NULL, NULL};
  int rc = GPT2_OK;
  for (int f = 0; f < 2 && !rc; f++) rc = load_config(dir, names[f], &roots[f], &paths[f], err, errlen);
  t->unk_id = -1;
  add_special(t, "<|endoftext|>"); /* gpt2-facts.md, "Tokenizer" */
  for (int k = 0; k < 3 && !rc; k++) {
    const char *s = NULL;
    for (int f = 0; f < 2 && !rc && !s; f++) rc = config_token(roots[f], paths[f], keys[k], &s, err, errlen);
    if (rc) break;
    add_special(t, s);
    if (k == 0 && s && *s) t->unk_id = find_bytes(t, s, strlen(s));
  }
  for (int f = 0; f < 2; f++) {
    json_decref(roots[f]);
    free(paths[f]);
  }
  return rc;
}

static int compile_pattern(Tokenizer *t, char *err, size_t errlen) {
  int ec;
  PCRE2_SIZE eo;
  t->re = pcre2_compile((PCRE2_SPTR)PATTERN, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec,
                        &eo, NULL);
  if (!t->re) {
    PCRE2_UCHAR msg[120];
    pcre2_get_error_message(ec, msg, sizeof msg);
    return gpt2_errorf(err, errlen, "cannot compile the pre-tokenizer pattern: %s", (char *)msg);
  }
  pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* no JIT: the interpreter still works */
  return GPT2_OK;
}

int tok_load(const char *dir, Tokenizer **out, char *err, size_t errlen) {
  *out = NULL;
  Tokenizer *t = calloc(1, sizeof *t);
  char *vpath = gpt2_path_join(dir, "vocab.json");
  char *mpath = gpt2_path_join(dir, "merges.txt");
  int rc = !t || !vpath || !mpath ? GPT2_NOMEM : GPT2_OK;
  if (!rc) rc = load_vocab(t, vpath, err, errlen);
  if (!rc) rc = load_merges(t, mpath, err, errlen);
  if (!rc) rc = load_specials(t, dir, err, errlen);
  if (!rc) rc = compute_self(t);
  if (!rc) rc = compile_pattern(t, err, errlen);
  free(vpath);
  free(mpath);
  if (rc) {
    tok_free(t);
    return rc;
  }
  *out = t;
  return GPT2_OK;
}
