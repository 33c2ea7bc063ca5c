/*
** vtab_logprobs.c — gpt2_token_logprobs, a table-valued function with one
** row per token of a text: its log-probability given everything before it,
** its rank among the model's choices and the top alternatives.
**
**   SELECT i, token, logprob, rank, top
**     FROM gpt2_token_logprobs(' Paris', 'The capital of France is', 3);
**
** Arguments (hidden columns): text, context, top_n (0..SCORE_MAX_TOP,
** default 0). text and context as gpt2_score (no context: after the eos
** token). Columns: i (0-based token of the text), token_id, token (the text
** the row completes: bytes of a character split across tokens appear whole
** in the row that completes it, so concatenating token gives the text),
** logprob, rank (1 = the model's top choice, ties to the lower id as greedy
** decoding) and top (JSON array of the top_n alternatives, best first, each
** {"token_id", "token", "logprob"}; NULL when top_n is 0).
**
** HOW IT WORKS: xFilter scores the whole text at once (score_run, with the
** connection's prefix cache); the rows then read the results.
*/
#include "sql_args.h"
#include "sql_conn.h"
#include "sql_register.h"
#include "sql_score.h"

#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

enum {
  COL_I,
  COL_TOKEN_ID,
  COL_TOKEN,
  COL_LOGPROB,
  COL_RANK,
  COL_TOP,
  COL_TEXT, /* first hidden argument column */
  COL_CONTEXT,
  COL_TOP_N,
  N_ARGS = COL_TOP_N - COL_TEXT + 1
};

#define FNAME "gpt2_token_logprobs"

typedef struct LpCursor {
  sqlite3_vtab_cursor base; /* must be first */
  const Gpt2Model *m;       /* retained: user SQL between rows may unload it */
  IdVec ids;                /* context (or eos), then the text */
  int s0, n;                /* first text token; text tokens */
  double *lp;               /* (n) */
  int *rank;                /* (n) */
  ScoreTop *top;            /* (n, top_n) or NULL */
  int top_n;
  int i;                    /* current row */
  ByteBuf pending;          /* bytes of a character not complete yet */
  ByteBuf text;             /* the current row's token text */
} LpCursor;

static int lpConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                     sqlite3_vtab **ppVtab, char **pzErr) {
  (void)argc;
  (void)argv;
  (void)pzErr;
  return conn_table_connect(db, pAux,
                            "CREATE TABLE x(i INTEGER, token_id INTEGER, token TEXT, "
                            "logprob REAL, rank INTEGER, top TEXT, text HIDDEN, "
                            "context HIDDEN, top_n HIDDEN)",
                            1, ppVtab);
}

static int lpOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCur) {
  (void)pVtab;
  return sql_cursor_open(sizeof(LpCursor), ppCur);
}

static void cursorReset(LpCursor *c) {
  model_release(c->m);
  idvec_free(&c->ids);
  free(c->lp);
  free(c->rank);
  free(c->top);
  buf_free(&c->pending);
  buf_free(&c->text);
  memset((char *)c + sizeof c->base, 0, sizeof *c - sizeof c->base);
}

static int lpClose(sqlite3_vtab_cursor *cur) {
  cursorReset((LpCursor *)cur);
  sqlite3_free(cur);
  return SQLITE_OK;
}

/* The text row i completes (see the header). */
static int row_text(LpCursor *c) {
  size_t len = 0;
  const char *b = tok_bytes(c->m->tok, c->ids.v[c->s0 + c->i], &len);
  c->text.n = 0;
  if (b && len && buf_append(&c->pending, b, len)) return GPT2_NOMEM;
  size_t keep = c->i == c->n - 1 ? c->pending.n : utf8_complete_prefix(c->pending.p, c->pending.n);
  if (keep && utf8_append_sanitized(&c->text, c->pending.p, keep)) return GPT2_NOMEM;
  memmove(c->pending.p, c->pending.p + keep, c->pending.n - keep);
  c->pending.n -= keep;
  return GPT2_OK;
}

static int lpNext(sqlite3_vtab_cursor *cur) {
  LpCursor *c = (LpCursor *)cur;
  if (++c->i < c->n && row_text(c)) return SQLITE_NOMEM;
  return SQLITE_OK;
}

static int lpEof(sqlite3_vtab_cursor *cur) {
  LpCursor *c = (LpCursor *)cur;
  return c->i >= c->n;
}

/* The top alternatives of the current row as JSON text; NULL on OOM. */
static char *top_json(LpCursor *c) {
  json_t *a = json_array();
  int bad = !a;
  for (int r = 0; !bad && r < c->top_n; r++) {
    const ScoreTop *t = &c->top[(size_t)c->i * c->top_n + r];
    if (t->id < 0) break; /* fewer candidates than asked */
    size_t len = 0;
    const char *b = tok_bytes(c->m->tok, t->id, &len);
    ByteBuf s = {0};
    bad |= utf8_append_sanitized(&s, b ? b : "", len) || buf_append(&s, "", 0);
    json_t *o = json_object();
    bad |= !o;
    if (!bad) {
      bad |= json_object_set_new(o, "token_id", json_integer(t->id));
      bad |= json_object_set_new(o, "token", json_stringn(s.p, s.n));
      bad |= json_object_set_new(o, "logprob", json_real(t->logprob));
    }
    buf_free(&s);
    bad |= json_array_append_new(a, o);
  }
  size_t n = bad ? 0 : json_dumpb(a, NULL, 0, JSON_COMPACT);
  char *out = n ? malloc(n + 1) : NULL;
  if (out && json_dumpb(a, out, n, JSON_COMPACT) == n) out[n] = 0;
  else {
    free(out);
    out = NULL;
  }
  json_decref(a);
  return out;
}

static int lpColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
  LpCursor *c = (LpCursor *)cur;
  if (c->i >= c->n) return SQLITE_OK;
  switch (col) {
    case COL_I: sqlite3_result_int(ctx, c->i); break;
    case COL_TOKEN_ID: sqlite3_result_int(ctx, c->ids.v[c->s0 + c->i]); break;
    case COL_TOKEN:
      sqlite3_result_text(ctx, c->text.p ? c->text.p : "", (int)c->text.n, SQLITE_TRANSIENT);
      break;
    case COL_LOGPROB: sqlite3_result_double(ctx, c->lp[c->i]); break;
    case COL_RANK: sqlite3_result_int(ctx, c->rank[c->i]); break;
    case COL_TOP:
      if (c->top_n > 0) {
        char *j = top_json(c);
        if (!j) return SQLITE_NOMEM;
        sqlite3_result_text(ctx, j, -1, free);
      }
      break;
    default: break; /* hidden argument columns read back as NULL */
  }
  return SQLITE_OK;
}

static int lpRowid(sqlite3_vtab_cursor *cur, sqlite_int64 *pRowid) {
  *pRowid = ((LpCursor *)cur)->i;
  return SQLITE_OK;
}

static int lpFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc,
                    sqlite3_value **argv) {
  (void)idxStr;
  LpCursor *c = (LpCursor *)cur;
  Gpt2Table *vt = (Gpt2Table *)cur->pVtab;
  Gpt2Conn *conn = vt->conn;
  char err[GPT2_ERRLEN], msg[GPT2_ERRLEN];
  cursorReset(c);
  sqlite3_value *args[N_ARGS];
  sql_args_unpack(idxNum, argc, argv, N_ARGS, args);
  if (!args[0] || sqlite3_value_type(args[0]) == SQLITE_NULL) return SQLITE_OK; /* no rows */
  int64_t top_n = 0;
  if (args[2] && sqlite3_value_type(args[2]) != SQLITE_NULL &&
      sql_arg_int(FNAME, 3, "top_n", args[2], 0, SCORE_MAX_TOP, &top_n, err, sizeof err))
    return sql_vtab_error(cur->pVtab, GPT2_ERROR, err);
  const Gpt2Entry *e = conn_current(conn, FNAME, 1, err, sizeof err);
  if (!e) return sql_vtab_error(cur->pVtab, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
  c->m = model_retain(e->model);
  int rc = sql_score_ids(c->m, FNAME, "argument 1 (text)", args[0], "argument 2 (context)",
                         args[1], &c->ids, &c->s0, err, sizeof err);
  if (!rc)
    rc = conn_check_kv(conn, c->m, FNAME, 1, sql_score_kv(c->m, (int64_t)c->ids.n),
                       "shorten the text", err, sizeof err);
  c->n = rc ? 0 : (int)c->ids.n - c->s0;
  c->top_n = (int)top_n;
  if (!rc && c->n > 0) {
    c->lp = malloc((size_t)c->n * sizeof *c->lp);
    c->rank = malloc((size_t)c->n * sizeof *c->rank);
    if (top_n) c->top = malloc((size_t)c->n * (size_t)top_n * sizeof *c->top);
    if (!c->lp || !c->rank || (top_n && !c->top) || !conn_scratch(conn)) rc = GPT2_NOMEM;
  }
  if (!rc && c->n > 0) {
    ScoreJob job = {.ids = c->ids.v, .n = (int)c->ids.n, .s0 = c->s0, .lp = c->lp,
                    .rank = c->rank, .top_n = c->top_n, .top = c->top};
    ScoreParams p = sql_score_params(c->m, vt->db);
    rc = score_run(c->m, conn_scratch(conn), conn_counters(conn), &job, 1, &p, conn_prefix(conn),
                   msg, sizeof msg);
    if (rc == GPT2_ERROR || rc == GPT2_INTERRUPTED) gpt2_errorf(err, sizeof err, "%s: %s", FNAME, msg);
  }
  if (!rc && c->n > 0) rc = row_text(c);
  if (rc) {
    c->n = 0;
    return sql_vtab_error(cur->pVtab, rc, err);
  }
  return SQLITE_OK;
}

static int lpBestIndex(sqlite3_vtab *tab, sqlite3_index_info *info) {
  return sql_best_index(tab, info, COL_TEXT, N_ARGS, FNAME ": argument 1 (text) is required");
}

static sqlite3_module lpModule = {
    .xConnect = lpConnect,
    .xBestIndex = lpBestIndex,
    .xDisconnect = conn_table_disconnect,
    .xOpen = lpOpen,
    .xClose = lpClose,
    .xFilter = lpFilter,
    .xNext = lpNext,
    .xEof = lpEof,
    .xColumn = lpColumn,
    .xRowid = lpRowid,
};

int vtab_register_logprobs(sqlite3 *db, Gpt2Conn *c) {
  conn_retain(c);
  return sqlite3_create_module_v2(db, FNAME, &lpModule, c, conn_release);
}
