/*
** sql_args.c — SQL values in and out: argument checks, prompts, generation
** parameters, results, errors, and the table-valued-function helpers.
*/
#include "sql_args.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

SQLITE_EXTENSION_INIT3

const char *sql_type_name(int t) {
  switch (t) {
    case SQLITE_INTEGER: return "INTEGER";
    case SQLITE_FLOAT: return "REAL";
    case SQLITE_TEXT: return "TEXT";
    case SQLITE_BLOB: return "BLOB";
    default: return "NULL";
  }
}

int sql_arg_int(const char *fname, int argno, const char *what, sqlite3_value *v, int64_t lo,
                int64_t hi, int64_t *out, char *err, size_t errlen) {
  int t = sqlite3_value_type(v);
  int64_t x;
  if (t == SQLITE_INTEGER) {
    x = sqlite3_value_int64(v);
  } else if (t == SQLITE_FLOAT && floor(sqlite3_value_double(v)) == sqlite3_value_double(v)) {
    double d = sqlite3_value_double(v); /* integral; inf is caught by the range check */
    if (!(d >= (double)lo && d <= (double)hi) || !(d >= -0x1p63 && d < 0x1p63))
      return gpt2_errorf(err, errlen, "%s: argument %d (%s) = %.17g is out of range [%lld, %lld]",
                         fname, argno, what, d, (long long)lo, (long long)hi);
    x = (int64_t)d;
  } else {
    return gpt2_errorf(err, errlen, "%s: argument %d (%s) must be an INTEGER, got %s", fname,
                       argno, what, sql_type_name(t));
  }
  if (x < lo || x > hi)
    return gpt2_errorf(err, errlen, "%s: argument %d (%s) = %lld is out of range [%lld, %lld]",
                       fname, argno, what, (long long)x, (long long)lo, (long long)hi);
  *out = x;
  return GPT2_OK;
}

int sql_arg_num(const char *fname, int argno, const char *what, sqlite3_value *v, double *out,
                char *err, size_t errlen) {
  int t = sqlite3_value_type(v);
  if (t != SQLITE_INTEGER && t != SQLITE_FLOAT)
    return gpt2_errorf(err, errlen, "%s: argument %d (%s) must be a number, got %s", fname,
                       argno, what, sql_type_name(t));
  *out = sqlite3_value_double(v);
  return GPT2_OK;
}

int sql_id_array(const char *fname, const char *where, const char *s, size_t n, int vocab,
                 IdVec *out, char *err, size_t errlen) {
  json_error_t je;
  json_t *a;
  int rc = gpt2_json_parse(s, n, JSON_DECODE_ANY, 0, &a, &je);
  if (rc == GPT2_NOMEM) return rc;
  if (!a || !json_is_array(a)) {
    json_decref(a);
    return gpt2_errorf(err, errlen, "%s: %s must be a JSON array of integers%s%s", fname, where,
                       a ? "" : ": ", a ? "" : je.text);
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
      return gpt2_errorf(err, errlen, "%s: %s: element %zu is not an integer", fname, where, i);
    }
    json_int_t id = json_integer_value(x);
    if (id < 0 || id >= vocab) {
      json_decref(a);
      return gpt2_errorf(err, errlen, "%s: %s: id %lld is outside the vocabulary (size %d)",
                         fname, where, (long long)id, vocab);
    }
    out->v[out->n++] = (int)id;
  }
  json_decref(a);
  return GPT2_OK;
}

/* 1 when s is a JSON array whose elements are all integers ("[464,3290]",
** "[]"), 0 when not, -1 on OOM. */
static int looks_like_ids(const char *s, size_t n) {
  size_t a = 0, b = n;
  while (a < b && strchr(" \t\r\n", s[a])) a++;
  while (b > a && strchr(" \t\r\n", s[b - 1])) b--;
  if (b - a < 2 || s[a] != '[' || s[b - 1] != ']') return 0;
  json_error_t je;
  json_t *j;
  int rc = gpt2_json_parse(s + a, b - a, 0, 0, &j, &je);
  if (rc) return rc == GPT2_NOMEM ? -1 : 0;
  int ids = json_is_array(j);
  for (size_t i = 0; ids && i < json_array_size(j); i++) ids = json_is_integer(json_array_get(j, i));
  json_decref(j);
  return ids;
}

int sql_prompt(const Tokenizer *tok, int vocab, const char *fname, const char *where,
               sqlite3_value *v, IdVec *out, char *err, size_t errlen) {
  int t = sqlite3_value_type(v);
  if (t != SQLITE_TEXT)
    return gpt2_errorf(err, errlen, "%s: %s must be TEXT or a JSON array of token ids, got %s",
                       fname, where, sql_type_name(t));
  const char *s = (const char *)sqlite3_value_text(v);
  size_t n = (size_t)sqlite3_value_bytes(v);
  if (!s) return GPT2_NOMEM;
  if (sqlite3_value_subtype(v) == GPT2_JSON_SUBTYPE)
    return sql_id_array(fname, where, s, n, vocab, out, err, errlen);
  int ids = looks_like_ids(s, n);
  if (ids < 0) return GPT2_NOMEM;
  if (ids)
    return gpt2_errorf(err, errlen,
                       "%s: %s '%.64s%s' is token ids without SQLite's JSON subtype (subqueries, "
                       "tables and drivers drop it); pass json(...) of it to generate from the "
                       "ids, or gpt2_tokenize(...) of it to use it as text",
                       fname, where, s, n > 64 ? "..." : "");
  char terr[GPT2_ERRLEN];
  int rc = tok_encode(tok, s, n, out, terr, sizeof terr);
  if (rc == GPT2_ERROR) return gpt2_errorf(err, errlen, "%s: %s: %s", fname, where, terr);
  return rc;
}

int sql_gen_params(int n_positions, int64_t cap, const char *fname, int argc,
                   sqlite3_value **argv, Gpt2GenParams *p, int *seeded, char *err,
                   size_t errlen) {
  if (cap > n_positions) cap = n_positions;
  memset(p, 0, sizeof *p);
  p->max_tokens = GPT2_DEFAULT_MAX_TOKENS < cap ? GPT2_DEFAULT_MAX_TOKENS : (int)cap;
  p->sample.top_p = 1;
  *seeded = 0;
  int64_t x;
  double d;
  for (int i = 0; i < argc; i++) {
    sqlite3_value *v = argv[i];
    int argno = i + 2;
    if (!v || sqlite3_value_type(v) == SQLITE_NULL) continue; /* absent or NULL: default */
    switch (i) {
      case 0:
        if (sql_arg_int(fname, argno, "max_tokens", v, 0, n_positions, &x, err, errlen))
          return GPT2_ERROR;
        if (x > cap)
          return gpt2_errorf(err, errlen,
                             "%s: argument %d (max_tokens) = %lld is above the connection's "
                             "max_tokens_limit (%lld); see gpt2_set",
                             fname, argno, (long long)x, (long long)cap);
        p->max_tokens = (int)x;
        break;
      case 1:
        if (sql_arg_num(fname, argno, "temperature", v, &d, err, errlen)) return GPT2_ERROR;
        if (!(d >= 0) || isinf(d))
          return gpt2_errorf(err, errlen,
                             "%s: argument %d (temperature) = %g is out of range [0, inf)",
                             fname, argno, d);
        p->sample.temperature = d;
        break;
      case 2:
        if (sql_arg_int(fname, argno, "top_k", v, 0, INT_MAX, &x, err, errlen)) return GPT2_ERROR;
        p->sample.top_k = (int)x;
        break;
      case 3:
        if (sql_arg_num(fname, argno, "top_p", v, &d, err, errlen)) return GPT2_ERROR;
        if (!(d > 0 && d <= 1))
          return gpt2_errorf(err, errlen, "%s: argument %d (top_p) = %g is out of range (0, 1]",
                             fname, argno, d);
        p->sample.top_p = d;
        break;
      case 4:
        if (sql_arg_int(fname, argno, "seed", v, INT64_MIN, INT64_MAX, &x, err, errlen))
          return GPT2_ERROR;
        p->seed = (uint64_t)x;
        *seeded = 1;
        break;
      default:
        return gpt2_errorf(err, errlen, "%s: too many arguments", fname);
    }
  }
  if (!*seeded) p->seed = sql_random_seed();
  return GPT2_OK;
}

uint64_t sql_random_seed(void) {
  uint64_t s = 0;
  if (getrandom(&s, sizeof s, 0) != (ssize_t)sizeof s) s ^= (uint64_t)(uintptr_t)&s;
  return s;
}

int sql_interrupted(void *db) {
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

char *sql_clean_text(const char *msg) {
  ByteBuf b = {0};
  if (utf8_append_sanitized(&b, msg, strlen(msg)) || buf_append(&b, "", 0)) {
    buf_free(&b);
    return NULL;
  }
  return b.p;
}

void sql_result_error(sqlite3_context *ctx, int rc, const char *msg) {
  char *m = rc == GPT2_NOMEM ? NULL : sql_clean_text(msg);
  if (!m) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_error(ctx, m, -1);
  free(m);
  if (rc == GPT2_INTERRUPTED) sqlite3_result_error_code(ctx, SQLITE_INTERRUPT);
}

int sql_vtab_error(sqlite3_vtab *tab, int rc, const char *msg) {
  if (rc == GPT2_NOMEM) return SQLITE_NOMEM;
  char *m = sql_clean_text(msg);
  if (!m) return SQLITE_NOMEM;
  sqlite3_free(tab->zErrMsg);
  tab->zErrMsg = sqlite3_mprintf("%s", m);
  free(m);
  if (!tab->zErrMsg) return SQLITE_NOMEM;
  return rc == GPT2_INTERRUPTED ? SQLITE_INTERRUPT : SQLITE_ERROR;
}

/* json_dumpb, not json_dumps: Jansson 2.14's json_dumps ignores a failed
** append while writing an object key, so under memory pressure it returns
** JSON with keys missing (found by tests/oom). Writing into a sized buffer
** appends nothing: the output is whole, or the call fails. */
void sql_result_json(sqlite3_context *ctx, json_t *j) {
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

int sql_best_index(sqlite3_vtab *tab, sqlite3_index_info *info, int first, int n_args,
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

int sql_cursor_open(size_t size, sqlite3_vtab_cursor **out) {
  sqlite3_vtab_cursor *c = sqlite3_malloc64(size);
  if (!c) return SQLITE_NOMEM;
  memset(c, 0, size);
  *out = c;
  return SQLITE_OK;
}

void sql_args_unpack(int idxNum, int argc, sqlite3_value **argv, int n_args,
                     sqlite3_value **args) {
  for (int k = 0, j = 0; k < n_args; k++)
    args[k] = (idxNum & (1 << k)) && j < argc ? argv[j++] : NULL;
}

int sql_prepare_query(sqlite3 *db, const char *fname, const char *sql, int n_cols,
                      const char *cols_desc, sqlite3_stmt **out, char *err, size_t errlen) {
  sqlite3_stmt *st = NULL, *more = NULL;
  const char *tail = NULL;
  *out = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, &tail) != SQLITE_OK)
    return gpt2_errorf(err, errlen, "%s: argument 1 (query): %s", fname, sqlite3_errmsg(db));
  const char *bad = NULL;
  /* what follows must prepare to nothing: only spaces, comments, semicolons */
  while (!bad && tail && *tail) {
    int rc = sqlite3_prepare_v2(db, tail, -1, &more, &tail);
    if (rc == SQLITE_NOMEM) {
      sqlite3_finalize(st);
      return GPT2_NOMEM;
    }
    if (rc != SQLITE_OK || more) bad = "must be a single statement";
    sqlite3_finalize(more);
    more = NULL;
  }
  if (!bad && !st) bad = "is empty";
  if (!bad && !sqlite3_stmt_readonly(st)) bad = "must be read-only (a SELECT)";
  if (!bad && sqlite3_column_count(st) != n_cols) {
    sqlite3_finalize(st);
    return gpt2_errorf(err, errlen, "%s: argument 1 (query) must return %s", fname, cols_desc);
  }
  if (bad) {
    sqlite3_finalize(st);
    return gpt2_errorf(err, errlen, "%s: argument 1 (query) %s", fname, bad);
  }
  *out = st;
  return GPT2_OK;
}

sqlite3_int64 sql_count_rows(sqlite3 *db, sqlite3_stmt *query) {
  const char *q = sqlite3_sql(query);
  size_t n = q ? strlen(q) : 0;
  while (n && strchr(" \t\r\n;", q[n - 1])) n--; /* the statement's own ';' */
  char *sql = sqlite3_mprintf("SELECT count(*) FROM (\n%.*s\n)", (int)n, q ? q : "");
  sqlite3_stmt *st = NULL;
  sqlite3_int64 rows = -1;
  if (sql && sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    rows = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_free(sql);
  return rows;
}
