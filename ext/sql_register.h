/*
** sql_register.h — what the entry point (gpt2.c) registers on a connection:
** one registrar per file of SQL functions or tables. Each takes its own
** references to the connection state (sql_conn.h).
*/
#ifndef GPT2_SQL_REGISTER_H
#define GPT2_SQL_REGISTER_H

#include "sql_conn.h"

int sql_register_scalars(sqlite3 *db, Gpt2Conn *c); /* sql_scalars.c */
int vtab_register_stream(sqlite3 *db, Gpt2Conn *c);   /* vtab_stream.c: gpt2_stream */
int vtab_register_complete(sqlite3 *db, Gpt2Conn *c); /* vtab_complete.c: gpt2_complete */
int vtab_register_models(sqlite3 *db, Gpt2Conn *c);   /* vtab_models.c: gpt2_models */
int sql_register_score(sqlite3 *db, Gpt2Conn *c);       /* sql_score.c: gpt2_score, gpt2_perplexity, gpt2_embed */
int vtab_register_logprobs(sqlite3 *db, Gpt2Conn *c);   /* vtab_logprobs.c: gpt2_token_logprobs */
int vtab_register_score_rows(sqlite3 *db, Gpt2Conn *c); /* vtab_score.c: gpt2_score_rows */

#endif
