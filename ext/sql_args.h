/*
** sql_args.h — SQL values in and out (owns: argument checking and its error
** wording, prompts, generation parameters, results and errors handed back
** to SQLite, and the helpers every table-valued function shares).
**
** Error messages follow one shape: "<function>: argument N (<name>) <what
** is wrong>", naming the value and the allowed range where there is one;
** for a key of an options object, "<function>: option '<key>' = <value>
** <what is allowed>" (sql_options.c).
*/
#ifndef GPT2_SQL_ARGS_H
#define GPT2_SQL_ARGS_H

#include "sqlite3ext.h"

#include "common.h"
#include "generate.h"
#include "speculate.h"
#include "tokenizer.h"

#include <jansson.h>

/* What json() sets on its result (docs/formats.md, "SQLite"). */
#define GPT2_JSON_SUBTYPE 74

#define GPT2_DEFAULT_MAX_TOKENS 32

/* "INTEGER", "REAL", "TEXT", "BLOB" or "NULL". */
const char *sql_type_name(int type);

/* Integer argument in [lo, hi]. An integral REAL (5.0, as drivers that bind
** every number as a double send it) counts as an integer; 5.5 does not. */
int sql_arg_int(const char *fname, int argno, const char *what, sqlite3_value *v, int64_t lo,
                int64_t hi, int64_t *out, char *err, size_t errlen);

/* Numeric argument (INTEGER or REAL); the caller checks the range. */
int sql_arg_num(const char *fname, int argno, const char *what, sqlite3_value *v, double *out,
                char *err, size_t errlen);

/* A JSON array of integer ids in [0, vocab) appended to out; `where` names
** the value in messages ("argument 1 (ids)"). */
int sql_id_array(const char *fname, const char *where, const char *s, size_t n, int vocab,
                 IdVec *out, char *err, size_t errlen);

/* A prompt: TEXT (tokenized with tok), or token ids as a JSON array carrying
** the JSON subtype. TEXT that is a JSON array of integers but lost the
** subtype (subqueries, tables and drivers drop it) is an error saying so,
** never silently tokenized. `where` names it ("argument 1 (prompt)"). */
int sql_prompt(const Tokenizer *tok, int vocab, const char *fname, const char *where,
               sqlite3_value *v, IdVec *out, char *err, size_t errlen);

/* Generation arguments after the prompt, numbered from argno 2: max_tokens,
** temperature, top_k, top_p, seed (argc of them; a NULL pointer or SQL NULL
** means the default). max_tokens may not exceed cap (the connection's limit
** or the context). *seeded tells whether a seed was given; without one the
** seed is random. */
int sql_gen_params(int n_positions, int64_t cap, const char *fname, int argc,
                   sqlite3_value **argv, Gpt2GenParams *p, int *seeded, char *err,
                   size_t errlen);

/* ---- generation arguments: positional, or one options object ---- */

#define SQL_DEFAULT_BATCH 16  /* gpt2_complete's batch_size */
#define SQL_MAX_BATCH 256

/* Keys only some functions take (sql_gen_args' keys). */
#define SQL_GEN_RESULT 1u  /* 'result' (gpt2_generate) */
#define SQL_GEN_BATCH 2u   /* 'batch_size' (gpt2_complete; positional 6th too) */

typedef struct SqlGenArgs {
  Gpt2GenParams p;     /* p.opt points at opt: use the struct in place, never copy it */
  Gpt2Options opt;
  int seeded;          /* a seed was given; else p.seed is random */
  int result_json;     /* 'result': 'json' */
  int64_t batch_size;  /* SQL_GEN_BATCH: the batch size (default SQL_DEFAULT_BATCH) */
  char *draft;         /* 'draft': a loaded model's name (malloc'd), NULL when none */
  int64_t draft_tokens; /* 'draft_tokens' (default SPEC_DEFAULT_DRAFT) */
} SqlGenArgs;

/* The arguments after the prompt (argno 2 on): either positional, as
** sql_gen_params (then batch_size when keys has SQL_GEN_BATCH), or, when
** argument 2 is TEXT (with or without the JSON subtype), a JSON object of
** options (README, "Generation options"), and then no other non-NULL
** argument. Release with sql_gen_args_free, also after an error. */
int sql_gen_args(const Gpt2Config *cfg, int64_t cap, const char *fname, int argc,
                 sqlite3_value **argv, unsigned keys, SqlGenArgs *a, char *err, size_t errlen);
void sql_gen_args_free(SqlGenArgs *a);

/* A random 64-bit seed. */
uint64_t sql_random_seed(void);

/* Nonzero when sqlite3_interrupt() was called on db (a sqlite3 *) during the
** running statement; always 0 before SQLite 3.41, which cannot tell. */
int sql_interrupted(void *db);

/* ---- results ---- */

/* msg with invalid UTF-8 replaced by U+FFFD (messages quote user input and
** may cut it mid-character); malloc'd, NULL on OOM. */
char *sql_clean_text(const char *msg);

/* Report a module status: GPT2_NOMEM -> SQLITE_NOMEM, GPT2_INTERRUPTED ->
** SQLITE_INTERRUPT with msg, else msg as the error. */
void sql_result_error(sqlite3_context *ctx, int rc, const char *msg);
/* The same as a virtual table's error; returns the SQLite code. */
int sql_vtab_error(sqlite3_vtab *tab, int rc, const char *msg);

/* j (consumed; NULL means OOM) as TEXT with the JSON subtype. */
void sql_result_json(sqlite3_context *ctx, json_t *j);

/* ---- table-valued functions ---- */

/* xBestIndex for a function whose n_args hidden argument columns start at
** column first and whose first argument is required: idxNum gets bit k for
** argument k, argv follows column order. */
int sql_best_index(sqlite3_vtab *tab, sqlite3_index_info *info, int first, int n_args,
                   const char *required_msg);

/* xOpen: a zeroed cursor of size bytes (a struct starting with its
** sqlite3_vtab_cursor). */
int sql_cursor_open(size_t size, sqlite3_vtab_cursor **out);

/* Spread xFilter's argv into args[n_args] (NULL where not given). */
void sql_args_unpack(int idxNum, int argc, sqlite3_value **argv, int n_args,
                     sqlite3_value **args);

/* Prepare the query argument of a table-valued function: one read-only
** statement (comments and semicolons may follow) returning n_cols columns,
** described as cols_desc in messages ("two columns, (key, prompt)"). */
int sql_prepare_query(sqlite3 *db, const char *fname, const char *sql, int n_cols,
                      const char *cols_desc, sqlite3_stmt **out, char *err, size_t errlen);

/* Rows a prepared query returns, counted by running it once more as
** SELECT count(*) over its text (for a progress bar's total: the query runs
** twice, so only when a bar is drawn); -1 when that cannot be done. */
sqlite3_int64 sql_count_rows(sqlite3 *db, sqlite3_stmt *query);

#endif
