/*
** gpt2.c — the extension's entry point and its scalar SQL functions.
**
**   .load build/gpt2            -- entry point sqlite3_gpt_init (SQLite drops
**                               -- the digits of "gpt2", gpt2-facts.md "SQLite")
**   SELECT gpt2_load('models/gpt2');
**   SELECT gpt2_generate('Once upon a time', 20);
**
** Functions (README.md has the full reference):
**   gpt2_version()                      extension version
**   gpt2_load(dir [, name [, weights]]) load a checkpoint; JSON summary
**   gpt2_info()                         summary of the current model + counters
**   gpt2_tokenize(text)                 JSON array of ids (JSON subtype)
**   gpt2_detokenize(ids)                text
**   gpt2_token_count(text)              integer
**   gpt2_logits(prompt)                 BLOB of vocab_size float32 (LE)
**   gpt2_generate(prompt [, max_tokens [, temperature [, top_k [, top_p [, seed]]]]])
**   gpt2_use(name), gpt2_unload(name)   switch between / free loaded models
**   gpt2_set(name, value)               connection settings (SETTINGS below)
**
** This file only parses arguments, calls the modules and reports errors as
** "gpt2_<fn>: <what is wrong>". All state lives in a Gpt2Conn per connection,
** except the models themselves, which loads of the same checkpoint share
** process-wide (registry.h; tokenizer-only entries stay per connection).
*/
#include "gpt2.h"
#include "registry.h"
#include "threadpool.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>

SQLITE_EXTENSION_INIT1

/* ------------------------------------------------------------------------
** Connection state
*/

/* Free an entry; the caller drops any prefix state computed with it. */
static void entry_clear(Gpt2Entry *e) {
  if (e->model) registry_unuse(e->model); /* generations may still hold it */
  else if (e->tok) tok_free(e->tok);
  free(e->name);
  free(e->path);
  memset(e, 0, sizeof *e);
}

void gpt2_conn_release(void *p) {
  Gpt2Conn *c = p;
  if (!c || --c->refs > 0) return;
  for (int i = 0; i < c->n_entries; i++) entry_clear(&c->entries[i]);
  free(c->entries);
  prefix_clear(&c->prefix);
  scratch_free(c->scratch);
  free(c);
}

static int find_entry(const Gpt2Conn *c, const char *name) {
  for (int i = 0; i < c->n_entries; i++)
    if (strcmp(c->entries[i].name, name) == 0) return i;
  return -1;
}

/* gpt2_load's weights argument: model.h's in-memory formats; [0] is the
** default. */
static const char *const WEIGHTS[] = {"f32", "f16", "bf16", "q8"};
#define N_WEIGHTS (sizeof WEIGHTS / sizeof WEIGHTS[0])

static int file_exists(const char *dir, const char *name) {
  char *p = gpt2_path_join(dir, name);
  struct stat st;
  int ok = p && stat(p, &st) == 0;
  free(p);
  return ok;
}

/* Load dir under name with the matrices in format weights (a WEIGHTS name)
** and make it current. A failure leaves everything as it was; the same path
** and format under the same name is a no-op (a tokenizer-only directory has
** no format, so there the path alone decides). */
static int conn_load(Gpt2Conn *c, const char *dir, const char *name, const char *weights,
                     int *out_idx, char *err, size_t errlen) {
  char *canon = realpath(dir, NULL);
  if (!canon) return gpt2_errorf(err, errlen, "cannot open model directory '%s': %s", dir,
                                 strerror(errno));
  struct stat st;
  if (stat(canon, &st) != 0 || !S_ISDIR(st.st_mode)) {
    free(canon);
    return gpt2_errorf(err, errlen, "'%s' is not a directory", dir);
  }
  int idx = find_entry(c, name);
  const Gpt2Model *had = idx >= 0 ? c->entries[idx].model : NULL;
  if (idx >= 0 && strcmp(c->entries[idx].path, canon) == 0 &&
      (!had || strcmp(had->weights, weights) == 0)) {
    free(canon);
    c->current = idx;
    *out_idx = idx;
    return GPT2_OK;
  }
  Gpt2Entry e = {0};
  int rc;
  if (file_exists(canon, "model.safetensors") || file_exists(canon, "config.json")) {
    rc = registry_load(canon, weights, &e.model, err, errlen); /* shared when loaded */
    if (rc == GPT2_OK) e.tok = e.model->tok;
  } else {
    rc = tok_load(canon, &e.tok, err, errlen);
  }
  if (rc != GPT2_OK) {
    free(canon);
    return rc;
  }
  e.path = canon;
  e.name = strdup(name);
  if (!e.name) {
    entry_clear(&e);
    return GPT2_NOMEM;
  }
  if (idx < 0) {
    Gpt2Entry *ne = realloc(c->entries, (size_t)(c->n_entries + 1) * sizeof *ne);
    if (!ne) {
      entry_clear(&e);
      return GPT2_NOMEM;
    }
    c->entries = ne;
    idx = c->n_entries++;
  } else {
    if (c->prefix.m == c->entries[idx].model) prefix_clear(&c->prefix);
    entry_clear(&c->entries[idx]);
  }
  c->entries[idx] = e;
  c->current = idx;
  *out_idx = idx;
  return GPT2_OK;
}

/* Connection settings: name, range, default, field. */
static const struct {
  const char *name;
  int64_t lo, hi, dflt;
  size_t offset; /* of the int64_t in Gpt2Conn */
} SETTINGS[] = {
    {"prefix_reuse", 0, 1, 1, offsetof(Gpt2Conn, prefix_reuse)},
    {"max_tokens_limit", 0, 1 << 20, 0, offsetof(Gpt2Conn, max_tokens_limit)},
    {"kv_memory_limit", 1 << 20, INT64_MAX, (int64_t)4 << 30, offsetof(Gpt2Conn, kv_memory_limit)},
    /* default 0 stands for scratch_default_threads(), read when the
    ** connection opens ($GPT2_THREADS, else the CPUs, at most 8) */
    {"threads", 1, POOL_MAX_THREADS, 0, offsetof(Gpt2Conn, threads)},
};
#define N_SETTINGS (sizeof SETTINGS / sizeof SETTINGS[0])

static int64_t *setting(Gpt2Conn *c, size_t i) {
  return (int64_t *)((char *)c + SETTINGS[i].offset);
}

Gpt2Scratch *gpt2_conn_scratch(Gpt2Conn *c) {
  if (!c->scratch && !(c->scratch = scratch_new())) return NULL;
  scratch_set_threads(c->scratch, (int)c->threads); /* a no-op unless it changed */
  return c->scratch;
}

Gpt2Prefix *gpt2_conn_prefix(Gpt2Conn *c) {
  return c->prefix_reuse ? &c->prefix : NULL;
}

Gpt2Entry *gpt2_conn_entry(Gpt2Conn *c, const char *fname, int need_weights, char *err,
                           size_t errlen) {
  if (c->current < 0) {
    const char *env = getenv("GPT2_MODEL");
    if (env && *env) {
      char lerr[GPT2_ERRLEN];
      int idx;
      int rc = conn_load(c, env, "default", WEIGHTS[0], &idx, lerr, sizeof lerr);
      if (rc == GPT2_NOMEM) {
        if (err && errlen) err[0] = 0; /* an empty message means SQLITE_NOMEM */
        return NULL;
      }
      if (rc) {
        gpt2_errorf(err, errlen, "%s: loading $GPT2_MODEL failed: %s", fname, lerr);
        return NULL;
      }
    }
  }
  if (c->current < 0) {
    gpt2_errorf(err, errlen,
                "%s: no model loaded; run SELECT gpt2_load('path/to/model-dir') "
                "or set GPT2_MODEL",
                fname);
    return NULL;
  }
  Gpt2Entry *e = &c->entries[c->current];
  if (need_weights && !e->model) {
    gpt2_errorf(err, errlen,
                "%s: '%s' holds only a tokenizer (no model.safetensors); load a full "
                "checkpoint with gpt2_load",
                fname, e->path);
    return NULL;
  }
  return e;
}

/* ------------------------------------------------------------------------
** Argument parsing
*/

static const char *type_name(int t) {
  switch (t) {
    case SQLITE_INTEGER: return "INTEGER";
    case SQLITE_FLOAT: return "REAL";
    case SQLITE_TEXT: return "TEXT";
    case SQLITE_BLOB: return "BLOB";
    default: return "NULL";
  }
}

/* JSON array of integer ids in [0, vocab) into out. */
static int parse_id_array(const char *fname, int argno, const char *what, const char *s,
                          size_t n, int vocab, IdVec *out, char *err, size_t errlen) {
  json_error_t je;
  json_t *a = json_loadb(s, n, JSON_DECODE_ANY, &je);
  if (!a && !je.text[0]) return GPT2_NOMEM; /* Jansson: no message = allocation failure */
  if (!a || !json_is_array(a)) {
    json_decref(a);
    return gpt2_errorf(err, errlen, "%s: argument %d (%s) must be a JSON array of integers%s%s",
                       fname, argno, what, a ? "" : ": ", a ? "" : je.text);
  }
  size_t len = json_array_size(a);
  if (idvec_reserve(out, out->n + len)) {
    json_decref(a);
    return GPT2_NOMEM;
  }
  for (size_t i = 0; i < len; i++) {
    json_t *x = json_array_get(a, i);
    if (!json_is_integer(x)) {
      json_decref(a);
      return gpt2_errorf(err, errlen,
                         "%s: argument %d (%s): element %zu is not an integer", fname, argno,
                         what, i);
    }
    json_int_t id = json_integer_value(x);
    if (id < 0 || id >= vocab) {
      json_decref(a);
      return gpt2_errorf(err, errlen,
                         "%s: argument %d (%s): id %lld is outside the vocabulary (size %d)",
                         fname, argno, what, (long long)id, vocab);
    }
    out->v[out->n++] = (int)id;
  }
  json_decref(a);
  return GPT2_OK;
}

int gpt2_parse_prompt(const Gpt2Entry *e, const char *fname, int argno, sqlite3_value *v,
                      IdVec *out, char *err, size_t errlen) {
  int t = sqlite3_value_type(v);
  if (t != SQLITE_TEXT)
    return gpt2_errorf(err, errlen,
                       "%s: argument %d (prompt) must be TEXT or a JSON array of token ids, "
                       "got %s",
                       fname, argno, type_name(t));
  const char *s = (const char *)sqlite3_value_text(v);
  size_t n = (size_t)sqlite3_value_bytes(v);
  if (!s) return GPT2_NOMEM;
  if (sqlite3_value_subtype(v) == GPT2_JSON_SUBTYPE) {
    int vocab = e->model ? e->model->cfg.vocab_size : tok_vocab_size(e->tok);
    return parse_id_array(fname, argno, "prompt", s, n, vocab, out, err, errlen);
  }
  char terr[GPT2_ERRLEN];
  int rc = tok_encode(e->tok, s, n, out, terr, sizeof terr);
  if (rc == GPT2_ERROR) return gpt2_errorf(err, errlen, "%s: argument %d (prompt): %s", fname,
                                           argno, terr);
  return rc;
}

/* Integer argument in [lo, hi]. */
static int arg_int(const char *fname, int argno, const char *what, sqlite3_value *v, int64_t lo,
                   int64_t hi, int64_t *out, char *err, size_t errlen) {
  if (sqlite3_value_type(v) != SQLITE_INTEGER)
    return gpt2_errorf(err, errlen, "%s: argument %d (%s) must be an INTEGER, got %s", fname,
                       argno, what, type_name(sqlite3_value_type(v)));
  sqlite3_int64 x = sqlite3_value_int64(v);
  if (x < lo || x > hi)
    return gpt2_errorf(err, errlen, "%s: argument %d (%s) = %lld is out of range [%lld, %lld]",
                       fname, argno, what, (long long)x, (long long)lo, (long long)hi);
  *out = x;
  return GPT2_OK;
}

/* Numeric argument; range checked by the caller. */
static int arg_num(const char *fname, int argno, const char *what, sqlite3_value *v, double *out,
                   char *err, size_t errlen) {
  int t = sqlite3_value_type(v);
  if (t != SQLITE_INTEGER && t != SQLITE_FLOAT)
    return gpt2_errorf(err, errlen, "%s: argument %d (%s) must be a number, got %s", fname,
                       argno, what, type_name(t));
  *out = sqlite3_value_double(v);
  return GPT2_OK;
}

int gpt2_interrupted(void *db) {
  if (sqlite3_libversion_number() < 3041000) return 0;
#if SQLITE_VERSION_NUMBER >= 3041000
  return sqlite3_is_interrupted(db);
#else
  /* Built against older headers: is_interrupted is the routine that 3.41
  ** appended right after value_encoding, and the table only ever grows. */
  struct api341 {
    sqlite3_api_routines base;
    int (*is_interrupted)(sqlite3 *);
  };
  return ((const struct api341 *)sqlite3_api)->is_interrupted(db);
#endif
}

uint64_t gpt2_random_seed(void) {
  uint64_t s = 0;
  if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s ^= (uint64_t)(uintptr_t)&s;
  return s;
}

int gpt2_check_kv(const Gpt2Conn *c, const Gpt2Model *m, const char *fname, int n_seqs,
                  int n_pos, char *err, size_t errlen) {
  /* keys + values, float32, every layer (transformer.h) */
  double need = 2.0 * 4.0 * m->cfg.n_layer * (double)m->cfg.n_embd * n_pos * n_seqs;
  if (need <= (double)c->kv_memory_limit) return GPT2_OK;
  return gpt2_errorf(err, errlen,
                     "%s: %d sequence%s of %d positions need %.0f bytes of KV cache, above the "
                     "connection's kv_memory_limit (%lld); lower max_tokens or batch_size, or "
                     "raise it with gpt2_set('kv_memory_limit', bytes)",
                     fname, n_seqs, n_seqs == 1 ? "" : "s", n_pos, need,
                     (long long)c->kv_memory_limit);
}

int gpt2_parse_gen_params(const Gpt2Conn *c, const Gpt2Model *m, const char *fname, int argc,
                          sqlite3_value **argv, Gpt2GenParams *p, char *err, size_t errlen) {
  int64_t cap = m->cfg.n_positions;
  if (c->max_tokens_limit > 0 && c->max_tokens_limit < cap) cap = c->max_tokens_limit;
  p->max_tokens = GPT2_DEFAULT_MAX_TOKENS;
  if (p->max_tokens > cap) p->max_tokens = (int)cap;
  p->sample.temperature = 0;
  p->sample.top_k = 0;
  p->sample.top_p = 1;
  int seed_given = 0;
  int64_t x;
  double d;
  for (int i = 0; i < argc; i++) {
    sqlite3_value *v = argv[i];
    int argno = i + 2;
    if (!v || sqlite3_value_type(v) == SQLITE_NULL) continue;  /* absent or NULL: default */
    switch (i) {
      case 0:
        if (arg_int(fname, argno, "max_tokens", v, 0, m->cfg.n_positions, &x, err, errlen))
          return GPT2_ERROR;
        if (x > cap)
          return gpt2_errorf(err, errlen,
                             "%s: argument %d (max_tokens) = %lld is above the connection's "
                             "max_tokens_limit (%lld); see gpt2_set",
                             fname, argno, (long long)x, (long long)cap);
        p->max_tokens = (int)x;
        break;
      case 1:
        if (arg_num(fname, argno, "temperature", v, &d, err, errlen)) return GPT2_ERROR;
        if (!(d >= 0) || isinf(d))
          return gpt2_errorf(err, errlen,
                             "%s: argument %d (temperature) = %g is out of range [0, inf)",
                             fname, argno, d);
        p->sample.temperature = d;
        break;
      case 2:
        if (arg_int(fname, argno, "top_k", v, 0, INT_MAX, &x, err, errlen)) return GPT2_ERROR;
        p->sample.top_k = (int)x;
        break;
      case 3:
        if (arg_num(fname, argno, "top_p", v, &d, err, errlen)) return GPT2_ERROR;
        if (!(d > 0 && d <= 1))
          return gpt2_errorf(err, errlen, "%s: argument %d (top_p) = %g is out of range (0, 1]",
                             fname, argno, d);
        p->sample.top_p = d;
        break;
      case 4:
        if (sqlite3_value_type(v) != SQLITE_INTEGER)
          return gpt2_errorf(err, errlen, "%s: argument %d (seed) must be an INTEGER, got %s",
                             fname, argno, type_name(sqlite3_value_type(v)));
        p->seed = (uint64_t)sqlite3_value_int64(v);
        seed_given = 1;
        break;
      default:
        return gpt2_errorf(err, errlen, "%s: too many arguments", fname);
    }
  }
  if (!seed_given) p->seed = gpt2_random_seed();
  return GPT2_OK;
}

int gpt2_args_best_index(sqlite3_vtab *tab, sqlite3_index_info *info, int first, int n_args,
                         const char *required_msg) {
  int idx[32];
  int seen = 0, usable = 0;
  for (int k = 0; k < n_args; k++) idx[k] = -1;
  const struct sqlite3_index_constraint *con = info->aConstraint;
  for (int i = 0; i < info->nConstraint; i++, con++) {
    int k = con->iColumn - first;
    if (k < 0 || k >= n_args || con->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
    seen |= 1 << k;
    if (con->usable) {
      usable |= 1 << k;
      idx[k] = i;
    }
  }
  if (!(seen & 1)) {
    sqlite3_free(tab->zErrMsg);
    tab->zErrMsg = sqlite3_mprintf("%s", required_msg);
    return SQLITE_ERROR;
  }
  if (seen != usable) return SQLITE_CONSTRAINT; /* ask for a plan where all are usable */
  int argv_i = 0;
  for (int k = 0; k < n_args; k++) {
    if (idx[k] < 0) continue;
    info->aConstraintUsage[idx[k]].argvIndex = ++argv_i;
    info->aConstraintUsage[idx[k]].omit = 1;
  }
  info->idxNum = usable;
  info->estimatedCost = 1000;
  info->estimatedRows = 100;
  return SQLITE_OK;
}

/* Messages quote user input (paths, names, prompts) and may cut it (%.64s)
** in the middle of a character; SQLite hands them to clients as UTF-8, so
** invalid bytes become U+FFFD. NULL on OOM. */
static char *clean_message(const char *msg) {
  ByteBuf b = {0};
  if (utf8_append_sanitized(&b, msg, strlen(msg))) {
    buf_free(&b);
    return NULL;
  }
  return b.p;
}

int gpt2_vtab_error(sqlite3_vtab *tab, int rc, const char *msg) {
  if (rc == GPT2_NOMEM) return SQLITE_NOMEM;
  char *m = clean_message(msg);
  if (!m) return SQLITE_NOMEM;
  sqlite3_free(tab->zErrMsg);
  tab->zErrMsg = sqlite3_mprintf("%s", m);
  free(m);
  if (!tab->zErrMsg) return SQLITE_NOMEM;
  return rc == GPT2_INTERRUPTED ? SQLITE_INTERRUPT : SQLITE_ERROR;
}

void gpt2_args_unpack(int idxNum, int argc, sqlite3_value **argv, int n_args,
                      sqlite3_value **args) {
  for (int k = 0, j = 0; k < n_args; k++)
    args[k] = (idxNum & (1 << k)) && j < argc ? argv[j++] : NULL;
}

/* ------------------------------------------------------------------------
** SQL functions
*/

static void result_error(sqlite3_context *ctx, int rc, const char *msg) {
  char *m = rc == GPT2_NOMEM ? NULL : clean_message(msg);
  if (!m) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_error(ctx, m, -1);
  free(m);
  if (rc == GPT2_INTERRUPTED) sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
}

/* json_dumpb, not json_dumps: Jansson 2.14's json_dumps ignores a failed
** append while writing an object key, so under memory pressure it returns
** JSON with keys missing (found by tests/oom). Writing into a sized buffer
** appends nothing: the output is whole, or the call fails. */
static void result_json(sqlite3_context *ctx, json_t *j) {
  size_t n = j ? json_dumpb(j, NULL, 0, JSON_COMPACT) : 0;
  char *s = n ? malloc(n + 1) : NULL;
  if (s && json_dumpb(j, s, n, JSON_COMPACT) != n) {
    free(s);
    s = NULL;
  }
  json_decref(j);
  if (!s) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  s[n] = 0;
  sqlite3_result_text(ctx, s, (int)n, free);
  sqlite3_result_subtype(ctx, GPT2_JSON_SUBTYPE);
}

/* The summary of an entry; NULL on OOM (never a summary missing keys). A
** path that is not valid UTF-8 (Linux allows any bytes) is shown with U+FFFD. */
static json_t *entry_summary(const Gpt2Entry *e) {
  json_t *j = json_object();
  char *path = clean_message(e->path);
  int bad = !j || !path;
  if (bad) goto done;
  bad |= json_object_set_new(j, "name", json_string(e->name));
  bad |= json_object_set_new(j, "path", json_string(path));
  if (e->model) {
    const Gpt2Config *c = &e->model->cfg;
    bad |= json_object_set_new(j, "n_layer", json_integer(c->n_layer));
    bad |= json_object_set_new(j, "n_head", json_integer(c->n_head));
    bad |= json_object_set_new(j, "n_embd", json_integer(c->n_embd));
    bad |= json_object_set_new(j, "n_positions", json_integer(c->n_positions));
    bad |= json_object_set_new(j, "vocab_size", json_integer(c->vocab_size));
    bad |= json_object_set_new(j, "n_params", json_integer(e->model->n_params));
    bad |= json_object_set_new(j, "dtype", json_string(e->model->dtype));
    bad |= json_object_set_new(j, "weights", json_string(e->model->weights));
    bad |= json_object_set_new(j, "bytes", json_integer((json_int_t)e->model->weight_bytes));
    bad |= json_object_set_new(j, "users", json_integer(registry_users(e->model)));
    bad |= json_object_set_new(j, "eos_token_id", json_integer(c->eos_id));
  } else {
    bad |= json_object_set_new(j, "vocab_size", json_integer(tok_vocab_size(e->tok)));
    bad |= json_object_set_new(j, "weights", json_false());
  }
done:
  free(path);
  if (bad) {
    json_decref(j);
    return NULL;
  }
  return j;
}

static void fn_version(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3_result_text(ctx, GPT2_VERSION, -1, SQLITE_STATIC);
}

static void fn_load(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  Gpt2Conn *c = sqlite3_user_data(ctx);
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  if (sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
    result_error(ctx, GPT2_ERROR, "gpt2_load: argument 1 (dir) must be TEXT, a directory path");
    return;
  }
  const char *name = "default";
  if (argc > 1 && sqlite3_value_type(argv[1]) != SQLITE_NULL) {
    if (sqlite3_value_type(argv[1]) != SQLITE_TEXT || sqlite3_value_bytes(argv[1]) == 0 ||
        sqlite3_value_bytes(argv[1]) > 128) {
      result_error(ctx, GPT2_ERROR, "gpt2_load: argument 2 (name) must be TEXT of 1 to 128 bytes");
      return;
    }
    name = (const char *)sqlite3_value_text(argv[1]);
    char *clean = name ? clean_message(name) : NULL;
    int valid = clean && strcmp(clean, name) == 0;
    free(clean);
    if (name && clean && !valid) {
      result_error(ctx, GPT2_ERROR, "gpt2_load: argument 2 (name) must be valid UTF-8");
      return;
    }
    if (!valid) name = NULL; /* OOM */
  }
  char err[GPT2_ERRLEN], msg[GPT2_ERRLEN + 32];
  const char *weights = WEIGHTS[0];
  if (argc > 2 && sqlite3_value_type(argv[2]) != SQLITE_NULL) {
    int t = sqlite3_value_type(argv[2]);
    const char *w = t == SQLITE_TEXT ? (const char *)sqlite3_value_text(argv[2]) : NULL;
    if (t == SQLITE_TEXT && !w) {
      sqlite3_result_error_nomem(ctx);
      return;
    }
    weights = NULL;
    for (size_t i = 0; w && i < N_WEIGHTS; i++)
      if (strcasecmp(w, WEIGHTS[i]) == 0) weights = WEIGHTS[i];
    if (!weights) {
      if (t == SQLITE_TEXT)
        gpt2_errorf(msg, sizeof msg, "gpt2_load: argument 3 (weights) = '%.64s' is not one of "
                    "'f32', 'f16', 'bf16', 'q8'", w);
      else
        gpt2_errorf(msg, sizeof msg, "gpt2_load: argument 3 (weights) must be TEXT, one of "
                    "'f32', 'f16', 'bf16', 'q8'; got %s", type_name(t));
      result_error(ctx, GPT2_ERROR, msg);
      return;
    }
  }
  const char *dir = (const char *)sqlite3_value_text(argv[0]);
  if (!dir || !name) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  int idx;
  int rc = conn_load(c, dir, name, weights, &idx, err, sizeof err);
  if (rc) {
    gpt2_errorf(msg, sizeof msg, "gpt2_load: %s", err);
    result_error(ctx, rc, msg);
    return;
  }
  result_json(ctx, entry_summary(&c->entries[idx]));
}

static void fn_info(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  Gpt2Conn *c = sqlite3_user_data(ctx);
  const char *env = getenv("GPT2_MODEL");
  if (c->current < 0 && !(env && *env)) return; /* NULL: nothing loaded */
  char err[GPT2_ERRLEN];
  Gpt2Entry *e = gpt2_conn_entry(c, "gpt2_info", 0, err, sizeof err); /* may load $GPT2_MODEL */
  if (!e) {
    result_error(ctx, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
    return;
  }
  /* json_object_set_new consumes its value even when it fails (NULL object,
  ** OOM), so one flag catches every failure: OOM gives SQLITE_NOMEM, never a
  ** summary with keys missing. */
  json_t *j = entry_summary(e), *k = json_object(), *st = json_object();
  int bad = 0;
  bad |= json_object_set_new(k, "forward_calls", json_integer(c->ctr.forward_calls));
  bad |= json_object_set_new(k, "rows_computed", json_integer(c->ctr.rows_computed));
  bad |= json_object_set_new(k, "tokens_generated", json_integer(c->ctr.tokens_generated));
  bad |= json_object_set_new(k, "prefix_reused", json_integer(c->ctr.prefix_reused));
  for (size_t i = 0; i < N_SETTINGS; i++)
    bad |= json_object_set_new(st, SETTINGS[i].name, json_integer(*setting(c, i)));
  bad |= json_object_set_new(j, "counters", k);
  bad |= json_object_set_new(j, "settings", st);
  bad |= json_object_set_new(j, "version", json_string(GPT2_VERSION));
  /* the CPU path the kernels take here ($GPT2_KERNEL or the best this CPU has) */
  Gpt2Scratch *sc = gpt2_conn_scratch(c);
  bad |= json_object_set_new(j, "kernel", sc ? json_string(scratch_kernel(sc)) : NULL);
  if (bad) {
    json_decref(j);
    j = NULL;
  }
  result_json(ctx, j);
}

/* Text argument of a tokenizer function; NULL result for NULL input. */
static const char *text_arg(sqlite3_context *ctx, const char *fname, sqlite3_value *v,
                            size_t *n) {
  int t = sqlite3_value_type(v);
  if (t == SQLITE_NULL) return NULL;
  if (t != SQLITE_TEXT) {
    char msg[128];
    gpt2_errorf(msg, sizeof msg, "%s: argument 1 (text) must be TEXT, got %s", fname,
             type_name(t));
    result_error(ctx, GPT2_ERROR, msg);
    return NULL;
  }
  const char *s = (const char *)sqlite3_value_text(v);
  if (!s) sqlite3_result_error_nomem(ctx);
  *n = (size_t)sqlite3_value_bytes(v);
  return s;
}

static void fn_tokenize_common(sqlite3_context *ctx, sqlite3_value **argv, int count_only) {
  const char *fname = count_only ? "gpt2_token_count" : "gpt2_tokenize";
  char err[GPT2_ERRLEN], msg[GPT2_ERRLEN + 32];
  size_t n = 0;
  const char *s = text_arg(ctx, fname, argv[0], &n);
  if (!s) return;
  Gpt2Entry *e = gpt2_conn_entry(sqlite3_user_data(ctx), fname, 0, err, sizeof err);
  if (!e) {
    result_error(ctx, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
    return;
  }
  IdVec ids = {0};
  int rc = tok_encode(e->tok, s, n, &ids, err, sizeof err);
  if (rc) {
    gpt2_errorf(msg, sizeof msg, "%s: %s", fname, err);
    result_error(ctx, rc, msg);
    idvec_free(&ids);
    return;
  }
  if (count_only) {
    sqlite3_result_int64(ctx, (sqlite3_int64)ids.n);
    idvec_free(&ids);
    return;
  }
  ByteBuf b = {0};
  rc = buf_append(&b, "[", 1);
  for (size_t i = 0; i < ids.n && !rc; i++) {
    char tmp[16];
    int k = snprintf(tmp, sizeof tmp, i ? ",%d" : "%d", ids.v[i]);
    rc = buf_append(&b, tmp, (size_t)k);
  }
  if (!rc) rc = buf_append(&b, "]", 1);
  idvec_free(&ids);
  if (rc) {
    buf_free(&b);
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_text(ctx, b.p, (int)b.n, free);
  sqlite3_result_subtype(ctx, GPT2_JSON_SUBTYPE);
}

static void fn_tokenize(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  fn_tokenize_common(ctx, argv, 0);
}

static void fn_token_count(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  fn_tokenize_common(ctx, argv, 1);
}

static void fn_detokenize(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const char *fname = "gpt2_detokenize";
  char err[GPT2_ERRLEN];
  int t = sqlite3_value_type(argv[0]);
  if (t == SQLITE_NULL) return;
  if (t != SQLITE_TEXT) {
    gpt2_errorf(err, sizeof err, "%s: argument 1 (ids) must be a JSON array of integers, got %s",
             fname, type_name(t));
    result_error(ctx, GPT2_ERROR, err);
    return;
  }
  Gpt2Entry *e = gpt2_conn_entry(sqlite3_user_data(ctx), fname, 0, err, sizeof err);
  if (!e) {
    result_error(ctx, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
    return;
  }
  const char *s = (const char *)sqlite3_value_text(argv[0]);
  if (!s) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  IdVec ids = {0};
  int rc = parse_id_array(fname, 1, "ids", s, (size_t)sqlite3_value_bytes(argv[0]),
                          tok_vocab_size(e->tok), &ids, err, sizeof err);
  ByteBuf out = {0};
  if (!rc) rc = tok_decode(e->tok, ids.v, ids.n, &out, err, sizeof err);
  if (!rc && !out.p) rc = buf_append(&out, "", 0);
  idvec_free(&ids);
  if (rc) {
    result_error(ctx, rc, err);
    buf_free(&out);
    return;
  }
  sqlite3_result_text(ctx, out.p, (int)out.n, free);
}

int gpt2_start(Gpt2Conn *c, const Gpt2Model *m, const char *fname, sqlite3 *db,
               const IdVec *ids, Gpt2GenParams *p, Gpt2Gen *g, char *err, size_t errlen) {
  char msg[GPT2_ERRLEN];
  memset(g, 0, sizeof *g);
  int rc = gpt2_check_kv(c, m, fname, 1, (int)ids->n + p->max_tokens, err, errlen);
  if (rc) return rc;
  if (!gpt2_conn_scratch(c)) return GPT2_NOMEM;
  p->stop = gpt2_interrupted;
  p->stop_arg = db;
  rc = gen_start(g, m, c->scratch, &c->ctr, ids->v, (int)ids->n, p, gpt2_conn_prefix(c), 1, msg,
                 sizeof msg);
  if (rc == GPT2_ERROR) gpt2_errorf(err, errlen, "%s: argument 1 (prompt): %s", fname, msg);
  if (rc == GPT2_INTERRUPTED) gpt2_errorf(err, errlen, "%s: %s", fname, msg);
  return rc;
}

void gpt2_finish(Gpt2Conn *c, Gpt2Gen *g) {
  if (g->m && g->seq && gpt2_conn_prefix(c)) gen_save_prefix(g, &c->prefix, 1);
  gen_free(g);
}

static void fn_logits(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const char *fname = "gpt2_logits";
  Gpt2Conn *c = sqlite3_user_data(ctx);
  char err[GPT2_ERRLEN];
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  Gpt2Entry *e = gpt2_conn_entry(c, fname, 1, err, sizeof err);
  if (!e) {
    result_error(ctx, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
    return;
  }
  IdVec ids = {0};
  Gpt2GenParams p = {.max_tokens = 0};
  Gpt2Gen g = {0};
  int rc = gpt2_parse_prompt(e, fname, 1, argv[0], &ids, err, sizeof err);
  if (!rc) rc = gpt2_start(c, e->model, fname, sqlite3_context_db_handle(ctx), &ids, &p, &g, err,
                           sizeof err);
  if (!rc) {
    int V = e->model->cfg.vocab_size;
    unsigned char *blob = malloc((size_t)V * 4);
    if (!blob) {
      rc = GPT2_NOMEM;
    } else {
      for (int i = 0; i < V; i++) { /* little-endian float32 whatever the host */
        uint32_t u;
        memcpy(&u, &g.logits[i], 4);
        blob[4 * i] = (unsigned char)u;
        blob[4 * i + 1] = (unsigned char)(u >> 8);
        blob[4 * i + 2] = (unsigned char)(u >> 16);
        blob[4 * i + 3] = (unsigned char)(u >> 24);
      }
      sqlite3_result_blob(ctx, blob, V * 4, free);
    }
  }
  if (rc) result_error(ctx, rc, err);
  gpt2_finish(c, &g);
  idvec_free(&ids);
}

static void fn_generate(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fname = "gpt2_generate";
  Gpt2Conn *c = sqlite3_user_data(ctx);
  char err[GPT2_ERRLEN], msg[GPT2_ERRLEN];
  if (argc < 1 || argc > 6) { /* registered with a variable number of arguments */
    gpt2_errorf(err, sizeof err, "%s: takes 1 to 6 arguments (prompt [, max_tokens [, "
                "temperature [, top_k [, top_p [, seed]]]]]), got %d", fname, argc);
    result_error(ctx, GPT2_ERROR, err);
    return;
  }
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  Gpt2Entry *e = gpt2_conn_entry(c, fname, 1, err, sizeof err);
  if (!e) {
    result_error(ctx, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
    return;
  }
  Gpt2GenParams p;
  IdVec ids = {0};
  Gpt2Gen g = {0};
  ByteBuf text = {0};
  int rc = gpt2_parse_gen_params(c, e->model, fname, argc - 1, argv + 1, &p, err, sizeof err);
  if (!rc) rc = gpt2_parse_prompt(e, fname, 1, argv[0], &ids, err, sizeof err);
  if (!rc) rc = gpt2_start(c, e->model, fname, sqlite3_context_db_handle(ctx), &ids, &p, &g, err,
                           sizeof err);
  while (!rc) {
    int tok;
    rc = gen_next(&g, &tok, NULL, msg, sizeof msg);
    if (rc == GPT2_ERROR || rc == GPT2_INTERRUPTED) gpt2_errorf(err, sizeof err, "%s: %s", fname, msg);
    if (rc || tok < 0) break;
    rc = gen_take_text(&g, tok, g.done, &text);
    if (g.done) break;
  }
  if (!rc && !text.p) rc = buf_append(&text, "", 0);
  if (rc) {
    result_error(ctx, rc, err);
    buf_free(&text);
  } else {
    sqlite3_result_text(ctx, text.p, (int)text.n, free);
  }
  gpt2_finish(c, &g);
  idvec_free(&ids);
}

/* gpt2_set(name, value): change a connection setting; returns the previous
** value. */
static void fn_set(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  Gpt2Conn *c = sqlite3_user_data(ctx);
  char msg[256];
  int t = sqlite3_value_type(argv[0]);
  if (t == SQLITE_NULL) return; /* NULL first argument: NULL (README, "Conventions") */
  if (t != SQLITE_TEXT) {
    gpt2_errorf(msg, sizeof msg, "gpt2_set: argument 1 (name) must be TEXT, got %s",
                type_name(t));
    result_error(ctx, GPT2_ERROR, msg);
    return;
  }
  const char *key = (const char *)sqlite3_value_text(argv[0]);
  if (!key) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  for (size_t i = 0; i < N_SETTINGS; i++) {
    if (strcmp(key, SETTINGS[i].name) != 0) continue;
    int64_t v;
    if (arg_int("gpt2_set", 2, SETTINGS[i].name, argv[1], SETTINGS[i].lo, SETTINGS[i].hi, &v, msg,
                sizeof msg)) {
      result_error(ctx, GPT2_ERROR, msg);
      return;
    }
    sqlite3_result_int64(ctx, *setting(c, i));
    *setting(c, i) = v;
    if (!c->prefix_reuse) prefix_clear(&c->prefix);
    /* Between statements or rows no pool job runs, so a pool of the old
    ** size can be joined now (a stream's next row makes the new one). */
    if (c->scratch) scratch_set_threads(c->scratch, (int)c->threads);
    return;
  }
  char known[128];
  size_t k = 0;
  for (size_t i = 0; i < N_SETTINGS; i++)
    k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", i ? ", " : "", SETTINGS[i].name);
  gpt2_errorf(msg, sizeof msg, "gpt2_set: unknown setting '%.64s' (known: %s)", key, known);
  result_error(ctx, GPT2_ERROR, msg);
}

/* Comma-separated names of the loaded models, for error messages. */
static void loaded_names(const Gpt2Conn *c, char *out, size_t n) {
  size_t k = 0;
  out[0] = 0;
  for (int i = 0; i < c->n_entries && k + 1 < n; i++)
    k += (size_t)snprintf(out + k, n - k, "%s%s", i ? ", " : "", c->entries[i].name);
  if (!c->n_entries) snprintf(out, n, "none");
}

static const char *name_arg(sqlite3_context *ctx, const char *fname, sqlite3_value *v) {
  if (sqlite3_value_type(v) != SQLITE_TEXT) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s: argument 1 (name) must be TEXT, got %s", fname,
             type_name(sqlite3_value_type(v)));
    result_error(ctx, GPT2_ERROR, msg);
    return NULL;
  }
  const char *s = (const char *)sqlite3_value_text(v);
  if (!s) sqlite3_result_error_nomem(ctx);
  return s;
}

/* gpt2_use(name): make a loaded model current; returns its summary. */
static void fn_use(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  Gpt2Conn *c = sqlite3_user_data(ctx);
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  const char *name = name_arg(ctx, "gpt2_use", argv[0]);
  if (!name) return;
  int idx = find_entry(c, name);
  if (idx < 0) {
    char names[256], msg[512];
    loaded_names(c, names, sizeof names);
    gpt2_errorf(msg, sizeof msg, "gpt2_use: no model named '%.100s' (loaded: %s)", name, names);
    result_error(ctx, GPT2_ERROR, msg);
    return;
  }
  c->current = idx;
  result_json(ctx, entry_summary(&c->entries[idx]));
}

/* gpt2_unload(name): free a model; 1 if one was unloaded, else 0. Unloading
** the current model leaves none current. */
static void fn_unload(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  Gpt2Conn *c = sqlite3_user_data(ctx);
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  const char *name = name_arg(ctx, "gpt2_unload", argv[0]);
  if (!name) return;
  int idx = find_entry(c, name);
  if (idx < 0) {
    sqlite3_result_int(ctx, 0);
    return;
  }
  if (c->prefix.m == c->entries[idx].model) prefix_clear(&c->prefix);
  entry_clear(&c->entries[idx]);
  memmove(&c->entries[idx], &c->entries[idx + 1],
          (size_t)(c->n_entries - idx - 1) * sizeof c->entries[0]);
  c->n_entries--;
  if (c->current == idx) c->current = -1;
  else if (c->current > idx) c->current--;
  sqlite3_result_int(ctx, 1);
}

/* ------------------------------------------------------------------------
** Registration
*/

/* SQLite 3.45+ wants functions that set a subtype to say so; older
** versions ignore the flag, so declare it even with older headers. */
#ifndef SQLITE_RESULT_SUBTYPE
#define SQLITE_RESULT_SUBTYPE 0x001000000
#endif

static const struct {
  const char *name;
  int n_arg;
  int flags;
  void (*fn)(sqlite3_context *, int, sqlite3_value **);
} FUNCS[] = {
    {"gpt2_version", 0, SQLITE_DETERMINISTIC, fn_version},
    {"gpt2_load", 1, SQLITE_DIRECTONLY | SQLITE_RESULT_SUBTYPE, fn_load},
    {"gpt2_load", 2, SQLITE_DIRECTONLY | SQLITE_RESULT_SUBTYPE, fn_load},
    {"gpt2_load", 3, SQLITE_DIRECTONLY | SQLITE_RESULT_SUBTYPE, fn_load},
    {"gpt2_info", 0, SQLITE_RESULT_SUBTYPE, fn_info},
    {"gpt2_use", 1, SQLITE_RESULT_SUBTYPE, fn_use},
    {"gpt2_unload", 1, 0, fn_unload},
    {"gpt2_set", 2, SQLITE_DIRECTONLY, fn_set},
    {"gpt2_tokenize", 1, SQLITE_RESULT_SUBTYPE, fn_tokenize},
    {"gpt2_detokenize", 1, 0, fn_detokenize},
    {"gpt2_token_count", 1, 0, fn_token_count},
    {"gpt2_logits", 1, SQLITE_SUBTYPE, fn_logits},
    {"gpt2_generate", -1, SQLITE_SUBTYPE, fn_generate},
};

/* The two entry points are the only symbols gpt2.so exports (-fvisibility=hidden). */
#ifdef _WIN32
__declspec(dllexport)
#else
__attribute__((visibility("default")))
#endif
int sqlite3_gpt_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  /* sqlite3_api is one global for every connection: connections opened on
  ** several threads at once would all store it, racing with each other and
  ** with threads already calling through it (ThreadSanitizer, tests/drivers/
  ** threads.c). Store it once, under a lock: every later init sees it set. */
  static pthread_mutex_t api_mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&api_mu);
  if (sqlite3_api != pApi) SQLITE_EXTENSION_INIT2(pApi);
  pthread_mutex_unlock(&api_mu);
  Gpt2Conn *c = calloc(1, sizeof *c);
  if (!c) return SQLITE_NOMEM;
  c->current = -1;
  for (size_t i = 0; i < N_SETTINGS; i++) *setting(c, i) = SETTINGS[i].dflt;
  c->threads = scratch_default_threads();
  c->refs = 1; /* held by this function until registration is over */
  int rc = SQLITE_OK;
  for (size_t i = 0; i < sizeof FUNCS / sizeof FUNCS[0] && rc == SQLITE_OK; i++) {
    c->refs++;
    rc = sqlite3_create_function_v2(db, FUNCS[i].name, FUNCS[i].n_arg,
                                    SQLITE_UTF8 | FUNCS[i].flags, c, FUNCS[i].fn, NULL, NULL,
                                    gpt2_conn_release);
    /* on failure SQLite has already called the destructor */
  }
  if (rc == SQLITE_OK) rc = gpt2_register_stream(db, c);
  if (rc == SQLITE_OK) rc = gpt2_register_models(db, c);
  if (rc == SQLITE_OK) rc = gpt2_register_complete(db, c);
  if (rc != SQLITE_OK && pzErrMsg)
    *pzErrMsg = sqlite3_mprintf("gpt2: registration failed: %s", sqlite3_errstr(rc));
  gpt2_conn_release(c);
  return rc;
}

/* SQLite first tries sqlite3_extension_init. */
#ifdef _WIN32
__declspec(dllexport)
#else
__attribute__((visibility("default")))
#endif
int sqlite3_extension_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  return sqlite3_gpt_init(db, pzErrMsg, pApi);
}
