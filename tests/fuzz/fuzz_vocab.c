/*
** fuzz_vocab — vocab.json (tok_load with a fuzzed vocab.json beside an
** empty merges.txt, then the tokenizer in use).
**
** Invariants on success: tok_bytes of every id in range is consistent with
** tok_find of its mapped spelling; text made of bytes the vocabulary has
** round-trips; decoding never fails on ids it has. On failure: the message
** names vocab.json (or merges.txt).
*/
#include "fuzz_tok_common.h"

static char dir[PATH_MAX];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  fz_init((*argv)[0]);
  fz_subdir("vocab", dir, sizeof dir);
  fz_write(dir, "merges.txt", "#version: 0.2\n", 14);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_write(dir, "vocab.json", data, size);
  Tokenizer *t = fz_try_tok(dir);
  if (!t) return 0;
  int V = tok_vocab_size(t);
  FZ_CHECK(V >= 1 && V <= 10000001, "vocab size %d", V);
  int ids[64];
  size_t n = 0;
  for (int id = 0; id < V && id < 4096; id++) {
    size_t len;
    const char *b = tok_bytes(t, id, &len);
    if (!b) continue;
    FZ_CHECK(len > 0, "id %d has empty bytes", id);
    if (n < 64) ids[n++] = id;
  }
  fz_stream(t, ids, n);
  /* Text from the single-byte tokens it has: must encode and round-trip. */
  char text[256], err[GPT2_ERRLEN];
  size_t tn = 0;
  for (int b = 0; b < 256; b++) {
    char c = (char)b;
    IdVec one = {0};
    if (tok_encode(t, &c, 1, &one, err, sizeof err) == GPT2_OK && b >= 0x20 && b < 0x7F)
      text[tn++] = c;
    idvec_free(&one);
  }
  fz_roundtrip(t, text, tn, 0, "vocab");
  fz_roundtrip(t, "<|endoftext|>", 13, 0, "vocab eot");
  tok_free(t);
  return 0;
}
