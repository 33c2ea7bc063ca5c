/*
** fuzz_common.h — helpers shared by the libFuzzer targets in tests/fuzz/.
**
** Every target is one fuzz_<name>.c defining LLVMFuzzerTestOneInput; it is
** compiled with clang -fsanitize=fuzzer,address,undefined together with the
** extension's sources (mk/hardening.mk, `make fuzz`). Fixtures (micro
** checkpoint, vocabularies) come from tests/fuzz/make_corpus.py: their
** directory is $GPT2_FUZZ_FIXTURE, else <dir of the binary>/../fixture.
**
** Files that the loaders read by path are written to a private directory
** under /dev/shm (tmpfs: no disk traffic), removed at exit.
**
** FZ_CHECK(cond, ...) turns a violated invariant into a crash (abort), which
** libFuzzer records like any memory error.
*/
#ifndef GPT2_FUZZ_COMMON_H
#define GPT2_FUZZ_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FZ_CHECK(cond, ...)                                              \
  do {                                                                   \
    if (!(cond)) {                                                       \
      fprintf(stderr, "\nFZ_CHECK failed at %s:%d: %s\n  ", __FILE__,    \
              __LINE__, #cond);                                          \
      fprintf(stderr, __VA_ARGS__);                                      \
      fprintf(stderr, "\n");                                             \
      abort();                                                           \
    }                                                                    \
  } while (0)

static char fz_fixture_dir[PATH_MAX];
static char fz_work_dir[PATH_MAX];

static inline void fz_cleanup(void) {
  if (!fz_work_dir[0]) return;
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", fz_work_dir);
  if (system(cmd) != 0) { /* best effort */
  }
}

/* Call from LLVMFuzzerInitialize: locate the fixtures, make the work dir. */
static inline void fz_init(const char *argv0) {
  const char *env = getenv("GPT2_FUZZ_FIXTURE");
  if (env && *env) {
    snprintf(fz_fixture_dir, sizeof fz_fixture_dir, "%s", env);
  } else {
    char exe[PATH_MAX];
    if (!realpath(argv0, exe)) snprintf(exe, sizeof exe, "%s", argv0);
    snprintf(fz_fixture_dir, sizeof fz_fixture_dir, "%s/../fixture", dirname(exe));
  }
  snprintf(fz_work_dir, sizeof fz_work_dir, "/dev/shm/gpt2-fuzz-%d", (int)getpid());
  if (mkdir(fz_work_dir, 0700) != 0 && errno != EEXIST) {
    snprintf(fz_work_dir, sizeof fz_work_dir, "/tmp/gpt2-fuzz-%d", (int)getpid());
    mkdir(fz_work_dir, 0700);
  }
  atexit(fz_cleanup);
  /* One thread for the forward pass: deterministic, and no pool to start. */
  setenv("GPT2_THREADS", "1", 1);
  setenv("OPENBLAS_NUM_THREADS", "1", 1);
}

/* <fixture>/<rel>, in a static buffer per call site use. */
static inline const char *fz_fixture(const char *rel, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s", fz_fixture_dir, rel);
  return buf;
}

/* Make <work>/<sub> and return it in buf. */
static inline const char *fz_subdir(const char *sub, char *buf, size_t n) {
  snprintf(buf, n, "%s/%s", fz_work_dir, sub);
  mkdir(buf, 0700);
  return buf;
}

/* Write data to dir/name (replacing it). Aborts on I/O failure: that is the
** harness's problem, not a finding. */
static inline void fz_write(const char *dir, const char *name, const void *data, size_t n) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    perror(path);
    abort();
  }
  const char *p = data;
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) {
      perror(path);
      abort();
    }
    p += w;
    n -= (size_t)w;
  }
  close(fd);
}

/* Copy the file src to dir/name. */
static inline void fz_copy(const char *src, const char *dir, const char *name) {
  FILE *f = fopen(src, "rb");
  if (!f) {
    fprintf(stderr, "fuzz fixture missing: %s (run tests/fuzz/make_corpus.py)\n", src);
    exit(2);
  }
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (len == cap) {
      cap = cap ? 2 * cap : 65536;
      buf = realloc(buf, cap);
      if (!buf) abort();
    }
    size_t r = fread(buf + len, 1, cap - len, f);
    if (!r) break;
    len += r;
  }
  fclose(f);
  fz_write(dir, name, buf, len);
  free(buf);
}

/* Nonzero when s[0..n) is valid UTF-8 (no surrogates, no overlongs). */
static inline int fz_valid_utf8(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned c = s[i];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      need = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      need = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return 0;
    }
    for (size_t k = 1; k <= need; k++) {
      if (i + k >= n) return 0;
      unsigned x = s[i + k];
      if (x < lo || x > hi) return 0;
      lo = 0x80, hi = 0xBF;
    }
    i += need + 1;
  }
  return 1;
}

#endif
