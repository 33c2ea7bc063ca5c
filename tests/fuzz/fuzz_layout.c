/*
** fuzz_layout — a checkpoint's tensor layout against its config (model_load):
** tensor presence, name styles, dtypes, shapes, the tied / untied head, F16 /
** BF16 conversion and packing, then one forward pass over the weights.
**
** Input: model.safetensors. The directory's config.json, vocab.json and
** merges.txt are the micro checkpoint's (1 layer, n_embd 8, 2 heads, 16
** positions), so seeds made from that shape get past the header checks.
** Invariants: a loaded model has finite-sized, consistent fields and runs
** a 3-token forward pass; a failure names the file it is about.
*/
#include "fuzz_common.h"

#include "model.h"
#include "transformer.h"

static char dir[PATH_MAX];
static Gpt2Scratch *sc;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  fz_init((*argv)[0]);
  char src[PATH_MAX];
  fz_subdir("layout", dir, sizeof dir);
  fz_copy(fz_fixture("micro/config.json", src, sizeof src), dir, "config.json");
  fz_copy(fz_fixture("micro/vocab.json", src, sizeof src), dir, "vocab.json");
  fz_copy(fz_fixture("micro/merges.txt", src, sizeof src), dir, "merges.txt");
  sc = scratch_new();
  if (!sc) abort();
  scratch_set_threads(sc, 1); /* the core reads no GPT2_THREADS: one thread, as fz_init wants */
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_write(dir, "model.safetensors", data, size);
  Gpt2Model *m = NULL;
  char err[GPT2_ERRLEN];
  err[0] = 0;
  int rc = model_load(dir, &m, err, sizeof err);
  if (rc == GPT2_NOMEM) return 0;
  if (rc) {
    FZ_CHECK(rc == GPT2_ERROR && m == NULL, "rc %d", rc);
    FZ_CHECK(strstr(err, "model.safetensors") || strstr(err, "config.json") ||
                 strstr(err, "vocab.json") || strstr(err, "merges.txt"),
             "message names no file: %s", err);
    return 0;
  }
  FZ_CHECK(m && m->n_params > 0 && m->weight_bytes > 0, "empty model");
  int V = m->cfg.vocab_size;
  int toks[3] = {0, V - 1, V / 2};
  Gpt2Seq *seq = seq_new(m);
  if (seq) {
    Gpt2Seq *seqs[3] = {seq, seq, seq};
    float *logits = malloc((size_t)V * sizeof(float));
    if (logits) {
      rc = gpt2_forward(m, sc, 3, toks, seqs, NULL, logits, err, sizeof err);
      FZ_CHECK(rc == GPT2_OK || rc == GPT2_NOMEM, "forward failed: %s", err);
      if (rc == GPT2_OK) FZ_CHECK(seq->n_pos == 3, "n_pos %d", seq->n_pos);
      free(logits);
    }
    seq_free(seq);
  }
  model_release(m);
  return 0;
}
