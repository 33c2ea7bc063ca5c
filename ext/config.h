/*
** config.h — config.json of a GPT-2 checkpoint (owns: the keys we read,
** their defaults and sanity limits). Parsed with Jansson.
**
** Keys (docs/formats.md, "config.json"):
**   n_layer, n_head, n_embd, vocab_size   required integers
**   n_positions                           required; legacy n_ctx when absent
**   n_inner                               null/absent -> 4*n_embd
**   layer_norm_epsilon                    default 1e-5
**   activation_function                   gelu_new (default) or gelu_pytorch_tanh
**   eos_token_id, bos_token_id            null/absent -> -1 (model.c then uses
**                                         the vocabulary's <|endoftext|>)
**   scale_attn_weights                    default true
**   scale_attn_by_inverse_layer_idx       default false
**   model_type                            "gpt2" when present
** DECISION: the size keys have no defaults (HF would silently assume the
** 124M shape); a missing one is an error naming it.
** Limits: every size >= 1, n_embd % n_head == 0, n_layer <= 1000,
** n_embd <= 65536, n_positions <= 1<<20, vocab_size <= 10,000,000,
** n_inner <= 1<<20; the parameter count must fit in 64 bits and the float
** bytes in size_t. Errors read "config.json: <key> is <value>, <limit>".
*/
#ifndef GPT2_CONFIG_H
#define GPT2_CONFIG_H

#include "model.h"

#define CFG_MAX_LAYER 1000
#define CFG_MAX_EMBD 65536
#define CFG_MAX_POSITIONS (1 << 20)
#define CFG_MAX_VOCAB 10000000
#define CFG_MAX_INNER (1 << 20)

/* Parse config.json text (len bytes) into cfg. Messages start with
** "<label>: " (config_load passes the file's full path). */
int config_parse(const char *text, size_t len, const char *label, Gpt2Config *cfg, char *err,
                 size_t errlen);

/* Read and parse <dir>/config.json; messages name its full path. */
int config_load(const char *dir, Gpt2Config *cfg, char *err, size_t errlen);

/* Parameters the config implies (tied head; plus V*C more when untied).
** GPT2_ERROR if it overflows. */
int config_n_params(const Gpt2Config *cfg, int tied, uint64_t *out);

#endif
