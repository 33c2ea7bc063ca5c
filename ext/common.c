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

int gpt2_json_keys_intact(const char *s, size_t n,
                          int (*has)(void *arg, const char *key, size_t n), void *arg) {
  int depth = 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '{' || c == '[') {
      depth++;
    } else if (c == '}' || c == ']') {
      depth--;
    } else if (c == '"') {
      size_t start = i + 1, j = start;
      int escaped = 0;
      while (j < n && s[j] != '"') {
        if (s[j] == '\\') escaped = 1, j++;
        j++;
      }
      if (j >= n) return 1;
      if (depth == 1 && !escaped) { /* a key when a ':' follows */
        size_t k = j + 1;
        while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r')) k++;
        if (k < n && s[k] == ':' && !has(arg, s + start, j - start)) return 0;
      }
      i = j;
    }
  }
  return 1;
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

int gpt2_json_has_key(void *obj, const char *key, size_t n) {
  return json_object_getn(obj, key, n) != NULL;
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
