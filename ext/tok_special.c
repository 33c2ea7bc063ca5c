/*
** tok_special.c — special tokens: "<|endoftext|>" when the vocabulary has
** it, and the unk/eos/bos tokens declared in special_tokens_map.json or
** tokenizer_config.json (the map wins, as in Hugging Face's from_pretrained)
** when they are in the vocabulary. The unknown token is also the fallback
** for a byte without a token of its own.
*/
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "tok_private.h"

/* Parse a JSON file; errors name the file, and the key of a duplicate. The
** files are small: a second parse verifies the first (common.h,
** gpt2_json_parse). */
static int load_json(const char *path, size_t max, json_t **out, char *err, size_t errlen) {
  char *text;
  size_t n;
  int rc = gpt2_read_file(path, &text, &n, max, err, errlen);
  if (rc) return rc;
  rc = tk_json_parse(path, text, n, 1, out, err, errlen);
  free(text);
  return rc;
}

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
  int rc = load_json(*pathp, MAX_CONFIG, root, err, errlen);
  if (!rc && !json_is_object(*root))
    rc = gpt2_errorf(err, errlen, "%s: expected a JSON object", *pathp);
  return rc;
}

static void add_special(Tokenizer *t, const char *s) {
  if (!s || !*s || t->n_special == MAX_SPECIAL) return;
  int id = tk_find_raw(t, s, strlen(s));
  if (id < 0) return; /* declared but not in the vocabulary: plain text */
  for (int i = 0; i < t->n_special; i++)
    if (t->special[i].id == id) return;
  /* The literal is the token's bytes (for "<|endoftext|>": itself, ASCII). */
  t->special[t->n_special++] = (Special){t->vbytes + t->vspan[id].off, t->vspan[id].len, id};
}

int tk_load_specials(Tokenizer *t, const char *dir, char *err, size_t errlen) {
  static const char *const names[] = {"special_tokens_map.json", "tokenizer_config.json"};
  static const char *const keys[] = {"unk_token", "eos_token", "bos_token"};
  json_t *roots[2] = {NULL, NULL};
  char *paths[2] = {NULL, NULL};
  int rc = GPT2_OK;
  for (int f = 0; f < 2 && !rc; f++)
    rc = load_config(dir, names[f], &roots[f], &paths[f], err, errlen);
  t->unk_id = -1;
  add_special(t, "<|endoftext|>"); /* docs/formats.md, "Tokenizer" */
  for (int k = 0; k < 3 && !rc; k++) {
    const char *s = NULL;
    for (int f = 0; f < 2 && !rc && !s; f++)
      rc = config_token(roots[f], paths[f], keys[k], &s, err, errlen);
    if (rc) break;
    add_special(t, s);
    if (k == 0 && s && *s) t->unk_id = tk_find_raw(t, s, strlen(s));
  }
  for (int f = 0; f < 2; f++) {
    json_decref(roots[f]);
    free(paths[f]);
  }
  return rc;
}
