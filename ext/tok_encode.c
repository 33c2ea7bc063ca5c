/*
** tok_encode.c — text -> ids (implements tok_encode), and the pre-tokenizer
** pattern:
**   1. split on special-token literals (leftmost, longest first), as Hugging
**      Face does for added tokens; each special gives its id;
**   2. split each segment into maximal valid UTF-8 runs; every byte that is
**      not part of a valid character is a piece of its own;
**   3. split each run with GPT-2's pattern (PCRE2, UTF+UCP, JIT): pieces;
**   4. BPE each piece's bytes (tok_bpe.c); a piece that is itself a token
**      whose bytes BPE back to it skips BPE (Tokenizer.self, filled in the
**      first time a piece meets the unit: exact for any vocabulary).
*/
#include <stdlib.h>

#include "tok_private.h"
#include "utf8.h"

/* GPT-2's pattern (docs/formats.md, "Tokenizer"),
**   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
** with \s spelled out as Unicode White_Space, [WS], and \S as [^WS]: that is
** Python regex's \s, while PCRE2's own \s (UCP) would add U+180E. */
#define WS   \
  "\\t-\\r " \
  "\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS
                              "\\p{L}\\p{N}]+|[" WS "]+(?![^" WS "])|[" WS "]+";

int tk_compile_pattern(Tokenizer *t, char *err, size_t errlen) {
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

/* Append the vocabulary id of unit u: only a byte can lack one. */
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
  if (tk_bpe(t, &c->w, p, n, &units, &m)) return GPT2_NOMEM;
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
  tk_work_free(&c.w);
  if (rc) out->n = n0;
  return rc;
}
