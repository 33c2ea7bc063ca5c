/*
** tok_vocab.c — loading vocab.json: a JSON object {token: id} whose keys are
** in GPT-2's mapped spelling (tok_bytemap.c) -> each token's raw bytes
** (vbytes, vspan, vocab_size).
**
** Jansson parses the file and refuses what is not JSON: bad syntax, invalid
** UTF-8, a byte order mark, nesting deeper than 2048, \u0000 (JSON_ALLOW_NUL
** is not set; NUL bytes are refused before it parses), and duplicate keys (JSON_REJECT_DUPLICATES,
** keys compared after unescaping: "b" and "\u0062" are one key). Then each
** member, in file order: the id must be an integer in [0, MAX_ID] (1.0 and
** 2e0 are integers), the key non-empty and made of the 256 mapped
** characters; no two keys may share an id; gaps in the ids are allowed
** (such ids are "unused"). Each refusal names the file and the key or
** position.
*/
#include <stdlib.h>

#include "tok_private.h"

int tk_json_parse(const char *path, const char *text, size_t n, int verify, json_t **out,
                  char *err, size_t errlen) {
  json_error_t je1, *je = &je1;
  int rc = gpt2_json_parse(text, n, JSON_REJECT_DUPLICATES, verify, out, je);
  if (rc != GPT2_ERROR) return rc;
  if (je->column < 0)
    return gpt2_errorf(err, errlen, "%s: invalid JSON at line %d: %s", path, je->line, je->text);
  rc = gpt2_errorf(err, errlen, "%s: invalid JSON at line %d column %d: %s%s", path, je->line,
                   je->column,
                   json_error_code(je) == json_error_invalid_utf8 ? "not valid UTF-8: " : "",
                   je->text);
  /* Jansson reports the offset just past the repeated key: find its opening
  ** quote (the first unescaped '"' before it) and let Jansson decode it. */
  if (json_error_code(je) == json_error_duplicate_key && je->position >= 2 &&
      (size_t)je->position <= n && text[je->position - 1] == '"') {
    size_t q = (size_t)je->position - 1;
    while (q > 0) {
      q--;
      if (text[q] != '"') continue;
      size_t bs = 0;
      while (bs < q && text[q - 1 - bs] == '\\') bs++;
      if (bs % 2 == 0) break;
    }
    json_t *k = json_loadb(text + q, (size_t)je->position - q, JSON_DECODE_ANY, NULL);
    if (json_is_string(k)) {
      const char *ks = json_string_value(k);
      rc = gpt2_errorf(err, errlen, "%s: duplicate key \"%.*s\" (line %d)", path,
                       tk_clip(ks, json_string_length(k), 200), ks, je->line);
    }
    json_decref(k);
  }
  return rc;
}

/* ------------------------------------------------------------------------
** Checking Jansson's reading against the file. Jansson 2.14's lexer drops a
** character of a long token when growing its buffer fails, and the parse can
** still succeed with a misspelt key or number (common.h, gpt2_json_parse).
** A second parse would double the load's main cost, so here every member is
** compared instead: the file's next key and id, read here, must equal
** Jansson's; a difference means memory ran out. The text is known to be
** JSON (Jansson accepted it), but this reader stays in bounds regardless.
*/

typedef struct Cursor {
  const unsigned char *s;
  size_t n, i;
} Cursor;

static void skip_ws(Cursor *c) {
  while (c->i < c->n && (c->s[c->i] == ' ' || c->s[c->i] == '\t' || c->s[c->i] == '\n' ||
                         c->s[c->i] == '\r'))
    c->i++;
}

static int hex4(Cursor *c, uint32_t *v) {
  if (c->n - c->i < 4) return 0;
  *v = 0;
  for (int k = 0; k < 4; k++) {
    unsigned x = c->s[c->i++];
    unsigned d = x >= '0' && x <= '9'   ? x - '0'
                 : x >= 'a' && x <= 'f' ? x - 'a' + 10
                 : x >= 'A' && x <= 'F' ? x - 'A' + 10
                                        : 16;
    if (d == 16) return 0;
    *v = *v << 4 | d;
  }
  return 1;
}

/* Does the JSON string at the cursor (its opening quote) decode to
** key[0..kn)? Moves past the closing quote. */
static int string_equals(Cursor *c, const char *key, size_t kn) {
  const unsigned char *k = (const unsigned char *)key;
  size_t j = 0;
  if (c->i >= c->n || c->s[c->i] != '"') return 0;
  c->i++;
  while (c->i < c->n && c->s[c->i] != '"') {
    unsigned char ch = c->s[c->i++];
    if (ch != '\\') {
      if (j >= kn || k[j++] != ch) return 0;
      continue;
    }
    if (c->i >= c->n) return 0;
    unsigned char e = c->s[c->i++];
    unsigned char out[4];
    size_t m = 1;
    switch (e) {
      case 'b': out[0] = '\b'; break;
      case 'f': out[0] = '\f'; break;
      case 'n': out[0] = '\n'; break;
      case 'r': out[0] = '\r'; break;
      case 't': out[0] = '\t'; break;
      case '"': case '\\': case '/': out[0] = e; break;
      case 'u': {
        uint32_t cp, lo;
        if (!hex4(c, &cp)) return 0;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (c->n - c->i < 2 || c->s[c->i] != '\\' || c->s[c->i + 1] != 'u') return 0;
          c->i += 2;
          if (!hex4(c, &lo) || lo < 0xDC00 || lo > 0xDFFF) return 0;
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp < 0x80)
          out[0] = (unsigned char)cp;
        else if (cp < 0x800)
          m = 2, out[0] = (unsigned char)(0xC0 | cp >> 6), out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        else if (cp < 0x10000)
          m = 3, out[0] = (unsigned char)(0xE0 | cp >> 12),
          out[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)), out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        else
          m = 4, out[0] = (unsigned char)(0xF0 | cp >> 18),
          out[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F)),
          out[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)), out[3] = (unsigned char)(0x80 | (cp & 0x3F));
        break;
      }
      default: return 0;
    }
    if (kn - j < m || memcmp(k + j, out, m) != 0) return 0;
    j += m;
  }
  if (c->i >= c->n) return 0;
  c->i++;
  return j == kn;
}

/* Is the next member of the file the key key[0..kn) with the number v? */
static int member_equals(Cursor *c, const char *key, size_t kn, const json_t *v) {
  skip_ws(c);
  if (c->i < c->n && (c->s[c->i] == ',' || c->s[c->i] == '{')) c->i++;
  skip_ws(c);
  if (!string_equals(c, key, kn)) return 0;
  skip_ws(c);
  if (c->i >= c->n || c->s[c->i] != ':') return 0;
  c->i++;
  skip_ws(c);
  size_t start = c->i;
  if (json_is_integer(v)) { /* digits only: Jansson's integers have no '.' or exponent */
    int neg = c->i < c->n && c->s[c->i] == '-';
    c->i += (size_t)neg;
    unsigned long long x = 0;
    size_t d0 = c->i;
    while (c->i < c->n && c->s[c->i] >= '0' && c->s[c->i] <= '9' && c->i - d0 < 19)
      x = x * 10 + (unsigned)(c->s[c->i++] - '0');
    json_int_t want = json_integer_value(v);
    return c->i > d0 && (neg ? want <= 0 && x == 0ull - (unsigned long long)want
                             : want >= 0 && x == (unsigned long long)want);
  }
  /* a real: the same text through strtod (the file is NUL-terminated) */
  char *end;
  double d = strtod((const char *)c->s + start, &end);
  c->i = (size_t)((const unsigned char *)end - c->s);
  return c->i > start && c->i <= c->n && d == json_real_value(v);
}

/* ------------------------------------------------------------------------
** The loader
*/

int tk_load_vocab(Tokenizer *t, const char *path, char *err, size_t errlen) {
  char *text;
  size_t size;
  int rc = gpt2_read_file(path, &text, &size, MAX_FILE, err, errlen);
  if (rc) return rc;
  int32_t *ids = NULL;
  Span *spans = NULL;
  json_t *root = NULL;
  /* no second parse (verify 0): the members are checked against the file
  ** below (member_equals), which is cheaper */
  rc = tk_json_parse(path, text, size, 0, &root, err, errlen);
  if (rc) goto done;
  if (!json_is_object(root)) {
    rc = gpt2_errorf(err, errlen, "%s: expected a JSON object mapping tokens to ids", path);
    goto done;
  }
  size_t count = json_object_size(root), k = 0;
  if (!count) {
    rc = gpt2_errorf(err, errlen, "%s: the vocabulary is empty", path);
    goto done;
  }
  /* One pass over the members in file order (Jansson keeps it): raw bytes
  ** into the arena (no longer in total than the file: unmapping and
  ** unescaping only shorten). */
  ids = malloc(count * sizeof *ids);
  spans = malloc(count * sizeof *spans);
  t->vbytes = malloc(size + 1);
  if (!ids || !spans || !t->vbytes) {
    rc = GPT2_NOMEM;
    goto done;
  }
  Cursor cur = {(const unsigned char *)text, size, 0};
  int32_t max_id = -1;
  size_t used = 0;
  for (void *it = json_object_iter(root); it; it = json_object_iter_next(root, it), k++) {
    const char *key = json_object_iter_key(it);
    size_t kn = json_object_iter_key_len(it), bn;
    json_t *v = json_object_iter_value(it);
    if (!json_is_number(v)) {
      rc = gpt2_errorf(err, errlen, "%s: key \"%.*s\": id must be an integer from 0 to %d", path,
                       tk_clip(key, kn, 200), key, MAX_ID);
      goto done;
    }
    if (!member_equals(&cur, key, kn, v)) { /* misread under memory pressure (above) */
      rc = GPT2_NOMEM;
      goto done;
    }
    /* Only an integral number in range is an id (also rejects NaN). */
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
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
    uint32_t bad = 0;
    unsigned char *raw = (unsigned char *)t->vbytes + used;
    if (tk_unmap(key, kn, raw, &bn, &bad)) { /* Jansson checked UTF-8: a character */
      rc = gpt2_errorf(err, errlen,
                       "%s: key \"%.*s\" contains U+%04lX, which is not one of GPT-2's 256 "
                       "byte characters",
                       path, tk_clip(key, kn, 200), key, (unsigned long)bad);
      goto done;
    }
    spans[k] = (Span){(uint32_t)used, (uint32_t)bn};
    ids[k] = id;
    used += bn;
    if (id > max_id) max_id = id;
  }
  json_decref(root); /* before the next allocation: the tree is many times the file */
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
  json_decref(root);
  free(text);
  return rc;
}
