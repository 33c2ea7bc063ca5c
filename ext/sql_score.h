/*
** sql_score.h — what the scoring functions and tables share (sql_score.c):
** the sequence a text is scored in, and the parameters of a scoring run.
*/
#ifndef GPT2_SQL_SCORE_H
#define GPT2_SQL_SCORE_H

#include "sqlite3ext.h"

#include "score.h"

/* ids := the context's tokens (the eos token when context is NULL, SQL
** NULL or empty: GPT-2's document start) followed by the text's; *s0 =
** where the text starts. text and context are prompts (sql_prompt: TEXT
** or JSON-subtype token ids), tokenized separately; *_where name them in
** messages ("argument 2 (context)"). */
int sql_score_ids(const Gpt2Model *m, const char *fname, const char *text_where,
                  sqlite3_value *text, const char *ctx_where, sqlite3_value *context, IdVec *ids,
                  int *s0, char *err, size_t errlen);

/* Scoring parameters: the default stride, stopped by sqlite3_interrupt(db). */
ScoreParams sql_score_params(const Gpt2Model *m, sqlite3 *db);

/* Positions of KV cache scoring a sequence of n tokens alone may hold at
** once: its fed positions when they fit one window, else two windows plus
** spare caches (score.c). */
int64_t sql_score_kv(const Gpt2Model *m, int64_t n);

#endif
