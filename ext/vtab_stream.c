/*
** vtab_stream.c — gpt2_stream, a table-valued function that yields generated
** tokens one row at a time.
**
**   SELECT i, token_id, token, logprob, finish_reason
**     FROM gpt2_stream('Once upon a time', 20, 0.8, 40, 0.95, 7);
**
** Arguments (hidden columns, as SQLite's generate_series): prompt, max_tokens,
** temperature, top_k, top_p, seed — the same meanings and defaults as
** gpt2_generate; or prompt and a JSON object of options in the max_tokens
** column. A NULL prompt gives no rows. finish_reason is NULL but on the
** last row.
**
** HOW IT WORKS: each row is computed when SQLite asks for it. xFilter feeds
** the prompt and samples row 0; every xNext runs one single-position forward
** step and samples one token. So `LIMIT 3` runs exactly three steps after the
** prompt. `token` holds the text a row completes: bytes of a character split
** across tokens are held back and appear whole in the row that completes it,
** so concatenating `token` gives gpt2_generate's text. When generation ends
** at the eos token, that token is the last row (its token is '' or the
** held-back bytes). With stop strings, text that may still become one is
** held back too, so no row ever shows part of a stop string.
*/
#include "sql_args.h"
#include "sql_conn.h"
#include "sql_register.h"

#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

/* Column numbers, matching the CREATE TABLE in streamConnect. */
enum {
  COL_I,
  COL_TOKEN_ID,
  COL_TOKEN,
  COL_LOGPROB,
  COL_FINISH,
  COL_PROMPT, /* first hidden argument column */
  COL_MAX_TOKENS,
  COL_TEMPERATURE,
  COL_TOP_K,
  COL_TOP_P,
  COL_SEED,
  N_ARGS = COL_SEED - COL_PROMPT + 1
};

typedef struct StreamCursor {
  sqlite3_vtab_cursor base; /* must be first */
  Gpt2Gen gen;              /* generation state: KV cache, RNG, pending bytes */
  Gpt2Spec spec;            /* its draft, when the 'draft' option names one */
  int drafted;              /* spec is in use */
  SqlGenArgs args;          /* its parameters and options (gen points at them) */
  int started;              /* gen holds a started generation */
  sqlite3_int64 i;          /* current row number */
  int token;                /* current token id, -1 at eof */
  double logprob;           /* its log-probability */
  ByteBuf text;             /* text the current row completes */
} StreamCursor;

/* The table's schema; one instance per connection. */
static int streamConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                         sqlite3_vtab **ppVtab, char **pzErr) {
  (void)argc;
  (void)argv;
  (void)pzErr;
  return conn_table_connect(db, pAux,
                            "CREATE TABLE x(i INTEGER, token_id INTEGER, token TEXT, "
                            "logprob REAL, finish_reason TEXT, prompt HIDDEN, max_tokens HIDDEN, "
                            "temperature HIDDEN, top_k HIDDEN, top_p HIDDEN, seed HIDDEN)",
                            1, ppVtab);
}

static int streamOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCur) {
  (void)pVtab;
  int rc = sql_cursor_open(sizeof(StreamCursor), ppCur);
  if (rc == SQLITE_OK) {
    StreamCursor *c = (StreamCursor *)*ppCur;
    c->token = -1;
  }
  return rc;
}

/* Hand the KV state back to the connection's prefix cache, then free. */
static void cursorReset(StreamCursor *c, Gpt2Conn *conn) {
  spec_free(&c->spec);
  c->drafted = 0;
  if (c->started) conn_gen_finish(conn, &c->gen);
  c->started = 0;
  sql_gen_args_free(&c->args);
  buf_free(&c->text);
  c->token = -1;
  c->i = 0;
}

static int streamClose(sqlite3_vtab_cursor *cur) {
  StreamCursor *c = (StreamCursor *)cur;
  cursorReset(c, ((Gpt2Table *)cur->pVtab)->conn);
  sqlite3_free(c);
  return SQLITE_OK;
}

/* Sample the next token into the cursor's current row. */
static int step(StreamCursor *c, char *err, size_t errlen) {
  char msg[GPT2_ERRLEN];
  double lp;
  int tok;
  int rc = c->drafted ? spec_next(&c->spec, &tok, &lp, msg, sizeof msg)
                      : gen_next(&c->gen, &tok, &lp, msg, sizeof msg);
  if (rc) {
    gpt2_errorf(err, errlen, "gpt2_stream: %s", msg);
    return rc;
  }
  c->token = tok;
  c->logprob = lp;
  c->text.n = 0;
  if (tok >= 0) rc = gen_take_text(&c->gen, tok, c->gen.done, &c->text);
  return rc;
}

static int streamNext(sqlite3_vtab_cursor *cur) {
  StreamCursor *c = (StreamCursor *)cur;
  char err[GPT2_ERRLEN];
  if (c->gen.done) {
    c->token = -1;
    return SQLITE_OK;
  }
  c->i++;
  int rc = step(c, err, sizeof err);
  return rc ? sql_vtab_error(cur->pVtab, rc, err) : SQLITE_OK;
}

static int streamColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int i) {
  StreamCursor *c = (StreamCursor *)cur;
  switch (i) {
    case COL_I: sqlite3_result_int64(ctx, c->i); break;
    case COL_TOKEN_ID: sqlite3_result_int(ctx, c->token); break;
    case COL_TOKEN:
      sqlite3_result_text(ctx, c->text.p ? c->text.p : "", (int)c->text.n, SQLITE_TRANSIENT);
      break;
    case COL_LOGPROB: sqlite3_result_double(ctx, c->logprob); break;
    case COL_FINISH:
      if (c->gen.done && gen_finish_name(c->gen.finish))
        sqlite3_result_text(ctx, gen_finish_name(c->gen.finish), -1, SQLITE_STATIC);
      break;
    default: break; /* hidden argument columns read back as NULL */
  }
  return SQLITE_OK;
}

static int streamRowid(sqlite3_vtab_cursor *cur, sqlite_int64 *pRowid) {
  *pRowid = ((StreamCursor *)cur)->i;
  return SQLITE_OK;
}

static int streamEof(sqlite3_vtab_cursor *cur) {
  return ((StreamCursor *)cur)->token < 0;
}

/* idxNum has bit k set when argument column COL_PROMPT+k is constrained;
** argv holds those values in column order. */
static int streamFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc,
                        sqlite3_value **argv) {
  (void)idxStr;
  StreamCursor *c = (StreamCursor *)cur;
  Gpt2Conn *conn = ((Gpt2Table *)cur->pVtab)->conn;
  char err[GPT2_ERRLEN];
  cursorReset(c, conn);
  sqlite3_value *args[N_ARGS];
  sql_args_unpack(idxNum, argc, argv, N_ARGS, args);
  if (!args[0] || sqlite3_value_type(args[0]) == SQLITE_NULL) return SQLITE_OK; /* no rows */
  const Gpt2Entry *e = conn_current(conn, "gpt2_stream", 1, err, sizeof err);
  if (!e) return sql_vtab_error(cur->pVtab, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
  IdVec ids = {0};
  const Gpt2Settings *set = conn_settings(conn);
  int rc = sql_gen_args(&e->model->cfg, set->max_tokens_limit ? set->max_tokens_limit : INT64_MAX,
                        "gpt2_stream", N_ARGS - 1, args + 1, 0, &c->args, err, sizeof err);
  const Gpt2Model *draft = NULL;
  if (!rc) rc = conn_draft(conn, "gpt2_stream", e, c->args.draft, &draft, err, sizeof err);
  if (!rc)
    rc = sql_prompt(e->tok, e->model->cfg.vocab_size, "gpt2_stream", "argument 1 (prompt)",
                    args[0], &ids, err, sizeof err);
  if (!rc) {
    c->started = 1;
    rc = conn_gen_start(conn, e->model, "gpt2_stream", ((Gpt2Table *)cur->pVtab)->db, &ids,
                        &c->args.p, &c->gen, err, sizeof err);
  }
  if (!rc && draft) {
    c->drafted = 1;
    rc = conn_spec_start(conn, "gpt2_stream", &c->gen, draft, (int)c->args.draft_tokens,
                         &c->spec, err, sizeof err);
  }
  idvec_free(&ids);
  if (!rc && !c->gen.done) rc = step(c, err, sizeof err);
  return rc ? sql_vtab_error(cur->pVtab, rc, err) : SQLITE_OK;
}

static int streamBestIndex(sqlite3_vtab *tab, sqlite3_index_info *info) {
  return sql_best_index(tab, info, COL_PROMPT, N_ARGS, "gpt2_stream: argument 1 (prompt) is required");
}

/* Eponymous-only: no xCreate, so the module is its own table. */
static sqlite3_module streamModule = {
    .xConnect = streamConnect,
    .xBestIndex = streamBestIndex,
    .xDisconnect = conn_table_disconnect,
    .xOpen = streamOpen,
    .xClose = streamClose,
    .xFilter = streamFilter,
    .xNext = streamNext,
    .xEof = streamEof,
    .xColumn = streamColumn,
    .xRowid = streamRowid,
};

int vtab_register_stream(sqlite3 *db, Gpt2Conn *c) {
  conn_retain(c);
  return sqlite3_create_module_v2(db, "gpt2_stream", &streamModule, c, conn_release);
}
