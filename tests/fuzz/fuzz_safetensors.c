/*
** fuzz_safetensors — the safetensors header and layout validation
** (st_open, st_find, st_read_f32).
**
** Input: a whole model.safetensors file (8-byte length, JSON header, data),
** held in a memfd and opened through /proc/self/fd. Invariants on success:
** entries sorted by name and found by st_find; their byte ranges tile the
** data exactly; every F32/F16/BF16 tensor reads back (the file is complete),
** every other dtype is refused by st_read_f32 with a message naming it. On
** failure: a message starting with the label.
*/
#include "fuzz_common.h"

#include <sys/mman.h>

#include "safetensors.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  fz_init((*argv)[0]);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int fd = memfd_create("st", MFD_CLOEXEC);
  if (fd < 0) abort();
  size_t off = 0;
  while (off < size) {
    ssize_t w = write(fd, data + off, size - off);
    if (w <= 0) abort();
    off += (size_t)w;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  StFile f;
  char err[GPT2_ERRLEN];
  err[0] = 0;
  int rc = st_open(path, "model.safetensors", &f, err, sizeof err);
  close(fd);
  /* Nothing here can exhaust memory (the header is at most the input): NOMEM
  ** would be a misread Jansson error (safetensors.c treats one without a
  ** message as OOM). */
  FZ_CHECK(rc != GPT2_NOMEM, "GPT2_NOMEM for a %zu-byte file", size);
  if (rc) {
    FZ_CHECK(rc == GPT2_ERROR, "rc %d", rc);
    FZ_CHECK(strstr(err, "model.safetensors") != NULL, "message: %s", err);
    st_close(&f);
    return 0;
  }
  FZ_CHECK(f.data_start >= 8 && f.data_start <= f.size, "data_start %llu size %zu",
           (unsigned long long)f.data_start, f.size);
  uint64_t total = 0;
  for (size_t i = 0; i < f.n; i++) {
    const StTensor *t = &f.t[i];
    if (i) FZ_CHECK(strcmp(f.t[i - 1].name, t->name) < 0, "not sorted / duplicate: %s", t->name);
    FZ_CHECK(st_find(&f, t->name) == t, "st_find(%s)", t->name);
    FZ_CHECK(t->begin <= t->end && t->end <= f.size - f.data_start, "%s: [%llu, %llu)", t->name,
             (unsigned long long)t->begin, (unsigned long long)t->end);
    FZ_CHECK(t->rank >= 0 && t->rank <= ST_MAX_RANK, "rank %d", t->rank);
    size_t esz = st_dtype_size(t->dtype);
    if (esz) FZ_CHECK(t->end - t->begin == t->numel * esz, "%s: size", t->name);
    total += t->end - t->begin;
    if (t->numel > (1u << 20)) continue;
    float *dst = malloc((size_t)t->numel * sizeof(float) + 1);
    if (!dst) continue;
    char e2[GPT2_ERRLEN];
    int r = st_read_f32(&f, t, dst, e2, sizeof e2);
    if (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16)
      FZ_CHECK(r == GPT2_OK || r == GPT2_NOMEM, "%s: read failed: %s", t->name, e2);
    else
      FZ_CHECK(r == GPT2_ERROR && strstr(e2, t->dtype_name), "%s: dtype %s: rc %d %s", t->name,
               t->dtype_name, r, r ? e2 : "");
    free(dst);
  }
  FZ_CHECK(total == f.size - f.data_start, "tensors cover %llu of %llu data bytes",
           (unsigned long long)total, (unsigned long long)(f.size - f.data_start));
  FZ_CHECK(st_find(&f, "no such tensor\x01") == NULL, "st_find of a missing name");
  st_close(&f);
  return 0;
}
