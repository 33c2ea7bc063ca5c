/*
** speculate.c — draft rounds, batched verification and the accept /
** resample rule (see speculate.h).
*/
#include "speculate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int spec_mismatch(const Gpt2Model *t, const Gpt2Model *d, char *why, size_t n) {
  if (t->cfg.vocab_size != d->cfg.vocab_size) {
    snprintf(why, n, "vocab_size %d vs %d", d->cfg.vocab_size, t->cfg.vocab_size);
    return 1;
  }
  if (t->cfg.eos_id != d->cfg.eos_id) {
    snprintf(why, n, "eos token %d vs %d", d->cfg.eos_id, t->cfg.eos_id);
    return 1;
  }
  if (t->tok == d->tok) return 0;
  int tv = tok_vocab_size(t->tok), dv = tok_vocab_size(d->tok);
  if (tv != dv) {
    snprintf(why, n, "tokenizer of %d tokens vs %d", dv, tv);
    return 1;
  }
  for (int id = 0; id < tv; id++) {
    size_t a, b;
    const char *x = tok_bytes(d->tok, id, &a), *y = tok_bytes(t->tok, id, &b);
    if (a != b || (x == NULL) != (y == NULL) || (a && memcmp(x, y, a) != 0)) {
      ByteBuf sx = {0}, sy = {0};
      int ok = !utf8_append_sanitized(&sx, x ? x : "", a < 32 ? a : 32) &&
               !utf8_append_sanitized(&sy, y ? y : "", b < 32 ? b : 32) &&
               !buf_append(&sx, "", 0) && !buf_append(&sy, "", 0);
      snprintf(why, n, "token %d is '%s' vs '%s'", id, ok ? sx.p : "?", ok ? sy.p : "?");
      buf_free(&sx);
      buf_free(&sy);
      return 1;
    }
  }
  return 0;
}

static int sampled(const Gpt2Gen *g) { return g->p.sample.temperature > 0; }

int spec_start(Gpt2Spec *s, Gpt2Gen *g, const Gpt2Model *draft, int k, char *err,
               size_t errlen) {
  memset(s, 0, sizeof *s);
  s->g = g;
  s->d = model_retain(draft);
  s->k = k < 1 ? 1 : k > SPEC_MAX_DRAFT ? SPEC_MAX_DRAFT : k;
  s->reject = -1;
  if (draft->cfg.vocab_size != g->m->cfg.vocab_size)
    return gpt2_errorf(err, errlen, "the draft's vocabulary differs from the model's");
  int V = g->m->cfg.vocab_size;
  if (!(s->dseq = seq_new(draft))) return GPT2_NOMEM;
  /* the draft never holds more positions than the target */
  int need = gen_positions(g->m, g->n_prompt, g->p.max_tokens);
  if (need > draft->cfg.n_positions) need = draft->cfg.n_positions;
  if (seq_reserve(s->dseq, draft, need)) return GPT2_NOMEM;
  if (opt_state_clone_init(&s->os, &g->os, V)) return GPT2_NOMEM;
  if (sampled(g)) {
    s->pv = malloc((size_t)V * sizeof *s->pv);
    s->qv = malloc((size_t)V * sizeof *s->qv);
    s->row = malloc((size_t)V * sizeof *s->row);
    if (!s->pv || !s->qv || !s->row) return GPT2_NOMEM;
    /* so that no pick allocates (picks run on the pool's threads) */
    if (sampler_reserve(&s->samp, V, &g->p.sample) || sampler_reserve(&g->sampler, V, &g->p.sample))
      return GPT2_NOMEM;
  }
  return GPT2_OK;
}

void spec_free(Gpt2Spec *s) {
  seq_free(s->dseq);
  opt_state_free(&s->os);
  sampler_free(&s->samp);
  free(s->pv);
  free(s->qv);
  free(s->row);
  model_release(s->d);
  memset(s, 0, sizeof *s);
}

/* One forward call, unless interrupted; want/logits as gpt2_forward. */
static int forward(Gpt2Gen *g, const Gpt2Model *m, int n, const int *ids, Gpt2Seq *const *seqs,
                   const unsigned char *want, float *logits, char *err, size_t errlen) {
  if (gen_stopped(g, err, errlen)) return GPT2_INTERRUPTED;
  return gen_forward(m, g->sc, g->ctr, n, ids, seqs, want, logits, err, errlen);
}

/* Row buffers of one batched call. */
typedef struct Rows {
  int *ids;
  Gpt2Seq **seqs;
  unsigned char *want;
  int n, cap;
} Rows;

static int rows_add(Rows *r, int id, Gpt2Seq *seq, int want) {
  if (r->n == r->cap) {
    int cap = r->cap ? 2 * r->cap : 64;
    int *ids = realloc(r->ids, (size_t)cap * sizeof *ids);
    if (ids) r->ids = ids;
    Gpt2Seq **seqs = realloc(r->seqs, (size_t)cap * sizeof *seqs);
    if (seqs) r->seqs = seqs;
    unsigned char *want = realloc(r->want, (size_t)cap);
    if (want) r->want = want;
    if (!ids || !seqs || !want) return GPT2_NOMEM;
    r->cap = cap;
  }
  r->ids[r->n] = id;
  r->seqs[r->n] = seq;
  r->want[r->n++] = (unsigned char)want;
  return GPT2_OK;
}

static void rows_free(Rows *r) {
  free(r->ids);
  free(r->seqs);
  free(r->want);
}

/* Queue token id (from the target's unprocessed logits raw) as a round's output. */
static void push(Gpt2Spec *s, int id, const float *raw, int want_lp) {
  s->out_lp[s->n_out] = want_lp ? sampler_logprob(raw, s->g->m->cfg.vocab_size, id) : 0;
  s->out[s->n_out++] = id;
}

/* Per-sequence work after a batched call, run on the pool's threads: each
** sequence touches only its own state (RNG, samplers, processor copy). */
typedef struct PickJob {
  Gpt2Spec *const *ss;
  const float *lg;  /* the call's wanted rows */
  int *at;          /* (n) ss[i]'s first row in lg, -1 when it has none */
  int *rc;          /* (n) status */
  int j;            /* draft position (draft_one) */
  int want_lp;      /* log-probabilities wanted (judge_one, resample_one) */
} PickJob;

/* Draft j of ss[i] from its row of the draft's logits. */
static void draft_one(void *arg, int i) {
  PickJob *job = arg;
  if (job->at[i] < 0) return;
  Gpt2Spec *s = job->ss[i];
  Gpt2Gen *g = s->g;
  int V = g->m->cfg.vocab_size, eos = g->m->cfg.eos_id, j = job->j, t;
  const float *raw = job->lg + (size_t)job->at[i] * (size_t)V;
  const float *lp = opt_apply(&s->os, g->p.opt, raw, V, eos, g->n_generated + j);
  if (sampled(g)) {
    int rc = sampler_probs(&s->samp, lp, V, &g->p.sample, s->qv);
    t = rc ? -1 : sampler_draw(s->qv, V, &g->rng);
    if (t >= 0) s->qd[j] = s->qv[t];
  } else {
    t = sampler_pick(&s->samp, lp, V, &g->p.sample, &g->rng, NULL);
  }
  if (t < 0) {
    job->rc[i] = GPT2_NOMEM;
    return;
  }
  s->draft[j] = t;
  if (t == eos) s->kr = j + 1; /* nothing to draft after eos */
  else opt_state_add(&s->os, g->p.opt, t);
}

/* The round's drafts: catch the draft up, then one batched draft call per
** draft position. */
static int draft_steps(Gpt2Spec *const *ss, int n, PickJob *job, char *err, size_t errlen) {
  const Gpt2Model *d = ss[0]->d;
  Gpt2Gen *g0 = ss[0]->g;
  int V = d->cfg.vocab_size, rc = GPT2_OK, kmax = 0;
  Rows r = {0};
  for (int i = 0; i < n; i++) kmax = ss[i]->kr > kmax ? ss[i]->kr : kmax;
  if (!kmax) return GPT2_OK;
  /* positions the draft misses, fed ahead when all of them and the last
  ** tokens would not fit in one call */
  for (;;) {
    int total = 0;
    for (int i = 0; i < n; i++)
      if (ss[i]->kr) total += ss[i]->n_pos - ss[i]->dseq->n_pos + 1;
    if (total <= GEN_STEP_ROWS) break;
    r.n = 0;
    for (int i = 0; !rc && i < n && r.n < GEN_STEP_ROWS; i++) {
      Gpt2Spec *s = ss[i];
      for (int p = s->dseq->n_pos; !rc && s->kr && p < s->n_pos && r.n < GEN_STEP_ROWS; p++)
        rc = rows_add(&r, s->g->fed.v[p], s->dseq, 0);
    }
    if (!rc) rc = forward(g0, d, r.n, r.ids, r.seqs, r.want, NULL, err, errlen);
    if (rc) goto done;
  }
  for (int j = 0; j < kmax; j++) {
    r.n = 0;
    int nw = 0;
    for (int i = 0; !rc && i < n; i++) {
      Gpt2Spec *s = ss[i];
      if (s->kr <= j) continue;
      if (j == 0)
        for (int p = s->dseq->n_pos; !rc && p < s->n_pos; p++)
          rc = rows_add(&r, s->g->fed.v[p], s->dseq, 0);
      if (!rc) rc = rows_add(&r, j == 0 ? s->g->last : s->draft[j - 1], s->dseq, 1);
      nw++;
    }
    if (!nw) break;
    float *lg = rc ? NULL : scratch_out(g0->sc, (size_t)nw * (size_t)V);
    if (!rc && !lg) rc = GPT2_NOMEM;
    if (!rc) rc = forward(g0, d, r.n, r.ids, r.seqs, r.want, lg, err, errlen);
    for (int i = 0, w = 0; i < n; i++) {
      job->at[i] = ss[i]->kr > j ? w++ : -1;
      job->rc[i] = GPT2_OK;
    }
    if (rc) break;
    job->lg = lg;
    job->j = j;
    scratch_parallel(g0->sc, n, draft_one, job);
    for (int i = 0; !rc && i < n; i++) rc = job->rc[i];
  }
done:
  rows_free(&r);
  return rc;
}

/* Judge s's drafts against its k+1 verify rows (lg). A sampled rejection
** is left pending (s->reject) until the draft's q is recomputed. */
static int judge(Gpt2Spec *s, const float *lg, int want_lp) {
  Gpt2Gen *g = s->g;
  int V = g->m->cfg.vocab_size, eos = g->m->cfg.eos_id, n0 = g->n_generated;
  const Gpt2Options *o = g->p.opt;
  opt_state_copy(&s->os, &g->os);
  int i;
  for (i = 0; i < s->kr; i++) {
    const float *raw = lg + (size_t)i * (size_t)V;
    const float *lp = opt_apply(&s->os, o, raw, V, eos, n0 + i);
    int d = s->draft[i];
    if (sampled(g)) {
      if (sampler_probs(&g->sampler, lp, V, &g->p.sample, s->pv)) return GPT2_NOMEM;
      double u = rng_uniform(&g->rng);
      if (!(u * s->qd[i] < s->pv[d])) {
        s->reject = i;
        memcpy(s->row, raw, (size_t)V * sizeof *raw);
        return GPT2_OK;
      }
    } else {
      int t = sampler_pick(&g->sampler, lp, V, &g->p.sample, &g->rng, NULL);
      if (t < 0) return GPT2_NOMEM;
      if (t != d) {
        push(s, t, raw, want_lp);
        return GPT2_OK;
      }
    }
    push(s, d, raw, want_lp);
    s->accepted++;
    if (d == eos) return GPT2_OK;
    opt_state_add(&s->os, o, d);
  }
  /* every draft accepted: one more token from the last row */
  const float *raw = lg + (size_t)i * (size_t)V;
  const float *lp = opt_apply(&s->os, o, raw, V, eos, n0 + i);
  int t = sampler_pick(&g->sampler, lp, V, &g->p.sample, &g->rng, NULL);
  if (t < 0) return GPT2_NOMEM;
  push(s, t, raw, want_lp);
  return GPT2_OK;
}

/* The replacement of a rejected sampled draft: a draw from
** normalize(max(0, p − q)), q from the draft's logits of that row (dl). */
static int resample(Gpt2Spec *s, const float *dl, int want_lp) {
  Gpt2Gen *g = s->g;
  int V = g->m->cfg.vocab_size, eos = g->m->cfg.eos_id, i = s->reject;
  const float *lp = opt_apply(&s->os, g->p.opt, dl, V, eos, g->n_generated + i);
  if (sampler_probs(&s->samp, lp, V, &g->p.sample, s->qv)) return GPT2_NOMEM;
  for (int v = 0; v < V; v++) {
    double r = s->pv[v] - s->qv[v];
    s->pv[v] = r > 0 ? r : 0;
  }
  int t = sampler_draw(s->pv, V, &g->rng);
  if (t < 0) { /* p == q up to rounding: a rejection had no probability; draw from p */
    lp = opt_apply(&s->os, g->p.opt, s->row, V, eos, g->n_generated + i);
    t = sampler_pick(&g->sampler, lp, V, &g->p.sample, &g->rng, NULL);
    if (t < 0) return GPT2_NOMEM;
  }
  push(s, t, s->row, want_lp);
  s->reject = -1;
  return GPT2_OK;
}

static void judge_one(void *arg, int i) {
  PickJob *job = arg;
  if (job->at[i] < 0) return;
  Gpt2Spec *s = job->ss[i];
  job->rc[i] = judge(s, job->lg + (size_t)job->at[i] * (size_t)s->g->m->cfg.vocab_size,
                     job->want_lp);
}

static void resample_one(void *arg, int i) {
  PickJob *job = arg;
  if (job->at[i] < 0) return;
  Gpt2Spec *s = job->ss[i];
  job->rc[i] = resample(s, job->lg + (size_t)job->at[i] * (size_t)s->g->m->cfg.vocab_size,
                        job->want_lp);
}

/* One round for each of ss[0..n) (live, every token taken, last not fed). */
static int round_batch(Gpt2Spec *const *ss, int n, int want_lp, char *err, size_t errlen) {
  Gpt2Gen *g0 = ss[0]->g;
  const Gpt2Model *m = g0->m;
  int V = m->cfg.vocab_size, rc = GPT2_OK;
  for (int i = 0; i < n; i++) {
    Gpt2Spec *s = ss[i];
    Gpt2Gen *g = s->g;
    int pos = g->seq->n_pos, k = s->k;
    int left = g->p.max_tokens - g->n_generated - 1;
    int ctx = m->cfg.n_positions - 1 - pos, dctx = s->d->cfg.n_positions - pos;
    k = k < left ? k : left;
    k = k < ctx ? k : ctx;
    k = k < dctx ? k : dctx;
    s->kr = k > 0 ? k : 0;
    s->n_pos = pos;
    s->n_out = s->at = s->accepted = 0;
    s->reject = -1;
    if (s->dseq->n_pos > pos) seq_truncate(s->dseq, pos);
    opt_state_copy(&s->os, &g->os);
  }
  PickJob job = {.ss = ss, .want_lp = want_lp};
  job.at = malloc(((size_t)n + 1) * sizeof *job.at);
  job.rc = malloc(((size_t)n + 1) * sizeof *job.rc);
  rc = job.at && job.rc ? draft_steps(ss, n, &job, err, errlen) : GPT2_NOMEM;
  /* verify: each sequence's k+1 rows in one call, several sequences a call */
  Rows r = {0};
  for (int i0 = 0, i1; !rc && i0 < n; i0 = i1) {
    r.n = 0;
    for (i1 = i0; !rc && i1 < n && (i1 == i0 || r.n + ss[i1]->kr + 1 <= GEN_STEP_ROWS); i1++) {
      Gpt2Spec *s = ss[i1];
      rc = rows_add(&r, s->g->last, s->g->seq, 1);
      for (int j = 0; !rc && j < s->kr; j++) rc = rows_add(&r, s->draft[j], s->g->seq, 1);
    }
    float *lg = rc ? NULL : scratch_out(g0->sc, (size_t)r.n * (size_t)V);
    if (!rc && !lg) rc = GPT2_NOMEM;
    if (!rc) rc = forward(g0, m, r.n, r.ids, r.seqs, r.want, lg, err, errlen);
    for (int i = 0, at = 0; !rc && i < n; i++) {
      job.at[i] = i >= i0 && i < i1 ? at : -1;
      job.rc[i] = GPT2_OK;
      if (i >= i0 && i < i1) at += ss[i]->kr + 1;
    }
    job.lg = lg;
    if (!rc) scratch_parallel(g0->sc, n, judge_one, &job);
    for (int i = i0; !rc && i < i1; i++) rc = job.rc[i];
  }
  /* sampled rejections: the draft's row again, for q */
  if (!rc) {
    r.n = 0;
    for (int i = 0; !rc && i < n; i++) {
      Gpt2Spec *s = ss[i];
      if (s->reject < 0) continue;
      seq_truncate(s->dseq, s->n_pos + s->reject);
      rc = rows_add(&r, s->reject ? s->draft[s->reject - 1] : s->g->last, s->dseq, 1);
    }
    float *lg = rc || !r.n ? NULL : scratch_out(g0->sc, (size_t)r.n * (size_t)V);
    if (!rc && r.n && !lg) rc = GPT2_NOMEM;
    if (!rc && r.n) rc = forward(g0, ss[0]->d, r.n, r.ids, r.seqs, r.want, lg, err, errlen);
    for (int i = 0, w = 0; !rc && i < n; i++) {
      job.at[i] = ss[i]->reject >= 0 ? w++ : -1;
      job.rc[i] = GPT2_OK;
    }
    job.lg = lg;
    if (!rc && r.n) scratch_parallel(g0->sc, n, resample_one, &job);
    for (int i = 0; !rc && i < n; i++) rc = job.rc[i];
  }
  rows_free(&r);
  free(job.at);
  free(job.rc);
  /* keep what came out: the last token and every output but the final one */
  for (int i = 0; !rc && i < n; i++) {
    Gpt2Spec *s = ss[i];
    Gpt2Gen *g = s->g;
    int keep = s->n_pos + s->n_out;
    seq_truncate(g->seq, keep);
    if (s->dseq->n_pos > keep) seq_truncate(s->dseq, keep);
    if (idvec_reserve(&g->fed, (size_t)keep)) {
      rc = GPT2_NOMEM;
      break;
    }
    g->fed.v[g->fed.n++] = g->last;
    for (int j = 0; j + 1 < s->n_out; j++) g->fed.v[g->fed.n++] = s->out[j];
    if (g->ctr) {
      g->ctr->draft_proposed += s->kr;
      g->ctr->draft_accepted += s->accepted;
      g->ctr->verify_passes++;
    }
  }
  return rc;
}

int spec_next_batch(Gpt2Spec *const *ss, int n, int *toks, double *logprobs, char *err,
                    size_t errlen) {
  int rc = GPT2_OK, pending = 0, nr = 0;
  for (int i = 0; i < n; i++) {
    toks[i] = -1;
    if (logprobs) logprobs[i] = 0;
    pending |= !ss[i]->g->done && ss[i]->g->unfed.n > 0;
  }
  Gpt2Spec **rs = malloc(((size_t)n + 1) * sizeof *rs);
  if (!rs) return GPT2_NOMEM;
  if (pending) {
    Gpt2Gen **gs = malloc(((size_t)n + 1) * sizeof *gs);
    if (!gs) rc = GPT2_NOMEM;
    for (int i = 0; !rc && i < n; i++) gs[i] = ss[i]->g;
    if (!rc) rc = gen_feed_batch(gs, n, err, errlen);
    free(gs);
  }
  for (int i = 0; !rc && i < n; i++) {
    const Gpt2Gen *g = ss[i]->g;
    if (!g->done && g->last >= 0 && ss[i]->at == ss[i]->n_out) rs[nr++] = ss[i];
  }
  if (!rc && nr) rc = round_batch(rs, nr, logprobs != NULL, err, errlen);
  free(rs);
  for (int i = 0; !rc && i < n; i++) {
    Gpt2Spec *s = ss[i];
    Gpt2Gen *g = s->g;
    if (g->done) continue;
    if (g->last < 0) { /* the first token, from the prompt's logits */
      rc = gen_next(g, &toks[i], logprobs ? &logprobs[i] : NULL, err, errlen);
      continue;
    }
    if (logprobs) logprobs[i] = s->out_lp[s->at];
    rc = gen_take(g, s->out[s->at++], &toks[i]);
  }
  if (rc)
    for (int i = 0; i < n; i++) ss[i]->g->done = 1;
  return rc;
}

int spec_next(Gpt2Spec *s, int *tok, double *logprob, char *err, size_t errlen) {
  return spec_next_batch(&s, 1, tok, logprob, err, errlen);
}
