/*
** score.c — log-probabilities of given tokens (windows, batched feeding,
** log-softmax, ranks, top alternatives) and pooled embeddings; score.h
** has the definitions.
*/
#include "score.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* One window of one job: tokens [ws, we) of job->ids, scoring [ts, we).
** Its fed rows are ids[ws .. we-2]; row r's logits score ids[ws + r + 1]. */
typedef struct Win {
  ScoreJob *job;
  int ws, we, ts;
  int fed;      /* rows fed so far */
  Gpt2Seq *seq; /* its KV cache while it is being fed */
} Win;

/* A wanted row of a step: the token its logits score. */
typedef struct Out {
  ScoreJob *job;
  int t; /* index into job->ids */
} Out;

int score_default_stride(const Gpt2Model *m) {
  int s = m->cfg.n_positions / 2;
  return s > 0 ? s : 1;
}

static int stopped(const ScoreParams *p, char *err, size_t errlen) {
  if (!p->stop || !p->stop(p->stop_arg)) return 0;
  gpt2_errorf(err, errlen, "interrupted");
  return 1;
}

/* The windows of every job, in job order (see score.h, WINDOWS). */
static int build_windows(ScoreJob *jobs, int n_jobs, int P, int stride, Win **out, int *n_out) {
  const int64_t W = (int64_t)P + 1;
  size_t count = 0, cap = 0;
  Win *w = NULL;
  for (int j = 0; j < n_jobs; j++) {
    ScoreJob *jb = &jobs[j];
    int64_t prev_end = 0;
    for (int64_t ws = 0; jb->n > jb->s0; ws += stride) {
      int64_t we = ws + W < jb->n ? ws + W : jb->n;
      int64_t ts = prev_end > jb->s0 ? prev_end : jb->s0;
      if (we > ts) {
        if (count == cap) {
          size_t nc = cap ? 2 * cap : 8;
          Win *nw = realloc(w, nc * sizeof *nw);
          if (!nw) {
            free(w);
            return GPT2_NOMEM;
          }
          w = nw;
          cap = nc;
        }
        w[count++] = (Win){.job = jb, .ws = (int)ws, .we = (int)we, .ts = (int)ts};
      }
      prev_end = we;
      if (we == jb->n) break;
    }
  }
  *out = w;
  *n_out = (int)count;
  return GPT2_OK;
}

/* ---------------------------------------------------------------------------
** per-token statistics of one row of logits
*/

typedef struct StatJob {
  float *logits; /* (n_out, V); each row is overwritten by its exps */
  int V;
  KPath path;
  const Out *outs;
} StatJob;

/* Insert (v, id) into the descending list best[0..*cnt) of at most n;
** equal logits keep the lower id (scanned first) in front. */
static void top_insert(float *bv, int *bi, int *cnt, int n, float v, int id) {
  int j = *cnt < n ? (*cnt)++ : n - 1;
  while (j > 0 && bv[j - 1] < v) {
    bv[j] = bv[j - 1];
    bi[j] = bi[j - 1];
    j--;
  }
  bv[j] = v;
  bi[j] = id;
}

static void row_stats(void *arg, int w) {
  StatJob *sj = arg;
  const int V = sj->V;
  float *lg = sj->logits + (size_t)w * V;
  ScoreJob *job = sj->outs[w].job;
  const int t = sj->outs[w].t, k = t - job->s0, target = job->ids[t];
  const float lt = lg[target];
  if (job->rank) { /* ties go to the lower id, as greedy decoding picks */
    int above = 0;
    for (int i = 0; i < target; i++) above += lg[i] >= lt;
    for (int i = target + 1; i < V; i++) above += lg[i] > lt;
    job->rank[k] = above + 1;
  }
  float bv[SCORE_MAX_TOP];
  int bi[SCORE_MAX_TOP], cnt = 0, n = job->top ? job->top_n : 0;
  for (int i = 0; n > 0 && i < V; i++) {
    float v = lg[i];
    if (v == v && (cnt < n || v > bv[n - 1])) top_insert(bv, bi, &cnt, n, v, i);
  }
  /* log Σ exp(l - max), exps in float (exact to 2e-7, vectorised), sum in
  ** double in a fixed order */
  const float mx = k_max(sj->path, lg, V);
  k_exp_sub(sj->path, lg, V, mx);
  double a[8] = {0};
  int i = 0;
  for (; i + 8 <= V; i += 8)
    for (int u = 0; u < 8; u++) a[u] += lg[i + u];
  for (; i < V; i++) a[0] += lg[i];
  double sum = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
  double logz = (double)mx + log(sum);
  job->lp[k] = (double)lt - logz;
  for (int r = 0; r < cnt; r++) {
    ScoreTop *o = &job->top[(size_t)k * job->top_n + r];
    o->id = bi[r];
    o->logprob = (double)bv[r] - logz;
  }
  for (int r = cnt; r < n; r++) /* fewer candidates than asked (NaN logits) */
    job->top[(size_t)k * job->top_n + r] = (ScoreTop){.id = -1, .logprob = -INFINITY};
}

/* ---------------------------------------------------------------------------
** scoring
*/

/* Positions of pfx's state usable by a window starting at 0 whose first
** scored token is ts: the common prefix, but row ts-1 is always computed
** (its logits score ids[ts]). */
static int reusable(const Gpt2Prefix *pfx, const Gpt2Model *m, const ScoreJob *jb, int ts) {
  if (!pfx || pfx->m != m || !pfx->seq) return 0;
  int lim = ts - 1, k = 0;
  if ((size_t)lim > pfx->ids.n) lim = (int)pfx->ids.n;
  if (lim > pfx->seq->n_pos) lim = pfx->seq->n_pos;
  while (k < lim && pfx->ids.v[k] == jb->ids[k]) k++;
  return k;
}

/* Finished windows' caches serve later ones (short rows: no allocation
** and page faults per row). Spares hold at most SCORE_STEP_ROWS positions
** in all, and one is taken only by a window that needs at least half of
** it: the caches held stay within about twice what a step's windows need
** (its first and last window may be long, the ones between hold the
** step's rows) plus the spares. */
static Gpt2Seq *take_spare(Gpt2Seq **spare, int *n, int *pos, int need) {
  for (int i = *n - 1; i >= 0; i--) {
    Gpt2Seq *q = spare[i];
    if (q->cap < need || q->cap > 2 * need) continue;
    spare[i] = spare[--*n];
    *pos -= q->cap;
    seq_truncate(q, 0);
    return q;
  }
  return NULL;
}

/* Leave window x's state in pfx: ids[0..fed) in x's cache. On OOM the
** cache is simply dropped (the state is only an optimisation). */
static void save_prefix(Gpt2Prefix *pfx, const Gpt2Model *m, Win *x) {
  prefix_clear(pfx);
  if (idvec_reserve(&pfx->ids, (size_t)x->fed)) {
    prefix_clear(pfx);
    return;
  }
  memcpy(pfx->ids.v, x->job->ids, (size_t)x->fed * sizeof(int));
  pfx->ids.n = (size_t)x->fed;
  pfx->m = model_retain(m);
  pfx->seq = x->seq;
  x->seq = NULL;
}

int score_run(const Gpt2Model *m, Gpt2Scratch *sc, Gpt2Counters *ctr, ScoreJob *jobs, int n_jobs,
              const ScoreParams *p, Gpt2Prefix *pfx, char *err, size_t errlen) {
  const int P = m->cfg.n_positions, V = m->cfg.vocab_size;
  if (P < 1) return gpt2_errorf(err, errlen, "the context (n_positions %d) is too short", P);
  int stride = p->stride < 1 ? 1 : p->stride > P ? P : p->stride;
  Win *wins = NULL;
  int nwin = 0;
  int rc = build_windows(jobs, n_jobs, P, stride, &wins, &nwin);
  if (rc || nwin == 0) {
    free(wins);
    return rc;
  }
  KPath path;
  if (kpath_parse(scratch_kernel(sc), &path)) path = KPATH_PORTABLE;
  int keep = pfx && n_jobs == 1 && nwin == 1; /* the one window meets pfx */
  if (keep && pfx->m == m && pfx->seq) {
    int reuse = reusable(pfx, m, wins[0].job, wins[0].ts);
    wins[0].seq = pfx->seq; /* its memory at least */
    pfx->seq = NULL;
    seq_truncate(wins[0].seq, reuse);
    wins[0].fed = reuse;
    if (ctr) ctr->prefix_reused += reuse;
  }
  if (keep) prefix_clear(pfx); /* replaced by this window's state at the end */

  const int STEP = SCORE_STEP_ROWS;
  int *ids = malloc((size_t)STEP * sizeof *ids);
  Gpt2Seq **seqs = malloc((size_t)STEP * sizeof *seqs);
  unsigned char *want = malloc((size_t)STEP);
  Out *outs = malloc((size_t)STEP * sizeof *outs);
  Gpt2Seq **spare = calloc((size_t)STEP + 1, sizeof *spare);
  int n_spare = 0, spare_pos = 0; /* spares and the positions they hold */
  if (!ids || !seqs || !want || !outs || !spare) rc = GPT2_NOMEM;
  for (int cur = 0; !rc && cur < nwin;) {
    if (stopped(p, err, errlen)) {
      rc = GPT2_INTERRUPTED;
      break;
    }
    int rows = 0, nw = 0, last = cur;
    for (int w = cur; w < nwin && rows < STEP; w++) {
      Win *x = &wins[w];
      int left = x->we - x->ws - 1 - x->fed;
      int take = left < STEP - rows ? left : STEP - rows;
      if (!x->seq) {
        x->seq = take_spare(spare, &n_spare, &spare_pos, x->we - x->ws - 1);
        if (!x->seq && !(x->seq = seq_new(m))) {
          rc = GPT2_NOMEM;
          break;
        }
      }
      if (seq_reserve(x->seq, m, x->we - x->ws - 1)) {
        rc = GPT2_NOMEM;
        break;
      }
      for (int r = x->fed; r < x->fed + take; r++, rows++) {
        int t = x->ws + r + 1; /* the token row r's logits score */
        ids[rows] = x->job->ids[x->ws + r];
        seqs[rows] = x->seq;
        want[rows] = t >= x->ts;
        if (want[rows]) outs[nw++] = (Out){.job = x->job, .t = t};
      }
      x->fed += take;
      last = w;
    }
    float *logits = NULL;
    if (!rc && nw && !(logits = scratch_out(sc, (size_t)nw * V))) rc = GPT2_NOMEM;
    if (!rc) rc = gen_forward(m, sc, ctr, rows, ids, seqs, want, logits, err, errlen);
    if (rc) break;
    StatJob sj = {.logits = logits, .V = V, .path = path, .outs = outs};
    scratch_parallel(sc, nw, row_stats, &sj);
    /* windows fed to their end are done: their caches serve the next ones */
    for (; cur <= last && wins[cur].fed == wins[cur].we - wins[cur].ws - 1; cur++) {
      if (keep) continue; /* its state goes to pfx below */
      Gpt2Seq *q = wins[cur].seq;
      if (n_spare <= STEP && spare_pos + q->cap <= STEP) {
        spare[n_spare++] = q;
        spare_pos += q->cap;
      } else {
        seq_free(q);
      }
      wins[cur].seq = NULL;
    }
  }
  if (!rc && keep) save_prefix(pfx, m, &wins[0]);
  for (int w = 0; w < nwin; w++) seq_free(wins[w].seq);
  for (int i = 0; i < n_spare; i++) seq_free(spare[i]);
  free(spare);
  free(outs);
  free(want);
  free(seqs);
  free(ids);
  free(wins);
  return rc;
}

/* ---------------------------------------------------------------------------
** embeddings
*/

int score_embed(const Gpt2Model *m, Gpt2Scratch *sc, Gpt2Counters *ctr, const int *ids, int n,
                int last, int normalize, const ScoreParams *p, float *out, char *err,
                size_t errlen) {
  const int C = m->cfg.n_embd, STEP = SCORE_STEP_ROWS;
  if (n < 1 || n > m->cfg.n_positions)
    return gpt2_errorf(err, errlen, "%d tokens do not fit the context (n_positions %d)", n,
                       m->cfg.n_positions);
  Gpt2Seq *seq = seq_new(m);
  double *acc = calloc((size_t)C, sizeof *acc);
  Gpt2Seq **seqs = malloc((size_t)STEP * sizeof *seqs);
  unsigned char *want = malloc((size_t)STEP);
  int rc = !seq || !acc || !seqs || !want ? GPT2_NOMEM : seq_reserve(seq, m, n);
  for (int i = 0; !rc && i < STEP; i++) seqs[i] = seq;
  for (int r0 = 0; !rc && r0 < n; r0 += STEP) {
    int k = n - r0 < STEP ? n - r0 : STEP;
    if (stopped(p, err, errlen)) {
      rc = GPT2_INTERRUPTED;
      break;
    }
    for (int i = 0; i < k; i++) want[i] = !last || r0 + i == n - 1;
    rc = gen_forward(m, sc, ctr, k, ids + r0, seqs, want, NULL, err, errlen);
    if (rc) break;
    const float *h = scratch_hidden(sc); /* the wanted rows, packed */
    int nw = last ? (r0 + k == n) : k;
    for (int i = 0; i < nw; i++)
      for (int c = 0; c < C; c++) acc[c] += h[(size_t)i * C + c];
  }
  if (!rc) {
    double norm = 0;
    for (int c = 0; c < C; c++) {
      if (!last) acc[c] /= n;
      norm += acc[c] * acc[c];
    }
    norm = sqrt(norm);
    for (int c = 0; c < C; c++) out[c] = (float)(normalize && norm > 0 ? acc[c] / norm : acc[c]);
  }
  seq_free(seq);
  free(acc);
  free(seqs);
  free(want);
  return rc;
}
