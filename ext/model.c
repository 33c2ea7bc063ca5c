/*
** model.c — loading a GPT-2 checkpoint directory (see model.h).
**
** model_load, top to bottom:
**   1. config.json            -> Gpt2Config (config.c: keys, defaults, limits)
**   2. vocab.json, merges.txt -> Tokenizer (tok_load); its vocabulary may be
**                                smaller than vocab_size, never larger;
**                                absent eos/bos ids default to its
**                                "<|endoftext|>" when it has one
**   3. model.safetensors      -> header validated (safetensors.c), then every
**                                tensor we need checked for presence, dtype
**                                and shape against the config
**   4. one 64-byte-aligned arena receives all weights as float32 (F16/BF16
**      converted once); the file is closed
** Any failure frees everything: a Gpt2Model is either complete or absent.
**
** Tensor names (gpt2-facts.md, "model.safetensors"): bare ("wte.weight") or
** "transformer."-prefixed; lm_head.weight is used when present, else the
** head is tied to wte. h.i.attn.bias and h.i.attn.masked_bias (mask
** buffers) and any other tensor we do not need are ignored, whatever their
** dtype (their offsets still pass the file-level checks).
*/
#include "model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "safetensors.h"

#define ST_LABEL "model.safetensors"
#define ARENA_ALIGN 64 /* bytes; every tensor starts on a cache line */

/* One tensor the model needs. */
typedef struct Need {
  char name[64];           /* canonical (bare) name */
  int rank;                /* 1 or 2 */
  uint64_t shape[2];       /* expected shape */
  const float **slot;      /* where the arena pointer goes */
  const StTensor *t;       /* the file's entry */
  size_t off;              /* float offset in the arena */
} Need;

static void shape_str(char *buf, size_t n, int rank, const uint64_t *shape) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "[");
  for (int i = 0; i < rank && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
}

static void need(Need *nd, int *nn, const char *name, int rank, uint64_t d0, uint64_t d1,
                 const float **slot) {
  Need *x = &nd[(*nn)++];
  snprintf(x->name, sizeof x->name, "%s", name);
  x->rank = rank;
  x->shape[0] = d0;
  x->shape[1] = d1;
  x->slot = slot;
  x->t = NULL;
  x->off = 0;
}

/* Every tensor of the config's model, in file-independent order. */
static Need *list_needs(Gpt2Model *m, int *count) {
  const Gpt2Config *c = &m->cfg;
  uint64_t C = (uint64_t)c->n_embd, F = (uint64_t)c->n_inner;
  Need *nd = calloc((size_t)c->n_layer * 12 + 5, sizeof *nd);
  if (!nd) return NULL;
  int n = 0;
  char s[64];
  need(nd, &n, "wte.weight", 2, (uint64_t)c->vocab_size, C, &m->wte);
  need(nd, &n, "wpe.weight", 2, (uint64_t)c->n_positions, C, &m->wpe);
  for (int i = 0; i < c->n_layer; i++) {
    Gpt2Layer *L = &m->layers[i];
#define NEED(suffix, rank, d0, d1, field)              \
  snprintf(s, sizeof s, "h.%d.%s", i, suffix);         \
  need(nd, &n, s, rank, d0, d1, &L->field)
    NEED("ln_1.weight", 1, C, 0, ln1_w);
    NEED("ln_1.bias", 1, C, 0, ln1_b);
    NEED("attn.c_attn.weight", 2, C, 3 * C, attn_w); /* Conv1D [in, out] */
    NEED("attn.c_attn.bias", 1, 3 * C, 0, attn_b);
    NEED("attn.c_proj.weight", 2, C, C, proj_w);
    NEED("attn.c_proj.bias", 1, C, 0, proj_b);
    NEED("ln_2.weight", 1, C, 0, ln2_w);
    NEED("ln_2.bias", 1, C, 0, ln2_b);
    NEED("mlp.c_fc.weight", 2, C, F, fc_w);
    NEED("mlp.c_fc.bias", 1, F, 0, fc_b);
    NEED("mlp.c_proj.weight", 2, F, C, fcproj_w);
    NEED("mlp.c_proj.bias", 1, C, 0, fcproj_b);
#undef NEED
  }
  need(nd, &n, "ln_f.weight", 1, C, 0, &m->lnf_w);
  need(nd, &n, "ln_f.bias", 1, C, 0, &m->lnf_b);
  *count = n;
  return nd;
}

/* The file's entry for a canonical name, bare or "transformer."-prefixed. */
static int find_tensor(const StFile *f, const char *name, const StTensor **out, char *err,
                       size_t errlen) {
  char pref[80];
  snprintf(pref, sizeof pref, "transformer.%s", name);
  const StTensor *a = st_find(f, name), *b = st_find(f, pref);
  if (a && b)
    return gpt2_errorf(err, errlen, ST_LABEL ": tensor %s appears twice (as %s and %s)", name,
                       name, pref);
  *out = a ? a : b;
  if (!*out) return gpt2_errorf(err, errlen, ST_LABEL ": missing tensor %s", name);
  return GPT2_OK;
}

/* Dtype must be one we convert; shape must match the config. */
static int check_tensor(const Need *x, char *err, size_t errlen) {
  const StTensor *t = x->t;
  if (t->dtype == ST_UNKNOWN)
    return gpt2_errorf(err, errlen, ST_LABEL ": tensor %s has unknown dtype %s", t->name,
                       t->dtype_name);
  if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
    return gpt2_errorf(err, errlen, ST_LABEL ": tensor %s has dtype %s; supported: F32, F16, BF16",
                       t->name, t->dtype_name);
  int ok = t->rank == x->rank;
  for (int i = 0; ok && i < x->rank; i++) ok = t->shape[i] == x->shape[i];
  if (!ok) {
    char got[160], want[64];
    shape_str(got, sizeof got, t->rank, t->shape);
    shape_str(want, sizeof want, x->rank, x->shape);
    return gpt2_errorf(err, errlen, ST_LABEL ": tensor %s has shape %s, expected %s", t->name, got,
                       want);
  }
  return GPT2_OK;
}

/* Steps 3 and 4: validate, lay out, convert. */
static int load_weights(Gpt2Model *m, const char *dir, char *err, size_t errlen) {
  const Gpt2Config *c = &m->cfg;
  char *path = gpt2_path_join(dir, ST_LABEL);
  if (!path) return GPT2_NOMEM;
  StFile f;
  int rc = st_open(path, ST_LABEL, &f, err, errlen);
  free(path);
  if (rc) return rc;

  int n = 0;
  Need *nd = list_needs(m, &n);
  if (!nd) {
    st_close(&f);
    return GPT2_NOMEM;
  }
  /* lm_head.weight [V, C] when present (never prefixed: it sits beside
  ** "transformer" in GPT2LMHeadModel); otherwise tied to wte. */
  const StTensor *head = st_find(&f, "lm_head.weight");
  if (head) need(nd, &n, "lm_head.weight", 2, (uint64_t)c->vocab_size, (uint64_t)c->n_embd,
                 &m->lm_head);

  /* Check every tensor and assign arena offsets (in floats, 64-byte aligned). */
  size_t total = 0;
  uint64_t n_params = 0;
  const size_t A = ARENA_ALIGN / sizeof(float);
  for (int i = 0; i < n && !rc; i++) {
    if (strcmp(nd[i].name, "lm_head.weight") == 0) nd[i].t = head;
    else rc = find_tensor(&f, nd[i].name, &nd[i].t, err, errlen);
    if (!rc) rc = check_tensor(&nd[i], err, errlen);
    if (rc) break;
    uint64_t k = nd[i].t->numel; /* <= file size: checked against offsets */
    nd[i].off = total;
    if (k > SIZE_MAX / sizeof(float) - total - A) {
      rc = gpt2_errorf(err, errlen, ST_LABEL ": weights too large for memory");
      break;
    }
    total += ((size_t)k + A - 1) / A * A;
    n_params += k;
  }

  /* One aligned arena, filled tensor by tensor. */
  if (!rc) {
    size_t bytes = total * sizeof(float);
    m->arena = aligned_alloc(ARENA_ALIGN, bytes ? bytes : ARENA_ALIGN);
    if (!m->arena)
      rc = gpt2_errorf(err, errlen, ST_LABEL ": cannot allocate %zu bytes for the weights", bytes);
    m->weight_bytes = bytes;
  }
  const char *dtype = NULL;
  for (int i = 0; i < n && !rc; i++) {
    float *dst = (float *)m->arena + nd[i].off;
    rc = st_read_f32(&f, nd[i].t, dst, err, errlen);
    *nd[i].slot = dst;
    const char *d = nd[i].t->dtype_name;
    dtype = !dtype || strcmp(dtype, d) == 0 ? d : "mixed";
  }
  if (!rc) {
    snprintf(m->dtype, sizeof m->dtype, "%.7s", dtype ? dtype : "F32"); /* F32/F16/BF16/mixed */
    if (!m->lm_head) m->lm_head = m->wte; /* tied head (gpt2-facts.md) */
    m->n_params = (int64_t)n_params;      /* the tied head is counted once */
  }
  free(nd);
  st_close(&f);
  return rc;
}

static void model_free(Gpt2Model *m);

int model_load(const char *dir, Gpt2Model **out, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = 0;
  Gpt2Model *m = calloc(1, sizeof *m);
  if (!m) return GPT2_NOMEM;
  int rc = GPT2_NOMEM;
  if (!(m->path = strdup(dir))) goto fail;

  /* 1. config.json */
  if ((rc = config_load(dir, &m->cfg, err, errlen))) goto fail;
  Gpt2Config *c = &m->cfg;

  /* 2. tokenizer */
  if ((rc = tok_load(dir, &m->tok, err, errlen))) goto fail;
  int tv = tok_vocab_size(m->tok);
  if (tv > c->vocab_size) {
    rc = gpt2_errorf(err, errlen, "vocab.json has %d tokens but config.json vocab_size is %d", tv,
                     c->vocab_size);
    goto fail;
  }
  /* eos/bos absent from config.json: the vocabulary's <|endoftext|> (its
  ** mapped spelling is the text itself: all of its bytes are printable). */
  int eot = tok_find(m->tok, "<|endoftext|>", 13);
  if (c->eos_id < 0) c->eos_id = eot;
  if (c->bos_id < 0) c->bos_id = eot;

  /* 3, 4. weights */
  rc = GPT2_NOMEM;
  if (!(m->layers = calloc((size_t)c->n_layer, sizeof *m->layers))) goto fail;
  if ((rc = load_weights(m, dir, err, errlen))) goto fail;
  m->refs = 1;
  *out = m;
  return GPT2_OK;
fail:
  model_free(m);
  return rc;
}

const Gpt2Model *model_retain(const Gpt2Model *m) {
  if (m) ((Gpt2Model *)m)->refs++; /* atomic */
  return m;
}

void model_release(const Gpt2Model *m) {
  if (m && --((Gpt2Model *)m)->refs == 0) model_free((Gpt2Model *)m);
}

static void model_free(Gpt2Model *m) {
  if (!m) return;
  if (m->tok) tok_free(m->tok);
  free(m->layers);
  free(m->arena);
  free(m->path);
  free(m);
}
