/*
** sql_conn.h — one database connection's state (owns: the models loaded on
** the connection and which is current, the settings of gpt2_set, the work
** counters of gpt2_info, the latest long job's progress, the prefix cache, the activation scratch, and the
** environment variables, read once when the connection opens).
**
** Every SQL function and table registered on a connection holds a reference
** to its Gpt2Conn; the last release (connection close) frees it. The models
** themselves are shared process-wide (registry.h); tokenizer-only entries
** stay per connection.
*/
#ifndef GPT2_SQL_CONN_H
#define GPT2_SQL_CONN_H

#include "sqlite3ext.h"

#include "generate.h"
#include "model.h"
#include "progress.h"
#include "speculate.h"
#include "tokenizer.h"
#include "transformer.h"

typedef struct Gpt2Conn Gpt2Conn;

/* One loaded checkpoint (or a tokenizer-only directory). */
typedef struct Gpt2Entry {
  char *name;       /* as given to gpt2_load (default 'default') */
  char *path;       /* canonical directory path */
  Gpt2Model *model; /* NULL for a tokenizer-only directory */
  Tokenizer *tok;   /* model->tok, or the tokenizer loaded alone */
} Gpt2Entry;

/* gpt2_set's settings, in SETTINGS order (sql_conn.c). */
typedef struct Gpt2Settings {
  int64_t prefix_reuse;     /* 1: reuse the KV state of shared prompt prefixes */
  int64_t max_tokens_limit; /* cap on max_tokens; 0 = the model's context */
  int64_t kv_memory_limit;  /* cap on the KV-cache bytes one statement may hold */
  int64_t threads;          /* compute threads of this connection's calls */
  int64_t progress;         /* bar on stderr: 0 never, 1 when a terminal, 2 always */
} Gpt2Settings;

/* A new connection state with one reference. Reads GPT2_MODEL, GPT2_THREADS
** and GPT2_KERNEL; an invalid value is GPT2_ERROR with a message naming it. */
int conn_open(Gpt2Conn **out, char *err, size_t errlen);
void conn_retain(Gpt2Conn *c);
void conn_release(void *c); /* void *: SQLite's destructor signature */

/* ---- models ---- */

/* Load dir under name with the matrices in format weights (an entry of
** gpt2_weight_formats) and make it current. A failure leaves everything as
** it was; the same path and format under the same name is a no-op. */
int conn_load(Gpt2Conn *c, const char *dir, const char *name, const char *weights,
              const Gpt2Entry **out, char *err, size_t errlen);

/* The current entry. On a connection that has never loaded anything,
** $GPT2_MODEL (when set) is loaded first as 'default'. need_weights: a
** tokenizer-only entry is an error. NULL with a message for function fname
** in err, or with err empty when memory ran out. */
const Gpt2Entry *conn_current(Gpt2Conn *c, const char *fname, int need_weights, char *err,
                              size_t errlen);

/* 1 when an entry is current or conn_current would load $GPT2_MODEL. */
int conn_has_current(const Gpt2Conn *c);

/* Make the entry called name current; NULL when there is none. */
const Gpt2Entry *conn_use(Gpt2Conn *c, const char *name);
/* Free the entry called name: 1, or 0 when there is none. Unloading the
** current entry leaves none current. */
int conn_unload(Gpt2Conn *c, const char *name);

int conn_n_entries(const Gpt2Conn *c);
const Gpt2Entry *conn_entry(const Gpt2Conn *c, int i); /* load order */
int conn_is_current(const Gpt2Conn *c, int i);
/* Comma-separated names of the loaded entries ("none"), for messages. */
void conn_names(const Gpt2Conn *c, char *out, size_t n);

/* ---- settings ---- */

const Gpt2Settings *conn_settings(const Gpt2Conn *c);
/* Index of the setting called name, -1 when unknown; its name and range. */
int conn_setting_find(const char *name);
int conn_n_settings(void);
const char *conn_setting_name(int i);
void conn_setting_range(int i, int64_t *lo, int64_t *hi);
int64_t conn_setting(const Gpt2Conn *c, int i);
/* Set setting i to v (in range); returns the previous value. */
int64_t conn_setting_set(Gpt2Conn *c, int i, int64_t v);

/* ---- compute ---- */

Gpt2Counters *conn_counters(Gpt2Conn *c);
/* The latest long job's progress (gpt2_progress()). */
Gpt2Progress *conn_progress(Gpt2Conn *c);
/* The activation scratch (made on first use, threads and kernel as set);
** NULL on OOM. */
Gpt2Scratch *conn_scratch(Gpt2Conn *c);
/* The prefix cache when prefix_reuse is on, else NULL. */
Gpt2Prefix *conn_prefix(Gpt2Conn *c);

/* The KV cache of n_seqs sequences holding positions positions in all must
** fit in kv_memory_limit; otherwise an error for fname naming those figures
** and the knobs the function has (e.g. "lower max_tokens or batch_size"). */
int conn_check_kv(const Gpt2Conn *c, const Gpt2Model *m, const char *fname, int n_seqs,
                  int64_t positions, const char *knobs, char *err, size_t errlen);

/* ---- tables ---- */

/* What every table of the extension keeps (vtab_*.c): the database
** connection (for its query and interrupts) and the connection state. */
typedef struct Gpt2Table {
  sqlite3_vtab base; /* must be first */
  sqlite3 *db;
  Gpt2Conn *conn;
} Gpt2Table;

/* xConnect of a table whose pAux is c: declare schema and make the
** Gpt2Table; innocuous: usable from views and triggers (SQLITE_VTAB_INNOCUOUS). */
int conn_table_connect(sqlite3 *db, Gpt2Conn *c, const char *schema, int innocuous,
                       sqlite3_vtab **out);
int conn_table_disconnect(sqlite3_vtab *t);

/* Start generating from ids on the connection's scratch and prefix cache,
** after checking kv_memory_limit; sqlite3_interrupt on db stops it. Errors
** are worded for fname. Pair with conn_gen_finish, also after a failure. */
int conn_gen_start(Gpt2Conn *c, const Gpt2Model *m, const char *fname, sqlite3 *db,
                   const IdVec *ids, Gpt2GenParams *p, Gpt2Gen *g, char *err, size_t errlen);
/* The model the 'draft' option names (name; NULL: none, *out NULL) for
** the target entry e: a loaded checkpoint with e's vocabulary (speculate.h,
** spec_mismatch), else an error for fname naming the option, both models
** and what differs. The model is the entry's: spec_start retains it. */
int conn_draft(const Gpt2Conn *c, const char *fname, const Gpt2Entry *e, const char *name,
               const Gpt2Model **out, char *err, size_t errlen);

/* Bytes of KV cache a draft adds to a sequence of n_pos target positions. */
double conn_draft_kv_bytes(const Gpt2Model *draft, int n_pos);

/* spec_start for g (started with conn_gen_start) with k drafts a round,
** after checking that the target's and the draft's caches together fit in
** kv_memory_limit. Pair with spec_free, also after a failure. */
int conn_spec_start(Gpt2Conn *c, const char *fname, Gpt2Gen *g, const Gpt2Model *draft, int k,
                    Gpt2Spec *s, char *err, size_t errlen);

/* Hand g's KV state to the prefix cache (when on), then free g. */
void conn_gen_finish(Gpt2Conn *c, Gpt2Gen *g);

#endif
