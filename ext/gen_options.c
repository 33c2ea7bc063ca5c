/*
** gen_options.c — logits processors and stop-string search (see
** gen_options.h for the exact definitions).
*/
#include "gen_options.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void opt_init(Gpt2Options *o) {
  memset(o, 0, sizeof *o);
  o->repetition_penalty = 1;
}

void opt_free(Gpt2Options *o) {
  free(o->bias);
  opt_init(o);
}

int opt_processes(const Gpt2Options *o) {
  return o && (o->repetition_penalty != 1 || o->frequency_penalty != 0 ||
               o->presence_penalty != 0 || o->n_bias > 0 || o->min_tokens > 0);
}

/* Index of the first entry of a[0..n) (sorted) that is >= id. */
static int lower_bound(const int *a, int n, int id) {
  int lo = 0, hi = n;
  while (lo < hi) {
    int mid = lo + (hi - lo) / 2;
    if (a[mid] < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/* Insert id into the sorted set a[0..*n) (room reserved); its index. */
static int set_insert(int *a, int *n, int id, int *is_new) {
  int k = lower_bound(a, *n, id);
  *is_new = k == *n || a[k] != id;
  if (*is_new) {
    memmove(a + k + 1, a + k, (size_t)(*n - k) * sizeof *a);
    a[k] = id;
    (*n)++;
  }
  return k;
}

/* The buffers of a state with room for cap ids (s zeroed before). */
static int state_alloc(Gpt2OptState *s, int V, int cap) {
  s->cap = cap;
  s->work = malloc((size_t)V * sizeof *s->work);
  s->seen = malloc((size_t)(cap + 1) * sizeof *s->seen);
  s->gen_id = malloc((size_t)(cap + 1) * sizeof *s->gen_id);
  s->gen_cnt = malloc((size_t)(cap + 1) * sizeof *s->gen_cnt);
  return !s->work || !s->seen || !s->gen_id || !s->gen_cnt ? GPT2_NOMEM : GPT2_OK;
}

int opt_state_init(Gpt2OptState *s, const Gpt2Options *o, int V, const int *prompt, int n,
                   int max_tokens) {
  memset(s, 0, sizeof *s);
  if (!opt_processes(o)) return GPT2_OK;
  if (state_alloc(s, V, n + (max_tokens > 0 ? max_tokens : 0))) return GPT2_NOMEM;
  if (o->repetition_penalty != 1)
    for (int i = 0; i < n; i++) {
      int fresh;
      set_insert(s->seen, &s->n_seen, prompt[i], &fresh);
    }
  return GPT2_OK;
}

void opt_state_add(Gpt2OptState *s, const Gpt2Options *o, int id) {
  if (!s->work) return;
  int fresh;
  if (o->repetition_penalty != 1 && s->n_seen < s->cap) set_insert(s->seen, &s->n_seen, id, &fresh);
  if ((o->frequency_penalty != 0 || o->presence_penalty != 0) && s->n_gen < s->cap) {
    int k = lower_bound(s->gen_id, s->n_gen, id);
    if (k < s->n_gen && s->gen_id[k] == id) {
      s->gen_cnt[k]++;
    } else {
      memmove(s->gen_id + k + 1, s->gen_id + k, (size_t)(s->n_gen - k) * sizeof *s->gen_id);
      memmove(s->gen_cnt + k + 1, s->gen_cnt + k, (size_t)(s->n_gen - k) * sizeof *s->gen_cnt);
      s->gen_id[k] = id;
      s->gen_cnt[k] = 1;
      s->n_gen++;
    }
  }
}

const float *opt_apply(Gpt2OptState *s, const Gpt2Options *o, const float *logits, int V,
                       int eos, int n_generated) {
  if (!s->work) return logits;
  float *w = s->work;
  memcpy(w, logits, (size_t)V * sizeof *w);
  double p = o->repetition_penalty;
  if (p != 1)
    for (int i = 0; i < s->n_seen; i++) {
      double l = w[s->seen[i]];
      w[s->seen[i]] = (float)(l > 0 ? l / p : l * p);
    }
  double f = o->frequency_penalty, r = o->presence_penalty;
  if (f != 0 || r != 0)
    for (int i = 0; i < s->n_gen; i++) {
      double l = w[s->gen_id[i]];
      w[s->gen_id[i]] = (float)(l - ((double)s->gen_cnt[i] * f + r));
    }
  for (int i = 0; i < o->n_bias; i++)
    if (o->bias[i].id < V) w[o->bias[i].id] = (float)((double)w[o->bias[i].id] + o->bias[i].bias);
  if (n_generated < o->min_tokens && eos >= 0 && eos < V) w[eos] = -INFINITY;
  return w;
}

void opt_state_free(Gpt2OptState *s) {
  free(s->work);
  free(s->seen);
  free(s->gen_id);
  free(s->gen_cnt);
  memset(s, 0, sizeof *s);
}

int opt_state_clone_init(Gpt2OptState *dst, const Gpt2OptState *src, int V) {
  memset(dst, 0, sizeof *dst);
  return src->work ? state_alloc(dst, V, src->cap) : GPT2_OK;
}

void opt_state_copy(Gpt2OptState *dst, const Gpt2OptState *src) {
  if (!src->work || !dst->work) return;
  memcpy(dst->seen, src->seen, (size_t)src->n_seen * sizeof *dst->seen);
  memcpy(dst->gen_id, src->gen_id, (size_t)src->n_gen * sizeof *dst->gen_id);
  memcpy(dst->gen_cnt, src->gen_cnt, (size_t)src->n_gen * sizeof *dst->gen_cnt);
  dst->n_seen = src->n_seen;
  dst->n_gen = src->n_gen;
}

int opt_stop_find(const Gpt2Options *o, const char *s, size_t n, size_t *at) {
  for (size_t i = 0; i < n; i++)
    for (int k = 0; k < o->n_stop; k++)
      if (o->stop_len[k] <= n - i && memcmp(s + i, o->stop[k], o->stop_len[k]) == 0) {
        *at = i;
        return 1;
      }
  return 0;
}

size_t opt_stop_hold(const Gpt2Options *o, const char *s, size_t n) {
  size_t best = 0;
  for (int k = 0; k < o->n_stop; k++) {
    size_t m = o->stop_len[k] - 1 < n ? o->stop_len[k] - 1 : n; /* proper prefixes */
    for (size_t len = m; len > best; len--)
      if (memcmp(s + n - len, o->stop[k], len) == 0) {
        best = len;
        break;
      }
  }
  return best;
}
