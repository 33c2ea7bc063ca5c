/*
** fuzz_detokenize — detokenize input (tok_decode, tok_bytes and the UTF-8
** hold-back that gpt2_stream uses).
**
** Input: byte 0 selects the vocabulary (even: GPT-2's real one, odd: the
** micro checkpoint's 277 tokens); then each 2 bytes are one id, little-
** endian, minus 2 (so -2 and -1 occur) — taken modulo V+4 for the micro
** vocabulary so most ids are in range. Invariants: decode fails exactly
** when an id is out of range or unused, with a message naming it; its
** output is valid UTF-8; streaming the ids one at a time concatenates to
** the same text.
*/
#include "fuzz_tok_common.h"

static Tokenizer *real, *micro;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  fz_init((*argv)[0]);
  char d[PATH_MAX], probe[PATH_MAX];
  fz_fixture("gpt2-vocab", d, sizeof d);
  snprintf(probe, sizeof probe, "%s/vocab.json", d);
  if (access(probe, R_OK) == 0) real = fz_load_tok(d);
  micro = fz_load_tok(fz_fixture("micro", d, sizeof d));
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const Tokenizer *t = (data[0] & 1) || !real ? micro : real;
  int V = tok_vocab_size(t);
  size_t n = (size - 1) / 2;
  int *ids = malloc((n ? n : 1) * sizeof *ids);
  if (!ids) return 0;
  for (size_t i = 0; i < n; i++) {
    int v = data[1 + 2 * i] | data[2 + 2 * i] << 8;
    ids[i] = t == micro ? v % (V + 4) - 2 : v - 2;
  }
  fz_stream(t, ids, n);
  free(ids);
  return 0;
}
