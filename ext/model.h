/*
** model.h — a GPT-2 checkpoint directory (owns: config.json parsing,
** model.safetensors validation and loading, the weights in memory, the
** tokenizer that came with them).
**
** Hugging Face layout, both tensor-name styles (bare and "transformer."),
** F32/F16/BF16 stored weights converted to F32 at load
** (../shared/docs/gpt2-facts.md, "Checkpoint directory", "model.safetensors").
** A Gpt2Model is immutable after model_load: many sequences (and threads)
** may read it at once.
*/
#ifndef GPT2_MODEL_H
#define GPT2_MODEL_H

#include "common.h"
#include "tokenizer.h"

typedef struct Gpt2Config {
  int n_layer;          /* transformer blocks */
  int n_head;           /* attention heads */
  int n_embd;           /* C: residual width */
  int n_inner;          /* F: MLP width (config n_inner, null -> 4*C) */
  int n_positions;      /* context length */
  int vocab_size;       /* V: rows of wte */
  float ln_eps;         /* layer_norm_epsilon */
  int eos_id;           /* eos_token_id; absent/null: the vocabulary's
                           "<|endoftext|>"; -1 when there is neither */
  int bos_id;           /* bos_token_id; same defaults */
  int scale_attn_weights;           /* divide scores by sqrt(D) (default 1) */
  int scale_attn_by_inverse_layer_idx; /* also divide by layer_idx+1 (default 0) */
} Gpt2Config;

typedef struct Gpt2Layer {
  const float *ln1_w, *ln1_b;      /* (C) */
  const float *attn_w, *attn_b;    /* (C, 3C) Conv1D [in,out], (3C): [Q|K|V] */
  const float *proj_w, *proj_b;    /* (C, C), (C) */
  const float *ln2_w, *ln2_b;      /* (C) */
  const float *fc_w, *fc_b;        /* (C, F), (F) */
  const float *fcproj_w, *fcproj_b;/* (F, C), (C) */
} Gpt2Layer;

typedef struct Gpt2Model {
  Gpt2Config cfg;
  const float *wte;      /* (V, C) token embeddings */
  const float *wpe;      /* (P, C) position embeddings */
  Gpt2Layer *layers;     /* (n_layer) */
  const float *lnf_w, *lnf_b; /* (C) final layer norm */
  const float *lm_head;  /* (V, C): lm_head.weight, or wte when tied */
  Tokenizer *tok;        /* vocab.json + merges.txt of the same directory */
  char *path;            /* directory as given to model_load */
  char dtype[8];         /* stored dtype of the weights: "F32", "F16", "BF16",
                            or "mixed" when tensors differ */
  int64_t n_params;      /* parameters (tied head counted once) */
  size_t weight_bytes;   /* bytes of weights held in memory (float32 arena) */
  void *arena;           /* owns all weight memory */
  _Atomic int refs;      /* holders: model_load's caller, generations, caches */
} Gpt2Model;

/* Load <dir>/config.json, <dir>/model.safetensors and the tokenizer files.
** Every tensor's presence, dtype and shape is checked against the config; the
** safetensors header is validated as the reference loader does. On failure
** returns GPT2_ERROR with a message naming the file and the problem (or
** GPT2_NOMEM); nothing stays allocated. */
int model_load(const char *dir, Gpt2Model **out, char *err, size_t errlen);

/* Reference counting: model_load returns a model holding one reference;
** anything that keeps a pointer beyond one call retains it. The last
** release frees the model. Safe across threads. */
const Gpt2Model *model_retain(const Gpt2Model *m);
void model_release(const Gpt2Model *m);

#endif
