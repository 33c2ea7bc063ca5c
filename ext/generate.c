/*
** generate.c — prompt feeding (with prefix reuse), token-by-token and
** batched generation, stop rules, UTF-8 and stop-string hold-back for
** streamed text (see generate.h).
*/
#include "generate.h"

#include <stdlib.h>
#include <string.h>

const char *gen_finish_name(int finish) {
  switch (finish) {
    case GEN_EOS: return "eos";
    case GEN_LENGTH: return "length";
    case GEN_STOP: return "stop";
    case GEN_CONTEXT: return "context";
    default: return NULL;
  }
}

void prefix_clear(Gpt2Prefix *p) {
  seq_free(p->seq);
  model_release(p->m);
  idvec_free(&p->ids);
  memset(p, 0, sizeof *p);
}

int gen_forward(const Gpt2Model *m, Gpt2Scratch *sc, Gpt2Counters *ctr, int n, const int *ids,
                Gpt2Seq *const *seqs, const unsigned char *want, float *logits, char *err,
                size_t errlen) {
  int rc = gpt2_forward(m, sc, n, ids, seqs, want, logits, err, errlen);
  if (rc == GPT2_OK && ctr) {
    ctr->forward_calls++;
    ctr->rows_computed += n;
  }
  return rc;
}

static int stopped(const Gpt2GenParams *p, char *err, size_t errlen) {
  if (!p->stop || !p->stop(p->stop_arg)) return 0;
  gpt2_errorf(err, errlen, "interrupted");
  return 1;
}

/* Feed n tokens of g's own sequence. */
static int feed(Gpt2Gen *g, int n, const int *ids, char *err, size_t errlen) {
  if (stopped(&g->p, err, errlen)) return GPT2_INTERRUPTED;
  Gpt2Seq *one[1] = {g->seq};
  Gpt2Seq **seqs = one;
  if (n > 1) {
    seqs = malloc((size_t)n * sizeof *seqs);
    if (!seqs) return GPT2_NOMEM;
    for (int i = 0; i < n; i++) seqs[i] = g->seq;
  }
  int rc = gen_forward(g->m, g->sc, g->ctr, n, ids, seqs, NULL, g->logits, err, errlen);
  if (seqs != one) free(seqs);
  if (rc == GPT2_OK) {
    if (idvec_reserve(&g->fed, g->fed.n + (size_t)n)) return GPT2_NOMEM;
    memcpy(g->fed.v + g->fed.n, ids, (size_t)n * sizeof *ids);
    g->fed.n += (size_t)n;
  }
  return rc;
}

/* Positions of pfx usable for this prompt: the common prefix, leaving at
** least the last prompt token to compute (its logits are needed). */
static int reusable(const Gpt2Prefix *pfx, const Gpt2Model *m, const int *prompt, int n) {
  if (!pfx || pfx->m != m || !pfx->seq) return 0;
  int k = 0, lim = n - 1;
  if ((size_t)lim > pfx->ids.n) lim = (int)pfx->ids.n;
  while (k < lim && pfx->ids.v[k] == prompt[k]) k++;
  return k;
}

int gen_positions(const Gpt2Model *m, int n_prompt, int max_tokens) {
  /* the prompt (an empty one is the eos token), then every generated token
  ** but the last, which is returned without being fed */
  int64_t n = (int64_t)(n_prompt > 1 ? n_prompt : 1) + (max_tokens > 1 ? max_tokens - 1 : 0);
  return n < m->cfg.n_positions ? (int)n : m->cfg.n_positions;
}

/* Set g up for the prompt. spare, when given, belongs to g from the first
** line on (g->seq), whatever happens next: gen_free is what frees it. A
** cache is stolen from pfx only when there is no spare to use. */
static int prepare(Gpt2Gen *g, const Gpt2Model *m, Gpt2Scratch *sc, Gpt2Counters *ctr,
                   const int *prompt, int n, const Gpt2GenParams *p, Gpt2Prefix *pfx, int steal,
                   Gpt2Seq *spare, char *err, size_t errlen) {
  memset(g, 0, sizeof *g);
  g->seq = spare;
  g->m = model_retain(m);
  g->sc = sc;
  g->ctr = ctr;
  g->p = *p;
  g->last = -1;
  rng_seed(&g->rng, p->seed);
  int eos = m->cfg.eos_id;
  if (n == 0) { /* unconditional generation starts from eos (GPT-2's convention) */
    if (eos < 0) return gpt2_errorf(err, errlen, "an empty prompt needs an eos token, and the "
                                    "checkpoint declares none");
    prompt = &eos;
    n = 1;
  }
  if (n > m->cfg.n_positions)
    return gpt2_errorf(err, errlen, "prompt is %d tokens, longer than the context (%d)", n,
                       m->cfg.n_positions);
  g->logits = malloc((size_t)m->cfg.vocab_size * sizeof(float));
  if (!g->logits) return GPT2_NOMEM;
  int reuse = reusable(pfx, m, prompt, n), stolen = reuse && steal && !g->seq;
  if (stolen) {
    g->seq = pfx->seq;
    pfx->seq = NULL;
    seq_truncate(g->seq, reuse);
  } else {
    if (!g->seq && !(g->seq = seq_new(m))) return GPT2_NOMEM;
    seq_truncate(g->seq, 0);
  }
  /* every position it may fill, at once */
  if (seq_reserve(g->seq, m, gen_positions(m, n, p->max_tokens))) return GPT2_NOMEM;
  if (reuse && !stolen && seq_copy_prefix(g->seq, pfx->seq, m, reuse)) return GPT2_NOMEM;
  if (reuse) {
    if (idvec_reserve(&g->fed, (size_t)reuse)) return GPT2_NOMEM;
    memcpy(g->fed.v, prompt, (size_t)reuse * sizeof *prompt);
    g->fed.n = (size_t)reuse;
    if (ctr) ctr->prefix_reused += reuse;
  }
  if (idvec_reserve(&g->unfed, (size_t)(n - reuse))) return GPT2_NOMEM;
  memcpy(g->unfed.v, prompt + reuse, (size_t)(n - reuse) * sizeof *prompt);
  g->unfed.n = (size_t)(n - reuse);
  g->n_prompt = n;
  if (p->max_tokens <= 0) {
    g->done = 1;
    g->finish = GEN_LENGTH;
  }
  return opt_state_init(&g->os, p->opt, m->cfg.vocab_size, prompt, n, p->max_tokens);
}

int gen_prepare(Gpt2Gen *g, const Gpt2Model *m, Gpt2Scratch *sc, Gpt2Counters *ctr,
                const int *prompt, int n, const Gpt2GenParams *p, Gpt2Prefix *pfx,
                Gpt2Seq *spare, char *err, size_t errlen) {
  return prepare(g, m, sc, ctr, prompt, n, p, pfx, 0, spare, err, errlen);
}

int gen_start(Gpt2Gen *g, const Gpt2Model *m, Gpt2Scratch *sc, Gpt2Counters *ctr,
              const int *prompt, int n, const Gpt2GenParams *p, Gpt2Prefix *pfx, int steal,
              char *err, size_t errlen) {
  int rc = prepare(g, m, sc, ctr, prompt, n, p, pfx, steal, NULL, err, errlen);
  if (rc) return rc;
  /* fed even when done: the state may still serve as a prefix */
  rc = feed(g, (int)g->unfed.n, g->unfed.v, err, errlen);
  if (rc == GPT2_OK) g->unfed.n = 0;
  return rc;
}

int gen_save_prefix(Gpt2Gen *g, Gpt2Prefix *pfx, int steal) {
  if (!g->seq) return GPT2_OK;
  if (steal) {
    prefix_clear(pfx);
    pfx->m = model_retain(g->m);
    pfx->seq = g->seq;
    pfx->ids = g->fed;
    g->seq = NULL;
    memset(&g->fed, 0, sizeof g->fed);
    return GPT2_OK;
  }
  if (!pfx->seq || pfx->m != g->m) {
    prefix_clear(pfx);
    pfx->seq = seq_new(g->m);
    if (!pfx->seq) return GPT2_NOMEM;
    pfx->m = model_retain(g->m);
  }
  pfx->ids.n = 0;
  if (idvec_reserve(&pfx->ids, (size_t)g->n_prompt)) return GPT2_NOMEM;
  memcpy(pfx->ids.v, g->fed.v, (size_t)g->n_prompt * sizeof(int));
  pfx->ids.n = (size_t)g->n_prompt;
  seq_truncate(pfx->seq, 0);
  if (seq_copy_prefix(pfx->seq, g->seq, g->m, g->n_prompt)) {
    prefix_clear(pfx);
    return GPT2_NOMEM;
  }
  return GPT2_OK;
}

/* Choose the next token from g's logits (the sampler and rng are g's own,
** so different generations may choose at once). -1 on OOM. */
static int choose(Gpt2Gen *g, double *logprob) {
  const float *lg = g->pick_from ? g->pick_from : g->logits;
  int V = g->m->cfg.vocab_size;
  g->pick_from = NULL;
  /* the processors write g's own copy: lg may be the scratch's shared output */
  const float *use = opt_apply(&g->os, g->p.opt, lg, V, g->m->cfg.eos_id, g->n_generated);
  int id = sampler_pick(&g->sampler, use, V, &g->p.sample, &g->rng,
                        use == lg ? logprob : NULL); /* NULL: not computed (a pass of exp over V) */
  if (id >= 0 && logprob && use != lg) *logprob = sampler_logprob(lg, V, id);
  return id;
}

/* Take the chosen token: counters and the stop rules. */
static int take(Gpt2Gen *g, int id, int *tok) {
  if (id < 0) return GPT2_NOMEM;
  if (g->ctr) g->ctr->tokens_generated++;
  *tok = id;
  if (id == g->m->cfg.eos_id) { /* returned so that streams can end on it */
    g->done = 1;
    g->finish = GEN_EOS;
    return GPT2_OK;
  }
  g->n_generated++;
  g->last = id;
  opt_state_add(&g->os, g->p.opt, id);
  /* the last position's logits gave this token: it cannot be fed (it would
  ** need position n_positions), so it is the last one */
  if (g->n_prompt + g->n_generated > g->m->cfg.n_positions) {
    g->done = 1;
    g->finish = GEN_CONTEXT;
  } else if (g->n_generated >= g->p.max_tokens) {
    g->done = 1;
    g->finish = GEN_LENGTH;
  }
  return GPT2_OK;
}

int gen_take(Gpt2Gen *g, int id, int *tok) { return take(g, id, tok); }

int gen_stopped(const Gpt2Gen *g, char *err, size_t errlen) { return stopped(&g->p, err, errlen); }

static int pick(Gpt2Gen *g, int *tok, double *logprob) {
  return take(g, choose(g, logprob), tok);
}

int gen_next(Gpt2Gen *g, int *tok, double *logprob, char *err, size_t errlen) {
  *tok = -1;
  if (logprob) *logprob = 0;
  if (g->done) return GPT2_OK;
  if (g->last >= 0) {
    int rc = feed(g, 1, &g->last, err, errlen);
    if (rc) {
      g->done = 1;
      return rc;
    }
  }
  return pick(g, tok, logprob);
}

/* One forward call over gs[0..n): the last token of each live generation
** (when decode), then pending prompt rows while they fit in GEN_STEP_ROWS.
** ready[i] is set when gs[i]'s logits are fresh (a decode row, or the last
** row of its prompt). */
static int step(Gpt2Gen *const *gs, int n, int decode, unsigned char *ready, char *err,
                size_t errlen) {
  int rows = 0, wanted = 0, rc = GPT2_OK;
  if (n <= 0) return GPT2_OK;
  /* rows of gs[i] this step: its decode row, or a chunk of its prompt */
  int *take = calloc((size_t)n, sizeof *take);
  unsigned char *prompt = calloc((size_t)n, 1);
  if (!take || !prompt) {
    free(take);
    free(prompt);
    return GPT2_NOMEM;
  }
  for (int i = 0; i < n; i++) {
    const Gpt2Gen *g = gs[i];
    take[i] = decode && !g->done && !g->unfed.n && g->last >= 0;
    rows += take[i];
  }
  int budget = rows < GEN_STEP_ROWS ? GEN_STEP_ROWS - rows : 0;
  for (int i = 0; i < n && budget; i++) {
    if (gs[i]->done || !gs[i]->unfed.n) continue;
    take[i] = gs[i]->unfed.n < (size_t)budget ? (int)gs[i]->unfed.n : budget;
    prompt[i] = 1;
    budget -= take[i];
    rows += take[i];
  }
  if (!rows || stopped(&gs[0]->p, err, errlen)) {
    free(take);
    free(prompt);
    return rows ? GPT2_INTERRUPTED : GPT2_OK;
  }
  const Gpt2Model *m = gs[0]->m;
  size_t V = (size_t)m->cfg.vocab_size;
  int *ids = malloc((size_t)rows * sizeof *ids);
  Gpt2Seq **seqs = malloc((size_t)rows * sizeof *seqs);
  unsigned char *want = malloc((size_t)rows);
  float *logits = NULL;
  if (!ids || !seqs || !want) rc = GPT2_NOMEM;
  int r = 0;
  for (int i = 0; !rc && i < n; i++) {
    Gpt2Gen *g = gs[i];
    const int *src = prompt[i] ? g->unfed.v : &g->last;
    for (int t = 0; t < take[i]; t++) {
      ids[r] = src[t];
      seqs[r] = g->seq;
      want[r] = t == take[i] - 1 && (!prompt[i] || (size_t)take[i] == g->unfed.n);
      wanted += want[r++];
    }
  }
  if (!rc && wanted && !(logits = scratch_out(gs[0]->sc, (size_t)wanted * V))) rc = GPT2_NOMEM;
  if (!rc) rc = gen_forward(m, gs[0]->sc, gs[0]->ctr, rows, ids, seqs, want, logits, err, errlen);
  r = 0;
  int w = 0;
  for (int i = 0; !rc && i < n; i++) {
    Gpt2Gen *g = gs[i];
    int k = take[i];
    if (!k) continue;
    const int *src = prompt[i] ? g->unfed.v : &g->last;
    if (idvec_reserve(&g->fed, g->fed.n + (size_t)k)) {
      rc = GPT2_NOMEM;
      break;
    }
    memcpy(g->fed.v + g->fed.n, src, (size_t)k * sizeof *src);
    g->fed.n += (size_t)k;
    r += k;
    if (want[r - 1]) { /* a decode step's rows are picked before the next
                          forward: they read the output in place */
      if (decode) g->pick_from = logits + (size_t)w++ * V;
      else memcpy(g->logits, logits + (size_t)w++ * V, V * sizeof *logits);
      ready[i] = 1;
    }
    if (prompt[i]) { /* drop the fed rows from pending */
      memmove(g->unfed.v, g->unfed.v + k, (g->unfed.n - (size_t)k) * sizeof *src);
      g->unfed.n -= (size_t)k;
    }
  }
  free(take);
  free(prompt);
  free(ids);
  free(seqs);
  free(want);
  return rc;
}

int gen_feed_batch(Gpt2Gen *const *gs, int n, char *err, size_t errlen) {
  unsigned char *ready = calloc((size_t)n + 1, 1);
  if (!ready) return GPT2_NOMEM;
  int rc = GPT2_OK, more = 1;
  while (!rc && more) {
    rc = step(gs, n, 0, ready, err, errlen);
    more = 0;
    for (int i = 0; i < n; i++)
      if (!gs[i]->done && gs[i]->unfed.n) more = 1;
  }
  free(ready);
  return rc;
}

typedef struct PickJob {
  Gpt2Gen *const *gs;
  const unsigned char *ready;
  int *ids;
  double *logprobs;
} PickJob;

static void choose_one(void *arg, int i) {
  PickJob *j = arg;
  if (j->ready[i] && !j->gs[i]->done)
    j->ids[i] = choose(j->gs[i], j->logprobs ? &j->logprobs[i] : NULL);
}

int gen_next_batch(Gpt2Gen *const *gs, int n, int *toks, double *logprobs, char *err,
                   size_t errlen) {
  unsigned char *ready = calloc((size_t)n + 1, 1);
  if (!ready) return GPT2_NOMEM;
  for (int i = 0; i < n; i++) {
    toks[i] = -1;
    if (logprobs) logprobs[i] = 0;
    /* fed by gen_start or gen_feed_batch, nothing picked yet */
    ready[i] = !gs[i]->done && !gs[i]->unfed.n && gs[i]->last < 0;
  }
  int rc = step(gs, n, 1, ready, err, errlen);
  /* choose on the connection's threads (a sampled pick ranks all V logits,
  ** which for a large batch costs as much as the step's forward pass:
  ** README, "Whole-table completion"), sampler memory reserved first so
  ** that no pick allocates; then take them in order */
  int *ids = rc ? NULL : malloc((size_t)n * sizeof *ids);
  if (!rc && !ids) rc = GPT2_NOMEM;
  for (int i = 0; !rc && i < n; i++)
    if (ready[i] && !gs[i]->done &&
        sampler_reserve(&gs[i]->sampler, gs[i]->m->cfg.vocab_size, &gs[i]->p.sample))
      rc = GPT2_NOMEM;
  if (!rc) {
    PickJob j = {.gs = gs, .ready = ready, .ids = ids, .logprobs = logprobs};
    scratch_parallel(gs[0]->sc, n, choose_one, &j);
  }
  for (int i = 0; !rc && i < n; i++)
    if (ready[i] && !gs[i]->done) rc = take(gs[i], ids[i], &toks[i]);
  for (int i = 0; i < n; i++) gs[i]->pick_from = NULL; /* the output is the scratch's again */
  free(ids);
  free(ready);
  return rc;
}

/* Move the first n bytes of b to the end of out. */
static int move_front(ByteBuf *b, size_t n, ByteBuf *out) {
  if (n && buf_append(out, b->p, n)) return GPT2_NOMEM;
  if (n) {
    memmove(b->p, b->p + n, b->n - n);
    b->n -= n;
  }
  return GPT2_OK;
}

int gen_take_text(Gpt2Gen *g, int tok, int flush, ByteBuf *text) {
  const Gpt2Options *o = g->p.opt;
  int stops = o && o->n_stop > 0;
  size_t len = 0;
  const char *b = tok >= 0 && tok != g->m->cfg.eos_id ? tok_bytes(g->m->tok, tok, &len) : NULL;
  if (b && len && buf_append(&g->pending, b, len)) return GPT2_NOMEM;
  size_t keep = flush ? g->pending.n : utf8_complete_prefix(g->pending.p, g->pending.n);
  /* complete characters go to text, or first to held when stop strings
  ** are searched (they are matched on the text as returned) */
  if (keep && utf8_append_sanitized(stops ? &g->held : text, g->pending.p, keep))
    return GPT2_NOMEM;
  if (keep) {
    memmove(g->pending.p, g->pending.p + keep, g->pending.n - keep);
    g->pending.n -= keep;
  }
  if (stops) {
    /* Nothing emitted can start a stop string (it was held while it could),
    ** so a match starts inside held. */
    size_t at;
    if (opt_stop_find(o, g->held.p, g->held.n, &at)) {
      if (move_front(&g->held, at, text)) return GPT2_NOMEM;
      g->held.n = 0;
      g->pending.n = 0;
      g->done = 1;
      g->finish = GEN_STOP;
    } else {
      size_t hold = flush ? 0 : opt_stop_hold(o, g->held.p, g->held.n);
      if (move_front(&g->held, g->held.n - hold, text)) return GPT2_NOMEM;
    }
  }
  if (!text->p && buf_append(text, "", 0)) return GPT2_NOMEM;
  return GPT2_OK;
}

void gen_free(Gpt2Gen *g) {
  seq_free(g->seq);
  free(g->logits);
  idvec_free(&g->fed);
  idvec_free(&g->unfed);
  sampler_free(&g->sampler);
  buf_free(&g->pending);
  buf_free(&g->held);
  opt_state_free(&g->os);
  model_release(g->m);
  memset(g, 0, sizeof *g);
}
