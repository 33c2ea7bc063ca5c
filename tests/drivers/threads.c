/*
** threads — concurrency check for `make test-tsan`: N threads (default 8),
** each with its own connection, load a model and generate at the same time.
** Every thread's outputs must equal those of the same work run sequentially
** first; built with -fsanitize=thread (driver, SQLite and extension), any
** data race aborts the run.
**
**   usage: threads EXTENSION MODELS_DIR [N_THREADS]
**
** The work of thread i: greedy and seeded generation (seeds depend on i),
** a stream, a batched gpt2_complete, speculative generation and completion
** with a q4 copy as the draft, tokenization and a logits checksum, on
** MODELS_DIR/tiny (GPT-2's real vocabulary); thread i also loads
** MODELS_DIR/other under a second name and generates with it, so several
** models live in one connection while other connections work.
*/
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

#define OUT_MAX 16384

static const char *ext, *models;

typedef struct Job {
  int id;
  int failed;
  char out[OUT_MAX];
} Job;

static void append(Job *j, const char *fmt, const char *s) {
  size_t k = strlen(j->out);
  if (k + 1 < OUT_MAX) snprintf(j->out + k, OUT_MAX - k, fmt, s);
}

/* Run sql; append every row as text (BLOBs as an FNV-1a checksum). */
static void q(Job *j, sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    fprintf(stderr, "thread %d: %s: %s\n", j->id, sql, sqlite3_errmsg(db));
    j->failed = 1;
    return;
  }
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      char tmp[32];
      const char *t;
      if (sqlite3_column_type(st, c) == SQLITE_BLOB) {
        const unsigned char *b = sqlite3_column_blob(st, c);
        uint64_t h = 1469598103934665603ULL;
        for (int i = 0; i < sqlite3_column_bytes(st, c); i++) h = (h ^ b[i]) * 1099511628211ULL;
        snprintf(tmp, sizeof tmp, "blob:%016llx", (unsigned long long)h);
        t = tmp;
      } else {
        t = (const char *)sqlite3_column_text(st, c);
      }
      append(j, c ? "|%s" : "%s", t ? t : "NULL");
    }
    append(j, "%s", "\n");
  }
  if (rc != SQLITE_DONE) {
    fprintf(stderr, "thread %d: %s: %s\n", j->id, sql, sqlite3_errmsg(db));
    j->failed = 1;
  }
  sqlite3_finalize(st);
}

static void *work(void *arg) {
  Job *j = arg;
  sqlite3 *db;
  char *err = NULL, sql[1024];
  j->out[0] = 0;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) {
    j->failed = 1;
    return NULL;
  }
  sqlite3_enable_load_extension(db, 1);
  if (sqlite3_load_extension(db, ext, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "thread %d: cannot load %s: %s\n", j->id, ext, err);
    sqlite3_free(err);
    j->failed = 1;
    sqlite3_close(db);
    return NULL;
  }
  snprintf(sql, sizeof sql, "SELECT json_extract(gpt2_load('%s/tiny'), '$.n_layer')", models);
  q(j, db, sql);
  int i = j->id;
  snprintf(sql, sizeof sql, "SELECT gpt2_generate('Once upon a time, thread %d', 24)", i);
  q(j, db, sql);
  snprintf(sql, sizeof sql, "SELECT gpt2_generate('Once upon a time', 24, 0.9, 40, 0.95, %d)", i);
  q(j, db, sql);
  snprintf(sql, sizeof sql,
           "SELECT group_concat(token_id, ',') FROM gpt2_stream('The dog %d', 16, 0.7, 0, 1.0, %d)",
           i, 100 + i);
  q(j, db, sql);
  snprintf(sql, sizeof sql,
           "SELECT key, completion, n_tokens FROM gpt2_complete('SELECT 1, ''Hello'' UNION ALL "
           "SELECT 2, ''The quick brown fox'' UNION ALL SELECT 3, NULL UNION ALL SELECT 4, "
           "''Thread %d says''', 10, 0.8, 0, 1.0, %d, 3)",
           i, 1000 + i);
  q(j, db, sql);
  /* speculative decoding with a 4-bit copy as the draft (shared by the threads) */
  snprintf(sql, sizeof sql, "SELECT json_extract(gpt2_load('%s/tiny', 'q', 'q4'), '$.name'), "
           "gpt2_use('default') IS NOT NULL", models);
  q(j, db, sql);
  snprintf(sql, sizeof sql,
           "SELECT gpt2_generate('Once upon a time, thread %d', json_object('max_tokens', 20, "
           "'draft', 'q', 'draft_tokens', 3)), gpt2_generate('Once upon a time', "
           "json_object('max_tokens', 20, 'draft', 'q', 'temperature', 0.9, 'seed', %d))",
           i, i);
  q(j, db, sql);
  snprintf(sql, sizeof sql,
           "SELECT key, completion FROM gpt2_complete('SELECT 1, ''Hello'' UNION ALL SELECT 2, "
           "''Thread %d says'' UNION ALL SELECT 3, ''The quick brown fox''', json_object("
           "'max_tokens', 10, 'temperature', 0.8, 'seed', %d, 'draft', 'q', 'draft_tokens', 4))",
           i, 2000 + i);
  q(j, db, sql);
  q(j, db, "SELECT gpt2_unload('q')");
  q(j, db, "SELECT gpt2_tokenize('caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 <|endoftext|> 12345')");
  snprintf(sql, sizeof sql, "SELECT gpt2_logits('Prompt number %d')", i);
  q(j, db, sql);
  snprintf(sql, sizeof sql, "SELECT json_extract(gpt2_load('%s/other', 'other'), '$.name')",
           models);
  q(j, db, sql);
  snprintf(sql, sizeof sql, "SELECT gpt2_generate('the %d', 12, 1.0, 0, 1.0, %d)", i, i);
  q(j, db, sql);
  q(j, db, "SELECT gpt2_use('default') IS NOT NULL, gpt2_unload('other')");
  snprintf(sql, sizeof sql, "SELECT gpt2_generate('Once upon a time, thread %d', 24)", i);
  q(j, db, sql); /* again: now through the prefix cache */
  if (sqlite3_close(db) != SQLITE_OK) j->failed = 1;
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s EXTENSION MODELS_DIR [N_THREADS]\n", argv[0]);
    return 2;
  }
  ext = argv[1];
  models = argv[2];
  int n = argc > 3 ? atoi(argv[3]) : 8;
  if (n < 1 || n > 64) n = 8;
  Job *seq = calloc((size_t)n, sizeof *seq), *par = calloc((size_t)n, sizeof *par);
  pthread_t *th = calloc((size_t)n, sizeof *th);
  if (!seq || !par || !th) return 2;
  for (int i = 0; i < n; i++) { /* sequential reference, one connection after another */
    seq[i].id = i;
    work(&seq[i]);
  }
  for (int i = 0; i < n; i++) {
    par[i].id = i;
    if (pthread_create(&th[i], NULL, work, &par[i]) != 0) {
      fprintf(stderr, "pthread_create failed\n");
      return 2;
    }
  }
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  int bad = 0;
  for (int i = 0; i < n; i++) {
    if (seq[i].failed || par[i].failed) {
      fprintf(stderr, "thread %d: a statement failed\n", i);
      bad++;
    } else if (strcmp(seq[i].out, par[i].out) != 0) {
      fprintf(stderr, "thread %d: concurrent output differs from the sequential run\n"
              "--- sequential\n%s--- concurrent\n%s", i, seq[i].out, par[i].out);
      bad++;
    }
  }
  if (!bad) printf("%s", par[0].out);
  printf("threads: %d threads, each with its own connection: outputs %s the sequential run\n", n,
         bad ? "DIFFER from" : "identical to");
  free(seq);
  free(par);
  free(th);
  sqlite3_shutdown();
  return bad ? 1 : 0;
}
