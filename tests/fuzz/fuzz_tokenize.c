/*
** fuzz_tokenize — tokenizer input (tok_encode): the special-token split,
** UTF-8 run splitting, the PCRE2 pre-tokenizer and BPE, on any bytes.
**
** Three tokenizers are loaded once: GPT-2's real vocabulary (fixture
** gpt2-vocab; skipped when absent), the 557-token test vocabulary (300
** merges) and a "holey" vocabulary that lacks control bytes and declares no
** unknown token. Invariants: the first two accept any input and round-trip
** it (decode(encode(x)) == x with invalid UTF-8 replaced); the holey one
** either fails with a message naming the byte or round-trips too.
*/
#include "fuzz_tok_common.h"

static Tokenizer *real, *tiny, *holey;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  fz_init((*argv)[0]);
  char d[PATH_MAX], probe[PATH_MAX];
  fz_fixture("gpt2-vocab", d, sizeof d);
  snprintf(probe, sizeof probe, "%s/vocab.json", d);
  if (access(probe, R_OK) == 0) real = fz_load_tok(d);
  else fprintf(stderr, "fuzz_tokenize: no %s; real vocabulary skipped\n", probe);
  tiny = fz_load_tok(fz_fixture("tiny", d, sizeof d));
  holey = fz_load_tok(fz_fixture("holey", d, sizeof d));
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *s = (const char *)data;
  if (real) fz_roundtrip(real, s, size, 1, "gpt2");
  fz_roundtrip(tiny, s, size, 1, "tiny");
  fz_roundtrip(holey, s, size, 0, "holey");
  return 0;
}
