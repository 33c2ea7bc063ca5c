/*
** layouts.c — prints, as JSON, the size, alignment and field offsets of the C
** structs that tests pass through ctypes, compiled against the ext/ headers (`make test`
** writes build/layouts.json). tests/clayout.py builds the ctypes Structures from
** it, so a field added to a header moves the tests' offsets with it.
*/
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>

#include "kernels.h"
#include "model.h"
#include "safetensors.h"
#include "sampler.h"
#include "transformer.h"

static const char *sep;

#define BEGIN(S)                                                                      \
  printf("%s\n  \"" #S "\": {\"size\": %zu, \"align\": %zu, \"fields\": {", sep,      \
         sizeof(S), alignof(S));                                                      \
  sep = ",";                                                                          \
  { typedef S T_; const char *fsep = "";
#define FIELD(f)                                                                      \
  printf("%s\"" #f "\": [%zu, %zu]", fsep, offsetof(T_, f), sizeof(((T_ *)0)->f));    \
  fsep = ", ";
#define END() (void)fsep; printf("}}"); }

int main(void) {
  sep = "{";
  BEGIN(KMat) FIELD(K) FIELD(N) FIELD(np) FIELD(type) FIELD(w) FIELD(scale) END()
  BEGIN(Gpt2Seq) FIELD(n_pos) FIELD(cap) FIELD(k) FIELD(v) END()
  BEGIN(Gpt2LoadOptions) FIELD(weights) END()
  BEGIN(Gpt2SampleParams) FIELD(temperature) FIELD(top_k) FIELD(top_p) END()
  BEGIN(Gpt2Rng) FIELD(s) END()
  BEGIN(Gpt2Sampler) FIELD(key) FIELD(tmp) FIELD(w) FIELD(cap) END()
  BEGIN(StFile) FIELD(label) FIELD(fd) END()
  printf("\n}\n");
  return 0;
}
