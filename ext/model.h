/*
** model.h — a loaded GPT-2 checkpoint (owns: the weights in memory and
** their layout, the checks of every tensor against the config, the model's
** lifetime by reference count, and the tokenizer that came with it).
** Parsing is elsewhere: config.json in config.c, the safetensors header in
** safetensors.c, vocab.json / merges.txt in the tokenizer.
**
** Hugging Face layout, both tensor-name styles (bare and "transformer."),
** F32/F16/BF16 stored weights (docs/formats.md, "Checkpoint directory",
** "model.safetensors"). A Gpt2Model is immutable after model_load: many
** sequences (and threads) may read it at once.
**
** Weight storage: every matrix used in a product is packed once, at load,
** into the panel layout of kernels.h (KMat) in the chosen format (f32, f16,
** bf16, q8 or q4); vectors and wpe stay plain float32. The LM head is (C, V) =
** wteᵀ packed; when it is tied (no lm_head.weight) wte exists only in that
** form and the embedding lookup reads a column of it, so the weights are
** held once. Loading reads the file in row chunks of a few MB straight into
** the packed arena: no tensor-sized temporary, peak memory ≈ the arena.
*/
#ifndef GPT2_MODEL_H
#define GPT2_MODEL_H

#include "common.h"
#include "kernels.h"
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
  KMat attn;                       /* (C, 3C) packed Conv1D [in,out]: [Q|K|V] */
  const float *attn_b;             /* (3C) */
  KMat proj;                       /* (C, C) */
  const float *proj_b;             /* (C) */
  const float *ln2_w, *ln2_b;      /* (C) */
  KMat fc;                         /* (C, F) */
  const float *fc_b;               /* (F) */
  KMat fcproj;                     /* (F, C) */
  const float *fcproj_b;           /* (C) */
} Gpt2Layer;

typedef struct Gpt2Model {
  Gpt2Config cfg;
  KMat head;             /* (C, V) = lm_head.weightᵀ, or wteᵀ when tied, packed */
  const float *wte;      /* (V, C) token embeddings when the head is untied;
                            NULL when tied: token t is column t of head */
  const float *wpe;      /* (P, C) position embeddings */
  Gpt2Layer *layers;     /* (n_layer) */
  const float *lnf_w, *lnf_b; /* (C) final layer norm */
  Tokenizer *tok;        /* vocab.json + merges.txt of the same directory */
  char *path;            /* directory as given to model_load */
  char dtype[8];         /* stored dtype of the weights: "F32", "F16", "BF16",
                            or "mixed" when tensors differ */
  char weights[8];       /* in-memory format of the matrices:
                            gpt2_weight_formats[KType] (Gpt2LoadOptions) */
  int64_t n_params;      /* parameters (tied head counted once) */
  size_t weight_bytes;   /* bytes of weights held in memory (the arena) */
  void *arena;           /* owns all weight memory */
  _Atomic int refs;      /* holders: model_load's caller, generations, caches */
  /* Called by the last model_release just before the model is freed (the
  ** registry drops its entry, registry.h); NULL when nobody registered it. */
  void (*on_last_release)(const struct Gpt2Model *m);
} Gpt2Model;

/* The in-memory weight formats by name, index = KType (kernels.h), NULL
** after the last; [0] ("f32") is the default. */
extern const char *const gpt2_weight_formats[];

/* How to hold the weights (NULL options: all defaults). */
typedef struct Gpt2LoadOptions {
  const char *weights; /* the matrices (every layer's products and the LM
                          head; vectors and wpe stay f32):
                          a name of gpt2_weight_formats, case-insensitive:
                          "f32" (default, also NULL/""): float32;
                          "f16" / "bf16": 16 bits, converted to f32 in
                            registers (exact); from F32 files rounded to
                            nearest even (f16 saturates at ±65504), from
                            files of that dtype kept exactly;
                          "q8": int8 with an f32 scale per column and block
                            of 64 rows (kernels.h), computed at load;
                          "q4": 4-bit integers with an f16 scale per column
                            and block of 32 rows (kernels.h), computed at
                            load: 4.5 bits a weight.
                          16, 8 and 4 bits hold about a half / a quarter /
                          a seventh of the f32 bytes, and decoding, which
                          reads every weight once a token, speeds up about
                          as much (README, "Speed"). */
} Gpt2LoadOptions;

/* Load <dir>/config.json, <dir>/model.safetensors and the tokenizer files.
** Every tensor's presence, dtype and shape is checked against the config; the
** safetensors header is validated as the reference loader does. On failure
** returns GPT2_ERROR with a message naming the file and the problem (or
** GPT2_NOMEM); nothing stays allocated. */
int model_load(const char *dir, Gpt2Model **out, char *err, size_t errlen);
/* model_load with options; an unknown o->weights is an error naming it. */
int model_load_opts(const char *dir, const Gpt2LoadOptions *o, Gpt2Model **out, char *err,
                    size_t errlen);

/* Reference counting: model_load returns a model holding one reference;
** anything that keeps a pointer beyond one call retains it. The last
** release frees the model. Safe across threads. */
const Gpt2Model *model_retain(const Gpt2Model *m);
void model_release(const Gpt2Model *m);
/* model_retain unless the last reference is already gone (the model is
** being freed): then NULL. For tables of weak pointers (registry.c). */
const Gpt2Model *model_try_retain(const Gpt2Model *m);

#endif
