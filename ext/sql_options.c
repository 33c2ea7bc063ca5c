/*
** sql_options.c — the generation arguments of gpt2_generate, gpt2_stream
** and gpt2_complete: positional, or a JSON object of options in argument 2
** (owns: the option keys, their types and ranges, and their error wording,
** "<function>: option '<key>' = <value> <what is allowed>").
*/
#include "sql_args.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

SQLITE_EXTENSION_INIT3

/* Positional arguments after the prompt, from argument 2. */
static const char *const POSITIONAL[] = {"max_tokens", "temperature", "top_k",
                                         "top_p",      "seed",        "batch_size"};

enum {
  K_MAX_TOKENS,
  K_TEMPERATURE,
  K_TOP_K,
  K_TOP_P,
  K_SEED,
  K_STOP,
  K_REPETITION,
  K_FREQUENCY,
  K_PRESENCE,
  K_BIAS,
  K_MIN_TOKENS,
  K_DRAFT,
  K_DRAFT_TOKENS,
  K_RESULT,
  K_BATCH,
  N_KEYS
};

static const struct {
  const char *name;
  unsigned only; /* 0: every function; else the SQL_GEN_* flag it needs */
} KEYS[N_KEYS] = {
    {"max_tokens", 0},        {"temperature", 0},        {"top_k", 0},
    {"top_p", 0},             {"seed", 0},               {"stop", 0},
    {"repetition_penalty", 0}, {"frequency_penalty", 0}, {"presence_penalty", 0},
    {"logit_bias", 0},        {"min_tokens", 0},         {"draft", 0},
    {"draft_tokens", 0},      {"result", SQL_GEN_RESULT}, {"batch_size", SQL_GEN_BATCH},
};

/* v as the message shows it: numbers as numbers, the rest as JSON. */
static void show(const json_t *v, char *out, size_t n) {
  if (json_is_integer(v)) {
    snprintf(out, n, "%lld", (long long)json_integer_value(v));
  } else if (json_is_real(v)) {
    snprintf(out, n, "%g", json_real_value(v));
  } else {
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(out, n, "%.64s%s", s ? s : "?", s && strlen(s) > 64 ? "..." : "");
    free(s);
  }
}

static int bad(char *err, size_t errlen, const char *fname, const char *key, const json_t *v,
               const char *what) {
  char val[96];
  show(v, val, sizeof val);
  return gpt2_errorf(err, errlen, "%s: option '%s' = %s %s", fname, key, val, what);
}

static int opt_int(const char *fname, const char *key, const json_t *v, int64_t lo, int64_t hi,
                   int64_t *out, char *err, size_t errlen) {
  char range[80];
  snprintf(range, sizeof range, "is out of range [%lld, %lld]", (long long)lo, (long long)hi);
  if (json_is_integer(v)) {
    json_int_t x = json_integer_value(v);
    if (x < lo || x > hi) return bad(err, errlen, fname, key, v, range);
    *out = x;
    return GPT2_OK;
  }
  double d = json_is_real(v) ? json_real_value(v) : 0.5;
  if (d != floor(d)) return bad(err, errlen, fname, key, v, "must be an integer");
  if (!(d >= (double)lo && d <= (double)hi) || !(d >= -0x1p63 && d < 0x1p63))
    return bad(err, errlen, fname, key, v, range);
  *out = (int64_t)d;
  return GPT2_OK;
}

static int opt_num(const char *fname, const char *key, const json_t *v, double *out, char *err,
                   size_t errlen) {
  if (!json_is_number(v)) return bad(err, errlen, fname, key, v, "must be a number");
  *out = json_number_value(v);
  return GPT2_OK;
}

static int cmp_bias(const void *a, const void *b) {
  int x = ((const Gpt2Bias *)a)->id, y = ((const Gpt2Bias *)b)->id;
  return (x > y) - (x < y);
}

/* logit_bias: {"<token id>": bias, ...}. */
static int opt_bias(const Gpt2Config *cfg, const char *fname, const json_t *v, Gpt2Options *o,
                    char *err, size_t errlen) {
  if (!json_is_object(v))
    return bad(err, errlen, fname, "logit_bias", v,
               "must be a JSON object mapping token ids to biases, e.g. {\"464\": -100}");
  size_t n = json_object_size(v);
  o->bias = n ? malloc(n * sizeof *o->bias) : NULL;
  if (n && !o->bias) return GPT2_NOMEM;
  const char *k;
  json_t *b;
  json_object_foreach((json_t *)v, k, b) {
    size_t len = strlen(k);
    long long id = 0;
    int digits = len > 0 && len <= 10;
    for (size_t i = 0; digits && i < len; i++) {
      digits = k[i] >= '0' && k[i] <= '9';
      id = id * 10 + (k[i] - '0');
    }
    if (!digits)
      return gpt2_errorf(err, errlen, "%s: option 'logit_bias': key '%.64s' is not a token id "
                         "(a decimal integer in [0, %d))", fname, k, cfg->vocab_size);
    if (id >= cfg->vocab_size)
      return gpt2_errorf(err, errlen, "%s: option 'logit_bias': token id %lld is outside the "
                         "vocabulary (size %d)", fname, id, cfg->vocab_size);
    char name[64];
    snprintf(name, sizeof name, "logit_bias': '%lld", id);
    if (!json_is_number(b))
      return bad(err, errlen, fname, name, b, "must be a number");
    double d = json_number_value(b);
    if (!(d >= -100 && d <= 100)) return bad(err, errlen, fname, name, b, "is out of range [-100, 100]");
    o->bias[o->n_bias].id = (int)id;
    o->bias[o->n_bias++].bias = d;
  }
  qsort(o->bias, (size_t)o->n_bias, sizeof *o->bias, cmp_bias);
  for (int i = 1; i < o->n_bias; i++)
    if (o->bias[i].id == o->bias[i - 1].id)
      return gpt2_errorf(err, errlen, "%s: option 'logit_bias': token id %d is given twice",
                         fname, o->bias[i].id);
  return GPT2_OK;
}

/* stop: a string or an array of up to GPT2_MAX_STOP strings. */
static int opt_stop(const char *fname, const json_t *v, Gpt2Options *o, char *err,
                    size_t errlen) {
  size_t n = json_is_array(v) ? json_array_size(v) : 1;
  if (!json_is_string(v) && !json_is_array(v))
    return bad(err, errlen, fname, "stop", v, "must be a string or an array of strings");
  if (n > GPT2_MAX_STOP) {
    char what[96];
    snprintf(what, sizeof what, "has %zu strings; at most %d are allowed", n, GPT2_MAX_STOP);
    return bad(err, errlen, fname, "stop", v, what);
  }
  for (size_t i = 0; i < n; i++) {
    const json_t *s = json_is_array(v) ? json_array_get(v, i) : v;
    if (!json_is_string(s))
      return bad(err, errlen, fname, "stop", v, "must be a string or an array of strings");
    size_t len = json_string_length(s);
    const char *p = json_string_value(s);
    if (len < 1 || len > GPT2_MAX_STOP_BYTES || memchr(p, 0, len)) {
      char what[96];
      snprintf(what, sizeof what, "has a string of %zu bytes; each must be 1 to %d bytes", len,
               GPT2_MAX_STOP_BYTES);
      return bad(err, errlen, fname, "stop", v, what);
    }
    /* Jansson only makes valid UTF-8; checked again, as the text it is matched on */
    ByteBuf clean = {0};
    if (utf8_append_sanitized(&clean, p, len)) return GPT2_NOMEM;
    int valid = clean.n == len && memcmp(clean.p, p, len) == 0;
    buf_free(&clean);
    if (!valid) return bad(err, errlen, fname, "stop", v, "must be valid UTF-8");
    memcpy(o->stop[o->n_stop], p, len);
    o->stop[o->n_stop][len] = 0;
    o->stop_len[o->n_stop++] = len;
  }
  return GPT2_OK;
}

static int one_option(const Gpt2Config *cfg, int64_t cap, const char *fname, unsigned keys,
                      const char *key, const json_t *v, SqlGenArgs *a, char *err, size_t errlen) {
  int k = 0;
  while (k < N_KEYS && (strcmp(key, KEYS[k].name) || (KEYS[k].only && !(KEYS[k].only & keys))))
    k++;
  if (k == N_KEYS) {
    char list[320];
    size_t used = 0;
    list[0] = 0;
    for (int i = 0; i < N_KEYS; i++)
      if (!KEYS[i].only || (KEYS[i].only & keys))
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", used ? ", " : "",
                                 KEYS[i].name);
    return gpt2_errorf(err, errlen, "%s: unknown option '%.64s'; the options are %s", fname, key,
                       list);
  }
  if (json_is_null(v)) return GPT2_OK; /* null: the default */
  Gpt2GenParams *p = &a->p;
  Gpt2Options *o = &a->opt;
  int64_t x = 0;
  double d = 0;
  switch (k) {
    case K_MAX_TOKENS:
      if (opt_int(fname, key, v, 0, cfg->n_positions, &x, err, errlen)) return GPT2_ERROR;
      if (x > cap)
        return gpt2_errorf(err, errlen,
                           "%s: option 'max_tokens' = %lld is above the connection's "
                           "max_tokens_limit (%lld); see gpt2_set",
                           fname, (long long)x, (long long)cap);
      p->max_tokens = (int)x;
      return GPT2_OK;
    case K_TEMPERATURE:
      if (opt_num(fname, key, v, &d, err, errlen)) return GPT2_ERROR;
      if (!(d >= 0) || isinf(d)) return bad(err, errlen, fname, key, v, "is out of range [0, inf)");
      p->sample.temperature = d;
      return GPT2_OK;
    case K_TOP_K:
      if (opt_int(fname, key, v, 0, INT_MAX, &x, err, errlen)) return GPT2_ERROR;
      p->sample.top_k = (int)x;
      return GPT2_OK;
    case K_TOP_P:
      if (opt_num(fname, key, v, &d, err, errlen)) return GPT2_ERROR;
      if (!(d > 0 && d <= 1)) return bad(err, errlen, fname, key, v, "is out of range (0, 1]");
      p->sample.top_p = d;
      return GPT2_OK;
    case K_SEED:
      if (opt_int(fname, key, v, INT64_MIN, INT64_MAX, &x, err, errlen)) return GPT2_ERROR;
      p->seed = (uint64_t)x;
      a->seeded = 1;
      return GPT2_OK;
    case K_STOP: return opt_stop(fname, v, o, err, errlen);
    case K_REPETITION:
      if (opt_num(fname, key, v, &d, err, errlen)) return GPT2_ERROR;
      if (!(d > 0) || isinf(d)) return bad(err, errlen, fname, key, v, "is out of range (0, inf)");
      o->repetition_penalty = d;
      return GPT2_OK;
    case K_FREQUENCY:
    case K_PRESENCE:
      if (opt_num(fname, key, v, &d, err, errlen)) return GPT2_ERROR;
      if (!(d >= -2 && d <= 2)) return bad(err, errlen, fname, key, v, "is out of range [-2, 2]");
      *(k == K_FREQUENCY ? &o->frequency_penalty : &o->presence_penalty) = d;
      return GPT2_OK;
    case K_BIAS: return opt_bias(cfg, fname, v, o, err, errlen);
    case K_MIN_TOKENS:
      if (opt_int(fname, key, v, 0, cfg->n_positions, &x, err, errlen)) return GPT2_ERROR;
      o->min_tokens = (int)x;
      return GPT2_OK;
    case K_RESULT: {
      const char *s = json_string_value(v);
      if (!s || (strcmp(s, "text") && strcmp(s, "json")))
        return bad(err, errlen, fname, key, v, "must be 'text' or 'json'");
      a->result_json = s[0] == 'j';
      return GPT2_OK;
    }
    case K_DRAFT: {
      const char *s = json_string_value(v);
      if (!s || !*s)
        return bad(err, errlen, fname, key, v, "must be the name of a loaded model (a string)");
      free(a->draft);
      if (!(a->draft = strdup(s))) return GPT2_NOMEM;
      return GPT2_OK;
    }
    case K_DRAFT_TOKENS:
      return opt_int(fname, key, v, 1, SPEC_MAX_DRAFT, &a->draft_tokens, err, errlen);
    default: /* K_BATCH */
      return opt_int(fname, key, v, 1, SQL_MAX_BATCH, &a->batch_size, err, errlen);
  }
}

static int parse_options(const Gpt2Config *cfg, int64_t cap, const char *fname, sqlite3_value *o,
                         unsigned keys, SqlGenArgs *a, char *err, size_t errlen) {
  const char *s = (const char *)sqlite3_value_text(o);
  size_t n = (size_t)sqlite3_value_bytes(o);
  if (!s) return GPT2_NOMEM;
  json_error_t je;
  json_t *j;
  /* verified by a second parse: a stop string misread under memory
  ** pressure would silently change the output (common.h) */
  int rc = gpt2_json_parse(s, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, 1, &j, &je);
  if (rc == GPT2_NOMEM) return rc;
  if (!j || !json_is_object(j)) {
    json_decref(j);
    return gpt2_errorf(err, errlen,
                       "%s: argument 2 (max_tokens or options) must be an INTEGER or a JSON "
                       "object of options, e.g. json_object('max_tokens', 40); got TEXT "
                       "'%.64s%s'%s%s",
                       fname, s, n > 64 ? "..." : "", j ? ", not a JSON object" : ": ",
                       j ? "" : je.text);
  }
  const char *key;
  json_t *v;
  json_object_foreach(j, key, v) {
    if (rc) break;
    rc = one_option(cfg, cap, fname, keys, key, v, a, err, errlen);
  }
  json_decref(j);
  return rc;
}

int sql_gen_args(const Gpt2Config *cfg, int64_t cap, const char *fname, int argc,
                 sqlite3_value **argv, unsigned keys, SqlGenArgs *a, char *err, size_t errlen) {
  memset(a, 0, sizeof *a);
  opt_init(&a->opt);
  a->batch_size = SQL_DEFAULT_BATCH;
  a->draft_tokens = SPEC_DEFAULT_DRAFT;
  int n_gen = (keys & SQL_GEN_BATCH) && argc > 5 ? 5 : argc;
  sqlite3_value *o = argc > 0 ? argv[0] : NULL;
  int rc;
  if (o && sqlite3_value_type(o) == SQLITE_TEXT) {
    for (int i = 1; i < argc && i < 6; i++)
      if (argv[i] && sqlite3_value_type(argv[i]) != SQLITE_NULL)
        return gpt2_errorf(err, errlen,
                           "%s: argument %d (%s) cannot be given with an options object in "
                           "argument 2; put '%s' in the options",
                           fname, i + 2, POSITIONAL[i], POSITIONAL[i]);
    /* the defaults (and a random seed), then the options */
    rc = sql_gen_params(cfg->n_positions, cap, fname, 0, NULL, &a->p, &a->seeded, err, errlen);
    if (!rc) rc = parse_options(cfg, cap, fname, o, keys, a, err, errlen);
  } else {
    rc = sql_gen_params(cfg->n_positions, cap, fname, n_gen, argv, &a->p, &a->seeded, err, errlen);
    if (!rc && n_gen < argc && argv[5] && sqlite3_value_type(argv[5]) != SQLITE_NULL)
      rc = sql_arg_int(fname, 7, "batch_size", argv[5], 1, SQL_MAX_BATCH, &a->batch_size, err,
                       errlen);
  }
  a->p.opt = &a->opt;
  return rc;
}

void sql_gen_args_free(SqlGenArgs *a) {
  opt_free(&a->opt);
  free(a->draft);
  a->draft = NULL;
}
