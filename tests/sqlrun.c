/*
** sqlrun — a minimal SQL runner for tests that need a newer SQLite than the
** system's (built by tests/test_interrupt.py against the amalgamation that
** scripts/fetch-vocab.sh caches). Loads the extension, registers
** interrupt_now() (calls sqlite3_interrupt on this connection) and
** interrupt_after_ms(n) (a thread interrupts the connection n ms later),
** runs each argument as SQL and prints rows as "a|b|c" and errors as
** "ERROR <code>: <message>".
**   usage: sqlrun EXTENSION SQL...
*/
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "sqlite3.h"

typedef struct Later {
  sqlite3 *db;
  int ms;
} Later;

static void *later_main(void *arg) {
  Later *l = arg;
  struct timespec ts = {l->ms / 1000, (long)(l->ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
  sqlite3_interrupt(l->db);
  return NULL;
}

static void interrupt_now(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3_interrupt(sqlite3_context_db_handle(ctx));
  sqlite3_result_int(ctx, 1);
}

static Later later;
static pthread_t later_thread;

static void interrupt_after_ms(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  later.db = sqlite3_context_db_handle(ctx);
  later.ms = sqlite3_value_int(argv[0]);
  pthread_create(&later_thread, NULL, later_main, &later);
  sqlite3_result_int(ctx, 1);
}

int main(int argc, char **argv) {
  sqlite3 *db;
  char *err = NULL;
  if (argc < 2 || sqlite3_open(":memory:", &db) != SQLITE_OK) return 2;
  sqlite3_enable_load_extension(db, 1);
  if (sqlite3_load_extension(db, argv[1], NULL, &err) != SQLITE_OK) {
    printf("LOAD ERROR: %s\n", err);
    return 1;
  }
  sqlite3_create_function(db, "interrupt_now", 0, SQLITE_UTF8, NULL, interrupt_now, NULL, NULL);
  sqlite3_create_function(db, "interrupt_after_ms", 1, SQLITE_UTF8, NULL, interrupt_after_ms,
                          NULL, NULL);
  printf("VERSION %s\n", sqlite3_libversion());
  for (int i = 2; i < argc; i++) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, argv[i], -1, &st, NULL) != SQLITE_OK) {
      printf("ERROR %d: %s\n", sqlite3_errcode(db), sqlite3_errmsg(db));
      continue;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      for (int c = 0; c < sqlite3_column_count(st); c++)
        printf("%s%s", c ? "|" : "", (const char *)sqlite3_column_text(st, c));
      printf("\n");
    }
    if (rc != SQLITE_DONE) printf("ERROR %d: %s\n", sqlite3_errcode(db), sqlite3_errmsg(db));
    sqlite3_finalize(st);
    if (later.db) {
      pthread_join(later_thread, NULL);
      later.db = NULL;
    }
  }
  sqlite3_close(db);
  return 0;
}
