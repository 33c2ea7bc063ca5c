/*
** sql_score.c — the scoring and embedding scalar functions (README.md,
** "Scoring and embeddings"):
**
**   gpt2_score(text [, context])       log p(text | context), natural log
**   gpt2_perplexity(text [, stride])   exp(-mean token log-probability)
**   gpt2_embed(text [, options])       BLOB of n_embd float32 (LE), pooled
**                                      final hidden states after ln_f
**
** plus the helpers the scoring tables share (sql_score.h). The core work is
** score.c's; this file checks arguments and words errors.
*/
#include "sql_score.h"

#include "sql_args.h"
#include "sql_conn.h"
#include "sql_register.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

int sql_score_ids(const Gpt2Model *m, const char *fname, const char *text_where,
                  sqlite3_value *text, const char *ctx_where, sqlite3_value *context, IdVec *ids,
                  int *s0, char *err, size_t errlen) {
  const int V = m->cfg.vocab_size;
  int rc = GPT2_OK;
  if (context && sqlite3_value_type(context) != SQLITE_NULL)
    rc = sql_prompt(m->tok, V, fname, ctx_where, context, ids, err, errlen);
  if (!rc && ids->n == 0) {
    if (m->cfg.eos_id < 0 && context && sqlite3_value_type(context) != SQLITE_NULL)
      return gpt2_errorf(err, errlen,
                         "%s: %s is empty, and the checkpoint declares no eos token to start "
                         "from instead; pass a non-empty context",
                         fname, ctx_where);
    if (m->cfg.eos_id < 0)
      return gpt2_errorf(err, errlen,
                         "%s: without a context the text is scored after the eos token, and "
                         "the checkpoint declares none; pass a context (gpt2_score's argument 2)",
                         fname);
    rc = idvec_push(ids, m->cfg.eos_id);
  }
  size_t n_ctx = ids->n;
  if (!rc) rc = sql_prompt(m->tok, V, fname, text_where, text, ids, err, errlen);
  if (!rc && ids->n > INT_MAX / 2)
    return gpt2_errorf(err, errlen, "%s: %s is %zu tokens, more than %d", fname, text_where,
                       ids->n - n_ctx, INT_MAX / 2);
  *s0 = (int)n_ctx;
  return rc;
}

ScoreParams sql_score_params(const Gpt2Model *m, sqlite3 *db) {
  return (ScoreParams){.stride = score_default_stride(m), .stop = sql_interrupted, .stop_arg = db};
}

int64_t sql_score_kv(const Gpt2Model *m, int64_t n) {
  int64_t fed = n - 1, P = m->cfg.n_positions; /* the last token is never fed */
  if (fed <= P) return fed > 0 ? fed : 0;
  return 2 * P + SCORE_STEP_ROWS; /* two windows of a step, a few spare caches */
}

/* A failed lookup of the current entry: err empty means out of memory. */
static void entry_error(sqlite3_context *ctx, const char *err) {
  sql_result_error(ctx, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
}

/* Score text after context (NULL: none) with the given stride; *sum_lp and
** *n_tok get the total log-probability and the tokens scored. */
static int score_text(sqlite3_context *ctx, const char *fname, sqlite3_value *text,
                      sqlite3_value *context, int64_t stride, double *sum_lp, int *n_tok,
                      char *err, size_t errlen) {
  Gpt2Conn *c = sqlite3_user_data(ctx);
  const Gpt2Entry *e = conn_current(c, fname, 1, err, errlen);
  if (!e) return err[0] ? GPT2_ERROR : GPT2_NOMEM;
  const Gpt2Model *m = e->model;
  IdVec ids = {0};
  int s0 = 0;
  double *lp = NULL;
  char msg[GPT2_ERRLEN];
  int rc = sql_score_ids(m, fname, "argument 1 (text)", text, "argument 2 (context)", context,
                         &ids, &s0, err, errlen);
  if (!rc && stride && (stride < 1 || stride > m->cfg.n_positions))
    rc = gpt2_errorf(err, errlen, "%s: argument 2 (stride) = %lld is out of range [1, %d]",
                     fname, (long long)stride, m->cfg.n_positions);
  if (!rc)
    rc = conn_check_kv(c, m, fname, 1, sql_score_kv(m, (int64_t)ids.n), "shorten the text",
                       err, errlen);
  int n = (int)ids.n - s0;
  if (!rc && n > 0 && !(lp = malloc((size_t)n * sizeof *lp))) rc = GPT2_NOMEM;
  if (!rc && !conn_scratch(c)) rc = GPT2_NOMEM;
  if (!rc && n > 0) {
    ScoreJob job = {.ids = ids.v, .n = (int)ids.n, .s0 = s0, .lp = lp};
    ScoreParams p = sql_score_params(m, sqlite3_context_db_handle(ctx));
    if (stride) p.stride = (int)stride;
    rc = score_run(m, conn_scratch(c), conn_counters(c), &job, 1, &p, conn_prefix(c), msg,
                   sizeof msg);
    if (rc == GPT2_ERROR || rc == GPT2_INTERRUPTED) gpt2_errorf(err, errlen, "%s: %s", fname, msg);
  }
  double sum = 0;
  for (int i = 0; !rc && i < n; i++) sum += lp[i]; /* in token order */
  *sum_lp = sum;
  *n_tok = n;
  free(lp);
  idvec_free(&ids);
  return rc;
}

static void fn_score(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  char err[GPT2_ERRLEN];
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  double sum;
  int n;
  int rc = score_text(ctx, "gpt2_score", argv[0], argc > 1 ? argv[1] : NULL, 0, &sum, &n, err,
                      sizeof err);
  if (rc) sql_result_error(ctx, rc, err);
  else sqlite3_result_double(ctx, sum);
}

static void fn_perplexity(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fname = "gpt2_perplexity";
  char err[GPT2_ERRLEN];
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  int64_t stride = 0; /* 0: the default */
  if (argc > 1 && sqlite3_value_type(argv[1]) != SQLITE_NULL &&
      sql_arg_int(fname, 2, "stride", argv[1], 1, INT_MAX, &stride, err, sizeof err)) {
    sql_result_error(ctx, GPT2_ERROR, err);
    return;
  }
  double sum;
  int n;
  int rc = score_text(ctx, fname, argv[0], NULL, stride, &sum, &n, err, sizeof err);
  if (rc) sql_result_error(ctx, rc, err);
  else if (n > 0) sqlite3_result_double(ctx, exp(-sum / n));
  /* an empty text has no tokens to average: NULL */
}

/* gpt2_embed's options: comma-separated words among mean, last, normalize. */
static int embed_options(sqlite3_value *v, int *last, int *normalize, char *err, size_t errlen) {
  const char *fname = "gpt2_embed";
  *last = 0;
  *normalize = 0;
  if (!v || sqlite3_value_type(v) == SQLITE_NULL) return GPT2_OK;
  if (sqlite3_value_type(v) != SQLITE_TEXT)
    return gpt2_errorf(err, errlen,
                       "%s: argument 2 (options) must be TEXT, comma-separated words among "
                       "mean, last, normalize (e.g. 'mean,normalize'); got %s",
                       fname, sql_type_name(sqlite3_value_type(v)));
  const char *s = (const char *)sqlite3_value_text(v);
  if (!s) return GPT2_NOMEM;
  int mean = 0;
  for (const char *p = s; *p;) {
    const char *q = p;
    while (*q && *q != ',') q++;
    const char *a = p, *b = q;
    while (a < b && *a == ' ') a++;
    while (b > a && b[-1] == ' ') b--;
    size_t k = (size_t)(b - a);
    if (k == 4 && memcmp(a, "mean", 4) == 0) mean = 1;
    else if (k == 4 && memcmp(a, "last", 4) == 0) *last = 1;
    else if (k == 9 && memcmp(a, "normalize", 9) == 0) *normalize = 1;
    else
      return gpt2_errorf(err, errlen,
                         "%s: argument 2 (options) = '%.64s': unknown option '%.*s' (known: "
                         "mean, last, normalize, comma-separated)",
                         fname, s, (int)(k < 32 ? k : 32), a);
    p = *q ? q + 1 : q;
  }
  if (mean && *last)
    return gpt2_errorf(err, errlen,
                       "%s: argument 2 (options) = '%.64s' asks for both mean and last pooling; "
                       "choose one",
                       fname, s);
  return GPT2_OK;
}

static void fn_embed(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fname = "gpt2_embed";
  Gpt2Conn *c = sqlite3_user_data(ctx);
  char err[GPT2_ERRLEN], msg[GPT2_ERRLEN];
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) return;
  int last, normalize;
  int rc = embed_options(argc > 1 ? argv[1] : NULL, &last, &normalize, err, sizeof err);
  if (rc) {
    sql_result_error(ctx, rc, err);
    return;
  }
  const Gpt2Entry *e = conn_current(c, fname, 1, err, sizeof err);
  if (!e) {
    entry_error(ctx, err);
    return;
  }
  const Gpt2Model *m = e->model;
  const int C = m->cfg.n_embd, P = m->cfg.n_positions;
  IdVec ids = {0};
  float *vec = NULL;
  rc = sql_prompt(m->tok, m->cfg.vocab_size, fname, "argument 1 (text)", argv[0], &ids, err,
                  sizeof err);
  if (!rc && ids.n == 0) { /* the empty text: the document start alone */
    if (m->cfg.eos_id < 0)
      rc = gpt2_errorf(err, sizeof err,
                       "%s: argument 1 (text) is empty, and the checkpoint declares no eos "
                       "token to embed instead",
                       fname);
    else rc = idvec_push(&ids, m->cfg.eos_id);
  }
  if (!rc && ids.n > (size_t)P)
    rc = gpt2_errorf(err, sizeof err,
                     "%s: argument 1 (text) is %zu tokens, longer than the context (%d)", fname,
                     ids.n, P);
  if (!rc) rc = conn_check_kv(c, m, fname, 1, (int64_t)ids.n, "shorten the text", err, sizeof err);
  if (!rc && !(vec = malloc((size_t)C * sizeof *vec))) rc = GPT2_NOMEM;
  if (!rc && !conn_scratch(c)) rc = GPT2_NOMEM;
  if (!rc) {
    ScoreParams p = sql_score_params(m, sqlite3_context_db_handle(ctx));
    rc = score_embed(m, conn_scratch(c), conn_counters(c), ids.v, (int)ids.n, last, normalize,
                     &p, vec, msg, sizeof msg);
    if (rc == GPT2_ERROR || rc == GPT2_INTERRUPTED) gpt2_errorf(err, sizeof err, "%s: %s", fname, msg);
  }
  idvec_free(&ids);
  if (rc) {
    free(vec);
    sql_result_error(ctx, rc, err);
    return;
  }
  unsigned char *blob = (unsigned char *)vec; /* little-endian float32 whatever the host */
  for (int i = 0; i < C; i++) {
    uint32_t u;
    memcpy(&u, &vec[i], 4);
    blob[4 * i] = (unsigned char)u;
    blob[4 * i + 1] = (unsigned char)(u >> 8);
    blob[4 * i + 2] = (unsigned char)(u >> 16);
    blob[4 * i + 3] = (unsigned char)(u >> 24);
  }
  sqlite3_result_blob(ctx, blob, C * 4, free);
}

/* Results depend on the current model: none is DETERMINISTIC. They read
** the JSON subtype of token-id arguments. */
static const struct {
  const char *name;
  int n_arg;
  void (*fn)(sqlite3_context *, int, sqlite3_value **);
} FUNCS[] = {
    {"gpt2_score", 1, fn_score},           {"gpt2_score", 2, fn_score},
    {"gpt2_perplexity", 1, fn_perplexity}, {"gpt2_perplexity", 2, fn_perplexity},
    {"gpt2_embed", 1, fn_embed},           {"gpt2_embed", 2, fn_embed},
};

int sql_register_score(sqlite3 *db, Gpt2Conn *c) {
  int rc = SQLITE_OK;
  for (size_t i = 0; i < sizeof FUNCS / sizeof FUNCS[0] && rc == SQLITE_OK; i++) {
    conn_retain(c);
    rc = sqlite3_create_function_v2(db, FUNCS[i].name, FUNCS[i].n_arg,
                                    SQLITE_UTF8 | SQLITE_SUBTYPE, c, FUNCS[i].fn, NULL, NULL,
                                    conn_release);
  }
  return rc;
}
