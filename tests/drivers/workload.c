/*
** workload — a representative SQL workload for `make test-valgrind`: every
** function and table of the extension, the error paths, several models on a
** connection, and many short-lived connections. Linked with SQLite 3.50 (the
** amalgamation); loads the extension with sqlite3_load_extension.
**
**   usage: workload EXTENSION MODELS_DIR [N_CONNECTIONS]
**
** MODELS_DIR holds the checkpoints of tests/drivers/make_models.py (micro, tiny,
** other, tok, broken). Each step checks its result (a value, or an error with a
** message naming the function); the exit status is the number of failed checks.
** Under valgrind (mk/hardening.mk): --leak-check=full, leaks of any kind are
** errors, so the connections, models, statements and caches must all be freed.
*/
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

static const char *ext, *models;
static int failures, checks;

static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "FAIL: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  failures++;
}

static sqlite3 *open_db(void) {
  sqlite3 *db;
  char *err = NULL;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) {
    fprintf(stderr, "cannot open a database\n");
    exit(2);
  }
  sqlite3_enable_load_extension(db, 1);
  if (sqlite3_load_extension(db, ext, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "cannot load %s: %s\n", ext, err);
    exit(2);
  }
  return db;
}

/* Run sql (with %s replaced by the models dir); collect the rows as text
** "a|b\n" into out (may be NULL). Returns the SQLite result code. */
static int run(sqlite3 *db, char *out, size_t outlen, const char *fmt, ...) {
  char sql[4096];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sql, sizeof sql, fmt, ap);
  va_end(ap);
  if (out && outlen) out[0] = 0;
  size_t k = 0;
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      const char *t = (const char *)sqlite3_column_text(st, c);
      if (sqlite3_column_type(st, c) == SQLITE_BLOB) t = "<blob>";
      if (out && k + 1 < outlen)
        k += (size_t)snprintf(out + k, outlen - k, "%s%s", c ? "|" : "", t ? t : "NULL");
    }
    if (out && k + 1 < outlen) k += (size_t)snprintf(out + k, outlen - k, "\n");
  }
  rc = sqlite3_finalize(st);
  return rc;
}

/* sql must succeed; returns its output in a static buffer. */
static const char *ok(sqlite3 *db, const char *fmt, const char *arg) {
  static char out[65536];
  checks++;
  int rc = run(db, out, sizeof out, fmt, arg);
  if (rc != SQLITE_OK) fail("%s: %s", fmt, sqlite3_errmsg(db));
  return out;
}

/* sql must fail with a message containing needle. */
static void err(sqlite3 *db, const char *needle, const char *fmt, const char *arg) {
  checks++;
  int rc = run(db, NULL, 0, fmt, arg);
  if (rc == SQLITE_OK) fail("%s: succeeded, expected an error containing '%s'", fmt, needle);
  else if (!strstr(sqlite3_errmsg(db), needle))
    fail("%s: error '%s' does not contain '%s'", fmt, sqlite3_errmsg(db), needle);
}

static void expect(int cond, const char *what) {
  checks++;
  if (!cond) fail("%s", what);
}

static void close_db(sqlite3 *db) {
  int rc = sqlite3_close(db);
  checks++;
  if (rc != SQLITE_OK) fail("sqlite3_close: %d (statements left open)", rc);
}

static void main_workload(void) {
  sqlite3 *db = open_db();
  char buf[4096];

  /* nothing loaded */
  ok(db, "SELECT gpt2_version(), gpt2_info()", NULL);
  err(db, "no model loaded", "SELECT gpt2_generate('x')", NULL);
  err(db, "no model loaded", "SELECT * FROM gpt2_stream('x')", NULL);

  /* load errors leave nothing behind */
  err(db, "cannot open model directory", "SELECT gpt2_load('%s/does-not-exist')", models);
  err(db, "model.safetensors", "SELECT gpt2_load('%s/broken')", models);
  err(db, "is not a directory", "SELECT gpt2_load('%s/micro/config.json')", models);

  /* a real-vocabulary checkpoint: load, tokenize, generate, stream, complete */
  ok(db, "SELECT gpt2_load('%s/tiny')", models);
  snprintf(buf, sizeof buf, "%s", ok(db, "SELECT gpt2_tokenize('Hello world')", NULL));
  expect(strcmp(buf, "[15496,995]\n") == 0, "gpt2_tokenize('Hello world') = [15496,995]");
  ok(db, "SELECT gpt2_token_count('The quick brown fox; caf\xc3\xa9 \xe4\xb8\xad <|endoftext|>')",
     NULL);
  ok(db, "SELECT gpt2_detokenize('[15496, 995, 50256, 447]')", NULL);
  ok(db, "SELECT length(gpt2_logits('Hello'))", NULL);
  ok(db, "SELECT gpt2_generate('Once upon a time', 12)", NULL);
  snprintf(buf, sizeof buf, "%s",
           ok(db, "SELECT gpt2_generate('Once upon a time', 12, 0.8, 40, 0.95, 7)", NULL));
  expect(strcmp(buf, ok(db, "SELECT gpt2_generate('Once upon a time', 12, 0.8, 40, 0.95, 7)",
                        NULL)) == 0,
         "seeded generation is reproducible (with the prefix cache)");
  ok(db, "SELECT gpt2_set('prefix_reuse', 0)", NULL);
  expect(strcmp(buf, ok(db, "SELECT gpt2_generate('Once upon a time', 12, 0.8, 40, 0.95, 7)",
                        NULL)) == 0,
         "seeded generation is the same without the prefix cache");
  ok(db, "SELECT gpt2_set('prefix_reuse', 1)", NULL);
  ok(db, "SELECT group_concat(token, '') FROM gpt2_stream('The dog', 10)", NULL);
  ok(db, "SELECT i, token_id FROM gpt2_stream('The dog', 40, 1.0, 0, 1.0, 3) LIMIT 3", NULL);
  ok(db, "SELECT * FROM gpt2_stream(json('[464, 3290]'), 5)", NULL);
  ok(db, "SELECT * FROM gpt2_stream('', 4, 0.9, 0, 1.0, 11)", NULL);
  ok(db,
     "SELECT key, completion, n_tokens FROM gpt2_complete('SELECT 1, ''Hello'' UNION ALL "
     "SELECT 2, NULL UNION ALL SELECT 3, ''The dog'' UNION ALL SELECT 4, ''Hello there''', 6, "
     "0.7, 20, 0.9, 5, 2)",
     NULL);
  ok(db,
     "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20) "
     "SELECT count(*) FROM n, gpt2_stream('Row ' || n.i, 2) s",
     NULL);
  /* a 4-bit copy as a speculative draft: greedy output unchanged; sampled and
  ** batched rounds (rejections, resampling) */
  ok(db, "SELECT gpt2_load('%s/tiny', 'tq4', 'q4'), gpt2_use('default')", models);
  snprintf(buf, sizeof buf, "%s", ok(db, "SELECT gpt2_generate('Once upon a time', 12)", NULL));
  expect(strcmp(buf, ok(db, "SELECT gpt2_generate('Once upon a time', json_object('max_tokens', "
                        "12, 'draft', 'tq4', 'draft_tokens', 3))", NULL)) == 0,
         "greedy generation with a q4 draft equals the one without");
  snprintf(buf, sizeof buf, "%s",
           ok(db, "SELECT gpt2_generate('Once upon a time', json_object('max_tokens', 12, "
              "'draft', 'tq4', 'draft_tokens', 3, 'temperature', 1.0, 'seed', 7))", NULL));
  expect(strcmp(buf, ok(db, "SELECT gpt2_generate('Once upon a time', json_object('max_tokens', "
                        "12, 'draft', 'tq4', 'draft_tokens', 3, 'temperature', 1.0, 'seed', 7))",
                        NULL)) == 0,
         "seeded speculative generation is reproducible");
  ok(db, "SELECT group_concat(token, '') FROM gpt2_stream('The dog', json_object('max_tokens', "
     "10, 'draft', 'tq4', 'draft_tokens', 4, 'temperature', 0.8, 'seed', 3))", NULL);
  ok(db,
     "SELECT key, completion, n_tokens FROM gpt2_complete('SELECT 1, ''Hello'' UNION ALL "
     "SELECT 2, NULL UNION ALL SELECT 3, ''The dog'' UNION ALL SELECT 4, ''Hello there''', "
     "json_object('max_tokens', 6, 'temperature', 0.7, 'seed', 5, 'batch_size', 2, "
     "'draft', 'tq4', 'draft_tokens', 3))",
     NULL);
  err(db, "option 'draft'", "SELECT gpt2_generate('x', json_object('draft', 'nope'))", NULL);
  /* the draft unloaded while a stream drafts with it: kept until the stream ends */
  {
    sqlite3_stmt *st;
    checks++;
    if (sqlite3_prepare_v2(db, "SELECT token FROM gpt2_stream('The dog', json_object('max_tokens', "
                           "10, 'draft', 'tq4', 'draft_tokens', 2))", -1, &st, NULL) == SQLITE_OK) {
      sqlite3_step(st);
      if (run(db, NULL, 0, "SELECT gpt2_unload('tq4')") != SQLITE_OK)
        fail("unload a draft during a stream: %s", sqlite3_errmsg(db));
      while (sqlite3_step(st) == SQLITE_ROW) {
      }
      if (sqlite3_finalize(st) != SQLITE_OK) fail("stream after its draft's unload: %s",
                                                  sqlite3_errmsg(db));
    } else {
      fail("prepare drafted stream");
    }
  }
  ok(db, "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT, summary TEXT)", NULL);
  ok(db, "INSERT INTO docs(body) VALUES ('alpha'), ('beta gamma'), (NULL), ('delta')", NULL);
  ok(db,
     "UPDATE docs SET summary = c.completion FROM gpt2_complete('SELECT id, body FROM docs', 4) "
     "AS c WHERE docs.id = c.key",
     NULL);
  ok(db, "UPDATE docs SET summary = gpt2_generate(body, 3)", NULL);
  /* a statement abandoned half-way (the cursor is closed by the reset) */
  {
    sqlite3_stmt *st;
    checks++;
    if (sqlite3_prepare_v2(db, "SELECT * FROM gpt2_stream('abandoned', 30)", -1, &st, NULL) ==
        SQLITE_OK) {
      sqlite3_step(st);
      sqlite3_step(st);
      sqlite3_finalize(st);
    } else {
      fail("prepare abandoned stream");
    }
  }

  /* argument errors */
  err(db, "gpt2_generate: argument 2 (max_tokens)", "SELECT gpt2_generate('x', -1)", NULL);
  err(db, "gpt2_generate: argument 5 (top_p)", "SELECT gpt2_generate('x', 3, 1.0, 0, 0.0)",
      NULL);
  err(db, "gpt2_detokenize: argument 1 (ids)", "SELECT gpt2_detokenize('[1, 99999999]')", NULL);
  err(db, "longer than the context", "SELECT gpt2_logits(json('[' || "
      "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 200) "
      "SELECT group_concat('1', ',') FROM n) || ']'))", NULL);
  err(db, "gpt2_complete: argument 1 (query)", "SELECT * FROM gpt2_complete('DELETE FROM docs')",
      NULL);
  err(db, "gpt2_set", "SELECT gpt2_set('kv_memory_limit', 5)", NULL);
  ok(db, "SELECT gpt2_set('max_tokens_limit', 4)", NULL);
  err(db, "max_tokens_limit", "SELECT gpt2_generate('x', 10)", NULL);
  ok(db, "SELECT gpt2_set('max_tokens_limit', 0)", NULL);

  /* several models on one connection */
  ok(db, "SELECT gpt2_load('%s/other', 'other')", models);
  ok(db, "SELECT gpt2_load('%s/tok', 'tok')", models);
  ok(db, "SELECT gpt2_tokenize('the cat')", NULL);
  err(db, "holds only a tokenizer", "SELECT gpt2_generate('x')", NULL);
  ok(db, "SELECT name, current, n_params FROM gpt2_models", NULL);
  ok(db, "SELECT gpt2_use('other')", NULL);
  ok(db, "SELECT gpt2_generate('the', 5)", NULL);
  err(db, "has another vocabulary", "SELECT gpt2_generate('x', '{\"draft\": \"default\"}')",
      NULL);
  err(db, "holds only a tokenizer", "SELECT gpt2_generate('x', '{\"draft\": \"tok\"}')", NULL);
  err(db, "no model named", "SELECT gpt2_use('nope')", NULL);
  /* unload the model a prepared statement is using: it stays alive until done */
  {
    sqlite3_stmt *st;
    checks++;
    if (sqlite3_prepare_v2(db, "SELECT token FROM gpt2_stream('the', 8)", -1, &st, NULL) ==
        SQLITE_OK) {
      sqlite3_step(st);
      if (run(db, NULL, 0, "SELECT gpt2_unload('other')") != SQLITE_OK)
        fail("unload during a stream: %s", sqlite3_errmsg(db));
      while (sqlite3_step(st) == SQLITE_ROW) {
      }
      sqlite3_finalize(st);
    } else {
      fail("prepare stream");
    }
  }
  ok(db, "SELECT gpt2_unload('tok'), gpt2_unload('nope')", NULL);
  ok(db, "SELECT gpt2_use('default')", NULL);
  ok(db, "SELECT gpt2_load('%s/micro')", models); /* replaces 'default' */
  ok(db, "SELECT gpt2_generate('ab', 4), gpt2_info()", NULL);
  close_db(db);
}

/* Many short-lived connections: open, load, generate, close. */
static void many_connections(int n) {
  char first[256] = "";
  for (int i = 0; i < n; i++) {
    sqlite3 *db = open_db();
    ok(db, "SELECT gpt2_load('%s/micro')", models);
    const char *out = ok(db, "SELECT gpt2_generate('hello', 8)", NULL);
    if (i == 0) snprintf(first, sizeof first, "%s", out);
    else if (strcmp(first, out) != 0) fail("connection %d: greedy output differs", i);
    if (i % 10 == 0) ok(db, "SELECT * FROM gpt2_stream('x', 3)", NULL);
    close_db(db);
  }
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s EXTENSION MODELS_DIR [N_CONNECTIONS]\n", argv[0]);
    return 2;
  }
  ext = argv[1];
  models = argv[2];
  int n = argc > 3 ? atoi(argv[3]) : 100;
  main_workload();
  many_connections(n);
  sqlite3_shutdown();
  printf("workload: %d checks, %d failed, %d connections (SQLite %s)\n", checks, failures, n + 1,
         sqlite3_libversion());
  return failures ? 1 : 0;
}
