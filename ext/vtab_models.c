/*
** vtab_models.c — gpt2_models, an eponymous read-only table listing the
** models loaded on this connection.
**
**   SELECT name, path, current, n_layer, n_embd, n_params, dtype, bytes, weights,
**          users
**     FROM gpt2_models;
**
** dtype is how the file stores the weights, weights how memory holds the
** matrices (gpt2_load's third argument), bytes what that takes, users how
** many loads in this process share that one copy (registry.h).
** Tokenizer-only entries have NULL model columns. Rows follow load order.
*/
#include "registry.h"
#include "sql_args.h"
#include "sql_conn.h"
#include "sql_register.h"

#include <string.h>

SQLITE_EXTENSION_INIT3

enum { COL_NAME, COL_PATH, COL_CURRENT, COL_N_LAYER, COL_N_EMBD, COL_N_PARAMS, COL_DTYPE,
       COL_BYTES, COL_WEIGHTS, COL_USERS };

typedef struct ModelsCursor {
  sqlite3_vtab_cursor base; /* must be first */
  int i;                    /* entry index (conn_entry) */
} ModelsCursor;

static int modelsConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                         sqlite3_vtab **ppVtab, char **pzErr) {
  (void)argc;
  (void)argv;
  (void)pzErr;
  return conn_table_connect(db, pAux,
                            "CREATE TABLE x(name TEXT, path TEXT, current INTEGER, "
                            "n_layer INTEGER, n_embd INTEGER, n_params INTEGER, "
                            "dtype TEXT, bytes INTEGER, weights TEXT, users INTEGER)",
                            1, ppVtab);
}

static int modelsOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCur) {
  (void)pVtab;
  return sql_cursor_open(sizeof(ModelsCursor), ppCur);
}

static int modelsClose(sqlite3_vtab_cursor *cur) {
  sqlite3_free(cur);
  return SQLITE_OK;
}

static int modelsFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc,
                        sqlite3_value **argv) {
  (void)idxNum;
  (void)idxStr;
  (void)argc;
  (void)argv;
  ((ModelsCursor *)cur)->i = 0;
  return SQLITE_OK;
}

static int modelsNext(sqlite3_vtab_cursor *cur) {
  ((ModelsCursor *)cur)->i++;
  return SQLITE_OK;
}

static int modelsEof(sqlite3_vtab_cursor *cur) {
  const Gpt2Conn *conn = ((Gpt2Table *)cur->pVtab)->conn;
  return ((ModelsCursor *)cur)->i >= conn_n_entries(conn);
}

static int modelsColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
  const Gpt2Conn *conn = ((Gpt2Table *)cur->pVtab)->conn;
  int i = ((ModelsCursor *)cur)->i;
  const Gpt2Entry *e = conn_entry(conn, i);
  if (!e) return SQLITE_OK;
  const Gpt2Model *m = e->model;
  switch (col) {
    case COL_NAME: sqlite3_result_text(ctx, e->name, -1, SQLITE_TRANSIENT); break;
    case COL_PATH: sqlite3_result_text(ctx, e->path, -1, SQLITE_TRANSIENT); break;
    case COL_CURRENT: sqlite3_result_int(ctx, conn_is_current(conn, i)); break;
    case COL_N_LAYER: if (m) sqlite3_result_int(ctx, m->cfg.n_layer); break;
    case COL_N_EMBD: if (m) sqlite3_result_int(ctx, m->cfg.n_embd); break;
    case COL_N_PARAMS: if (m) sqlite3_result_int64(ctx, m->n_params); break;
    case COL_DTYPE: if (m) sqlite3_result_text(ctx, m->dtype, -1, SQLITE_TRANSIENT); break;
    case COL_BYTES: if (m) sqlite3_result_int64(ctx, (sqlite3_int64)m->weight_bytes); break;
    case COL_WEIGHTS: if (m) sqlite3_result_text(ctx, m->weights, -1, SQLITE_TRANSIENT); break;
    case COL_USERS: if (m) sqlite3_result_int(ctx, registry_users(m)); break;
    default: break;
  }
  return SQLITE_OK;
}

static int modelsRowid(sqlite3_vtab_cursor *cur, sqlite_int64 *pRowid) {
  *pRowid = ((ModelsCursor *)cur)->i + 1;
  return SQLITE_OK;
}

static int modelsBestIndex(sqlite3_vtab *tab, sqlite3_index_info *info) {
  (void)tab;
  info->estimatedCost = 10;
  info->estimatedRows = 4;
  return SQLITE_OK;
}

static sqlite3_module modelsModule = {
    .xConnect = modelsConnect,
    .xBestIndex = modelsBestIndex,
    .xDisconnect = conn_table_disconnect,
    .xOpen = modelsOpen,
    .xClose = modelsClose,
    .xFilter = modelsFilter,
    .xNext = modelsNext,
    .xEof = modelsEof,
    .xColumn = modelsColumn,
    .xRowid = modelsRowid,
};

int vtab_register_models(sqlite3 *db, Gpt2Conn *c) {
  conn_retain(c);
  return sqlite3_create_module_v2(db, "gpt2_models", &modelsModule, c, conn_release);
}
