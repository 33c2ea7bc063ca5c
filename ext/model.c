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
**   4. one arena (common.h, gpt2_alloc_large) receives all weights: vectors
**      and wpe as float32 (F16/BF16 widened once), matrices packed into
**      kernels.h panels in the chosen format (the tied head from wte,
**      transposed), read in 4 MB row chunks so no tensor-sized temporary
**      exists, by two threads taking tensors in turn when the weights are
**      16 MB or more (copying, converting and the kernel's zeroing of fresh
**      pages are most of a load, and they split well); the file is closed
** Any failure frees everything: a Gpt2Model is either complete or absent.
**
** Tensor names (docs/formats.md, "model.safetensors"): bare ("wte.weight") or
** "transformer."-prefixed; lm_head.weight is used when present, else the
** head is tied to wte. h.i.attn.bias and h.i.attn.masked_bias (mask
** buffers) and any other tensor we do not need are ignored, whatever their
** dtype (their offsets still pass the file-level checks).
*/
#include "model.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config.h"
#include "safetensors.h"

#define ST_LABEL "model.safetensors"
#define ARENA_ALIGN 64            /* bytes; every tensor starts on a cache line */
#define CHUNK_FLOATS (1u << 20)   /* floats per read when packing (4 MB) */

/* How a tensor is stored in the arena. */
enum { PLAIN, PACK_ROWS, PACK_COLS };

/* One tensor the model needs. */
typedef struct Need {
  char name[64];           /* canonical (bare) name */
  int rank;                /* 1 or 2 */
  uint64_t shape[2];       /* expected shape */
  int kind;                /* PLAIN: float copy; PACK_ROWS: W (K, N) -> panels;
                              PACK_COLS: the file holds Wᵀ (N, K) -> panels */
  const float **slot;      /* PLAIN: where the arena pointer goes */
  KMat *mat;               /* PACK_*: the packed matrix to describe */
  const StTensor *t;       /* the file's entry */
  size_t off;              /* byte offset in the arena */
  size_t bytes;            /* bytes it takes there */
} Need;

static void shape_str(char *buf, size_t n, int rank, const uint64_t *shape) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "[");
  for (int i = 0; i < rank && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%llu", i ? ", " : "", (unsigned long long)shape[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
}

static Need *need(Need *nd, int *nn, const char *name, int rank, uint64_t d0, uint64_t d1) {
  Need *x = &nd[(*nn)++];
  memset(x, 0, sizeof *x);
  snprintf(x->name, sizeof x->name, "%s", name);
  x->rank = rank;
  x->shape[0] = d0;
  x->shape[1] = d1;
  return x;
}

static void need_plain(Need *nd, int *nn, const char *name, int rank, uint64_t d0, uint64_t d1,
                       const float **slot) {
  need(nd, nn, name, rank, d0, d1)->slot = slot;
}

static void need_packed(Need *nd, int *nn, const char *name, uint64_t d0, uint64_t d1, int kind,
                        KMat *mat) {
  Need *x = need(nd, nn, name, 2, d0, d1);
  x->kind = kind;
  x->mat = mat;
}

/* Every tensor of the config's model, in file-independent order. wte is
** the head's panels when tied (lm_head absent), else a plain table. */
static Need *list_needs(Gpt2Model *m, int tied, int *count) {
  const Gpt2Config *c = &m->cfg;
  uint64_t C = (uint64_t)c->n_embd, F = (uint64_t)c->n_inner, V = (uint64_t)c->vocab_size;
  Need *nd = calloc((size_t)c->n_layer * 12 + 5, sizeof *nd);
  if (!nd) return NULL;
  int n = 0;
  char s[64];
  if (tied) need_packed(nd, &n, "wte.weight", V, C, PACK_COLS, &m->head);
  else need_plain(nd, &n, "wte.weight", 2, V, C, &m->wte);
  need_plain(nd, &n, "wpe.weight", 2, (uint64_t)c->n_positions, C, &m->wpe);
  for (int i = 0; i < c->n_layer; i++) {
    Gpt2Layer *L = &m->layers[i];
#define VEC(suffix, d0, field)                  \
  snprintf(s, sizeof s, "h.%d.%s", i, suffix); \
  need_plain(nd, &n, s, 1, d0, 0, &L->field)
#define MAT(suffix, d0, d1, field)              \
  snprintf(s, sizeof s, "h.%d.%s", i, suffix); \
  need_packed(nd, &n, s, d0, d1, PACK_ROWS, &L->field)
    VEC("ln_1.weight", C, ln1_w);
    VEC("ln_1.bias", C, ln1_b);
    MAT("attn.c_attn.weight", C, 3 * C, attn); /* Conv1D [in, out] */
    VEC("attn.c_attn.bias", 3 * C, attn_b);
    MAT("attn.c_proj.weight", C, C, proj);
    VEC("attn.c_proj.bias", C, proj_b);
    VEC("ln_2.weight", C, ln2_w);
    VEC("ln_2.bias", C, ln2_b);
    MAT("mlp.c_fc.weight", C, F, fc);
    VEC("mlp.c_fc.bias", F, fc_b);
    MAT("mlp.c_proj.weight", F, C, fcproj);
    VEC("mlp.c_proj.bias", C, fcproj_b);
#undef VEC
#undef MAT
  }
  need_plain(nd, &n, "ln_f.weight", 1, C, 0, &m->lnf_w);
  need_plain(nd, &n, "ln_f.bias", 1, C, 0, &m->lnf_b);
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
    return gpt2_errorf(err, errlen, "%s: tensor %s appears twice (as %s and %s)", f->label,
                       name, name, pref);
  *out = a ? a : b;
  if (!*out) return gpt2_errorf(err, errlen, "%s: missing tensor %s", f->label, name);
  return GPT2_OK;
}

/* Dtype must be one we convert; shape must match the config. */
static int check_tensor(const char *label, const Need *x, char *err, size_t errlen) {
  const StTensor *t = x->t;
  if (t->dtype == ST_UNKNOWN)
    return gpt2_errorf(err, errlen, "%s: tensor %s has unknown dtype %s", label, t->name,
                       t->dtype_name);
  if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16)
    return gpt2_errorf(err, errlen, "%s: tensor %s has dtype %s; supported: F32, F16, BF16",
                       label, t->name, t->dtype_name);
  int ok = t->rank == x->rank;
  for (int i = 0; ok && i < x->rank; i++) ok = t->shape[i] == x->shape[i];
  if (!ok) {
    char got[160], want[64];
    shape_str(got, sizeof got, t->rank, t->shape);
    shape_str(want, sizeof want, x->rank, x->shape);
    return gpt2_errorf(err, errlen, "%s: tensor %s has shape %s, expected %s", label, t->name,
                       got, want);
  }
  return GPT2_OK;
}

/* Rows of a packed tensor read per chunk: ~CHUNK_FLOATS, whole panels
** (PACK_COLS) or whole scale blocks (PACK_ROWS, q8 / q4). */
static size_t chunk_rows(const Need *x, int type) {
  size_t cols = (size_t)x->shape[1], step = CHUNK_FLOATS / cols;
  size_t unit = x->kind == PACK_COLS ? KNB : type == KT_Q8 ? KQB : type == KT_Q4 ? KQ4B : 1;
  step = step / unit * unit;
  return step ? step : unit;
}

/* Pack one 2-D tensor into x->mat, a chunk of rows at a time. */
static int pack_tensor(const StFile *f, Need *x, int type, void *mem, float *buf, char *err,
                       size_t errlen) {
  size_t rows = (size_t)x->shape[0], cols = (size_t)x->shape[1], step = chunk_rows(x, type);
  if (x->kind == PACK_ROWS) kmat_init(x->mat, type, (int)rows, (int)cols, mem); /* W (K, N) */
  else kmat_init(x->mat, type, (int)cols, (int)rows, mem); /* Wᵀ (N, K) in the file */
  for (size_t r = 0; r < rows; r += step) {
    size_t nr = rows - r < step ? rows - r : step;
    int rc = st_read_f32_range(f, x->t, r * cols, nr * cols, buf, err, errlen);
    if (rc) return rc;
    if (x->kind == PACK_ROWS) kmat_pack_rows(x->mat, buf, cols, (int)r, (int)(r + nr));
    else kmat_pack_cols(x->mat, buf, cols, (int)r, (int)(r + nr));
  }
  return GPT2_OK;
}

/* Step 4, shared by the loading threads: each takes the next tensor and
** fills its part of the arena (a packed tensor through the thread's own
** chunk buffer: rows read as f32, then packed). The first failing tensor in
** list order is the one reported. */
typedef struct Fill {
  const StFile *f;
  Need *nd;
  int n, type;
  char *arena;
  size_t chunk;          /* floats per chunk buffer */
  _Atomic int next;      /* next tensor to take; n once one has failed */
  pthread_mutex_t mu;    /* guards the three below */
  int fail_at;           /* lowest failing index, n when none */
  int rc;
  char err[GPT2_ERRLEN];
} Fill;

static void *fill_worker(void *arg) {
  Fill *F = arg;
  float *buf = malloc(F->chunk * sizeof(float));
  for (;;) {
    int i = atomic_fetch_add(&F->next, 1);
    if (i >= F->n) break;
    Need *x = &F->nd[i];
    void *dst = F->arena + x->off;
    char err[GPT2_ERRLEN] = "";
    int rc;
    if (!buf) {
      rc = GPT2_NOMEM;
    } else if (x->kind == PLAIN) {
      rc = st_read_f32(F->f, x->t, dst, err, sizeof err);
      *x->slot = dst;
    } else {
      rc = pack_tensor(F->f, x, F->type, dst, buf, err, sizeof err);
    }
    if (rc) {
      pthread_mutex_lock(&F->mu);
      if (i < F->fail_at) {
        F->fail_at = i;
        F->rc = rc;
        memcpy(F->err, err, sizeof err);
      }
      pthread_mutex_unlock(&F->mu);
      atomic_store(&F->next, F->n); /* the others stop after their tensor */
    }
  }
  free(buf);
  return NULL;
}

/* Steps 3 and 4: validate, lay out, convert and pack (matrices as type). */
static int load_weights(Gpt2Model *m, const char *dir, int type, char *err, size_t errlen) {
  const Gpt2Config *c = &m->cfg;
  char *path = gpt2_path_join(dir, ST_LABEL);
  if (!path) return GPT2_NOMEM;
  StFile f;
  int rc = st_open(path, path, &f, err, errlen); /* messages name the full path */
  if (rc) {
    free(path);
    return rc;
  }

  /* lm_head.weight [V, C] when present (never prefixed: it sits beside
  ** "transformer" in GPT2LMHeadModel); otherwise the head is tied to wte. */
  const StTensor *head = st_find(&f, "lm_head.weight");
  int n = 0;
  Need *nd = list_needs(m, !head, &n);
  if (!nd) {
    st_close(&f);
    free(path);
    return GPT2_NOMEM;
  }
  if (head)
    need_packed(nd, &n, "lm_head.weight", (uint64_t)c->vocab_size, (uint64_t)c->n_embd,
                PACK_COLS, &m->head);

  /* Check every tensor and assign arena offsets (64-byte aligned). */
  size_t total = 0, chunk = CHUNK_FLOATS;
  uint64_t n_params = 0;
  for (int i = 0; i < n && !rc; i++) {
    if (strcmp(nd[i].name, "lm_head.weight") == 0) nd[i].t = head;
    else rc = find_tensor(&f, nd[i].name, &nd[i].t, err, errlen);
    if (!rc) rc = check_tensor(path, &nd[i], err, errlen);
    if (rc) break;
    uint64_t k = nd[i].t->numel; /* <= file size: checked against offsets */
    if (k > SIZE_MAX / 8) {
      rc = gpt2_errorf(err, errlen, "%s: weights too large for memory", path);
      break;
    }
    size_t b = nd[i].kind == PLAIN ? (size_t)k * sizeof(float)
               : nd[i].kind == PACK_ROWS
                   ? kmat_bytes(type, (int)nd[i].shape[0], (int)nd[i].shape[1])
                   : kmat_bytes(type, (int)nd[i].shape[1], (int)nd[i].shape[0]);
    if (nd[i].kind != PLAIN) {
      size_t c = chunk_rows(&nd[i], type) * (size_t)nd[i].shape[1];
      if (c > chunk) chunk = c;
    }
    b = (b + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (b > SIZE_MAX - total) {
      rc = gpt2_errorf(err, errlen, "%s: weights too large for memory", path);
      break;
    }
    nd[i].off = total;
    nd[i].bytes = b;
    total += b;
    n_params += k;
  }

  /* One aligned arena, filled tensor by tensor through ~4 MB chunk buffers,
  ** by this thread and (for a large model, when it can start) one more. */
  if (!rc) {
    m->arena = gpt2_alloc_large(total);
    if (!m->arena)
      rc = gpt2_errorf(err, errlen, "%s: cannot allocate %zu bytes for the weights", path,
                       total);
    m->weight_bytes = total;
  }
  if (!rc) {
    Fill F = {.f = &f, .nd = nd, .n = n, .type = type, .arena = m->arena, .chunk = chunk,
              .fail_at = n};
    atomic_init(&F.next, 0);
    pthread_mutex_init(&F.mu, NULL);
    pthread_t th;
    int helper = total >= ((size_t)16 << 20) && pthread_create(&th, NULL, fill_worker, &F) == 0;
    fill_worker(&F);
    if (helper) pthread_join(th, NULL);
    pthread_mutex_destroy(&F.mu);
    if (F.fail_at < n) {
      rc = F.rc;
      if (rc == GPT2_ERROR) gpt2_errorf(err, errlen, "%s", F.err);
    }
  }
  const char *dtype = NULL;
  for (int i = 0; i < n && !rc; i++) {
    const char *d = nd[i].t->dtype_name;
    dtype = !dtype || strcmp(dtype, d) == 0 ? d : "mixed";
  }
  if (!rc) {
    snprintf(m->dtype, sizeof m->dtype, "%.7s", dtype ? dtype : "F32"); /* F32/F16/BF16/mixed */
    m->n_params = (int64_t)n_params; /* the tied head is counted once */
  }
  free(nd);
  st_close(&f);
  free(path); /* f.label */
  return rc;
}

/* KType order */
const char *const gpt2_weight_formats[] = {"f32", "f16", "bf16", "q8", "q4", NULL};

static void model_free(Gpt2Model *m);

int model_load(const char *dir, Gpt2Model **out, char *err, size_t errlen) {
  return model_load_opts(dir, NULL, out, err, errlen);
}

int model_load_opts(const char *dir, const Gpt2LoadOptions *o, Gpt2Model **out, char *err,
                    size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = 0;
  const char *w = o && o->weights && *o->weights ? o->weights : gpt2_weight_formats[0];
  int type = -1;
  for (int i = 0; gpt2_weight_formats[i]; i++)
    if (strcasecmp(w, gpt2_weight_formats[i]) == 0) type = i;
  if (type < 0) {
    char names[64] = ""; /* "f32, f16, bf16, q8 or q4" */
    for (int i = 0; gpt2_weight_formats[i]; i++)
      snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s",
               !i ? "" : gpt2_weight_formats[i + 1] ? ", " : " or ", gpt2_weight_formats[i]);
    return gpt2_errorf(err, errlen, "weights: unknown format '%.64s'; use %s", w, names);
  }
  Gpt2Model *m = calloc(1, sizeof *m);
  if (!m) return GPT2_NOMEM;
  snprintf(m->weights, sizeof m->weights, "%s", gpt2_weight_formats[type]);
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
  if ((rc = load_weights(m, dir, type, err, errlen))) goto fail;
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

const Gpt2Model *model_try_retain(const Gpt2Model *m) {
  Gpt2Model *w = (Gpt2Model *)m;
  int r = m ? atomic_load(&w->refs) : 0;
  while (r > 0 && !atomic_compare_exchange_weak(&w->refs, &r, r + 1)) {
  }
  return r > 0 ? m : NULL;
}

void model_release(const Gpt2Model *m) {
  if (!m || --((Gpt2Model *)m)->refs != 0) return;
  if (m->on_last_release) m->on_last_release(m);
  model_free((Gpt2Model *)m);
}

static void model_free(Gpt2Model *m) {
  if (!m) return;
  if (m->tok) tok_free(m->tok);
  free(m->layers);
  free(m->arena);
  free(m->path);
  free(m);
}
