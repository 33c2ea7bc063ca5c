/*
** gpt2.c — the extension's entry point: registers every SQL function and
** table on a connection (README.md has the reference).
**
**   .load build/gpt2            -- entry point sqlite3_gpt_init (SQLite drops
**                               -- the digits of "gpt2": docs/formats.md, "SQLite")
**   SELECT gpt2_load('models/gpt2');
**   SELECT gpt2_generate('Once upon a time', 20);
**
** Only the two entry points are visible outside the shared object; the rest
** is built with -fvisibility=hidden (SQLite opens extensions RTLD_GLOBAL,
** where generic internal names would bind to other libraries' symbols).
*/
#include "sql_register.h"

#include <pthread.h>

SQLITE_EXTENSION_INIT1

#if defined(_WIN32)
#define GPT2_EXPORT __declspec(dllexport)
#else
#define GPT2_EXPORT __attribute__((visibility("default")))
#endif

static int (*const REGISTRARS[])(sqlite3 *, Gpt2Conn *) = {
    sql_register_scalars,
    vtab_register_stream,
    vtab_register_models,
    vtab_register_complete,
    sql_register_score,
    vtab_register_logprobs,
    vtab_register_score_rows,
};

/* A second load on the same connection keeps the first one's state (its
** loaded models) instead of registering a fresh copy over it. The check
** must leave no error on the connection: sqlite3_open fails when an
** automatic extension leaves one. */
static int already_registered(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int found = 0;
  if (sqlite3_prepare_v2(db, "SELECT 1 FROM pragma_function_list WHERE name = 'gpt2_version'",
                         -1, &st, NULL) == SQLITE_OK)
    found = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_finalize(st);
  if (!st) { /* a build without the introspection pragmas: clear its error */
    sqlite3_prepare_v2(db, "SELECT 1", -1, &st, NULL);
    sqlite3_finalize(st);
  }
  return found;
}

/* Both entry points call this hidden function, not each other: an exported
** function called by name binds through the process's global scope, so a
** second copy of the library loaded into the process would run the first
** copy's code (and share its registry). */
static int ext_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  /* sqlite3_api is one global for every connection: connections opened on
  ** several threads at once would all store it, racing with each other and
  ** with threads already calling through it. Store it once, under a lock. */
  static pthread_mutex_t api_mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&api_mu);
  if (sqlite3_api != pApi) SQLITE_EXTENSION_INIT2(pApi);
  pthread_mutex_unlock(&api_mu);
  if (already_registered(db)) return SQLITE_OK;
  char err[GPT2_ERRLEN];
  Gpt2Conn *c;
  int rc = conn_open(&c, err, sizeof err);
  if (rc) {
    if (pzErrMsg && rc == GPT2_ERROR) *pzErrMsg = sqlite3_mprintf("%s", err);
    return rc == GPT2_NOMEM ? SQLITE_NOMEM : SQLITE_ERROR;
  }
  rc = SQLITE_OK;
  for (size_t i = 0; i < sizeof REGISTRARS / sizeof REGISTRARS[0] && rc == SQLITE_OK; i++)
    rc = REGISTRARS[i](db, c);
  if (rc != SQLITE_OK && pzErrMsg)
    *pzErrMsg = sqlite3_mprintf("gpt2: registration failed: %s", sqlite3_errstr(rc));
  conn_release(c); /* the registrations hold their own references */
  return rc;
}

GPT2_EXPORT int sqlite3_gpt_init(sqlite3 *db, char **pzErrMsg,
                                 const sqlite3_api_routines *pApi) {
  return ext_init(db, pzErrMsg, pApi);
}

/* SQLite first tries sqlite3_extension_init. */
GPT2_EXPORT int sqlite3_extension_init(sqlite3 *db, char **pzErrMsg,
                                       const sqlite3_api_routines *pApi) {
  return ext_init(db, pzErrMsg, pApi);
}
