/*
** sql_scalars.c — the scalar SQL functions (README.md, "SQL reference"):
**
**   gpt2_version()                      extension version
**   gpt2_load(dir [, name [, weights]]) load a checkpoint; JSON summary
**   gpt2_info()                         summary of the current model + counters
**   gpt2_tokenize(text)                 JSON array of ids (JSON subtype)
**   gpt2_detokenize(ids)                text
**   gpt2_token_count(text)              integer
**   gpt2_logits(prompt)                 BLOB of vocab_size float32 (LE)
**   gpt2_generate(prompt [, max_tokens [, temperature [, top_k [, top_p [, seed]]]]])
**   gpt2_generate(prompt, options)      the same with a JSON object of options
**   gpt2_use(name), gpt2_unload(name)   switch between / free loaded models
**   gpt2_set(name, value)               connection settings
**   gpt2_progress()                     the latest long job's progress (JSON)
**
** Each function checks its arguments (sql_args.h), calls the modules and
** reports errors as "gpt2_<fn>: <what is wrong>".
*/
#include "registry.h"
#include "sql_args.h"
#include "sql_conn.h"
#include "sql_register.h"
#include "version.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

SQLITE_EXTENSION_INIT3

#define MAX_NAME_BYTES 128

/* A failed lookup of the current entry: err empty means out of memory. */
static void entry_error(sqlite3_context *ctx, const char *err) {
  sql_result_error(ctx, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
}

/* The summary of an entry; NULL on OOM (never a summary missing keys). A
** path that is not valid UTF-8 (Linux allows any bytes) is shown with U+FFFD.
** json_object_set_new consumes its value even when it fails, so one flag
** catches every failure. */
static json_t *entry_summary(const Gpt2Entry *e) {
  json_t *j = json_object();
  char *path = sql_clean_text(e->path);
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
  } else { /* a tokenizer alone: no weights */
    bad |= json_object_set_new(j, "vocab_size", json_integer(tok_vocab_size(e->tok)));
    bad |= json_object_set_new(j, "weights", json_null());
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

/* "'f32', 'f16', 'bf16', 'q8', 'q4'" (gpt2_weight_formats) */
static void weight_format_list(char *out, size_t n) {
  size_t k = 0;
  out[0] = 0;
  for (int i = 0; gpt2_weight_formats[i] && k < n; i++)
    k += (size_t)snprintf(out + k, n - k, "%s'%s'", i ? ", " : "", gpt2_weight_formats[i]);
}

/* gpt2_load's weights argument (NULL: the default) as an entry of
** gpt2_weight_formats; NULL after reporting an error. */
static const char *weights_arg(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  if (argc < 3 || sqlite3_value_type(argv[2]) == SQLITE_NULL) return gpt2_weight_formats[0];
  int t = sqlite3_value_type(argv[2]);
  const char *w = t == SQLITE_TEXT ? (const char *)sqlite3_value_text(argv[2]) : NULL;
  if (t == SQLITE_TEXT && !w) {
    sqlite3_result_error_nomem(ctx);
    return NULL;
  }
  for (int i = 0; w && gpt2_weight_formats[i]; i++)
    if (strcasecmp(w, gpt2_weight_formats[i]) == 0) return gpt2_weight_formats[i];
  char list[64], msg[GPT2_ERRLEN];
  weight_format_list(list, sizeof list);
  if (t == SQLITE_TEXT)
    gpt2_errorf(msg, sizeof msg, "gpt2_load: argument 3 (weights) = '%.64s' is not one of %s", w,
                list);
  else
    gpt2_errorf(msg, sizeof msg, "gpt2_load: argument 3 (weights) must be TEXT, one of %s; got %s",
                list, sql_type_name(t));
  sql_result_error(ctx, GPT2_ERROR, msg);
  return NULL;
}

/* gpt2_load's name argument (NULL: 'default'); NULL after reporting an
** error. */
static const char *name_arg(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  if (argc < 2 || sqlite3_value_type(argv[1]) == SQLITE_NULL) return "default";
  int t = sqlite3_value_type(argv[1]);
  int n = sqlite3_value_bytes(argv[1]);
  if (t != SQLITE_TEXT || n == 0 || n > MAX_NAME_BYTES) {
    char msg[128];
    gpt2_errorf(msg, sizeof msg, "gpt2_load: argument 2 (name) must be TEXT of 1 to %d bytes",
                MAX_NAME_BYTES);
    sql_result_error(ctx, GPT2_ERROR, msg);
    return NULL;
  }
  const char *name = (const char *)sqlite3_value_text(argv[1]);
  char *clean = name ? sql_clean_text(name) : NULL;
  if (!clean) {
    sqlite3_result_error_nomem(ctx);
    return NULL;
  }
  int valid = strcmp(clean, name) == 0;
  free(clean);
  if (!valid) {
    sql_result_error(ctx, GPT2_ERROR, "gpt2_load: argument 2 (name) must be valid UTF-8");
    return NULL;
  }
  return name;
}

static void fn_load(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  Gpt2Conn *c = sqlite3_user_data(ctx);
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  if (sqlite3_value_type(argv[0]) != SQLITE_TEXT) {
    sql_result_error(ctx, GPT2_ERROR, "gpt2_load: argument 1 (dir) must be TEXT, a directory path");
    return;
  }
  const char *name = name_arg(ctx, argc, argv);
  const char *weights = name ? weights_arg(ctx, argc, argv) : NULL;
  if (!weights) return;
  const char *dir = (const char *)sqlite3_value_text(argv[0]);
  if (!dir) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  char err[GPT2_ERRLEN], msg[GPT2_ERRLEN + 32];
  const Gpt2Entry *e;
  int rc = conn_load(c, dir, name, weights, &e, err, sizeof err);
  if (rc) {
    gpt2_errorf(msg, sizeof msg, "gpt2_load: %s", err);
    sql_result_error(ctx, rc, msg);
    return;
  }
  sql_result_json(ctx, entry_summary(e));
}

static void fn_info(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  Gpt2Conn *c = sqlite3_user_data(ctx);
  char err[GPT2_ERRLEN];
  if (!conn_has_current(c)) return; /* NULL: no model current, none to load */
  const Gpt2Entry *e = conn_current(c, "gpt2_info", 0, err, sizeof err); /* may load $GPT2_MODEL */
  if (!e) {
    entry_error(ctx, err);
    return;
  }
  const Gpt2Counters *n = conn_counters(c);
  json_t *j = entry_summary(e), *k = json_object(), *st = json_object();
  int bad = 0;
  bad |= json_object_set_new(k, "forward_calls", json_integer(n->forward_calls));
  bad |= json_object_set_new(k, "rows_computed", json_integer(n->rows_computed));
  bad |= json_object_set_new(k, "tokens_generated", json_integer(n->tokens_generated));
  bad |= json_object_set_new(k, "prefix_reused", json_integer(n->prefix_reused));
  bad |= json_object_set_new(k, "draft_proposed", json_integer(n->draft_proposed));
  bad |= json_object_set_new(k, "draft_accepted", json_integer(n->draft_accepted));
  bad |= json_object_set_new(k, "verify_passes", json_integer(n->verify_passes));
  /* derived; null before any speculative round */
  bad |= json_object_set_new(k, "draft_acceptance",
                             n->draft_proposed ? json_real((double)n->draft_accepted /
                                                           (double)n->draft_proposed)
                                               : json_null());
  bad |= json_object_set_new(k, "tokens_per_pass",
                             n->verify_passes ? json_real((double)(n->draft_accepted +
                                                                   n->verify_passes) /
                                                          (double)n->verify_passes)
                                              : json_null());
  for (int i = 0; i < conn_n_settings(); i++)
    bad |= json_object_set_new(st, conn_setting_name(i), json_integer(conn_setting(c, i)));
  bad |= json_object_set_new(j, "counters", k);
  bad |= json_object_set_new(j, "settings", st);
  bad |= json_object_set_new(j, "version", json_string(GPT2_VERSION));
  /* the CPU path the kernels take here ($GPT2_KERNEL or the best this CPU has) */
  Gpt2Scratch *sc = conn_scratch(c);
  bad |= json_object_set_new(j, "kernel", sc ? json_string(scratch_kernel(sc)) : NULL);
  if (bad) {
    json_decref(j);
    j = NULL;
  }
  sql_result_json(ctx, j);
}

/* Text argument of a tokenizer function; NULL result for NULL input. */
static const char *text_arg(sqlite3_context *ctx, const char *fname, sqlite3_value *v,
                            size_t *n) {
  int t = sqlite3_value_type(v);
  if (t == SQLITE_NULL) return NULL;
  if (t != SQLITE_TEXT) {
    char msg[128];
    gpt2_errorf(msg, sizeof msg, "%s: argument 1 (text) must be TEXT, got %s", fname,
                sql_type_name(t));
    sql_result_error(ctx, GPT2_ERROR, msg);
    return NULL;
  }
  const char *s = (const char *)sqlite3_value_text(v);
  if (!s) sqlite3_result_error_nomem(ctx);
  *n = (size_t)sqlite3_value_bytes(v);
  return s;
}

static void tokenize_common(sqlite3_context *ctx, sqlite3_value **argv, int count_only) {
  const char *fname = count_only ? "gpt2_token_count" : "gpt2_tokenize";
  char err[GPT2_ERRLEN], msg[GPT2_ERRLEN + 32];
  size_t n = 0;
  const char *s = text_arg(ctx, fname, argv[0], &n);
  if (!s) return;
  const Gpt2Entry *e = conn_current(sqlite3_user_data(ctx), fname, 0, err, sizeof err);
  if (!e) {
    entry_error(ctx, err);
    return;
  }
  IdVec ids = {0};
  int rc = tok_encode(e->tok, s, n, &ids, err, sizeof err);
  if (rc) {
    gpt2_errorf(msg, sizeof msg, "%s: %s", fname, err);
    sql_result_error(ctx, rc, msg);
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
  tokenize_common(ctx, argv, 0);
}

static void fn_token_count(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  tokenize_common(ctx, argv, 1);
}

static void fn_detokenize(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const char *fname = "gpt2_detokenize";
  char err[GPT2_ERRLEN];
  int t = sqlite3_value_type(argv[0]);
  if (t == SQLITE_NULL) return;
  if (t != SQLITE_TEXT) {
    gpt2_errorf(err, sizeof err, "%s: argument 1 (ids) must be a JSON array of integers, got %s",
                fname, sql_type_name(t));
    sql_result_error(ctx, GPT2_ERROR, err);
    return;
  }
  const Gpt2Entry *e = conn_current(sqlite3_user_data(ctx), fname, 0, err, sizeof err);
  if (!e) {
    entry_error(ctx, err);
    return;
  }
  const char *s = (const char *)sqlite3_value_text(argv[0]);
  if (!s) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  IdVec ids = {0};
  int rc = sql_id_array(fname, "argument 1 (ids)", s, (size_t)sqlite3_value_bytes(argv[0]),
                        tok_vocab_size(e->tok), &ids, err, sizeof err);
  ByteBuf out = {0};
  if (!rc) rc = tok_decode(e->tok, ids.v, ids.n, &out, err, sizeof err);
  if (!rc && !out.p) rc = buf_append(&out, "", 0);
  idvec_free(&ids);
  if (rc) {
    sql_result_error(ctx, rc, err);
    buf_free(&out);
    return;
  }
  sqlite3_result_text(ctx, out.p, (int)out.n, free);
}

/* The prompt argument (argument 1) of a model function. */
static int prompt_arg(const Gpt2Entry *e, const char *fname, sqlite3_value *v, IdVec *ids,
                      char *err, size_t errlen) {
  return sql_prompt(e->tok, e->model->cfg.vocab_size, fname, "argument 1 (prompt)", v, ids, err,
                    errlen);
}

static void fn_logits(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const char *fname = "gpt2_logits";
  Gpt2Conn *c = sqlite3_user_data(ctx);
  char err[GPT2_ERRLEN];
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  const Gpt2Entry *e = conn_current(c, fname, 1, err, sizeof err);
  if (!e) {
    entry_error(ctx, err);
    return;
  }
  IdVec ids = {0};
  Gpt2GenParams p = {.max_tokens = 0};
  Gpt2Gen g = {0};
  int rc = prompt_arg(e, fname, argv[0], &ids, err, sizeof err);
  if (!rc)
    rc = conn_gen_start(c, e->model, fname, sqlite3_context_db_handle(ctx), &ids, &p, &g, err,
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
  if (rc) sql_result_error(ctx, rc, err);
  conn_gen_finish(c, &g);
  idvec_free(&ids);
}

/* gpt2_generate's result 'json': {"text", "finish_reason", "n_tokens"}. */
static void result_json(sqlite3_context *ctx, const ByteBuf *text, const Gpt2Gen *g) {
  json_t *j = json_object();
  int bad = !j;
  bad |= json_object_set_new(j, "text", json_stringn(text->p, text->n));
  const char *why = gen_finish_name(g->finish);
  bad |= json_object_set_new(j, "finish_reason", why ? json_string(why) : json_null());
  bad |= json_object_set_new(j, "n_tokens", json_integer(g->n_generated));
  if (bad) {
    json_decref(j);
    j = NULL;
  }
  sql_result_json(ctx, j);
}

static void fn_generate(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fname = "gpt2_generate";
  Gpt2Conn *c = sqlite3_user_data(ctx);
  char err[GPT2_ERRLEN], msg[GPT2_ERRLEN];
  if (argc < 1 || argc > 6) { /* registered with a variable number of arguments */
    gpt2_errorf(err, sizeof err, "%s: takes 1 to 6 arguments (prompt [, max_tokens [, "
                "temperature [, top_k [, top_p [, seed]]]]]), got %d", fname, argc);
    sql_result_error(ctx, GPT2_ERROR, err);
    return;
  }
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  const Gpt2Entry *e = conn_current(c, fname, 1, err, sizeof err);
  if (!e) {
    entry_error(ctx, err);
    return;
  }
  SqlGenArgs a;
  IdVec ids = {0};
  Gpt2Gen g = {0};
  ByteBuf text = {0};
  const Gpt2Settings *set = conn_settings(c);
  int rc = sql_gen_args(&e->model->cfg, set->max_tokens_limit ? set->max_tokens_limit : INT64_MAX,
                        fname, argc - 1, argv + 1, SQL_GEN_RESULT, &a, err, sizeof err);
  const Gpt2Model *draft = NULL;
  Gpt2Spec spec = {0};
  if (!rc) rc = conn_draft(c, fname, e, a.draft, &draft, err, sizeof err);
  if (!rc) rc = prompt_arg(e, fname, argv[0], &ids, err, sizeof err);
  if (!rc)
    rc = conn_gen_start(c, e->model, fname, sqlite3_context_db_handle(ctx), &ids, &a.p, &g, err,
                        sizeof err);
  if (!rc && draft)
    rc = conn_spec_start(c, fname, &g, draft, (int)a.draft_tokens, &spec, err, sizeof err);
  while (!rc && !g.done) {
    int tok;
    rc = draft ? spec_next(&spec, &tok, NULL, msg, sizeof msg)
               : gen_next(&g, &tok, NULL, msg, sizeof msg);
    if (rc == GPT2_ERROR || rc == GPT2_INTERRUPTED) gpt2_errorf(err, sizeof err, "%s: %s", fname, msg);
    if (rc || tok < 0) break;
    rc = gen_take_text(&g, tok, g.done, &text);
  }
  if (!rc && !text.p) rc = buf_append(&text, "", 0);
  if (rc) {
    sql_result_error(ctx, rc, err);
  } else if (a.result_json) {
    result_json(ctx, &text, &g);
  } else {
    sqlite3_result_text(ctx, text.p, (int)text.n, free);
    text.p = NULL;
  }
  buf_free(&text);
  spec_free(&spec);
  conn_gen_finish(c, &g);
  sql_gen_args_free(&a);
  idvec_free(&ids);
}

/* gpt2_progress(): where the connection's latest long job is; NULL before
** any. */
static void fn_progress(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  Gpt2Progress *p = conn_progress(sqlite3_user_data(ctx));
  if (!p->what) return;
  if (p->running) p->t_now = progress_clock();
  double left = progress_seconds_left(p);
  json_t *j = json_object();
  int bad = !j;
  bad |= json_object_set_new(j, "function", json_string(p->what));
  bad |= json_object_set_new(j, "running", json_boolean(p->running));
  bad |= json_object_set_new(j, "rows_done", json_integer(p->rows_done));
  bad |= json_object_set_new(j, "rows_total",
                             p->rows_total >= 0 ? json_integer(p->rows_total) : json_null());
  bad |= json_object_set_new(j, "tokens", json_integer(p->tokens));
  bad |= json_object_set_new(j, "elapsed_s", json_real(p->t_now - p->t_start));
  bad |= json_object_set_new(j, "tokens_per_s", json_real(progress_tokens_per_s(p)));
  bad |= json_object_set_new(j, "seconds_left", left >= 0 ? json_real(left) : json_null());
  if (bad) {
    json_decref(j);
    j = NULL;
  }
  sql_result_json(ctx, j);
}

/* gpt2_set(name, value): change a connection setting; returns the previous
** value. */
static void fn_set(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  Gpt2Conn *c = sqlite3_user_data(ctx);
  char msg[256];
  int t = sqlite3_value_type(argv[0]);
  if (t == SQLITE_NULL) return;
  if (t != SQLITE_TEXT) {
    gpt2_errorf(msg, sizeof msg, "gpt2_set: argument 1 (name) must be TEXT, got %s",
                sql_type_name(t));
    sql_result_error(ctx, GPT2_ERROR, msg);
    return;
  }
  const char *key = (const char *)sqlite3_value_text(argv[0]);
  if (!key) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  int i = conn_setting_find(key);
  if (i < 0) {
    char known[128];
    size_t k = 0;
    for (int j = 0; j < conn_n_settings(); j++)
      k += (size_t)snprintf(known + k, sizeof known - k, "%s%s", j ? ", " : "",
                            conn_setting_name(j));
    gpt2_errorf(msg, sizeof msg, "gpt2_set: unknown setting '%.64s' (known: %s)", key, known);
    sql_result_error(ctx, GPT2_ERROR, msg);
    return;
  }
  int64_t lo, hi, v;
  conn_setting_range(i, &lo, &hi);
  if (sql_arg_int("gpt2_set", 2, conn_setting_name(i), argv[1], lo, hi, &v, msg, sizeof msg)) {
    sql_result_error(ctx, GPT2_ERROR, msg);
    return;
  }
  sqlite3_result_int64(ctx, conn_setting_set(c, i, v));
}

/* The name argument of gpt2_use / gpt2_unload; NULL after an error. */
static const char *model_name_arg(sqlite3_context *ctx, const char *fname, sqlite3_value *v) {
  if (sqlite3_value_type(v) != SQLITE_TEXT) {
    char msg[128];
    snprintf(msg, sizeof msg, "%s: argument 1 (name) must be TEXT, got %s", fname,
             sql_type_name(sqlite3_value_type(v)));
    sql_result_error(ctx, GPT2_ERROR, msg);
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
  const char *name = model_name_arg(ctx, "gpt2_use", argv[0]);
  if (!name) return;
  const Gpt2Entry *e = conn_use(c, name);
  if (!e) {
    char names[256], msg[512];
    conn_names(c, names, sizeof names);
    gpt2_errorf(msg, sizeof msg, "gpt2_use: no model named '%.100s' (loaded: %s)", name, names);
    sql_result_error(ctx, GPT2_ERROR, msg);
    return;
  }
  sql_result_json(ctx, entry_summary(e));
}

/* gpt2_unload(name): free a model; 1 if one was unloaded, else 0. */
static void fn_unload(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  Gpt2Conn *c = sqlite3_user_data(ctx);
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  const char *name = model_name_arg(ctx, "gpt2_unload", argv[0]);
  if (!name) return;
  sqlite3_result_int(ctx, conn_unload(c, name));
}

/* SQLite 3.45+ wants functions that set a subtype to say so; older
** versions ignore the flag, so declare it even with older headers. */
#ifndef SQLITE_RESULT_SUBTYPE
#define SQLITE_RESULT_SUBTYPE 0x001000000
#endif

/* Functions that change the connection's state are DIRECTONLY (not from
** views or triggers); those whose result depends on the current model are
** not DETERMINISTIC. */
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
    {"gpt2_use", 1, SQLITE_DIRECTONLY | SQLITE_RESULT_SUBTYPE, fn_use},
    {"gpt2_unload", 1, SQLITE_DIRECTONLY, fn_unload},
    {"gpt2_set", 2, SQLITE_DIRECTONLY, fn_set},
    {"gpt2_progress", 0, SQLITE_RESULT_SUBTYPE, fn_progress},
    {"gpt2_tokenize", 1, SQLITE_RESULT_SUBTYPE, fn_tokenize},
    {"gpt2_detokenize", 1, 0, fn_detokenize},
    {"gpt2_token_count", 1, 0, fn_token_count},
    {"gpt2_logits", 1, SQLITE_SUBTYPE, fn_logits},
    {"gpt2_generate", -1, SQLITE_SUBTYPE, fn_generate},
};

int sql_register_scalars(sqlite3 *db, Gpt2Conn *c) {
  int rc = SQLITE_OK;
  for (size_t i = 0; i < sizeof FUNCS / sizeof FUNCS[0] && rc == SQLITE_OK; i++) {
    conn_retain(c);
    rc = sqlite3_create_function_v2(db, FUNCS[i].name, FUNCS[i].n_arg,
                                    SQLITE_UTF8 | FUNCS[i].flags, c, FUNCS[i].fn, NULL, NULL,
                                    conn_release);
    /* on failure SQLite has already called the destructor */
  }
  return rc;
}
