/*
** sql_conn.c — one database connection's state: loaded models, settings,
** counters, prefix cache, scratch, and the environment read at open.
*/
#include "sql_conn.h"

#include "registry.h"
#include "sql_args.h"
#include "threadpool.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

SQLITE_EXTENSION_INIT3

struct Gpt2Conn {
  int refs;             /* registrations still holding this */
  Gpt2Entry *entries;   /* loaded models, in load order */
  int n_entries;
  int current;          /* index into entries, -1 when none */
  int ever_loaded;      /* something was loaded once: $GPT2_MODEL no longer applies */
  char *env_model;      /* $GPT2_MODEL at open, NULL when unset or empty */
  const char *kernel;   /* $GPT2_KERNEL at open (a kpath name), NULL: the best */
  Gpt2Scratch *scratch; /* activations for this connection's calls */
  Gpt2Counters ctr;     /* work counters, see gpt2_info() */
  Gpt2Progress progress; /* the latest long job, see gpt2_progress() */
  Gpt2Prefix prefix;    /* KV state of the last generation, for prefix reuse */
  Gpt2Settings set;
};

/* gpt2_set's settings: name, range, default, field. */
static const struct {
  const char *name;
  int64_t lo, hi, dflt;
  size_t offset; /* of the int64_t in Gpt2Settings */
} SETTINGS[] = {
    {"prefix_reuse", 0, 1, 1, offsetof(Gpt2Settings, prefix_reuse)},
    {"max_tokens_limit", 0, 1 << 20, 0, offsetof(Gpt2Settings, max_tokens_limit)},
    {"kv_memory_limit", 1 << 20, INT64_MAX, (int64_t)4 << 30,
     offsetof(Gpt2Settings, kv_memory_limit)},
    /* default 0 stands for $GPT2_THREADS or the CPUs, set at open */
    {"threads", 1, POOL_MAX_THREADS, 0, offsetof(Gpt2Settings, threads)},
    {"progress", 0, 2, 1, offsetof(Gpt2Settings, progress)},
};
#define N_SETTINGS ((int)(sizeof SETTINGS / sizeof SETTINGS[0]))

static int64_t *setting_ptr(Gpt2Settings *s, int i) {
  return (int64_t *)((char *)s + SETTINGS[i].offset);
}

/* $GPT2_THREADS: an integer, clamped to [1, POOL_MAX_THREADS]; unset or
** empty: the CPUs, at most 8. */
static int env_threads(int64_t *out, char *err, size_t errlen) {
  const char *e = getenv("GPT2_THREADS");
  if (!e || !*e) {
    *out = scratch_default_threads();
    return GPT2_OK;
  }
  char *end;
  errno = 0;
  long long t = strtoll(e, &end, 10);
  while (*end == ' ') end++;
  if (end == e || *end || errno == ERANGE)
    return gpt2_errorf(err, errlen, "gpt2: GPT2_THREADS = '%.32s' is not an integer", e);
  *out = t < 1 ? 1 : t > POOL_MAX_THREADS ? POOL_MAX_THREADS : t;
  return GPT2_OK;
}

/* $GPT2_KERNEL: a kernel path name, NULL when unset or empty. */
static int env_kernel(const char **out, char *err, size_t errlen) {
  const char *e = getenv("GPT2_KERNEL");
  KPath p;
  *out = NULL;
  if (!e || !*e) return GPT2_OK;
  if (kpath_parse(e, &p))
    return gpt2_errorf(err, errlen,
                       "gpt2: GPT2_KERNEL = '%.32s' is not one of portable, avx2, avx512", e);
  *out = kpath_name(p);
  return GPT2_OK;
}

int conn_open(Gpt2Conn **out, char *err, size_t errlen) {
  *out = NULL;
  Gpt2Conn *c = calloc(1, sizeof *c);
  if (!c) return GPT2_NOMEM;
  c->refs = 1;
  c->current = -1;
  for (int i = 0; i < N_SETTINGS; i++) *setting_ptr(&c->set, i) = SETTINGS[i].dflt;
  int rc = env_threads(&c->set.threads, err, errlen);
  if (!rc) rc = env_kernel(&c->kernel, err, errlen);
  const char *m = getenv("GPT2_MODEL");
  if (!rc && m && *m && !(c->env_model = strdup(m))) rc = GPT2_NOMEM;
  if (rc) {
    conn_release(c);
    return rc;
  }
  *out = c;
  return GPT2_OK;
}

void conn_retain(Gpt2Conn *c) { c->refs++; }

/* Free an entry; the caller drops any prefix state computed with it. */
static void entry_clear(Gpt2Entry *e) {
  if (e->model) registry_unuse(e->model); /* generations may still hold it */
  else if (e->tok) tok_free(e->tok);
  free(e->name);
  free(e->path);
  memset(e, 0, sizeof *e);
}

void conn_release(void *p) {
  Gpt2Conn *c = p;
  if (!c || --c->refs > 0) return;
  for (int i = 0; i < c->n_entries; i++) entry_clear(&c->entries[i]);
  free(c->entries);
  free(c->env_model);
  prefix_clear(&c->prefix);
  scratch_free(c->scratch);
  free(c);
}

/* ------------------------------------------------------------------------
** Models
*/

static int find_entry(const Gpt2Conn *c, const char *name) {
  for (int i = 0; i < c->n_entries; i++)
    if (strcmp(c->entries[i].name, name) == 0) return i;
  return -1;
}

static int file_exists(const char *dir, const char *name) {
  char *p = gpt2_path_join(dir, name);
  struct stat st;
  int ok = p && stat(p, &st) == 0;
  free(p);
  return ok;
}

/* Which loader a directory needs: 2 a checkpoint, 1 a tokenizer alone, 0
** neither (an error naming the files expected). */
static int dir_kind(const char *dir, const char *shown, char *err, size_t errlen) {
  if (file_exists(dir, "model.safetensors") || file_exists(dir, "config.json")) return 2;
  if (file_exists(dir, "vocab.json") || file_exists(dir, "merges.txt")) return 1;
  gpt2_errorf(err, errlen,
              "'%s' is not a GPT-2 checkpoint directory: it has none of config.json, "
              "model.safetensors, vocab.json, merges.txt (a checkpoint needs all four; a "
              "tokenizer alone needs vocab.json and merges.txt)",
              shown);
  return 0;
}

int conn_load(Gpt2Conn *c, const char *dir, const char *name, const char *weights,
              const Gpt2Entry **out, char *err, size_t errlen) {
  char *canon = realpath(dir, NULL);
  if (!canon)
    return gpt2_errorf(err, errlen, "cannot open model directory '%s': %s", dir, strerror(errno));
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
    *out = &c->entries[idx];
    return GPT2_OK;
  }
  Gpt2Entry e = {0};
  int rc = GPT2_ERROR;
  int kind = dir_kind(canon, dir, err, errlen);
  if (kind == 2) {
    rc = registry_load(canon, weights, &e.model, err, errlen); /* shared when loaded */
    if (rc == GPT2_OK) e.tok = e.model->tok;
  } else if (kind == 1) {
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
  c->ever_loaded = 1;
  *out = &c->entries[idx];
  return GPT2_OK;
}

const Gpt2Entry *conn_current(Gpt2Conn *c, const char *fname, int need_weights, char *err,
                              size_t errlen) {
  if (c->current < 0 && conn_has_current(c)) { /* $GPT2_MODEL, on a fresh connection */
    char lerr[GPT2_ERRLEN];
    const Gpt2Entry *e;
    int rc = conn_load(c, c->env_model, "default", gpt2_weight_formats[0], &e, lerr, sizeof lerr);
    if (rc == GPT2_NOMEM) {
      if (err && errlen) err[0] = 0; /* an empty message means SQLITE_NOMEM */
      return NULL;
    }
    if (rc) {
      gpt2_errorf(err, errlen, "%s: loading $GPT2_MODEL failed: %s", fname, lerr);
      return NULL;
    }
  }
  if (c->current < 0) {
    char names[256];
    conn_names(c, names, sizeof names);
    if (c->n_entries)
      gpt2_errorf(err, errlen, "%s: no model is current (loaded: %s); choose one with "
                  "gpt2_use(name)", fname, names);
    else
      gpt2_errorf(err, errlen, "%s: no model loaded; run SELECT gpt2_load('path/to/model-dir')%s",
                  fname, c->ever_loaded ? "" : " or set GPT2_MODEL");
    return NULL;
  }
  const Gpt2Entry *e = &c->entries[c->current];
  if (need_weights && !e->model) {
    gpt2_errorf(err, errlen,
                "%s: '%s' holds only a tokenizer (no model.safetensors); load a full "
                "checkpoint with gpt2_load",
                fname, e->path);
    return NULL;
  }
  return e;
}

int conn_has_current(const Gpt2Conn *c) {
  return c->current >= 0 || (!c->ever_loaded && c->env_model);
}

const Gpt2Entry *conn_use(Gpt2Conn *c, const char *name) {
  int idx = find_entry(c, name);
  if (idx < 0) return NULL;
  c->current = idx;
  return &c->entries[idx];
}

int conn_unload(Gpt2Conn *c, const char *name) {
  int idx = find_entry(c, name);
  if (idx < 0) return 0;
  if (c->prefix.m == c->entries[idx].model) prefix_clear(&c->prefix);
  entry_clear(&c->entries[idx]);
  memmove(&c->entries[idx], &c->entries[idx + 1],
          (size_t)(c->n_entries - idx - 1) * sizeof c->entries[0]);
  c->n_entries--;
  if (c->current == idx) c->current = -1;
  else if (c->current > idx) c->current--;
  return 1;
}

int conn_n_entries(const Gpt2Conn *c) { return c->n_entries; }

const Gpt2Entry *conn_entry(const Gpt2Conn *c, int i) {
  return i >= 0 && i < c->n_entries ? &c->entries[i] : NULL;
}

int conn_is_current(const Gpt2Conn *c, int i) { return c->current == i; }

void conn_names(const Gpt2Conn *c, char *out, size_t n) {
  size_t k = 0;
  out[0] = 0;
  for (int i = 0; i < c->n_entries && k + 1 < n; i++)
    k += (size_t)snprintf(out + k, n - k, "%s%s", i ? ", " : "", c->entries[i].name);
  if (!c->n_entries) snprintf(out, n, "none");
}

/* ------------------------------------------------------------------------
** Settings
*/

const Gpt2Settings *conn_settings(const Gpt2Conn *c) { return &c->set; }

int conn_n_settings(void) { return N_SETTINGS; }

int conn_setting_find(const char *name) {
  for (int i = 0; i < N_SETTINGS; i++)
    if (strcmp(name, SETTINGS[i].name) == 0) return i;
  return -1;
}

const char *conn_setting_name(int i) { return SETTINGS[i].name; }

void conn_setting_range(int i, int64_t *lo, int64_t *hi) {
  *lo = SETTINGS[i].lo;
  *hi = SETTINGS[i].hi;
}

int64_t conn_setting(const Gpt2Conn *c, int i) {
  return *setting_ptr((Gpt2Settings *)&c->set, i);
}

int64_t conn_setting_set(Gpt2Conn *c, int i, int64_t v) {
  int64_t old = *setting_ptr(&c->set, i);
  *setting_ptr(&c->set, i) = v;
  if (!c->set.prefix_reuse) prefix_clear(&c->prefix);
  /* Between statements or rows no pool job runs, so a pool of the old size
  ** can be joined now (a stream's next row makes the new one). */
  if (c->scratch) scratch_set_threads(c->scratch, (int)c->set.threads);
  return old;
}

/* ------------------------------------------------------------------------
** Compute
*/

Gpt2Counters *conn_counters(Gpt2Conn *c) { return &c->ctr; }

Gpt2Progress *conn_progress(Gpt2Conn *c) { return &c->progress; }

Gpt2Scratch *conn_scratch(Gpt2Conn *c) {
  if (!c->scratch) {
    if (!(c->scratch = scratch_new())) return NULL;
    if (c->kernel) scratch_set_kernel(c->scratch, c->kernel);
  }
  scratch_set_threads(c->scratch, (int)c->set.threads); /* a no-op unless it changed */
  return c->scratch;
}

Gpt2Prefix *conn_prefix(Gpt2Conn *c) { return c->set.prefix_reuse ? &c->prefix : NULL; }

int conn_check_kv(const Gpt2Conn *c, const Gpt2Model *m, const char *fname, int n_seqs,
                  int64_t positions, const char *knobs, char *err, size_t errlen) {
  double need = (double)seq_bytes(m, 1) * (double)positions;
  if (need <= (double)c->set.kv_memory_limit) return GPT2_OK;
  return gpt2_errorf(err, errlen,
                     "%s: %d sequence%s of %lld positions in all need %.0f bytes of KV cache, "
                     "above the connection's kv_memory_limit (%lld); %s, or raise the limit "
                     "with gpt2_set('kv_memory_limit', bytes)",
                     fname, n_seqs, n_seqs == 1 ? "" : "s", (long long)positions, need,
                     (long long)c->set.kv_memory_limit, knobs);
}

int conn_gen_start(Gpt2Conn *c, const Gpt2Model *m, const char *fname, sqlite3 *db,
                   const IdVec *ids, Gpt2GenParams *p, Gpt2Gen *g, char *err, size_t errlen) {
  char msg[GPT2_ERRLEN];
  memset(g, 0, sizeof *g);
  int rc = conn_check_kv(c, m, fname, 1, gen_positions(m, (int)ids->n, p->max_tokens),
                         p->max_tokens ? "lower max_tokens or shorten the prompt"
                                       : "shorten the prompt",
                         err, errlen);
  if (rc) return rc;
  if (!conn_scratch(c)) return GPT2_NOMEM;
  p->stop = sql_interrupted;
  p->stop_arg = db;
  rc = gen_start(g, m, c->scratch, &c->ctr, ids->v, (int)ids->n, p, conn_prefix(c), 1, msg,
                 sizeof msg);
  if (rc == GPT2_ERROR) gpt2_errorf(err, errlen, "%s: argument 1 (prompt): %s", fname, msg);
  if (rc == GPT2_INTERRUPTED) gpt2_errorf(err, errlen, "%s: %s", fname, msg);
  return rc;
}

int conn_draft(const Gpt2Conn *c, const char *fname, const Gpt2Entry *e, const char *name,
               const Gpt2Model **out, char *err, size_t errlen) {
  *out = NULL;
  if (!name) return GPT2_OK;
  int idx = find_entry(c, name);
  if (idx < 0) {
    char names[256];
    conn_names(c, names, sizeof names);
    return gpt2_errorf(err, errlen, "%s: option 'draft' = \"%.64s\" is not a loaded model "
                       "(loaded: %s); load it first with gpt2_load(dir, name)", fname, name, names);
  }
  const Gpt2Entry *d = &c->entries[idx];
  if (!d->model)
    return gpt2_errorf(err, errlen, "%s: option 'draft' = \"%.64s\" holds only a tokenizer "
                       "(no model.safetensors); a draft must be a full checkpoint", fname, name);
  char why[256];
  if (spec_mismatch(e->model, d->model, why, sizeof why))
    return gpt2_errorf(err, errlen, "%s: option 'draft' = \"%.64s\" has another vocabulary than "
                       "the model '%.64s' it would draft for: %s (draft vs model)", fname, name,
                       e->name, why);
  *out = d->model;
  return GPT2_OK;
}

double conn_draft_kv_bytes(const Gpt2Model *draft, int n_pos) {
  int n = n_pos < draft->cfg.n_positions ? n_pos : draft->cfg.n_positions;
  return (double)seq_bytes(draft, 1) * n;
}

int conn_spec_start(Gpt2Conn *c, const char *fname, Gpt2Gen *g, const Gpt2Model *draft, int k,
                    Gpt2Spec *s, char *err, size_t errlen) {
  char msg[GPT2_ERRLEN];
  memset(s, 0, sizeof *s);
  int pos = gen_positions(g->m, g->n_prompt, g->p.max_tokens);
  double need = (double)seq_bytes(g->m, 1) * pos + conn_draft_kv_bytes(draft, pos);
  if (need > (double)c->set.kv_memory_limit)
    return gpt2_errorf(err, errlen,
                       "%s: the KV caches of the model and its draft (%d positions each at most) "
                       "need %.0f bytes, above the connection's kv_memory_limit (%lld); lower "
                       "max_tokens or shorten the prompt, or raise the limit with "
                       "gpt2_set('kv_memory_limit', bytes)",
                       fname, pos, need, (long long)c->set.kv_memory_limit);
  int rc = spec_start(s, g, draft, k, msg, sizeof msg);
  if (rc == GPT2_ERROR) gpt2_errorf(err, errlen, "%s: %s", fname, msg);
  return rc;
}

void conn_gen_finish(Gpt2Conn *c, Gpt2Gen *g) {
  if (g->m && g->seq && conn_prefix(c)) gen_save_prefix(g, &c->prefix, 1);
  gen_free(g);
}

/* ------------------------------------------------------------------------
** Tables
*/

int conn_table_connect(sqlite3 *db, Gpt2Conn *c, const char *schema, int innocuous,
                       sqlite3_vtab **out) {
  int rc = sqlite3_declare_vtab(db, schema);
  if (rc != SQLITE_OK) return rc;
  Gpt2Table *t = sqlite3_malloc(sizeof *t);
  if (!t) return SQLITE_NOMEM;
  memset(t, 0, sizeof *t);
  t->db = db;
  t->conn = c;
  if (innocuous) sqlite3_vtab_config(db, SQLITE_VTAB_INNOCUOUS);
  *out = &t->base;
  return SQLITE_OK;
}

int conn_table_disconnect(sqlite3_vtab *t) {
  sqlite3_free(t);
  return SQLITE_OK;
}
