/*
** vtab_complete.c — gpt2_complete, a table-valued function that completes
** every row of a query in batches.
**
**   SELECT key, completion
**     FROM gpt2_complete('SELECT id, body FROM docs WHERE summary IS NULL', 48);
**
** Arguments (hidden columns): query, max_tokens, temperature, top_k, top_p,
** seed, batch_size — or query and a JSON object of options (batch_size one
** of them) in the max_tokens column. `query` is one read-only SQL statement
** returning two columns, (key, prompt); the other arguments mean what they
** mean for gpt2_generate, and batch_size (default 16, 1..256) is how many
** prompts are generated together. Result columns: key (unchanged, any
** type), prompt, completion (TEXT; NULL for a NULL prompt), n_tokens (tokens
** generated, the eos token not counted) and finish_reason.
**
** HOW IT WORKS: up to batch_size sequences are live at once, each with its
** own KV cache and position. Each step is ONE forward call with one row per
** live sequence plus the prompt rows of the sequences just admitted (up to
** GEN_STEP_ROWS rows), so every weight is read once per step for the whole
** batch, prompts included. A sequence that finishes frees its slot for the
** next query row, so memory stays bounded however many rows the query
** returns. Rows are
** returned as they finish: in order of completion, and rows finishing on the
** same step in query order (NULL prompts come out as soon as they are read).
** Each completion equals gpt2_generate(prompt, ...) with the same arguments;
** with a seed, the row that is k-th in the query (from 0) uses seed + k.
** When consecutive prompts share leading tokens (a template), the shared
** prefix's KV state is copied from the previous prompt instead of recomputed:
** a prompt that shares more with the previous row than the saved state holds
** first has the pending prompts fed (so the previous one's state exists),
** which costs one extra weight pass per new template.
*/
#include "sql_args.h"
#include "sql_conn.h"
#include "sql_register.h"

#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

enum {
  COL_KEY,
  COL_PROMPT,
  COL_COMPLETION,
  COL_N_TOKENS,
  COL_FINISH,
  COL_QUERY, /* first hidden argument column */
  COL_MAX_TOKENS,
  COL_TEMPERATURE,
  COL_TOP_K,
  COL_TOP_P,
  COL_SEED,
  COL_BATCH_SIZE,
  N_ARGS = COL_BATCH_SIZE - COL_QUERY + 1
};

/* A query row: live in a slot while generating, then queued as a result. */
typedef struct Job {
  int kv_need;           /* positions this job may fill (gen_positions) */
  sqlite3_value *key;    /* first query column, unchanged */
  sqlite3_value *prompt; /* second query column */
  Gpt2Gen gen;           /* started when the prompt is not NULL */
  Gpt2Spec spec;         /* its draft, with the 'draft' option (until it ends) */
  int started;
  ByteBuf text;          /* completion so far */
  struct Job *next;      /* in the finished queue */
} Job;

typedef struct CompleteCursor {
  sqlite3_vtab_cursor base; /* must be first */
  sqlite3_stmt *stmt;       /* the query; NULL once exhausted */
  const Gpt2Model *m;       /* model in use (the current one at xFilter), retained */
  const Gpt2Model *draft;   /* the 'draft' option's model, retained; NULL when none */
  SqlGenArgs args;          /* generation arguments; a seed given: row k uses seed + k */
  sqlite3_int64 n_read;     /* query rows read */
  int batch;                /* slots */
  Job **slots;              /* (batch) live jobs, NULL when free */
  Job *head, *tail;         /* finished jobs, oldest first */
  Job *row;                 /* the current result row */
  Gpt2Prefix pfx;           /* a computed prompt's KV state, for prefix reuse */
  Job *prev;                /* the last job put in a slot, while it is there */
  Gpt2Seq **spare;          /* (batch) KV caches of finished jobs, for reuse */
  int n_spare;
  IdVec prev_ids;           /* its prompt */
  int kv_live;              /* positions the live jobs may fill (kv_memory_limit) */
  int n_live;               /* live jobs */
  Gpt2Progress *progress;   /* the connection's, while this cursor reports to it */
  sqlite3_int64 rowid;
} CompleteCursor;

static int completeConnect(sqlite3 *db, void *pAux, int argc, const char *const *argv,
                           sqlite3_vtab **ppVtab, char **pzErr) {
  (void)argc;
  (void)argv;
  (void)pzErr;
  return conn_table_connect(db, pAux,
                            "CREATE TABLE x(key, prompt, completion TEXT, n_tokens INTEGER, "
                            "finish_reason TEXT, "
                            "query HIDDEN, max_tokens HIDDEN, temperature HIDDEN, "
                            "top_k HIDDEN, top_p HIDDEN, seed HIDDEN, batch_size HIDDEN)",
                            0, ppVtab);
}

static int completeOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCur) {
  (void)pVtab;
  return sql_cursor_open(sizeof(CompleteCursor), ppCur);
}

static void jobFree(Job *j) {
  if (!j) return;
  spec_free(&j->spec);
  if (j->started) gen_free(&j->gen);
  sqlite3_value_free(j->key);
  sqlite3_value_free(j->prompt);
  buf_free(&j->text);
  free(j);
}

static void cursorReset(CompleteCursor *c) {
  if (c->progress) progress_end(c->progress);
  c->progress = NULL;
  sqlite3_finalize(c->stmt);
  c->stmt = NULL;
  for (int i = 0; i < c->batch; i++) jobFree(c->slots[i]);
  free(c->slots);
  for (int i = 0; i < c->n_spare; i++) seq_free(c->spare[i]);
  free(c->spare);
  c->spare = NULL;
  c->n_spare = 0;
  c->slots = NULL;
  c->batch = 0;
  while (c->head) {
    Job *n = c->head->next;
    jobFree(c->head);
    c->head = n;
  }
  c->tail = NULL;
  jobFree(c->row);
  c->row = NULL;
  prefix_clear(&c->pfx);
  c->prev = NULL;
  idvec_free(&c->prev_ids);
  model_release(c->m);
  c->m = NULL;
  model_release(c->draft);
  c->draft = NULL;
  c->kv_live = 0;
  c->n_live = 0;
  c->n_read = 0;
  c->rowid = 0;
  sql_gen_args_free(&c->args);
}

static int completeClose(sqlite3_vtab_cursor *cur) {
  cursorReset((CompleteCursor *)cur);
  sqlite3_free(cur);
  return SQLITE_OK;
}

static void enqueue(CompleteCursor *c, Job *j) {
  j->next = NULL;
  if (c->tail) c->tail->next = j;
  else c->head = j;
  c->tail = j;
}

static int common_prefix(const IdVec *a, const IdVec *b) {
  size_t k = 0;
  while (k < a->n && k < b->n && a->v[k] == b->v[k]) k++;
  return (int)k;
}

/* A job that will not run the model again gives its KV-cache memory to
** the next row. */
static void recycle_seq(CompleteCursor *c, Job *j) {
  if (c->n_spare < c->batch) {
    c->spare[c->n_spare++] = j->gen.seq;
    j->gen.seq = NULL;
  }
}

/* Feed every slot's pending prompt rows now (batched). */
static int feed_pending(CompleteCursor *c, char *err, size_t errlen) {
  Gpt2Gen **gens = malloc((size_t)c->batch * sizeof *gens);
  if (!gens) return GPT2_NOMEM;
  int n = 0;
  for (int s = 0; s < c->batch; s++)
    if (c->slots[s]) gens[n++] = &c->slots[s]->gen;
  int rc = gen_feed_batch(gens, n, err, errlen);
  free(gens);
  return rc;
}

/* Prefix reuse: when the prompt ids share more leading tokens with the
** previous job's prompt than with the saved state, make the previous job's
** prompt the saved state (feeding it first if it is still pending). */
static int share_prefix(CompleteCursor *c, const IdVec *ids, char *err, size_t errlen) {
  if (!c->prev) return GPT2_OK;
  int with_prev = common_prefix(ids, &c->prev_ids);
  int with_saved = c->pfx.seq ? common_prefix(ids, &c->pfx.ids) : 0;
  if (with_prev < 2 || with_prev <= with_saved) return GPT2_OK;
  if (c->prev->gen.unfed.n) {
    int rc = feed_pending(c, err, errlen);
    if (rc) return rc;
  }
  return gen_save_prefix(&c->prev->gen, &c->pfx, 0);
}

/* The live batch plus `more` positions of one more sequence must fit in
** kv_memory_limit. */
static int check_kv(CompleteCursor *c, Gpt2Conn *conn, int more, char *err, size_t errlen) {
  return conn_check_kv(conn, c->m, "gpt2_complete", c->n_live + 1, (int64_t)c->kv_live + more,
                       "lower max_tokens or batch_size", err, errlen);
}

/* Read query rows into free slots, preparing their generation (the prompts
** are fed by the next batched step). */
static int fill(CompleteCursor *c, char *err, size_t errlen) {
  Gpt2Table *vt = (Gpt2Table *)c->base.pVtab;
  Gpt2Conn *conn = vt->conn;
  int reuse = (int)conn_settings(conn)->prefix_reuse;
  for (int s = 0; s < c->batch && c->stmt; s++) {
    if (c->slots[s]) continue;
    int rc = sqlite3_step(c->stmt);
    if (rc == SQLITE_DONE) {
      sqlite3_finalize(c->stmt);
      c->stmt = NULL;
      if (c->progress && c->progress->rows_total < 0) c->progress->rows_total = c->n_read;
      break;
    }
    if (rc != SQLITE_ROW)
      return gpt2_errorf(err, errlen, "gpt2_complete: argument 1 (query) failed: %s",
                         sqlite3_errmsg(vt->db));
    Job *j = calloc(1, sizeof *j);
    if (!j) return GPT2_NOMEM;
    j->key = sqlite3_value_dup(sqlite3_column_value(c->stmt, 0));
    j->prompt = sqlite3_value_dup(sqlite3_column_value(c->stmt, 1));
    sqlite3_int64 k = c->n_read++;
    if (!j->key || !j->prompt) {
      jobFree(j);
      return GPT2_NOMEM;
    }
    if (sqlite3_value_type(j->prompt) == SQLITE_NULL) {
      enqueue(c, j);
      if (c->progress) progress_add(c->progress, 1, 0);
      continue;
    }
    IdVec ids = {0};
    char msg[GPT2_ERRLEN], where[64];
    /* rows count from 0, as the per-row seeds do */
    snprintf(where, sizeof where, "query row %lld (from 0), column 2 (prompt)", (long long)k);
    rc = sql_prompt(c->m->tok, c->m->cfg.vocab_size, "gpt2_complete", where, j->prompt, &ids,
                    err, errlen);
    Gpt2GenParams p = c->args.p; /* p.opt: the cursor's options, for every row */
    if (c->args.seeded) p.seed += (uint64_t)k;
    else p.seed = sql_random_seed();
    j->kv_need = gen_positions(c->m, (int)ids.n, p.max_tokens);
    if (c->draft) /* the draft's cache, as target positions of as many bytes */
      j->kv_need += (int)(conn_draft_kv_bytes(c->draft, j->kv_need) / (double)seq_bytes(c->m, 1)) + 1;
    /* A spare cache is charged what it holds; when that is over the cap,
    ** a fresh one of the right size is made instead. */
    Gpt2Seq *spare = c->n_spare ? c->spare[c->n_spare - 1] : NULL;
    if (!rc && spare && spare->cap > j->kv_need && check_kv(c, conn, spare->cap, err, errlen)) {
      seq_free(spare);
      spare = NULL;
      c->n_spare--;
    }
    if (spare && spare->cap > j->kv_need) j->kv_need = spare->cap;
    if (!rc) rc = check_kv(c, conn, j->kv_need, err, errlen);
    if (!rc && reuse) rc = share_prefix(c, &ids, msg, sizeof msg);
    if (!rc) {
      j->started = 1;
      rc = gen_prepare(&j->gen, c->m, conn_scratch(conn), conn_counters(conn), ids.v,
                       (int)ids.n, &p, reuse ? &c->pfx : NULL, spare, msg, sizeof msg);
      if (spare) c->n_spare--; /* taken over, even on failure */
      if (rc == GPT2_ERROR)
        gpt2_errorf(err, errlen, "gpt2_complete: %s: %s", where, msg);
      if (!rc && c->draft && !j->gen.done) {
        rc = spec_start(&j->spec, &j->gen, c->draft, (int)c->args.draft_tokens, msg, sizeof msg);
        if (rc == GPT2_ERROR) gpt2_errorf(err, errlen, "gpt2_complete: %s", msg);
      }
    }
    if (rc == GPT2_INTERRUPTED) gpt2_errorf(err, errlen, "gpt2_complete: %s", msg);
    if (rc) {
      idvec_free(&ids);
      jobFree(j);
      return rc;
    }
    if (j->gen.done) {
      idvec_free(&ids);
      recycle_seq(c, j); /* never fed */
      enqueue(c, j);     /* nothing to generate (max_tokens 0) */
      if (c->progress) progress_add(c->progress, 1, 0);
    } else {
      c->slots[s] = j;
      c->kv_live += j->kv_need;
      c->n_live++;
      c->prev = j;
      idvec_free(&c->prev_ids);
      c->prev_ids = ids;
    }
  }
  return GPT2_OK;
}

/* Run until at least one finished row is queued or all work is done. */
static int advance(CompleteCursor *c, char *err, size_t errlen) {
  Gpt2Gen **gens = malloc((size_t)c->batch * sizeof *gens);
  Gpt2Spec **specs = malloc((size_t)c->batch * sizeof *specs);
  int *toks = malloc((size_t)c->batch * sizeof *toks);
  int *who = malloc((size_t)c->batch * sizeof *who);
  int rc = (!gens || !specs || !toks || !who) ? GPT2_NOMEM : GPT2_OK;
  while (!rc && !c->head) {
    rc = fill(c, err, errlen);
    if (rc || c->head) break;
    int n = 0;
    for (int s = 0; s < c->batch; s++)
      if (c->slots[s]) {
        who[n] = s;
        specs[n] = &c->slots[s]->spec;
        gens[n++] = &c->slots[s]->gen;
      }
    if (!n) break; /* query exhausted, nothing live */
    char msg[GPT2_ERRLEN];
    rc = c->draft ? spec_next_batch(specs, n, toks, NULL, msg, sizeof msg)
                  : gen_next_batch(gens, n, toks, NULL, msg, sizeof msg);
    if (rc == GPT2_ERROR || rc == GPT2_INTERRUPTED) gpt2_errorf(err, errlen, "gpt2_complete: %s", msg);
    int64_t finished = 0, produced = 0;
    for (int i = 0; !rc && i < n; i++) {
      Job *j = c->slots[who[i]];
      if (toks[i] >= 0) rc = gen_take_text(&j->gen, toks[i], j->gen.done, &j->text);
      produced += toks[i] >= 0;
      finished += j->gen.done;
      if (!rc && j->gen.done) {
        c->slots[who[i]] = NULL;
        c->kv_live -= j->kv_need;
        c->n_live--;
        if (c->prev == j) c->prev = NULL; /* its state leaves with it */
        spec_free(&j->spec);
        recycle_seq(c, j);
        enqueue(c, j);
      }
    }
    if (c->progress) progress_add(c->progress, finished, produced);
  }
  free(gens);
  free(specs);
  free(toks);
  free(who);
  return rc;
}

static int completeNext(sqlite3_vtab_cursor *cur) {
  CompleteCursor *c = (CompleteCursor *)cur;
  char err[GPT2_ERRLEN];
  jobFree(c->row);
  c->row = NULL;
  int rc = advance(c, err, sizeof err);
  if (rc) return sql_vtab_error(cur->pVtab, rc, err);
  if (c->head) {
    c->row = c->head;
    c->head = c->head->next;
    if (!c->head) c->tail = NULL;
    c->rowid++;
  }
  return SQLITE_OK;
}

static int completeEof(sqlite3_vtab_cursor *cur) {
  return ((CompleteCursor *)cur)->row == NULL;
}

static int completeColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
  Job *j = ((CompleteCursor *)cur)->row;
  if (!j) return SQLITE_OK;
  switch (col) {
    case COL_KEY: sqlite3_result_value(ctx, j->key); break;
    case COL_PROMPT: sqlite3_result_value(ctx, j->prompt); break;
    case COL_COMPLETION:
      if (j->started) sqlite3_result_text(ctx, j->text.p ? j->text.p : "", (int)j->text.n,
                                          SQLITE_TRANSIENT);
      break;
    case COL_N_TOKENS:
      if (j->started) sqlite3_result_int(ctx, j->gen.n_generated);
      break;
    case COL_FINISH:
      if (j->started && gen_finish_name(j->gen.finish))
        sqlite3_result_text(ctx, gen_finish_name(j->gen.finish), -1, SQLITE_STATIC);
      break;
    default: break;
  }
  return SQLITE_OK;
}

static int completeRowid(sqlite3_vtab_cursor *cur, sqlite_int64 *pRowid) {
  *pRowid = ((CompleteCursor *)cur)->rowid;
  return SQLITE_OK;
}

static int completeFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc,
                          sqlite3_value **argv) {
  (void)idxStr;
  CompleteCursor *c = (CompleteCursor *)cur;
  Gpt2Table *vt = (Gpt2Table *)cur->pVtab;
  Gpt2Conn *conn = vt->conn;
  char err[GPT2_ERRLEN];
  cursorReset(c);
  sqlite3_value *args[N_ARGS];
  sql_args_unpack(idxNum, argc, argv, N_ARGS, args);
  if (!args[0] || sqlite3_value_type(args[0]) == SQLITE_NULL) return SQLITE_OK; /* no rows */
  if (sqlite3_value_type(args[0]) != SQLITE_TEXT)
    return sql_vtab_error(cur->pVtab, GPT2_ERROR, "gpt2_complete: argument 1 (query) must be TEXT, an SQL query");
  const Gpt2Entry *e = conn_current(conn, "gpt2_complete", 1, err, sizeof err);
  if (!e) return sql_vtab_error(cur->pVtab, err[0] ? GPT2_ERROR : GPT2_NOMEM, err);
  const Gpt2Settings *set = conn_settings(conn);
  int rc = sql_gen_args(&e->model->cfg, set->max_tokens_limit ? set->max_tokens_limit : INT64_MAX,
                        "gpt2_complete", N_ARGS - 1, args + 1, SQL_GEN_BATCH, &c->args, err,
                        sizeof err);
  c->args.p.stop = sql_interrupted;
  c->args.p.stop_arg = vt->db;
  if (rc) return sql_vtab_error(cur->pVtab, rc, err);
  const Gpt2Model *draft = NULL;
  rc = conn_draft(conn, "gpt2_complete", e, c->args.draft, &draft, err, sizeof err);
  if (rc) return sql_vtab_error(cur->pVtab, rc, err);
  c->draft = model_retain(draft);
  int64_t batch = c->args.batch_size;
  /* Retained: the query runs user SQL between rows, which may unload or
  ** replace this model (gpt2_unload('default') in the query freed it under
  ** the cursor: heap-use-after-free, found by tests/test_hostile.py). */
  c->m = model_retain(e->model);
  if (!conn_scratch(conn)) return SQLITE_NOMEM;
  c->slots = calloc((size_t)batch, sizeof *c->slots);
  c->spare = calloc((size_t)batch, sizeof *c->spare);
  if (!c->slots || !c->spare) return SQLITE_NOMEM;
  c->batch = (int)batch;
  const char *sql = (const char *)sqlite3_value_text(args[0]);
  if (!sql) return SQLITE_NOMEM;
  rc = sql_prepare_query(vt->db, "gpt2_complete", sql, 2, "two columns, (key, prompt)", &c->stmt,
                         err, sizeof err);
  if (rc) return sql_vtab_error(cur->pVtab, rc, err);
  c->progress = conn_progress(conn);
  progress_begin(c->progress, "gpt2_complete", -1, (int)set->progress);
  if (c->progress->draw) c->progress->rows_total = sql_count_rows(vt->db, c->stmt);
  return completeNext(cur);
}

static int completeBestIndex(sqlite3_vtab *tab, sqlite3_index_info *info) {
  return sql_best_index(tab, info, COL_QUERY, N_ARGS, "gpt2_complete: argument 1 (query) is required");
}

static sqlite3_module completeModule = {
    .xConnect = completeConnect,
    .xBestIndex = completeBestIndex,
    .xDisconnect = conn_table_disconnect,
    .xOpen = completeOpen,
    .xClose = completeClose,
    .xFilter = completeFilter,
    .xNext = completeNext,
    .xEof = completeEof,
    .xColumn = completeColumn,
    .xRowid = completeRowid,
};

int vtab_register_complete(sqlite3 *db, Gpt2Conn *c) {
  conn_retain(c);
  return sqlite3_create_module_v2(db, "gpt2_complete", &completeModule, c, conn_release);
}
