/*
** gpt2.h — what the SQLite-facing files share (owns: the per-connection
** state, argument parsing and the error wording of the SQL functions).
** Only gpt2.c and vtab_*.c include sqlite3ext.h; the modules below them
** know nothing of SQLite.
*/
#ifndef GPT2_GLUE_H
#define GPT2_GLUE_H

#include "sqlite3ext.h"

#include "generate.h"
#include "model.h"
#include "tokenizer.h"
#include "transformer.h"

#include "version.h"
#define GPT2_DEFAULT_MAX_TOKENS 32
#define GPT2_JSON_SUBTYPE 74 /* 'J', what json() sets (gpt2-facts.md, "SQLite") */

/* One loaded checkpoint (or a tokenizer-only directory). */
typedef struct Gpt2Entry {
  char *name;       /* as given to gpt2_load (default 'default') */
  char *path;       /* canonical directory path */
  Gpt2Model *model; /* NULL for a tokenizer-only directory */
  Tokenizer *tok;   /* model->tok, or the tokenizer loaded alone */
} Gpt2Entry;

/* Per-connection state: shared by every function and module registered on
** one connection, freed when the last of them is destroyed (connection close). */
typedef struct Gpt2Conn {
  int refs;             /* registrations still holding this */
  Gpt2Entry *entries;   /* loaded models */
  int n_entries;
  int current;          /* index into entries, -1 when none */
  Gpt2Scratch *scratch; /* activations for scalar calls */
  Gpt2Counters ctr;     /* work counters, see gpt2_info() */
  Gpt2Prefix prefix;    /* KV state of the last generation, for prefix reuse */
  /* Settings (gpt2_set); see SETTINGS in gpt2.c for ranges and defaults. */
  int64_t prefix_reuse;      /* 1: reuse KV state of shared prompt prefixes */
  int64_t max_tokens_limit;  /* cap on max_tokens; 0 = the model's context */
  int64_t kv_memory_limit;   /* cap on KV-cache bytes one statement may need */
  int64_t threads;           /* compute threads of this connection's calls */
} Gpt2Conn;

/* The connection's activation scratch (made on first use) with its thread
** count set from the threads setting; NULL on OOM. */
Gpt2Scratch *gpt2_conn_scratch(Gpt2Conn *c);

/* KV-cache bytes n_seqs sequences of n_pos positions need; an error naming
** fname and the kv_memory_limit when that is above the cap. */
int gpt2_check_kv(const Gpt2Conn *c, const Gpt2Model *m, const char *fname, int n_seqs,
                  int n_pos, char *err, size_t errlen);

/* The connection's prefix cache when reuse is on, else NULL. */
Gpt2Prefix *gpt2_conn_prefix(Gpt2Conn *c);

/* Current entry; when none is loaded and $GPT2_MODEL names a directory, load
** it first. need_weights: a tokenizer-only entry is an error. On failure
** returns NULL with a message for function fname in err, or with err empty
** when memory ran out (report SQLITE_NOMEM). */
Gpt2Entry *gpt2_conn_entry(Gpt2Conn *c, const char *fname, int need_weights, char *err,
                           size_t errlen);

/* Prompt argument: TEXT (tokenized), or a JSON array of ids carrying the
** JSON subtype. Ids land in out. */
int gpt2_parse_prompt(const Gpt2Entry *e, const char *fname, int argno, sqlite3_value *v,
                      IdVec *out, char *err, size_t errlen);

/* Generation arguments after the prompt: max_tokens, temperature, top_k,
** top_p, seed (argc of them; a NULL pointer or SQL NULL means the default).
** max_tokens is capped by the connection's max_tokens_limit. */
int gpt2_parse_gen_params(const Gpt2Conn *c, const Gpt2Model *m, const char *fname, int argc,
                          sqlite3_value **argv, Gpt2GenParams *p, char *err, size_t errlen);

/* Start generating from ids on connection c's scratch and prefix cache,
** after checking kv_memory_limit; interrupts of db stop it. Errors are
** worded for function fname. Pair with gpt2_finish. */
int gpt2_start(Gpt2Conn *c, const Gpt2Model *m, const char *fname, sqlite3 *db,
               const IdVec *ids, Gpt2GenParams *p, Gpt2Gen *g, char *err, size_t errlen);

/* Hand g's KV state to the connection's prefix cache, then free g. */
void gpt2_finish(Gpt2Conn *c, Gpt2Gen *g);

/* Nonzero when sqlite3_interrupt() was called on db (arg) during the running
** statement; always 0 before SQLite 3.41, which cannot tell. */
int gpt2_interrupted(void *db);

/* A random 64-bit seed (for seed NULL). */
uint64_t gpt2_random_seed(void);

/* xBestIndex for a table-valued function whose n_args hidden argument
** columns start at column first and whose first argument is required:
** idxNum gets bit k for argument k, argv follows column order. */
int gpt2_args_best_index(sqlite3_vtab *tab, sqlite3_index_info *info, int first, int n_args,
                         const char *required_msg);

/* Report a module status on a vtab: GPT2_NOMEM -> SQLITE_NOMEM, else the
** message as the vtab's error. */
int gpt2_vtab_error(sqlite3_vtab *tab, int rc, const char *msg);

/* Spread xFilter's argv into args[n_args] (NULL where not given). */
void gpt2_args_unpack(int idxNum, int argc, sqlite3_value **argv, int n_args,
                      sqlite3_value **args);

/* Table-valued functions and tables (vtab_*.c). */
int gpt2_register_complete(sqlite3 *db, Gpt2Conn *c);
int gpt2_register_stream(sqlite3 *db, Gpt2Conn *c);
int gpt2_register_models(sqlite3 *db, Gpt2Conn *c);

/* Release one reference to the connection state. */
void gpt2_conn_release(void *p);

#endif
