/*
** tok_private.h — what the tokenizer's own files (tok_*.c) share: the
** Tokenizer struct, its limits, the hash-table lookups on the encoding hot
** path (inline here), and the functions one tok_*.c file provides another.
** Not for use outside the tokenizer; the public interface is tokenizer.h.
**
** Two id spaces. Vocabulary ids are vocab.json's. BPE runs on "units": unit
** 0..255 is the single byte b, every other token named in merges.txt gets the
** next unit number, then every remaining vocabulary token. One hash maps raw
** bytes to a unit; vid[] maps a unit to its vocabulary id. Keeping BPE in its
** own space lets merges.txt be loaded on a helper thread while vocab.json is
** parsed (tok_load.c).
*/
#ifndef GPT2_TOK_PRIVATE_H
#define GPT2_TOK_PRIVATE_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <jansson.h>
#include <pcre2.h>
#include <stdatomic.h>
#include <string.h>

#include "tokenizer.h"

#define MAX_FILE ((size_t)64 << 20)  /* vocab.json, merges.txt */
#define MAX_CONFIG ((size_t)4 << 20) /* tokenizer_config.json, special_tokens_map.json */
#define MAX_ID 10000000              /* largest id vocab.json may use */
#define MAX_SPECIAL 8
#define RANK_NONE INT32_MAX   /* the pair has no merge */
#define PAIR_EMPTY UINT64_MAX /* units are < 2^31, so no real key has all bits set */
#define LOOKAHEAD 8           /* loaders: keys hashed (slots fetched) ahead of use */

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

/* Tokenizer.self values: does BPE(bytes(u)) give [u]? */
enum { SELF_UNKNOWN = 0, SELF_YES = 1, SELF_NO = 2 };

/* ------------------------------------------------------------------------
** Hash tables: raw bytes -> id, and (unit, unit) -> rank. The lookups are
** here (inline: the encoder calls them per piece); building, in tok_tables.c.
*/

static inline uint32_t hash_bytes(const void *p, size_t n) {
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

static inline uint64_t head8(const void *p, size_t n) {
  uint64_t h = 0;
  memcpy(&h, p, n < 8 ? n : 8);
  return h;
}

/* Id of the bytes p[0..n) (hashing to hash), or -1. arena/span hold the
** keys' bytes. */
static inline int32_t tab_find_h(const StrTab *tb, const char *arena, const Span *span,
                                 const void *p, size_t n, uint32_t hash) {
  uint64_t head = head8(p, n);
  for (uint32_t i = hash & tb->mask;; i = (i + 1) & tb->mask) {
    const Slot *s = &tb->slot[i];
    if (s->id < 0) return -1;
    if (s->len == n && s->head == head &&
        (n <= 8 || memcmp(arena + span[s->id].off + 8, (const char *)p + 8, n - 8) == 0))
      return s->id;
  }
}

/* Hash of the bytes p[0..n), and start fetching their slot: the tables are
** bigger than the caches, so the loaders pipeline their lookups by hashing a
** few keys ahead. */
static inline uint32_t tab_prefetch(const StrTab *tb, const void *p, size_t n) {
  uint32_t h = hash_bytes(p, n);
#if defined(__GNUC__)
  __builtin_prefetch(&tb->slot[h & tb->mask]);
#else
  (void)tb;
#endif
  return h;
}

static inline uint32_t pair_home(const Tokenizer *t, int32_t a, int32_t b) {
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> t->pair_shift);
}

/* Rank of the merge (a, b), or RANK_NONE. */
static inline int32_t pair_rank(const Tokenizer *t, int32_t a, int32_t b) {
  if ((a | b) < 256) return t->brank[a << 8 | b];
  uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
  for (uint32_t i = pair_home(t, a, b);; i = (i + 1) & t->pair_mask) {
    const PairSlot *s = &t->pair[i];
    if (s->key == key) return s->rank;
    if (s->key == PAIR_EMPTY) return RANK_NONE;
  }
}

/* Empty table with room for want keys at load <= 1/2. */
int tk_tab_init(StrTab *tb, size_t want);
/* Add a key known to be absent, hashing to hash (the caller keeps the load
** <= 1/2). */
void tk_tab_put_h(StrTab *tb, const void *p, size_t n, int32_t id, uint32_t hash);
/* Unit of the bytes p[0..n) (hashing to hash), added when new; -1 on OOM. */
int32_t tk_unit_intern(Tokenizer *t, const void *p, size_t n, uint32_t hash);
/* Set the rank of a unit pair; a repeated pair takes the last rank set. */
void tk_pair_set(Tokenizer *t, int32_t a, int32_t b, int32_t rank);
/* Vocabulary id of the raw bytes p[0..n), or -1. */
int32_t tk_find_raw(const Tokenizer *t, const void *p, size_t n);

/* ------------------------------------------------------------------------
** GPT-2's byte <-> printable character mapping and message helpers
** (tok_bytemap.c)
*/

/* tk_unmap's results */
enum { UNMAP_CHAR = 1, UNMAP_UTF8 = 2 };

/* Mapped spelling -> raw bytes (out has room for n bytes, *outn gets the
** count). Returns 0; or UNMAP_CHAR with *bad the first character outside the
** mapping; or UNMAP_UTF8 for invalid UTF-8. */
int tk_unmap(const char *s, size_t n, unsigned char *out, size_t *outn, uint32_t *bad);
/* Raw bytes back in mapped spelling, for messages (NUL-terminated, cut). */
const char *tk_mapped(const char *p, size_t n, char *buf, size_t cap);
/* Bytes of s[0..n) that fit in max, cut at a character boundary (for
** quoting keys and lines in messages). */
int tk_clip(const char *s, size_t n, size_t max);

/* ------------------------------------------------------------------------
** BPE on one piece (tok_bpe.c)
*/

#define FLAT_MAX 128 /* pieces up to this many bytes use the flat rounds */

/* Scratch for one tok_encode call: never shared. */
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

/* BPE the bytes p[0..n) (n >= 1) in the rounds of OpenAI's encoder.py:
** *units points at the result (in w), *m is its length. GPT2_NOMEM only. */
int tk_bpe(const Tokenizer *t, Work *w, const unsigned char *p, size_t n, int32_t **units,
           size_t *m);
void tk_work_free(Work *w);

/* ------------------------------------------------------------------------
** The loaders (tok_vocab.c, tok_merges.c, tok_special.c) and BPE
*/

/* vocab.json -> vocab_size, vbytes, vspan (tok_vocab.c). */
int tk_load_vocab(Tokenizer *t, const char *path, char *err, size_t errlen);

/* Parse the JSON file path (its text[0..n)) with gpt2_json_parse (verify as
** there), duplicate keys refused (tok_vocab.c): GPT2_OK with *out;
** GPT2_NOMEM when memory ran out; else GPT2_ERROR with "path: invalid JSON
** at line L column C: ..." or, for a repeated key, "path: duplicate key "k"
** (line L)". */
int tk_json_parse(const char *path, const char *text, size_t n, int verify, json_t **out,
                  char *err, size_t errlen);

/* merges.txt -> units, ranks, merge_*; then the pattern. Runs on tok_load's
** helper thread and touches only those fields. A malformed line stops the
** parse (stop_line, err) but is reported only after the earlier lines were
** checked against the vocabulary, so the first bad line is the one named. */
typedef struct MergeJob {
  Tokenizer *t;
  const char *path;
  int rc;                /* GPT2_NOMEM, or GPT2_ERROR with a message */
  int stop_line;         /* the line that stopped parsing (0: none) */
  char err[GPT2_ERRLEN]; /* its message */
} MergeJob;
void *tk_merge_job(void *job);

/* Compile the pre-tokenizer pattern into t->re (tok_encode.c). */
int tk_compile_pattern(Tokenizer *t, char *err, size_t errlen);

/* Special tokens and the unknown token from the configs (tok_special.c). */
int tk_load_specials(Tokenizer *t, const char *dir, char *err, size_t errlen);

#endif
