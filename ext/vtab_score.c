/*
** vtab_score.c — gpt2_score_rows, a table-valued function that scores every
** row of a query in batches.
**
**   SELECT key, logprob, perplexity
**     FROM gpt2_score_rows('SELECT id, body FROM docs');
**
** Arguments (hidden columns): query, batch_size. `query` is one read-only
** SQL statement returning (key, text) or (key, text, context); text and
** context as gpt2_score's. batch_size (default 64, 1..4096) is how many
** query rows are read and scored together. Columns: key (unchanged, any
** type), n_tokens (tokens of the text), logprob (= gpt2_score(text,
** context)) and perplexity (= exp(-logprob / n_tokens), NULL for an empty
** text); all NULL but key for a NULL text.
**
** HOW IT WORKS: the rows of a batch are one score_run: their fed rows are
** packed into forward calls of up to SCORE_STEP_ROWS rows (many short rows
** share each weight pass; a long one spans several), the LM head run only
** for the rows that score a token. Each value equals the row's own
** gpt2_score bitwise (score.h, BATCHING). Rows come out in query order.
*/
#include "sql_args.h"
#include "sql_conn.h"
#include "sql_register.h"
#include "sql_score.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

enum {
  COL_KEY,
  COL_N_TOKENS,
  COL_LOGPROB,
  COL_PERPLEXITY,
  COL_QUERY, /* first hidden argument column */
  COL_BATCH_SIZE,
  N_ARGS = COL_BATCH_SIZE - COL_QUERY + 1
};

#define FNAME "gpt2_score_rows"
#define DEFAULT_BATCH 64
#define MAX_BATCH 4096

/* A query row of the current batch. */
typedef struct Row {
  sqlite3_value *key;
  int is_null; /* NULL text: no score */
  IdVec ids;   /* context (or eos), then the text */
  int s0;
  double *lp;  /* (ids.n - s0) */
  double sum;  /* total log-probability */
} Row;

typedef struct ScoreCursor {
  sqlite3_vtab_cursor base; /* must be first */
  sqlite3_stmt *stmt;       /* the query; NULL once exhausted */
  int has_context;          /* the query returns a third column */
  const Gpt2Model *m;       /* retained: the query may unload it */
  int batch;                /* rows per batch */
  Row *rows;                /* (batch) */
  int n_rows, i;            /* rows in the batch; the current one */
  sqlite3_int64 n_read;     /* query rows read */
  sqlite3_int64 rowid;
  Gpt2Progress *progress;   /* the connection's, while this cursor reports to it */
} ScoreCursor;

static int scoreConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                        sqlite3_vtab **ppVtab, char **pzErr) {
  (void)argc;
  (void)argv;
  (void)pzErr;
  return conn_table_connect(db, pAux,
                            "CREATE TABLE x(key, n_tokens INTEGER, logprob REAL, "
                            "perplexity REAL, query HIDDEN, batch_size HIDDEN)",
                            0, ppVtab);
}

static int scoreOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCur) {
  (void)pVtab;
  return sql_cursor_open(sizeof(ScoreCursor), ppCur);
}

static void rowsClear(ScoreCursor *c) {
  for (int i = 0; i < c->n_rows; i++) {
    Row *r = &c->rows[i];
    sqlite3_value_free(r->key);
    idvec_free(&r->ids);
    free(r->lp);
    memset(r, 0, sizeof *r);
  }
  c->n_rows = 0;
  c->i = 0;
}

static void cursorReset(ScoreCursor *c) {
  if (c->progress) progress_end(c->progress);
  c->progress = NULL;
  rowsClear(c);
  free(c->rows);
  c->rows = NULL;
  sqlite3_finalize(c->stmt);
  c->stmt = NULL;
  model_release(c->m);
  c->m = NULL;
  c->n_read = 0;
  c->rowid = 0;
}

static int scoreClose(sqlite3_vtab_cursor *cur) {
  cursorReset((ScoreCursor *)cur);
  sqlite3_free(cur);
  return SQLITE_OK;
}

/* Read the next batch of query rows and score it. */
static int next_batch(ScoreCursor *c, char *err, size_t errlen) {
  Gpt2Table *vt = (Gpt2Table *)c->base.pVtab;
  Gpt2Conn *conn = vt->conn;
  rowsClear(c);
  int64_t kv = 0, win = 0; /* positions of all the batch's rows; its longest window */
  int rc = GPT2_OK;
  while (c->stmt && c->n_rows < c->batch) {
    int st = sqlite3_step(c->stmt);
    if (st == SQLITE_DONE) {
      sqlite3_finalize(c->stmt);
      c->stmt = NULL;
      if (c->progress->rows_total < 0) c->progress->rows_total = c->n_read;
      break;
    }
    if (st != SQLITE_ROW)
      return gpt2_errorf(err, errlen, FNAME ": argument 1 (query) failed: %s",
                         sqlite3_errmsg(vt->db));
    Row *r = &c->rows[c->n_rows++];
    sqlite3_int64 k = c->n_read++;
    r->key = sqlite3_value_dup(sqlite3_column_value(c->stmt, 0));
    if (!r->key) return GPT2_NOMEM;
    sqlite3_value *text = sqlite3_column_value(c->stmt, 1);
    if (sqlite3_value_type(text) == SQLITE_NULL) {
      r->is_null = 1;
      continue;
    }
    char tw[64], cw[64];
    snprintf(tw, sizeof tw, "query row %lld (from 0), column 2 (text)", (long long)k);
    snprintf(cw, sizeof cw, "query row %lld (from 0), column 3 (context)", (long long)k);
    rc = sql_score_ids(c->m, FNAME, tw, text, cw,
                       c->has_context ? sqlite3_column_value(c->stmt, 2) : NULL, &r->ids, &r->s0,
                       err, errlen);
    if (rc) return rc;
    size_t n = r->ids.n - (size_t)r->s0;
    if (n && !(r->lp = malloc(n * sizeof *r->lp))) return GPT2_NOMEM;
    int64_t need = sql_score_kv(c->m, (int64_t)r->ids.n);
    if (need > c->m->cfg.n_positions) need = c->m->cfg.n_positions;
    kv += need;
    if (need > win) win = need;
  }
  /* a score_run holds at most two long windows and its steps' rows, with
  ** spare caches (score.c): 2 windows + 3 steps of positions */
  int64_t cap = 2 * win + 3 * SCORE_STEP_ROWS;
  if (kv && (rc = conn_check_kv(conn, c->m, FNAME, c->n_rows, kv < cap ? kv : cap,
                                "lower batch_size or shorten the texts", err, errlen)))
    return rc;
  ScoreJob *jobs = malloc(((size_t)c->n_rows + 1) * sizeof *jobs);
  if (!jobs) return GPT2_NOMEM;
  int nj = 0;
  for (int i = 0; i < c->n_rows; i++) {
    Row *r = &c->rows[i];
    if (!r->is_null)
      jobs[nj++] = (ScoreJob){.ids = r->ids.v, .n = (int)r->ids.n, .s0 = r->s0, .lp = r->lp};
  }
  char msg[GPT2_ERRLEN];
  ScoreParams p = sql_score_params(c->m, vt->db);
  Gpt2Scratch *sc = conn_scratch(conn);
  rc = sc ? score_run(c->m, sc, conn_counters(conn), jobs, nj, &p, NULL, msg, sizeof msg)
          : GPT2_NOMEM;
  free(jobs);
  if (rc == GPT2_ERROR || rc == GPT2_INTERRUPTED) gpt2_errorf(err, errlen, FNAME ": %s", msg);
  int64_t scored = 0;
  for (int i = 0; !rc && i < c->n_rows; i++) {
    Row *r = &c->rows[i];
    r->sum = 0;
    for (size_t t = 0; !r->is_null && t < r->ids.n - (size_t)r->s0; t++) r->sum += r->lp[t];
    if (!r->is_null) scored += (int64_t)(r->ids.n - (size_t)r->s0);
  }
  if (!rc) progress_add(c->progress, c->n_rows, scored);
  return rc;
}

static int scoreNext(sqlite3_vtab_cursor *cur) {
  ScoreCursor *c = (ScoreCursor *)cur;
  char err[GPT2_ERRLEN];
  c->rowid++;
  if (++c->i < c->n_rows || !c->stmt) return SQLITE_OK;
  int rc = next_batch(c, err, sizeof err);
  if (rc) {
    rowsClear(c);
    return sql_vtab_error(cur->pVtab, rc, err);
  }
  return SQLITE_OK;
}

static int scoreEof(sqlite3_vtab_cursor *cur) {
  ScoreCursor *c = (ScoreCursor *)cur;
  return c->i >= c->n_rows;
}

static int scoreColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
  ScoreCursor *c = (ScoreCursor *)cur;
  if (c->i >= c->n_rows) return SQLITE_OK;
  const Row *r = &c->rows[c->i];
  int n = r->is_null ? 0 : (int)r->ids.n - r->s0;
  switch (col) {
    case COL_KEY: sqlite3_result_value(ctx, r->key); break;
    case COL_N_TOKENS:
      if (!r->is_null) sqlite3_result_int(ctx, n);
      break;
    case COL_LOGPROB:
      if (!r->is_null) sqlite3_result_double(ctx, r->sum);
      break;
    case COL_PERPLEXITY:
      if (n > 0) sqlite3_result_double(ctx, exp(-r->sum / n));
      break;
    default: break;
  }
  return SQLITE_OK;
}

static int scoreRowid(sqlite3_vtab_cursor *cur, sqlite_int64 *pRowid) {
  *pRowid = ((ScoreCursor *)cur)->rowid;
  return SQLITE_OK;
}

static int scoreFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc,
                       sqlite3_value **argv) {
  (void)idxStr;
  ScoreCursor *c = (ScoreCursor *)cur;
  Gpt2Table *vt = (Gpt2Table *)cur->pVtab;
  char err[GPT2_ERRLEN];
  cursorReset(c);
  sqlite3_value *args[N_ARGS];
  sql_args_unpack(idxNum, argc, argv, N_ARGS, args);
  if (!args[0] || sqlite3_value_type(args[0]) == SQLITE_NULL) return SQLITE_OK; /* no rows */
  if (sqlite3_value_type(args[0]) != SQLITE_TEXT)
    return sql_vtab_error(cur->pVtab, GPT2_ERROR,
                          FNAME ": argument 1 (query) must be TEXT, an SQL query");
  int64_t batch = DEFAULT_BATCH;
  if (args[1] && sqlite3_value_type(args[1]) != SQLITE_NULL &&
      sql_arg_int(FNAME, 2, "batch_size", args[1], 1, MAX_BATCH, &batch, err, sizeof err))
    return sql_vtab_error(cur->pVtab, GPT2_ERROR, err);
  const Gpt2Entry *e = conn_current(vt->conn, FNAME, 1, err, sizeof err);
  if (!e) return sql_vtab_error(cur->pVtab, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
  c->m = model_retain(e->model);
  c->rows = calloc((size_t)batch, sizeof *c->rows);
  if (!c->rows) return SQLITE_NOMEM;
  c->batch = (int)batch;
  const char *sql = (const char *)sqlite3_value_text(args[0]);
  if (!sql) return SQLITE_NOMEM;
  /* two or three columns: try two, then three (the messages are the same
  ** unless the count is what is wrong) */
  const char *desc = "two or three columns, (key, text [, context])";
  int rc = sql_prepare_query(vt->db, FNAME, sql, 2, desc, &c->stmt, err, sizeof err);
  if (rc == GPT2_ERROR) {
    rc = sql_prepare_query(vt->db, FNAME, sql, 3, desc, &c->stmt, err, sizeof err);
    c->has_context = 1;
  }
  if (rc) return sql_vtab_error(cur->pVtab, rc, err);
  c->progress = conn_progress(vt->conn);
  progress_begin(c->progress, FNAME, -1, (int)conn_settings(vt->conn)->progress);
  if (c->progress->draw) c->progress->rows_total = sql_count_rows(vt->db, c->stmt);
  c->i = 0;
  rc = next_batch(c, err, sizeof err);
  if (rc) {
    rowsClear(c);
    return sql_vtab_error(cur->pVtab, rc, err);
  }
  return SQLITE_OK;
}

static int scoreBestIndex(sqlite3_vtab *tab, sqlite3_index_info *info) {
  return sql_best_index(tab, info, COL_QUERY, N_ARGS, FNAME ": argument 1 (query) is required");
}

static sqlite3_module scoreModule = {
    .xConnect = scoreConnect,
    .xBestIndex = scoreBestIndex,
    .xDisconnect = conn_table_disconnect,
    .xOpen = scoreOpen,
    .xClose = scoreClose,
    .xFilter = scoreFilter,
    .xNext = scoreNext,
    .xEof = scoreEof,
    .xColumn = scoreColumn,
    .xRowid = scoreRowid,
};

int vtab_register_score_rows(sqlite3 *db, Gpt2Conn *c) {
  conn_retain(c);
  return sqlite3_create_module_v2(db, FNAME, &scoreModule, c, conn_release);
}
