/*
** oom_driver — out-of-memory injection over every allocation of a load and
** of each kind of call (`make test-oom`).
**
**   usage: oom_driver MODELS_DIR [-v | -vv] [-phase NAME] [-max N] [-stride K]
**
** -v lists the distinct error messages met under injection, -vv each one
** with its N.
**
** -stride K: above N = 64, try only every K-th N (a quick pass for CI; the
** default, 1, tries every allocation).
**
** Built from the extension's sources with tests/oom/oom_alloc.h forced in
** (malloc, calloc, realloc, aligned_alloc, strdup, free renamed), Jansson's
** allocators set to the same functions, SQLite's wrapped with
** SQLITE_CONFIG_MALLOC, and ASan + UBSan on. The extension is registered as an
** automatic extension of SQLite 3.50 (the amalgamation, linked in).
**
** For each phase (a statement after some setup) and each mode — ONCE: only
** allocation N fails; PERSIST: N and every later one fail — and for N = 1, 2,
** ... until the statement makes fewer than N allocations:
**   1. open a connection and run the setup (allocator disarmed);
**   2. arm the allocator at N, run the statement, disarm;
**   3. the statement must succeed with exactly the reference result (computed
**      first, without injection), or fail with SQLITE_NOMEM, or fail with an
**      error that has a message (counted by kind, listed with -v);
**   4. the connection must still work: the statement run again (unless it
**      changes what it acts on), then a probe (greedy generation), give their
**      reference results;
**   5. after sqlite3_close, the allocator's live blocks and SQLite's
**      sqlite3_memory_used() must be back where they were before the open.
** The sweep stops at the first N that no allocation reaches; that N - 1 must
** equal the number of allocations the reference run made (counted with the
** allocator armed at an unreachable N), so every allocation was failed once.
** SQLite's lookaside is off, so its per-connection allocations (values
** converted for the extension, results copied) go through the counter too.
** Any violation is printed and makes the exit status nonzero; ASan catches
** use-after-free and double frees on the error paths, LeakSanitizer (at exit)
** anything allocated outside the counted allocators and not freed.
**
** NOT COVERED (not counted, never failed): allocations inside PCRE2 (the
** tokenizer compiles its pattern and match data without a general context),
** OpenBLAS, libc (realpath, fopen's buffers, pthread_create) and the dynamic
** loader. They fail, if ever, the way the real libraries do.
*/
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "oom_ctl.h"
#include "sqlite3.h"

int sqlite3_gpt_init(sqlite3 *db, char **pzErrMsg, const void *pApi);

typedef struct Phase {
  const char *name;
  const char *setup; /* run before arming; may be NULL */
  const char *sql;   /* the statement under test; NULL: the open itself */
  const char *env;   /* GPT2_MODEL for this phase (autoload), or NULL */
  const char *restore; /* the statement changes what it acts on: not re-run;
                          this puts the connection back before the probe */
} Phase;

/* %1$s in the SQL is the models directory. */
static const Phase PHASES[] = {
    {"open", NULL, NULL, NULL, NULL},
    {"load", NULL, "SELECT gpt2_load('%1$s/micro')", NULL, NULL},
    {"load-f16", NULL, "SELECT gpt2_load('%1$s/other', 'f16')", NULL, NULL},
    {"load-q4", NULL, "SELECT gpt2_load('%1$s/other', 'q', 'q4')", NULL, NULL},
    {"load-tokenizer", NULL, "SELECT gpt2_load('%1$s/tok', 'tok')", NULL, NULL},
    {"load-replace", "SELECT gpt2_load('%1$s/micro')", "SELECT gpt2_load('%1$s/other')", NULL, NULL},
    {"load-broken", "SELECT gpt2_load('%1$s/micro')", "SELECT gpt2_load('%1$s/broken')", NULL, NULL},
    {"autoload", NULL, "SELECT gpt2_generate('hello', 3)", "micro", NULL},
    {"info", "SELECT gpt2_load('%1$s/micro')", "SELECT gpt2_info()", NULL, NULL},
    {"tokenize", "SELECT gpt2_load('%1$s/micro')",
     "SELECT gpt2_tokenize('The quick brown fox <|endoftext|> caf\xc3\xa9 \xff'), "
     "gpt2_token_count('hello hello'), gpt2_detokenize('[1, 2, 200, 276]')", NULL, NULL},
    {"logits", "SELECT gpt2_load('%1$s/micro')", "SELECT hex(gpt2_logits('Hello there'))", NULL, NULL},
    {"generate", "SELECT gpt2_load('%1$s/micro')",
     "SELECT gpt2_generate('Once upon', 10), gpt2_generate('Once upon a', 10, 0.8, 5, 0.9, 7)",
     NULL, NULL},
    {"stream", "SELECT gpt2_load('%1$s/micro')",
     "SELECT group_concat(token_id, ','), group_concat(token, '') "
     "FROM gpt2_stream('The dog', 8, 0.9, 0, 1.0, 3)", NULL, NULL},
    {"complete", "SELECT gpt2_load('%1$s/micro')",
     "SELECT key, completion, n_tokens FROM gpt2_complete('SELECT 1, ''ab'' UNION ALL "
     "SELECT 2, NULL UNION ALL SELECT 3, ''ab c'' UNION ALL SELECT 4, json(''[5, 6]'')', "
     "5, 0.7, 0, 1.0, 9, 2)", NULL, NULL},
    {"options", "SELECT gpt2_load('%1$s/micro')",
     "SELECT gpt2_generate('Once upon', '{\"max_tokens\": 9, \"temperature\": 0.8, \"seed\": 3, "
     "\"stop\": [\"zq\", \"e\"], \"repetition_penalty\": 1.3, \"frequency_penalty\": 0.5, "
     "\"logit_bias\": {\"5\": 2}, \"min_tokens\": 2, \"result\": \"json\"}'), "
     "(SELECT group_concat(token, '') || max(finish_reason) FROM gpt2_stream('The dog', "
     "json_object('max_tokens', 6, 'stop', 'o', 'presence_penalty', 1))), "
     "(SELECT group_concat(completion || finish_reason) FROM gpt2_complete('SELECT 1, ''ab'' "
     "UNION ALL SELECT 2, ''ab c''', '{\"max_tokens\": 5, \"stop\": \"a\", \"batch_size\": 2}'))",
     NULL, NULL},
    /* speculative decoding: micro drafted for by 'other' in q4 (same vocabulary,
    ** disagrees often: rejections, resampling), greedy and sampled, batched */
    {"speculate", "SELECT gpt2_load('%1$s/micro'), gpt2_load('%1$s/other', 'd', 'q4'), "
     "gpt2_use('default')",
     "SELECT gpt2_generate('Once upon', '{\"max_tokens\": 9, \"draft\": \"d\", "
     "\"draft_tokens\": 3}'), gpt2_generate('Once upon', '{\"max_tokens\": 9, \"draft\": \"d\", "
     "\"draft_tokens\": 3, \"temperature\": 0.9, \"seed\": 5, \"top_k\": 20, \"stop\": \"zq\"}'), "
     "(SELECT group_concat(token, '') FROM gpt2_stream('The dog', json_object('max_tokens', 6, "
     "'draft', 'd', 'draft_tokens', 3, 'temperature', 1.0, 'seed', 2))), "
     "(SELECT group_concat(completion || n_tokens) FROM gpt2_complete('SELECT 1, ''ab'' UNION ALL "
     "SELECT 2, NULL UNION ALL SELECT 3, ''ab c''', '{\"max_tokens\": 7, \"draft\": \"d\", "
     "\"draft_tokens\": 3, \"batch_size\": 2}')), "
     "(SELECT group_concat(completion || n_tokens) FROM gpt2_complete('SELECT 1, ''ab'' UNION ALL "
     "SELECT 2, ''b c''', '{\"max_tokens\": 7, \"draft\": \"d\", \"draft_tokens\": 3, "
     "\"temperature\": 0.8, \"seed\": 9}'))",
     NULL, NULL},
    {"score", "SELECT gpt2_load('%1$s/micro')",
     "SELECT gpt2_score('the dog', 'Once'), gpt2_perplexity('a b c d e f g'), "
     "hex(gpt2_embed('Hello', 'last,normalize')), "
     "(SELECT group_concat(logprob || rank || coalesce(top, '')) FROM "
     "gpt2_token_logprobs('ab cd', NULL, 3))", NULL, NULL},
    {"score-rows", "SELECT gpt2_load('%1$s/micro')",
     "SELECT key, n_tokens, logprob FROM gpt2_score_rows('SELECT 1, ''ab'', NULL UNION ALL "
     "SELECT 2, NULL, NULL UNION ALL SELECT 3, ''ab c'', ''x''', 2)",
     NULL, NULL},
    {"models", "SELECT gpt2_load('%1$s/micro'), gpt2_load('%1$s/tok', 'tok')",
     "SELECT name, current, n_params FROM gpt2_models; ", NULL, NULL},
    {"use-unload", "SELECT gpt2_load('%1$s/micro'), gpt2_load('%1$s/tok', 'tok')",
     "SELECT gpt2_use('tok') IS NOT NULL, gpt2_unload('tok'), gpt2_use('default') IS NOT NULL",
     NULL, "SELECT gpt2_use('default')"},
    {"set", "SELECT gpt2_load('%1$s/micro')",
     "SELECT gpt2_set('max_tokens_limit', 0), gpt2_set('prefix_reuse', 1)", NULL, NULL},
    {"errors", "SELECT gpt2_load('%1$s/micro')", "SELECT gpt2_use('nope')", NULL, NULL},
};
#define N_PHASES (sizeof PHASES / sizeof PHASES[0])

static const char *PROBE = "SELECT gpt2_generate('ab', 4)";

static const char *models;
static int verbose;
static long stride = 1;
static int problems;

/* Result of one statement: code, message, rows as text. */
typedef struct Res {
  int rc;
  char msg[512];
  char out[8192];
} Res;

static void fmt_sql(char *buf, size_t n, const char *fmt) {
  snprintf(buf, n, fmt, models); /* fmt uses %1$s only */
}

static void run(sqlite3 *db, const char *fmt, Res *r) {
  char sql[2048];
  fmt_sql(sql, sizeof sql, fmt);
  r->rc = SQLITE_OK;
  r->msg[0] = r->out[0] = 0;
  size_t k = 0;
  const char *tail = sql;
  while (tail && *tail && r->rc == SQLITE_OK) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, tail, -1, &st, &tail);
    if (rc != SQLITE_OK) {
      r->rc = rc;
      break;
    }
    if (!st) break;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      for (int c = 0; c < sqlite3_column_count(st); c++) {
        const char *t = (const char *)sqlite3_column_text(st, c);
        if (k + 1 < sizeof r->out)
          k += (size_t)snprintf(r->out + k, sizeof r->out - k, "%s%s", c ? "|" : "",
                                t ? t : (sqlite3_column_type(st, c) == SQLITE_NULL ? "NULL" : "?"));
      }
      if (k + 1 < sizeof r->out) k += (size_t)snprintf(r->out + k, sizeof r->out - k, "\n");
    }
    if (rc != SQLITE_DONE) r->rc = sqlite3_errcode(db) ? sqlite3_errcode(db) : rc;
    sqlite3_finalize(st);
  }
  if (r->rc != SQLITE_OK) snprintf(r->msg, sizeof r->msg, "%s", sqlite3_errmsg(db));
}

static void problem(const char *phase, const char *mode, long n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "PROBLEM %s/%s N=%ld: ", phase, mode, n);
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  problems++;
}

/* Distinct error messages seen under injection, with counts. */
#define MAX_KINDS 256
static struct {
  char phase[24];
  int rc;
  char msg[160];
  long count;
} kinds[MAX_KINDS];
static int n_kinds;

static void note_error(const char *phase, int rc, const char *msg) {
  char m[160];
  snprintf(m, sizeof m, "%s", msg);
  for (char *p = m; *p; p++) /* numbers vary (line, byte): fold them */
    if (*p >= '0' && *p <= '9') *p = '#';
  for (int i = 0; i < n_kinds; i++)
    if (kinds[i].rc == rc && strcmp(kinds[i].phase, phase) == 0 && strcmp(kinds[i].msg, m) == 0) {
      kinds[i].count++;
      return;
    }
  if (n_kinds == MAX_KINDS) return;
  snprintf(kinds[n_kinds].phase, sizeof kinds[n_kinds].phase, "%s", phase);
  kinds[n_kinds].rc = rc;
  snprintf(kinds[n_kinds].msg, sizeof kinds[n_kinds].msg, "%s", m);
  kinds[n_kinds++].count = 1;
}

static sqlite3 *open_db(int *rc) {
  sqlite3 *db = NULL;
  *rc = sqlite3_open(":memory:", &db);
  return db;
}

typedef struct Stats {
  long max_n;    /* allocations the statement makes: N ran over 1..max_n */
  long tried;    /* N values tried (all of them unless -stride) */
  long ok, nomem, error;
} Stats;

static void run_phase(const Phase *ph, int mode, long max_n, Stats *st) {
  const char *mname = mode == OOM_ONCE ? "once" : "persist";
  char envbuf[1024];
  if (ph->env) {
    snprintf(envbuf, sizeof envbuf, "%s/%s", models, ph->env);
    setenv("GPT2_MODEL", envbuf, 1);
  }
  /* Reference, without injection (twice: the first run settles lazy global
  ** state, e.g. SQLite's and Jansson's, so the baselines below are steady). */
  Res ref, probe_ref, r, again;
  for (int pass = 0; pass < 2; pass++) {
    int orc;
    sqlite3 *db = open_db(&orc);
    if (orc != SQLITE_OK) {
      fprintf(stderr, "cannot open a connection\n");
      exit(2);
    }
    if (ph->setup) run(db, ph->setup, &r);
    if (ph->setup && r.rc != SQLITE_OK) {
      fprintf(stderr, "%s: setup failed: %s\n", ph->name, r.msg);
      exit(2);
    }
    if (ph->sql) run(db, ph->sql, &ref);
    else ref.rc = SQLITE_OK, ref.out[0] = 0;
    run(db, PROBE, &probe_ref);
    sqlite3_close(db);
  }
  /* The allocations of the statement (or the open), counted: none fails. */
  long ref_allocs;
  {
    int orc;
    sqlite3 *db;
    if (!ph->sql) {
      oom_arm(LONG_MAX, OOM_ONCE);
      db = open_db(&orc);
      oom_disarm();
    } else {
      db = open_db(&orc);
      if (ph->setup) run(db, ph->setup, &r);
      oom_arm(LONG_MAX, OOM_ONCE);
      run(db, ph->sql, &r);
      oom_disarm();
    }
    ref_allocs = atomic_load(&oom_count);
    sqlite3_close(db);
  }
  memset(st, 0, sizeof *st);
  for (long n = 1; n <= max_n; n = n < 64 ? n + 1 : n + stride) {
    long live0 = oom_live();
    sqlite3_int64 mem0 = sqlite3_memory_used();
    int orc = SQLITE_OK;
    sqlite3 *db = NULL;
    if (!ph->sql) {
      oom_arm(n, mode);
      db = open_db(&orc);
      oom_disarm();
      r.rc = orc;
      snprintf(r.msg, sizeof r.msg, "%s", db ? sqlite3_errmsg(db) : "no handle");
      r.out[0] = 0;
    } else {
      db = open_db(&orc);
      if (orc != SQLITE_OK) {
        fprintf(stderr, "cannot open a connection\n");
        exit(2);
      }
      if (ph->setup) run(db, ph->setup, &again);
      oom_arm(n, mode);
      run(db, ph->sql, &r);
      oom_disarm();
    }
    long used = atomic_load(&oom_count), failed = atomic_load(&oom_failed);
    if (failed == 0) { /* fewer than n allocations: this phase is covered */
      if (r.rc != ref.rc || strcmp(r.out, ref.out) != 0)
        problem(ph->name, mname, n, "no allocation failed, yet the result differs: %s", r.msg);
      sqlite3_close(db);
      st->max_n = used; /* the allocations it made, all of them below n */
      if (used != ref_allocs || (stride == 1 && st->tried != used))
        problem(ph->name, mname, n, "the sweep ended after %ld allocations, tried %ld N, but the "
                "statement makes %ld: not every allocation was failed", used, st->tried,
                ref_allocs);
      break;
    }
    if (r.rc == SQLITE_OK) {
      st->ok++;
      if (strcmp(r.out, ref.out) != 0)
        problem(ph->name, mname, n, "succeeded with a different result:\n  got  %.300s\n  want %.300s",
                r.out, ref.out);
    } else if ((r.rc & 0xff) == SQLITE_NOMEM) {
      st->nomem++;
    } else {
      st->error++;
      if (!r.msg[0]) problem(ph->name, mname, n, "error %d without a message", r.rc);
      note_error(ph->name, r.rc, r.msg);
      if (verbose > 1) printf("  %s/%s N=%ld: %s\n", ph->name, mname, n, r.msg);
    }
    /* The connection still works (not for a failed open). */
    if (db && (ph->sql || orc == SQLITE_OK)) {
      if (ph->restore) run(db, ph->restore, &again);
      if (ph->sql && !ph->restore) {
        run(db, ph->sql, &again);
        if (again.rc != ref.rc || strcmp(again.out, ref.out) != 0)
          problem(ph->name, mname, n, "after the failure the statement gives %d %s (%.200s), not "
                  "the reference", again.rc, again.msg, again.out);
      }
      if (ph->sql || !ph->setup) {
        run(db, PROBE, &again);
        if (again.rc != probe_ref.rc || strcmp(again.out, probe_ref.out) != 0)
          problem(ph->name, mname, n, "after the failure the probe gives %d %s (%.200s)", again.rc,
                  again.msg, again.out);
      }
    }
    int crc = sqlite3_close(db);
    st->tried++;
    if (crc != SQLITE_OK) problem(ph->name, mname, n, "sqlite3_close: %d", crc);
    long live1 = oom_live();
    sqlite3_int64 mem1 = sqlite3_memory_used();
    if (live1 != live0)
      problem(ph->name, mname, n, "%ld block(s) of the extension/Jansson not freed", live1 - live0);
    if (mem1 != mem0)
      problem(ph->name, mname, n, "%lld bytes of SQLite memory not freed", (long long)(mem1 - mem0));
    st->max_n = n;
  }
  if (ph->env) unsetenv("GPT2_MODEL");
}

int main(int argc, char **argv) {
  const char *only = NULL;
  long max_n = 1000000;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-v") == 0) verbose = 1;
    else if (strcmp(argv[i], "-vv") == 0) verbose = 2;
    else if (strcmp(argv[i], "-phase") == 0 && i + 1 < argc) only = argv[++i];
    else if (strcmp(argv[i], "-max") == 0 && i + 1 < argc) max_n = atol(argv[++i]);
    else if (strcmp(argv[i], "-stride") == 0 && i + 1 < argc) stride = atol(argv[++i]);
    else models = argv[i];
  }
  if (!models || stride < 1) {
    fprintf(stderr, "usage: %s MODELS_DIR [-v] [-phase NAME] [-max N] [-stride K]\n", argv[0]);
    return 2;
  }
  /* No lookaside: SQLite's small per-connection allocations go to the counter. */
  if (sqlite3_config(SQLITE_CONFIG_LOOKASIDE, 0, 0) != SQLITE_OK) {
    fprintf(stderr, "cannot configure SQLite\n");
    return 2;
  }
  json_set_alloc_funcs(oom_malloc, oom_free);
  if (oom_sqlite_install() || sqlite3_initialize() != SQLITE_OK ||
      sqlite3_auto_extension((void (*)(void))sqlite3_gpt_init) != SQLITE_OK) {
    fprintf(stderr, "cannot set up SQLite\n");
    return 2;
  }
  unsetenv("GPT2_MODEL");
  long total = 0;
  printf("%-16s %-8s %9s %6s %7s %7s %7s\n", "phase", "mode", "N range", "tried", "ok", "NOMEM",
         "error");
  for (size_t p = 0; p < N_PHASES; p++) {
    if (only && strcmp(only, PHASES[p].name) != 0) continue;
    for (int mode = OOM_ONCE; mode <= OOM_PERSIST; mode++) {
      Stats st;
      run_phase(&PHASES[p], mode, max_n, &st);
      printf("%-16s %-8s %4s%-5ld %6ld %7ld %7ld %7ld\n", PHASES[p].name,
             mode == OOM_ONCE ? "once" : "persist", "1..", st.max_n, st.tried, st.ok, st.nomem,
             st.error);
      fflush(stdout);
      total += st.tried;
    }
  }
  printf("%ld allocation numbers (N) in all%s; %d problem(s)\n", total,
         stride > 1 ? " (every one up to 64, then a stride)" : ", every one tried", problems);
  if (verbose || problems) {
    printf("errors other than SQLITE_NOMEM, by phase and message (digits folded):\n");
    for (int i = 0; i < n_kinds; i++)
      printf("  %-14s rc %-4d x%-5ld %s\n", kinds[i].phase, kinds[i].rc, kinds[i].count,
             kinds[i].msg);
  }
  sqlite3_shutdown();
  return problems ? 1 : 0;
}
