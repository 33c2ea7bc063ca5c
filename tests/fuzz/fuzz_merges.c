/*
** fuzz_merges — merges.txt (tok_load with a fuzzed merges.txt beside the
** 557-token test vocabulary, then encoding with the merges it accepted).
**
** Invariants on success: the vocabulary has every byte, so any text must
** encode, and decode back to itself. On failure: the message names
** merges.txt (or vocab.json) and, for a bad line, its number.
*/
#include "fuzz_tok_common.h"

static char dir[PATH_MAX];

static const char SAMPLE[] =
    "The quick brown fox jumps over the lazy dog. It was the best of times, it was "
    "the worst of times; they're going, we'll see. 12, 123 and 2024 \xe2\x82\xac \xc3\xa9t\xc3\xa9 "
    "<|endoftext|>  \n\n  tab\there";

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  fz_init((*argv)[0]);
  char src[PATH_MAX];
  fz_subdir("merges", dir, sizeof dir);
  fz_copy(fz_fixture("tiny/vocab.json", src, sizeof src), dir, "vocab.json");
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_write(dir, "merges.txt", data, size);
  Tokenizer *t = fz_try_tok(dir);
  if (!t) return 0;
  fz_roundtrip(t, SAMPLE, sizeof SAMPLE - 1, 1, "merges sample");
  /* The input itself as text, under the merges it defines. */
  fz_roundtrip(t, (const char *)data, size < 2048 ? size : 2048, 1, "merges self");
  tok_free(t);
  return 0;
}
