/*
** fuzz_sql — the SQL surface: argument parsing and state handling of every
** function and table-valued function, on a connection of SQLite 3.50 (the
** amalgamation, linked in) with the extension registered as an automatic
** extension and the micro checkpoint loaded.
**
** Input: a sequence of calls (at most 8), each
**     byte  function: index into FUNCS below (mod its size)
**     byte  argc: low 3 bits; unless bit 7 is set, clamped to the function's
**           arity range (so most inputs reach the function body)
**     argc × argument:
**       byte type (mod 7): 0 NULL, 1 INTEGER (8 bytes LE), 2 small INTEGER
**            (1 byte, signed), 3 REAL (8 bytes LE), 4 TEXT, 5 BLOB,
**            6 TEXT passed through json() (JSON subtype)
**       TEXT/BLOB/JSON: u16 LE length, then that many bytes (cut at the end)
** A TEXT first argument of gpt2_load that is one byte 0..4 names a fixture:
** 0 the micro checkpoint, 1 a tokenizer-only directory, 2 a missing path,
** 3 a regular file, 4 the 557-token vocabulary (tokenizer only).
** Scalars run as SELECT fn(?1, ...), tables as SELECT * FROM fn(?1, ...)
** LIMIT 40; every column of every row is read. A progress handler stops
** runaway SQL (gpt2_complete runs its argument as a query).
**
** One connection serves every input (opening one and loading the model per
** input would cost 20x the throughput); after each input it is put back in
** the same state — only the micro checkpoint loaded, as 'default' and
** current, default settings, empty prefix cache — so an input does the same
** thing whenever it runs, and a crash replays from its file alone.
**
** Invariants: no crash, leak or undefined behaviour (ASan/UBSan/LSan);
** every error has a message; no statement is left open; the start state can
** always be restored.
*/
#include "fuzz_common.h"

#include "sqlite3.h"

int sqlite3_gpt_init(sqlite3 *db, char **pzErrMsg, const void *pApi);

static const struct {
  const char *name;
  int table;      /* 1: table-valued function */
  int lo, hi;     /* arity range */
} FUNCS[] = {
    {"gpt2_version", 0, 0, 0},    {"gpt2_load", 0, 1, 3},        {"gpt2_info", 0, 0, 0},
    {"gpt2_use", 0, 1, 1},        {"gpt2_unload", 0, 1, 1},      {"gpt2_set", 0, 2, 2},
    {"gpt2_tokenize", 0, 1, 1},   {"gpt2_detokenize", 0, 1, 1},  {"gpt2_token_count", 0, 1, 1},
    {"gpt2_logits", 0, 1, 1},     {"gpt2_generate", 0, 1, 6},    {"gpt2_stream", 1, 1, 6},
    {"gpt2_complete", 1, 1, 7},   {"gpt2_models", 1, 0, 0},      {"gpt2_progress", 0, 0, 0},
    {"gpt2_score", 0, 1, 2},      {"gpt2_perplexity", 0, 1, 2},  {"gpt2_embed", 0, 1, 2},
    {"gpt2_token_logprobs", 1, 1, 3}, {"gpt2_score_rows", 1, 1, 2},
};
#define N_FUNCS (sizeof FUNCS / sizeof FUNCS[0])

static char fixtures[5][PATH_MAX];
static char micro_dir[PATH_MAX];
static int progress_calls;
static sqlite3 *db;

static int progress(void *arg) {
  (void)arg;
  return ++progress_calls > 20000; /* ~2M VM steps per statement */
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  fz_init((*argv)[0]);
  fz_fixture("micro", micro_dir, sizeof micro_dir);
  snprintf(fixtures[0], PATH_MAX, "%s", micro_dir);
  fz_fixture("holey", fixtures[1], PATH_MAX);
  fz_fixture("does-not-exist", fixtures[2], PATH_MAX);
  fz_fixture("micro/config.json", fixtures[3], PATH_MAX);
  fz_fixture("tiny", fixtures[4], PATH_MAX);
  sqlite3_initialize();
  sqlite3_auto_extension((void (*)(void))sqlite3_gpt_init);
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) abort();
  sqlite3_progress_handler(db, 100, progress, NULL);
  sqlite3_limit(db, SQLITE_LIMIT_LENGTH, 1 << 22);
  return 0;
}

static void exec_or_die(const char *sql) {
  char *err = NULL;
  progress_calls = 0;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "fuzz_sql: %s: %s\n", sql, err);
    abort(); /* the state could not be restored: a finding too */
  }
}

/* Back to the start state (see the header comment). */
static void reset(void) {
  char sql[PATH_MAX + 64];
  exec_or_die("SELECT gpt2_set('prefix_reuse', 0), gpt2_set('prefix_reuse', 1), "
              "gpt2_set('max_tokens_limit', 0), gpt2_set('kv_memory_limit', 4294967296)");
  for (int i = 0; i < 100; i++) { /* one at a time: unloading shifts the table's rows */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT name FROM gpt2_models WHERE name <> 'default' LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
      abort();
    char name[256] = "";
    if (sqlite3_step(st) == SQLITE_ROW)
      snprintf(name, sizeof name, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (!name[0]) break;
    if (sqlite3_prepare_v2(db, "SELECT gpt2_unload(?)", -1, &st, NULL) != SQLITE_OK) abort();
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_step(st);
    sqlite3_finalize(st);
  }
  snprintf(sql, sizeof sql, "SELECT gpt2_load('%s')", micro_dir);
  exec_or_die(sql);
  exec_or_die("SELECT gpt2_use('default')");
}

typedef struct Rd {
  const uint8_t *p;
  size_t n;
} Rd;

static int rd_byte(Rd *r) {
  if (!r->n) return -1;
  r->n--;
  return *r->p++;
}

static uint64_t rd_u64(Rd *r) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) {
    int b = rd_byte(r);
    v |= (uint64_t)(b < 0 ? 0 : b) << (8 * i);
  }
  return v;
}

static const uint8_t *rd_bytes(Rd *r, size_t *len) {
  int a = rd_byte(r), b = rd_byte(r);
  size_t want = (size_t)(a < 0 ? 0 : a) | (size_t)(b < 0 ? 0 : b) << 8;
  if (want > r->n) want = r->n;
  const uint8_t *p = r->p;
  r->p += want;
  r->n -= want;
  *len = want;
  return p;
}

static void run_sql(sqlite3 *db, const char *sql, int nbind, const int *types,
                    const uint64_t *ints, const double *reals, const uint8_t *const *bufs,
                    const size_t *lens) {
  sqlite3_stmt *st = NULL;
  progress_calls = 0;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    FZ_CHECK(sqlite3_errmsg(db)[0], "prepare error without a message");
    return;
  }
  for (int i = 0; i < nbind; i++) {
    int k = i + 1;
    switch (types[i]) {
      case 0: sqlite3_bind_null(st, k); break;
      case 1:
      case 2: sqlite3_bind_int64(st, k, (sqlite3_int64)ints[i]); break;
      case 3: sqlite3_bind_double(st, k, reals[i]); break;
      case 5: sqlite3_bind_blob(st, k, bufs[i], (int)lens[i], SQLITE_TRANSIENT); break;
      default: sqlite3_bind_text(st, k, (const char *)bufs[i], (int)lens[i], SQLITE_TRANSIENT);
    }
  }
  int rc, rows = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && rows++ < 1000) {
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      int type = sqlite3_column_type(st, c); /* before any conversion */
      const unsigned char *t = sqlite3_column_text(st, c);
      int n = sqlite3_column_bytes(st, c);
      if (type == SQLITE_TEXT && t)
        FZ_CHECK(fz_valid_utf8(t, (size_t)n) || strstr(sql, "gpt2_complete") ||
                     strstr(sql, "gpt2_models") || strstr(sql, "gpt2_load") ||
                     strstr(sql, "gpt2_use") || strstr(sql, "gpt2_info"),
                 "%s: column %d is not valid UTF-8", sql, c);
    }
  }
  if (rc != SQLITE_ROW && rc != SQLITE_DONE)
    FZ_CHECK(sqlite3_errmsg(db)[0], "%s: error %d without a message", sql, rc);
  sqlite3_finalize(st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  reset();
  Rd r = {data, size};
  for (int call = 0; call < 8 && r.n; call++) {
    size_t f = (size_t)rd_byte(&r) % N_FUNCS;
    int ab = rd_byte(&r);
    if (ab < 0) ab = 0;
    int argc = ab & 7;
    if (!(ab & 0x80)) {
      if (argc < FUNCS[f].lo) argc = FUNCS[f].lo;
      if (argc > FUNCS[f].hi) argc = FUNCS[f].hi;
    }
    int types[8];
    uint64_t ints[8];
    double reals[8];
    const uint8_t *bufs[8];
    size_t lens[8];
    char sql[512];
    size_t k = (size_t)snprintf(sql, sizeof sql, "SELECT %s%s(", FUNCS[f].table ? "* FROM " : "",
                                FUNCS[f].name);
    for (int i = 0; i < argc; i++) {
      int t = rd_byte(&r);
      types[i] = t < 0 ? 0 : t % 7;
      bufs[i] = NULL;
      lens[i] = 0;
      ints[i] = 0;
      reals[i] = 0;
      switch (types[i]) {
        case 1: ints[i] = rd_u64(&r); break;
        case 2: ints[i] = (uint64_t)(int64_t)(int8_t)rd_byte(&r); break;
        case 3: {
          uint64_t u = rd_u64(&r);
          memcpy(&reals[i], &u, sizeof u);
          break;
        }
        case 4:
        case 5:
        case 6: bufs[i] = rd_bytes(&r, &lens[i]); break;
        default: break;
      }
      if (f == 1 && i == 0 && types[i] == 4 && lens[i] == 1 && bufs[i][0] < 5) {
        const char *fx = fixtures[bufs[i][0]];
        bufs[i] = (const uint8_t *)fx;
        lens[i] = strlen(fx);
      }
      k += (size_t)snprintf(sql + k, sizeof sql - k, types[i] == 6 ? "%sjson(?%d)" : "%s?%d",
                            i ? ", " : "", i + 1);
    }
    snprintf(sql + k, sizeof sql - k, ")%s", FUNCS[f].table ? " LIMIT 40" : "");
    if (FUNCS[f].table && FUNCS[f].lo == 0 && argc == 0)
      snprintf(sql, sizeof sql, "SELECT * FROM %s", FUNCS[f].name);
    run_sql(db, sql, argc, types, ints, reals, bufs, lens);
  }
  FZ_CHECK(sqlite3_next_stmt(db, NULL) == NULL, "a statement was left open");
  return 0;
}
