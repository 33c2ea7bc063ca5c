/*
** config.c — config.json parsing and sanity limits (see config.h).
*/
#include "config.h"

#include <float.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define CFG "config.json"
#define CFG_MAX_BYTES (16u << 20) /* a config.json is a few hundred bytes */

static const char *type_name(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: return "true";
    case JSON_FALSE: return "false";
    case JSON_NULL: return "null";
  }
  return "?";
}

#define REQUIRED (-(1LL << 40)) /* get_int default meaning "no default" */

/* Integer key in [lo, hi]. Absent or null: *out = dflt (an error when dflt
** is REQUIRED). */
static int get_int(const char *label, json_t *root, const char *key, long long dflt, long long lo,
                   long long hi, int *out, char *err, size_t errlen) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v)) {
    if (dflt == REQUIRED) return gpt2_errorf(err, errlen, "%s: missing %s", label, key);
    *out = (int)dflt;
    return GPT2_OK;
  }
  if (!json_is_integer(v))
    return gpt2_errorf(err, errlen, "%s: %s must be an integer, not %s", label, key, type_name(v));
  long long x = (long long)json_integer_value(v);
  if (x < lo)
    return gpt2_errorf(err, errlen, "%s: %s is %lld, must be at least %lld", label, key, x, lo);
  if (x > hi) return gpt2_errorf(err, errlen, "%s: %s is %lld, limit %lld", label, key, x, hi);
  *out = (int)x;
  return GPT2_OK;
}

static int get_bool(const char *label, json_t *root, const char *key, int dflt, int *out, char *err,
                    size_t errlen) {
  json_t *v = json_object_get(root, key);
  if (!v || json_is_null(v)) {
    *out = dflt;
    return GPT2_OK;
  }
  if (!json_is_boolean(v))
    return gpt2_errorf(err, errlen, "%s: %s must be true or false, not %s", label, key,
                       type_name(v));
  *out = json_is_true(v);
  return GPT2_OK;
}

/* Checked a*b+c in uint64. */
static int mul_add(uint64_t a, uint64_t b, uint64_t c, uint64_t *out) {
  if (b && a > UINT64_MAX / b) return 1;
  if (a * b > UINT64_MAX - c) return 1;
  *out = a * b + c;
  return 0;
}

int config_n_params(const Gpt2Config *c, int tied, uint64_t *out) {
  uint64_t C = (uint64_t)c->n_embd, F = (uint64_t)c->n_inner, V = (uint64_t)c->vocab_size;
  uint64_t P = (uint64_t)c->n_positions, L = (uint64_t)c->n_layer;
  uint64_t per = 0, t = 0;
  /* per layer: ln_1 2C, c_attn C*3C+3C, attn c_proj C*C+C, ln_2 2C, c_fc C*F+F, c_proj F*C+C */
  if (mul_add(C, 3 * C, 3 * C, &per) || mul_add(C, C, per + C, &per) ||
      mul_add(C, F, per + F, &per) || mul_add(F, C, per + C, &per) || mul_add(4, C, per, &per))
    return GPT2_ERROR;
  if (mul_add(L, per, 0, &t) || mul_add(V, C, t, &t) || mul_add(P, C, t, &t) ||
      mul_add(2, C, t, &t))
    return GPT2_ERROR;
  if (!tied && mul_add(V, C, t, &t)) return GPT2_ERROR;
  *out = t;
  return GPT2_OK;
}

int config_parse(const char *text, size_t len, const char *label, Gpt2Config *cfg, char *err,
                 size_t errlen) {
  memset(cfg, 0, sizeof *cfg);
  json_error_t je;
  json_t *root;
  int rc = gpt2_json_parse(text, len, 0, 1, &root, &je); /* small: verified by a second parse */
  if (rc == GPT2_ERROR)
    return gpt2_errorf(err, errlen, "%s: not valid JSON: %s (line %d)", label, je.text, je.line);
  if (rc) return rc;
  rc = GPT2_ERROR;
  if (!json_is_object(root)) {
    gpt2_errorf(err, errlen, "%s: not a JSON object", label);
    goto done;
  }

  /* model_type: reject anything that is not GPT-2 (docs/formats.md, "config.json"). */
  json_t *mt = json_object_get(root, "model_type");
  if (mt && !json_is_null(mt)) {
    if (!json_is_string(mt)) {
      gpt2_errorf(err, errlen, "%s: model_type must be a string, not %s", label, type_name(mt));
      goto done;
    }
    if (strcmp(json_string_value(mt), "gpt2") != 0) {
      gpt2_errorf(err, errlen, "%s: model_type is \"%.64s\", expected \"gpt2\"", label,
                  json_string_value(mt));
      goto done;
    }
  }

  if (get_int(label, root, "n_layer", REQUIRED, 1, CFG_MAX_LAYER, &cfg->n_layer, err, errlen) ||
      get_int(label, root, "n_head", REQUIRED, 1, CFG_MAX_EMBD, &cfg->n_head, err, errlen) ||
      get_int(label, root, "n_embd", REQUIRED, 1, CFG_MAX_EMBD, &cfg->n_embd, err, errlen) ||
      get_int(label, root, "vocab_size", REQUIRED, 1, CFG_MAX_VOCAB, &cfg->vocab_size, err, errlen))
    goto done;
  /* n_positions is the context length; n_ctx is the legacy spelling. */
  const char *pkey = json_object_get(root, "n_positions") ? "n_positions" : "n_ctx";
  if (get_int(label, root, pkey, REQUIRED, 1, CFG_MAX_POSITIONS, &cfg->n_positions, err, errlen)) {
    if (!json_object_get(root, pkey))
      gpt2_errorf(err, errlen, "%s: missing n_positions (and n_ctx)", label);
    goto done;
  }
  if (cfg->n_embd % cfg->n_head != 0) {
    gpt2_errorf(err, errlen, "%s: n_embd %d is not divisible by n_head %d", label, cfg->n_embd,
                cfg->n_head);
    goto done;
  }
  /* n_inner: null means 4*n_embd; a number is honoured. */
  if (get_int(label, root, "n_inner", 4LL * cfg->n_embd, 1, CFG_MAX_INNER, &cfg->n_inner, err,
              errlen))
    goto done;

  json_t *eps = json_object_get(root, "layer_norm_epsilon");
  double e = 1e-5;
  if (eps && !json_is_null(eps)) {
    if (!json_is_number(eps)) {
      gpt2_errorf(err, errlen, "%s: layer_norm_epsilon must be a number, not %s", label,
                  type_name(eps));
      goto done;
    }
    e = json_number_value(eps);
    if (!(e > 0 && e <= 1)) {
      gpt2_errorf(err, errlen, "%s: layer_norm_epsilon is %g, must be in (0, 1]", label, e);
      goto done;
    }
    if (!((float)e > 0)) { /* stored as a float: it must not round to 0 */
      gpt2_errorf(err, errlen, "%s: layer_norm_epsilon is %g, below the smallest float (%g)", label,
                  e, (double)FLT_TRUE_MIN);
      goto done;
    }
  }
  cfg->ln_eps = (float)e;

  json_t *act = json_object_get(root, "activation_function");
  if (act && !json_is_null(act)) {
    const char *a = json_is_string(act) ? json_string_value(act) : NULL;
    if (!a || (strcmp(a, "gelu_new") != 0 && strcmp(a, "gelu_pytorch_tanh") != 0)) {
      gpt2_errorf(err, errlen,
                  "%s: activation_function %s%.64s%s is not supported (expected "
                  "gelu_new or gelu_pytorch_tanh)",
                  label, a ? "\"" : "", a ? a : type_name(act), a ? "\"" : "");
      goto done;
    }
  }

  /* Special tokens: read them, never assume GPT-2's 50256 (docs/formats.md,
  ** "config.json"). */
  if (get_int(label, root, "eos_token_id", -1, 0, cfg->vocab_size - 1, &cfg->eos_id, err, errlen) ||
      get_int(label, root, "bos_token_id", -1, 0, cfg->vocab_size - 1, &cfg->bos_id, err, errlen))
    goto done;

  if (get_bool(label, root, "scale_attn_weights", 1, &cfg->scale_attn_weights, err, errlen) ||
      get_bool(label, root, "scale_attn_by_inverse_layer_idx", 0,
               &cfg->scale_attn_by_inverse_layer_idx, err, errlen))
    goto done;

  uint64_t np;
  if (config_n_params(cfg, 0, &np) || np > SIZE_MAX / sizeof(float)) {
    gpt2_errorf(err, errlen,
                "%s: the model's size overflows (n_layer %d, n_embd %d, n_inner %d, "
                "vocab_size %d, n_positions %d)",
                label, cfg->n_layer, cfg->n_embd, cfg->n_inner, cfg->vocab_size, cfg->n_positions);
    goto done;
  }
  rc = GPT2_OK;
done:
  json_decref(root);
  return rc;
}

int config_load(const char *dir, Gpt2Config *cfg, char *err, size_t errlen) {
  char *path = gpt2_path_join(dir, CFG);
  if (!path) return GPT2_NOMEM;
  char *text = NULL;
  size_t len;
  int rc = gpt2_read_file(path, &text, &len, CFG_MAX_BYTES, err, errlen);
  if (!rc) {
    rc = config_parse(text, len, path, cfg, err, errlen); /* messages name the full path */
    free(text);
  }
  free(path);
  return rc;
}
