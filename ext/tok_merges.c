/*
** tok_merges.c — loading merges.txt (runs on tok_load's helper thread and
** touches only the unit and merge fields): line k, after an optional
** "#version" line, gives the pair (left, right) rank k; a hash maps the unit
** pair to its rank (a dense 256x256 table for byte pairs).
** Malformed: a line that is not "left right" (one space), a character
** outside GPT-2's 256 byte characters, a blank line followed by more merges.
** A repeated pair takes its last rank (as encoder.py's dict does). \r\n line
** ends are accepted. The parts' presence in the vocabulary is checked later,
** by tok_load.c.
*/
#include <stdlib.h>

#include "tok_private.h"

static void pair_prefetch(const Tokenizer *t, int32_t a, int32_t b) {
#if defined(__GNUC__)
  if ((a | b) >= 256) __builtin_prefetch(&t->pair[pair_home(t, a, b)]);
#else
  (void)t, (void)a, (void)b;
#endif
}

/* One merges.txt line, unmapped: left bytes then right bytes at raw+off. */
typedef struct MergeText {
  uint32_t off, alen, blen, line;
} MergeText;

static int parse_merges(MergeJob *job) {
  Tokenizer *t = job->t;
  char *text;
  size_t n;
  int rc = gpt2_read_file(job->path, &text, &n, MAX_FILE, job->err, sizeof job->err);
  if (rc) return rc;
  size_t lines = 1;
  for (const char *p = text; (p = memchr(p, '\n', n - (size_t)(p - text))); p++) lines++;
  size_t pslots = 16;
  while (pslots < lines * 2) pslots *= 2;
  unsigned char *raw = malloc(n + 1);
  MergeText *mt = malloc(lines * sizeof *mt);
  t->ucap = 2 * n + 256;
  t->ubytes = malloc(t->ucap);
  t->uspan_cap = 1024 + lines; /* about one new unit per line; both grow */
  t->uspan = malloc(t->uspan_cap * sizeof *t->uspan);
  t->brank = malloc(65536 * sizeof *t->brank);
  t->pair = malloc(pslots * sizeof *t->pair);
  t->merge_a = malloc(lines * sizeof *t->merge_a);
  t->merge_b = malloc(lines * sizeof *t->merge_b);
  t->merge_to = malloc(lines * sizeof *t->merge_to);
  t->merge_line = malloc(lines * sizeof *t->merge_line);
  if (!raw || !mt || !t->ubytes || !t->uspan || !t->brank || !t->pair || !t->merge_a ||
      !t->merge_b || !t->merge_to || !t->merge_line || tk_tab_init(&t->utab, t->uspan_cap)) {
    rc = GPT2_NOMEM;
    goto done;
  }
  /* Pass 1: split and unmap the lines. */
  size_t blank = 0, line = 0, nm = 0, used = 0;
  for (size_t i = 0; i < n;) {
    const char *s = text + i;
    const char *nl = memchr(s, '\n', n - i);
    size_t len = nl ? (size_t)(nl - s) : n - i;
    i += len + 1;
    line++;
    if (len && s[len - 1] == '\r') len--;
    if (!len) {
      if (!blank) blank = line;
      continue;
    }
    if (blank) {
      job->stop_line = (int)blank;
      gpt2_errorf(job->err, sizeof job->err, "%s line %zu: blank line before more merges",
                  job->path, blank);
      break;
    }
    if (len >= 8 && memcmp(s, "#version", 8) == 0) continue;
    const char *sp = memchr(s, ' ', len);
    size_t an = sp ? (size_t)(sp - s) : 0, bn = sp ? len - an - 1 : 0, ab, bb;
    if (!an || !bn || memchr(sp + 1, ' ', bn)) {
      job->stop_line = (int)line;
      gpt2_errorf(job->err, sizeof job->err,
                  "%s line %zu: expected two tokens separated by one space, got \"%.*s\"",
                  job->path, line, tk_clip(s, len, 200), s);
      break;
    }
    uint32_t badc;
    int bad = tk_unmap(s, an, raw + used, &ab, &badc);
    const char *which = s;
    size_t wn = an;
    if (!bad) {
      bad = tk_unmap(sp + 1, bn, raw + used + ab, &bb, &badc);
      which = sp + 1, wn = bn;
    }
    if (bad) { /* a character no vocabulary key can contain */
      job->stop_line = (int)line;
      if (bad == UNMAP_UTF8)
        gpt2_errorf(job->err, sizeof job->err, "%s line %zu: not valid UTF-8", job->path, line);
      else
        gpt2_errorf(job->err, sizeof job->err,
                    "%s line %zu: \"%.*s\" is not in the vocabulary (U+%04lX is not one of "
                    "GPT-2's 256 byte characters)",
                    job->path, line, tk_clip(which, wn, 200), which, (unsigned long)badc);
      break;
    }
    mt[nm++] = (MergeText){(uint32_t)used, (uint32_t)ab, (uint32_t)bb, (uint32_t)line};
    used += ab + bb;
  }
  /* Pass 2: units and ranks, looking a few lines ahead. */
  for (int i = 0; i < 65536; i++) t->brank[i] = RANK_NONE;
  for (size_t i = 0; i < pslots; i++) t->pair[i].key = PAIR_EMPTY;
  t->pair_mask = (uint32_t)(pslots - 1);
  t->pair_shift = 64;
  for (size_t s = pslots; s > 1; s >>= 1) t->pair_shift--;
  for (int b = 0; b < 256; b++) {
    unsigned char c = (unsigned char)b;
    tk_unit_intern(t, &c, 1, hash_bytes(&c, 1)); /* unit b = byte b; room was reserved */
  }
  uint32_t hq[LOOKAHEAD][3]; /* hashes of the lines j .. j+LOOKAHEAD-1 */
  for (size_t k = 0; k < nm + LOOKAHEAD; k++) {
    uint32_t *h = hq[k % LOOKAHEAD]; /* line j = k-LOOKAHEAD's, then line k's */
    if (k >= LOOKAHEAD) {
      size_t j = k - LOOKAHEAD;
      const MergeText *m = &mt[j];
      const unsigned char *p = raw + m->off;
      int32_t a = tk_unit_intern(t, p, m->alen, h[0]);
      int32_t b = tk_unit_intern(t, p + m->alen, m->blen, h[1]);
      int32_t to = a < 0 || b < 0 ? -1 : tk_unit_intern(t, p, m->alen + m->blen, h[2]);
      if (to < 0) {
        rc = GPT2_NOMEM;
        goto done;
      }
      t->merge_a[j] = a;
      t->merge_b[j] = b;
      t->merge_to[j] = to;
      t->merge_line[j] = (int32_t)m->line;
    }
    if (k < nm) {
      const MergeText *f = &mt[k];
      h[0] = tab_prefetch(&t->utab, raw + f->off, f->alen);
      h[1] = tab_prefetch(&t->utab, raw + f->off + f->alen, f->blen);
      h[2] = tab_prefetch(&t->utab, raw + f->off, f->alen + f->blen);
    }
  }
  t->n_merges = (int)nm;
  for (size_t k = 0; k < nm; k++) { /* rank k; a repeated pair keeps its last rank */
    if (k + 8 < nm) pair_prefetch(t, t->merge_a[k + 8], t->merge_b[k + 8]);
    tk_pair_set(t, t->merge_a[k], t->merge_b[k], (int32_t)k);
  }
done:
  free(mt);
  free(raw);
  free(text);
  return rc;
}

void *tk_merge_job(void *arg) {
  MergeJob *job = arg;
  job->rc = parse_merges(job);
  if (!job->rc) job->rc = tk_compile_pattern(job->t, job->err, sizeof job->err);
  return NULL;
}
