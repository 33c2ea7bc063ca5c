/*
** common.c — status/error helpers, id vectors, byte buffers, file reading,
** the Jansson key check and large-buffer allocation (see common.h).
*/
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int gpt2_errorf(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return GPT2_ERROR;
}

int idvec_reserve(IdVec *iv, size_t cap) {
  if (cap <= iv->cap) return GPT2_OK;
  size_t ncap = iv->cap ? iv->cap : 16;
  while (ncap < cap) {
    if (ncap > SIZE_MAX / 2 / sizeof(int)) return GPT2_NOMEM;
    ncap *= 2;
  }
  int *nv = realloc(iv->v, ncap * sizeof(int));
  if (!nv) return GPT2_NOMEM;
  iv->v = nv;
  iv->cap = ncap;
  return GPT2_OK;
}

int idvec_push(IdVec *iv, int id) {
  if (iv->n == iv->cap && idvec_reserve(iv, iv->n + 1)) return GPT2_NOMEM;
  iv->v[iv->n++] = id;
  return GPT2_OK;
}

void idvec_free(IdVec *iv) {
  free(iv->v);
  iv->v = NULL;
  iv->n = iv->cap = 0;
}

int buf_append(ByteBuf *b, const void *data, size_t n) {
  if (n > SIZE_MAX - b->n - 1) return GPT2_NOMEM;
  if (b->n + n + 1 > b->cap) {
    size_t ncap = b->cap ? b->cap : 64;
    while (ncap < b->n + n + 1) {
      if (ncap > SIZE_MAX / 2) return GPT2_NOMEM;
      ncap *= 2;
    }
    char *np = realloc(b->p, ncap);
    if (!np) return GPT2_NOMEM;
    b->p = np;
    b->cap = ncap;
  }
  if (n) memcpy(b->p + b->n, data, n);
  b->n += n;
  b->p[b->n] = 0;
  return GPT2_OK;
}

void buf_free(ByteBuf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

int gpt2_read_file(const char *path, char **out, size_t *len, size_t max_len,
                   char *err, size_t errlen) {
  *out = NULL;
  *len = 0;
  /* O_NONBLOCK: opening a FIFO put in place of a file must not wait for a
  ** writer (it is refused below as not a regular file). */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return gpt2_errorf(err, errlen, "cannot open %s: %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return gpt2_errorf(err, errlen, "%s is not a regular file", path);
  }
  if ((uint64_t)st.st_size > max_len) {
    close(fd);
    return gpt2_errorf(err, errlen, "%s is too large (%lld bytes, limit %zu)", path,
                       (long long)st.st_size, max_len);
  }
  size_t n = (size_t)st.st_size, got = 0;
  char *p = malloc(n + 1);
  if (!p) {
    close(fd);
    return GPT2_NOMEM;
  }
  while (got < n) {
    ssize_t r = read(fd, p + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      int e = r < 0 ? errno : 0;
      free(p);
      close(fd);
      return gpt2_errorf(err, errlen, "cannot read %s: %s", path,
                         e ? strerror(e) : "the file shrank while being read");
    }
    got += (size_t)r;
  }
  close(fd);
  p[n] = 0;
  *out = p;
  *len = n;
  return GPT2_OK;
}

int gpt2_json_parse(const char *text, size_t n, size_t flags, int verify, json_t **out,
                    json_error_t *je) {
  *out = NULL;
  const char *z = memchr(text, 0, n);
  if (z) {
    memset(je, 0, sizeof *je);
    je->line = 1;
    for (const char *p = text; (p = memchr(p, '\n', (size_t)(z - p))); p++) je->line++;
    je->position = (int)(z - text);
    je->column = -1;
    snprintf(je->text, sizeof je->text, "a NUL byte");
    return GPT2_ERROR;
  }
  json_error_t je2;
  json_t *j = json_loadb(text, n, flags, je);
  if (!j) {
    if (!je->text[0]) return GPT2_NOMEM; /* no message: an allocation failed */
    json_t *again = json_loadb(text, n, flags, &je2);
    if (again || je2.position != je->position || strcmp(je2.text, je->text) != 0) {
      json_decref(again);
      return GPT2_NOMEM; /* a real syntax error repeats */
    }
    return GPT2_ERROR;
  }
  if (verify) {
    json_t *again = json_loadb(text, n, flags, &je2);
    int same = again && json_equal(j, again);
    json_decref(again);
    if (!same) {
      json_decref(j);
      return GPT2_NOMEM;
    }
  }
  *out = j;
  return GPT2_OK;
}

char *gpt2_path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  size_t k = a;
  if (k && p[k - 1] != '/') p[k++] = '/';
  memcpy(p + k, name, b + 1);
  return p;
}

void *gpt2_alloc_large(size_t bytes) {
  const size_t huge = (size_t)2 << 20;
  /* aligned_alloc wants a size that is a multiple of the alignment */
  if (bytes < GPT2_HUGE_MIN) return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
  if (bytes > SIZE_MAX - huge) return NULL;
  size_t rounded = (bytes + huge - 1) / huge * huge;
  void *p = aligned_alloc(huge, rounded);
#ifdef MADV_HUGEPAGE
  if (p) madvise(p, rounded, MADV_HUGEPAGE); /* a hint; failure is fine */
#endif
  return p;
}
