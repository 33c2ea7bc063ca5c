/*
** fuzz_tok_common.h — tokenizer invariants shared by the tokenizer targets.
**
** roundtrip(): encode, then decode, must give back the input with only its
** invalid UTF-8 replaced (byte-level BPE loses nothing; the special token's
** literal decodes to itself). stream(): decoding ids one at a time with the
** hold-back rule of gen_take_text (generate.c) must concatenate to the
** whole decode — what gpt2_stream promises about its `token` column.
*/
#ifndef GPT2_FUZZ_TOK_COMMON_H
#define GPT2_FUZZ_TOK_COMMON_H

#include "fuzz_common.h"
#include "tokenizer.h"

/* Encode text; when must_succeed, an error (other than OOM) is a finding.
** On success the decoded ids must equal the sanitized text. */
static inline void fz_roundtrip(const Tokenizer *t, const char *text, size_t n, int must_succeed,
                         const char *what) {
  IdVec ids = {0};
  char err[GPT2_ERRLEN];
  err[0] = 0;
  int rc = tok_encode(t, text, n, &ids, err, sizeof err);
  if (rc == GPT2_NOMEM) goto out;
  if (rc) {
    FZ_CHECK(!must_succeed, "%s: encode failed: %s", what, err);
    FZ_CHECK(rc == GPT2_ERROR && err[0], "%s: rc %d without a message", what, rc);
    FZ_CHECK(ids.n == 0, "%s: failed encode left %zu ids", what, ids.n);
    goto out;
  }
  int V = tok_vocab_size(t);
  for (size_t i = 0; i < ids.n; i++)
    FZ_CHECK(ids.v[i] >= 0 && ids.v[i] < V, "%s: id %d outside [0, %d)", what, ids.v[i], V);
  if (n) FZ_CHECK(ids.n > 0, "%s: %zu bytes encoded to no ids", what, n);
  FZ_CHECK(ids.n <= n, "%s: %zu ids for %zu bytes", what, ids.n, n);
  ByteBuf dec = {0}, want = {0};
  rc = tok_decode(t, ids.v, ids.n, &dec, err, sizeof err);
  if (rc == GPT2_OK && utf8_append_sanitized(&want, text, n) == GPT2_OK) {
    FZ_CHECK(dec.n == want.n && memcmp(dec.p, want.p, want.n) == 0,
             "%s: decode(encode(x)) != x (%zu vs %zu bytes)", what, dec.n, want.n);
  } else {
    FZ_CHECK(rc != GPT2_ERROR, "%s: decode of encoded ids failed: %s", what, err);
  }
  buf_free(&dec);
  buf_free(&want);
out:
  idvec_free(&ids);
}

/* Stream ids as gen_take_text does; compare with tok_decode. */
static inline void fz_stream(const Tokenizer *t, const int *ids, size_t n) {
  ByteBuf whole = {0}, out = {0}, pend = {0};
  char err[GPT2_ERRLEN];
  int V = tok_vocab_size(t), ok = 1;
  for (size_t i = 0; i < n; i++) {
    size_t len;
    if (ids[i] < 0 || ids[i] >= V || !tok_bytes(t, ids[i], &len)) ok = 0;
  }
  int rc = tok_decode(t, ids, n, &whole, err, sizeof err);
  if (rc == GPT2_NOMEM) goto out;
  FZ_CHECK((rc == GPT2_OK) == ok, "decode rc %d but ids %s", rc, ok ? "valid" : "invalid");
  if (rc) {
    FZ_CHECK(strstr(err, "id "), "message: %s", err);
    goto out;
  }
  FZ_CHECK(whole.p != NULL, "decode gave a NULL buffer");
  FZ_CHECK(fz_valid_utf8((const unsigned char *)whole.p, whole.n), "decode gave invalid UTF-8");
  FZ_CHECK(strlen(whole.p) <= whole.n, "not NUL-terminated");
  for (size_t i = 0; i <= n; i++) {
    if (i < n) {
      size_t len;
      const char *b = tok_bytes(t, ids[i], &len);
      if (buf_append(&pend, b, len)) goto out;
    }
    size_t keep = i == n ? pend.n : utf8_complete_prefix(pend.p, pend.n);
    FZ_CHECK(keep <= pend.n, "complete_prefix %zu > %zu", keep, pend.n);
    if (i < n) FZ_CHECK(pend.n - keep <= 3, "held back %zu bytes", pend.n - keep);
    if (!keep) continue;
    if (utf8_append_sanitized(&out, pend.p, keep)) goto out;
    memmove(pend.p, pend.p + keep, pend.n - keep);
    pend.n -= keep;
  }
  FZ_CHECK(out.n == whole.n && (!out.n || memcmp(out.p, whole.p, out.n) == 0),
           "streamed text (%zu bytes) != decoded text (%zu bytes)", out.n, whole.n);
out:
  buf_free(&whole);
  buf_free(&out);
  buf_free(&pend);
}

static inline Tokenizer *fz_load_tok(const char *dir) {
  Tokenizer *t = NULL;
  char err[GPT2_ERRLEN];
  if (tok_load(dir, &t, err, sizeof err) != GPT2_OK) {
    fprintf(stderr, "fuzz fixture %s does not load: %s\n", dir, err);
    exit(2);
  }
  return t;
}

/* tok_load of a directory holding a fuzzed file: the tokenizer, or NULL
** after checking that the failure is clean and its message names one of
** the tokenizer's files. The fuzzed files are small (run.sh's -max_len), so
** running out of memory is a finding too: the loader reports a JSON parse it
** cannot trust as out of memory (tok_vocab.c), and that must not happen
** without memory pressure. */
static inline Tokenizer *fz_try_tok(const char *dir) {
  Tokenizer *t = NULL;
  char err[GPT2_ERRLEN];
  err[0] = 0;
  int rc = tok_load(dir, &t, err, sizeof err);
  FZ_CHECK(rc != GPT2_NOMEM, "tok_load: out of memory on a small input");
  if (rc == GPT2_NOMEM) return NULL;
  if (rc) {
    FZ_CHECK(rc == GPT2_ERROR && !t, "rc %d", rc);
    FZ_CHECK(strstr(err, "vocab.json") || strstr(err, "merges.txt"), "message: %s", err);
    return NULL;
  }
  return t;
}

#endif
