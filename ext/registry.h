/*
** registry.h — one copy of the weights per process (owns: the process-wide
** table of loaded models).
**
** Connections (and threads) that load the same checkpoint in the same
** weights format share one Gpt2Model. The key is the canonical directory,
** the format, and the identity of each file the load reads (config.json,
** model.safetensors, vocab.json, merges.txt, tokenizer_config.json,
** special_tokens_map.json): st_dev, st_ino, st_size, st_mtim and st_ctim, so
** a checkpoint rewritten in any way (even in place, with its mtime put
** back) loads afresh while the old copy lives on for those still using it.
**
** The table does not keep models alive: an entry is a weak pointer, removed
** by the model's last model_release (Gpt2Model.on_last_release) just before
** the model is freed. Lookups run under the table's mutex and take a
** reference only when the count is not already 0 (model_try_retain); the
** last release removes the entry under the same mutex before freeing. So a
** model is never handed out while it is being freed, and it lives exactly
** as long as something (a connection's entry, a generation, a prefix
** cache) holds it.
**
** Concurrent first loads of one key: the first caller loads (outside the
** mutex); callers arriving meanwhile wait on a condition variable and then
** share its model, or load themselves if its load failed. Loads of
** different keys run in parallel.
**
** PROCESS-GLOBAL STATE: the table (a static mutex, condition variable and
** list head in registry.c) is the one piece of process-global mutable state
** this project has. A process that forks while another thread loads must
** not load in the child (the mutex may be held there).
*/
#ifndef GPT2_REGISTRY_H
#define GPT2_REGISTRY_H

#include "model.h"

/* The model of canonical directory dir with matrices in format weights
** (model.h, Gpt2LoadOptions: NULL/"" = f32, case-insensitive): shared when
** the table has it, else loaded with model_load_opts and entered. The caller
** holds one reference and is one "user"; give both back with
** registry_unuse. Errors as model_load_opts (the table is unchanged). */
int registry_load(const char *dir, const char *weights, Gpt2Model **out, char *err,
                  size_t errlen);

/* One user of m (from registry_load) is done: users - 1, then model_release. */
void registry_unuse(const Gpt2Model *m);

/* How many registry_load callers hold m now (1 for a model used once);
** 0 for a model not in the table. */
int registry_users(const Gpt2Model *m);

#endif
