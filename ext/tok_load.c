/*
** tok_load.c — tok_load and tok_free: reads merges.txt on a helper thread
** (tok_merges.c) while this thread reads vocab.json (tok_vocab.c), then links
** the two (every vocabulary token gets its unit; every merge's parts and
** result must be tokens) and adds the special tokens (tok_special.c).
** Nothing stays allocated on failure.
*/
#include <pthread.h>
#include <stdlib.h>

#include "tok_private.h"

void tok_free(Tokenizer *t) {
  if (!t) return;
  free(t->vbytes);
  free(t->vspan);
  free(t->ubytes);
  free(t->uspan);
  free(t->utab.slot);
  free(t->vid);
  free((void *)t->self);
  free(t->brank);
  free(t->pair);
  free(t->merge_a);
  free(t->merge_b);
  free(t->merge_to);
  free(t->merge_line);
  if (t->re) pcre2_code_free(t->re);
  free(t);
}

/* Give every vocabulary token its unit (a token no merge names becomes a
** unit of its own); then every merge's parts and result must have an id. */
static int link_vocab(Tokenizer *t, const MergeJob *job, const char *vocab_path, char *err,
                      size_t errlen) {
  int32_t *unit = malloc((size_t)t->vocab_size * sizeof *unit);
  if (!unit) return GPT2_NOMEM;
  uint32_t hq[LOOKAHEAD]; /* hashes of the ids k-LOOKAHEAD .. k-1 */
  for (int k = 0; k < t->vocab_size + LOOKAHEAD; k++) {
    uint32_t *h = &hq[k % LOOKAHEAD]; /* id k-LOOKAHEAD's, then id k's */
    if (k >= LOOKAHEAD) {
      int id = k - LOOKAHEAD;
      const Span *s = &t->vspan[id];
      unit[id] = s->len ? tk_unit_intern(t, t->vbytes + s->off, s->len, *h) : -1;
      if (s->len && unit[id] < 0) {
        free(unit);
        return GPT2_NOMEM;
      }
    }
    if (k < t->vocab_size) {
      const Span *f = &t->vspan[k];
      *h = f->len ? tab_prefetch(&t->utab, t->vbytes + f->off, f->len) : 0;
    }
  }
  t->vid = malloc((size_t)t->n_units * sizeof *t->vid);
  /* all SELF_UNKNOWN (zero bytes are a valid atomic uint8_t on every
  ** platform we build for) */
  t->self = calloc((size_t)t->n_units, sizeof *t->self);
  if (!t->vid || !t->self) {
    free(unit);
    return GPT2_NOMEM;
  }
  for (int32_t u = 0; u < t->n_units; u++) t->vid[u] = -1;
  for (int id = 0; id < t->vocab_size; id++) {
    int32_t u = unit[id];
    if (u < 0) continue;
    if (t->vid[u] >= 0) { /* equal raw bytes <=> equal keys (tok_vocab.c refuses those) */
      char m[256];
      free(unit);
      return gpt2_errorf(err, errlen, "%s: duplicate key \"%s\" (ids %d and %d)", vocab_path,
                         tk_mapped(t->vbytes + t->vspan[id].off, t->vspan[id].len, m, sizeof m),
                         (int)t->vid[u], id);
    }
    t->vid[u] = id;
  }
  free(unit);
  for (int r = 0; r < t->n_merges; r++) {
    int32_t parts[3] = {t->merge_a[r], t->merge_b[r], t->merge_to[r]};
    for (int k = 0; k < 3; k++) {
      if (t->vid[parts[k]] >= 0) continue;
      char m[256];
      return gpt2_errorf(
          err, errlen, "%s line %d: %s\"%s\" is not in the vocabulary", job->path, t->merge_line[r],
          k == 2 ? "the merged token " : "",
          tk_mapped(t->ubytes + t->uspan[parts[k]].off, t->uspan[parts[k]].len, m, sizeof m));
    }
  }
  if (job->stop_line) return gpt2_errorf(err, errlen, "%s", job->err);
  return GPT2_OK;
}

int tok_load(const char *dir, Tokenizer **out, char *err, size_t errlen) {
  *out = NULL;
  Tokenizer *t = calloc(1, sizeof *t);
  char *vpath = gpt2_path_join(dir, "vocab.json");
  char *mpath = gpt2_path_join(dir, "merges.txt");
  if (!t || !vpath || !mpath) {
    free(t);
    free(vpath);
    free(mpath);
    return GPT2_NOMEM;
  }
  /* merges.txt on a helper thread while vocab.json is parsed here
  ** (without a thread, the same work runs in turn). */
  MergeJob job = {.t = t, .path = mpath};
  pthread_t th;
  int threaded = pthread_create(&th, NULL, tk_merge_job, &job) == 0;
  int rc = tk_load_vocab(t, vpath, err, errlen);
  if (threaded)
    pthread_join(th, NULL);
  else
    tk_merge_job(&job);
  if (!rc && job.rc == GPT2_ERROR) rc = gpt2_errorf(err, errlen, "%s", job.err);
  if (!rc) rc = job.rc;
  if (!rc) rc = link_vocab(t, &job, vpath, err, errlen);
  if (!rc) rc = tk_load_specials(t, dir, err, errlen);
  free(vpath);
  free(mpath);
  if (rc) {
    tok_free(t);
    return rc;
  }
  *out = t;
  return GPT2_OK;
}
