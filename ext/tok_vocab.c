/*
** tok_vocab.c — loading vocab.json: an object {token: id} with the keys in
** GPT-2's mapped spelling (tok_bytemap.c) -> each token's raw bytes.
*/
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>

#include "tok_private.h"
#include "utf8.h"

#define STR(x) #x
#define XSTR(x) STR(x)


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

int tk_load_vocab(Tokenizer *t, const char *path, char *err, size_t errlen) {
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
    int um = tk_unmap(key, kn, raw, &bn, &bad);
    size_t ok = um == UNMAP_UTF8 ? utf8_valid_prefix((const unsigned char *)key, kn) : kn;
    if (ok < kn) {
      rc = gpt2_errorf(err, errlen,
                       "%s: invalid JSON: key %zu (in file order), \"%.*s\" then byte 0x%02X, "
                       "is not valid UTF-8",
                       path, k + 1, tk_clip(key, ok, 200), key, (unsigned)(unsigned char)key[ok]);
      goto done;
    }
    /* A number is a double: only an integral one in range is an id (this
    ** also rejects NaN; valueint would saturate, so it is not used). */
    double d = cJSON_IsNumber(it) ? it->valuedouble : -1;
    if (!(d >= 0 && d <= MAX_ID && d == (double)(int32_t)d)) {
      rc = gpt2_errorf(err, errlen, "%s: key \"%.*s\": id must be an integer from 0 to %d", path,
                       tk_clip(key, kn, 200), key, MAX_ID);
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
                       path, tk_clip(key, kn, 200), key, (unsigned long)bad);
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
                       tk_mapped(t->vbytes + s->off, s->len, a, sizeof a),
                       tk_mapped(t->vbytes + spans[i].off, spans[i].len, b, sizeof b), ids[i]);
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
