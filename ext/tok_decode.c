/*
** tok_decode.c — ids -> text (implements tok_decode) and the lookups
** tok_vocab_size, tok_bytes, tok_find.
*/
#include <stdlib.h>

#include "tok_private.h"
#include "utf8.h"

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

int tok_find(const Tokenizer *t, const char *mapped, size_t n) {
  if (!n) return -1;
  unsigned char small[256];
  unsigned char *buf = n <= sizeof small ? small : malloc(n);
  if (!buf) return -1;
  size_t k;
  uint32_t bad;
  int id = tk_unmap(mapped, n, buf, &k, &bad) == 0 ? tk_find_raw(t, buf, k) : -1;
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
