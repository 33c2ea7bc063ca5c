/*
** safetensors.c — header validation and reading tensors as float32 from
** .safetensors files. See safetensors.h for the rules; each check below
** names the rule of the reference loader it mirrors (docs/formats.md,
** "model.safetensors").
**
** Reading uses pread() rather than mmap: F32 data goes straight into the
** caller's (aligned) buffer with one copy, F16/BF16 into the upper half of
** that same buffer and is widened in place, and a file that shrinks under
** us gives an error instead of SIGBUS.
*/
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels.h"

/* ---------------------------------------------------------------------------
** dtypes
*/

static const struct {
  const char *name;
  StDtype d;
  size_t size;
} DTYPES[] = {
    {"BOOL", ST_BOOL, 1},       {"U8", ST_U8, 1},       {"I8", ST_I8, 1},
    {"F8_E5M2", ST_F8_E5M2, 1}, {"F8_E4M3", ST_F8_E4M3, 1},
    {"I16", ST_I16, 2},         {"U16", ST_U16, 2},     {"F16", ST_F16, 2},
    {"BF16", ST_BF16, 2},       {"I32", ST_I32, 4},     {"U32", ST_U32, 4},
    {"F32", ST_F32, 4},         {"F64", ST_F64, 8},     {"I64", ST_I64, 8},
    {"U64", ST_U64, 8},
};

size_t st_dtype_size(StDtype d) {
  for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
    if (DTYPES[i].d == d) return DTYPES[i].size;
  return 0;
}

static StDtype dtype_from_name(const char *s) {
  for (size_t i = 0; i < sizeof DTYPES / sizeof DTYPES[0]; i++)
    if (strcmp(DTYPES[i].name, s) == 0) return DTYPES[i].d;
  return ST_UNKNOWN;
}

/* Little-endian loads from unaligned bytes (safetensors is little-endian). */
static uint16_t le16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint64_t le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* ---------------------------------------------------------------------------
** opening and validating
*/

/* pread exactly n bytes at off; GPT2_ERROR on a short read. */
static int read_at(int fd, void *buf, size_t n, uint64_t off, const char *label, char *err,
                   size_t errlen) {
  unsigned char *p = buf;
  while (n) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return gpt2_errorf(err, errlen, "%s: read error: %s", label, strerror(errno));
    if (r == 0)
      return gpt2_errorf(err, errlen, "%s: file is truncated (unexpected end of file at byte %llu)",
                         label, (unsigned long long)off);
    p += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return GPT2_OK;
}

static int cmp_name(const void *a, const void *b) {
  return strcmp(((const StTensor *)a)->name, ((const StTensor *)b)->name);
}

static int cmp_offsets(const void *a, const void *b) {
  const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* Non-negative JSON integer, or -1. */
static long long json_nonneg(const json_t *v) {
  if (!json_is_integer(v)) return -1;
  json_int_t i = json_integer_value(v);
  return i < 0 ? -1 : (long long)i;
}

/* Fill t from one header entry. */
static int parse_entry(const char *label, const char *name, json_t *v, StTensor *t, char *err,
                       size_t errlen) {
  if (!json_is_object(v))
    return gpt2_errorf(err, errlen, "%s: header entry %s is not an object", label, name);
  json_t *dt = json_object_get(v, "dtype");
  json_t *shape = json_object_get(v, "shape");
  json_t *offs = json_object_get(v, "data_offsets");
  if (!json_is_string(dt))
    return gpt2_errorf(err, errlen, "%s: tensor %s has no dtype string", label, name);
  if (!json_is_array(shape))
    return gpt2_errorf(err, errlen, "%s: tensor %s has no shape array", label, name);
  if (!json_is_array(offs) || json_array_size(offs) != 2)
    return gpt2_errorf(err, errlen, "%s: tensor %s has no data_offsets [begin, end]", label, name);

  t->name = strdup(name);
  if (!t->name) return GPT2_NOMEM;
  snprintf(t->dtype_name, sizeof t->dtype_name, "%s", json_string_value(dt));
  t->dtype = dtype_from_name(json_string_value(dt));

  size_t rank = json_array_size(shape);
  if (rank > ST_MAX_RANK)
    return gpt2_errorf(err, errlen, "%s: tensor %s has rank %zu (limit %d)", label, name, rank,
                       ST_MAX_RANK);
  t->rank = (int)rank;
  uint64_t numel = 1;
  int overflow = 0;
  for (size_t i = 0; i < rank; i++) {
    long long d = json_nonneg(json_array_get(shape, i));
    if (d < 0)
      return gpt2_errorf(err, errlen, "%s: tensor %s has a shape entry that is not a non-negative "
                         "integer", label, name);
    t->shape[i] = (uint64_t)d;
    if (d && numel > UINT64_MAX / (uint64_t)d) overflow = 1;
    numel *= (uint64_t)d;
  }
  if (overflow)
    return gpt2_errorf(err, errlen, "%s: tensor %s: shape product overflows", label, name);
  t->numel = numel;

  long long b = json_nonneg(json_array_get(offs, 0)), e = json_nonneg(json_array_get(offs, 1));
  if (b < 0 || e < 0)
    return gpt2_errorf(err, errlen, "%s: tensor %s has data_offsets that are not non-negative "
                       "integers", label, name);
  if (e < b)
    return gpt2_errorf(err, errlen, "%s: tensor %s has data_offsets [%lld, %lld] that end before "
                       "they begin", label, name, b, e);
  t->begin = (uint64_t)b;
  t->end = (uint64_t)e;

  /* Reference: end - begin == numel * dtype size, with overflow checks. */
  size_t esz = st_dtype_size(t->dtype);
  if (esz) {
    if (numel > UINT64_MAX / esz)
      return gpt2_errorf(err, errlen, "%s: tensor %s: byte size overflows", label, name);
    if (t->end - t->begin != numel * esz)
      return gpt2_errorf(err, errlen,
                         "%s: tensor %s has data_offsets [%llu, %llu] (%llu bytes) but dtype %s and "
                         "its shape need %llu bytes", label, name, (unsigned long long)t->begin,
                         (unsigned long long)t->end, (unsigned long long)(t->end - t->begin),
                         t->dtype_name, (unsigned long long)(numel * esz));
  }
  return GPT2_OK;
}

/* "__metadata__": null or a map of strings. */
static int check_metadata(const char *label, json_t *v, char *err, size_t errlen) {
  if (json_is_null(v)) return GPT2_OK;
  if (!json_is_object(v))
    return gpt2_errorf(err, errlen, "%s: __metadata__ is not an object", label);
  const char *k;
  json_t *x;
  json_object_foreach(v, k, x) {
    if (!json_is_string(x))
      return gpt2_errorf(err, errlen, "%s: __metadata__ value for %s is not a string", label, k);
  }
  return GPT2_OK;
}

/* Entries sorted by offsets must tile [0, data size) exactly. */
static int check_tiling(StFile *f, char *err, size_t errlen) {
  const char *label = f->label;
  uint64_t data_size = f->size - f->data_start;
  uint64_t pos = 0;
  if (f->n) {
    const StTensor **ord = malloc(f->n * sizeof *ord);
    if (!ord) return GPT2_NOMEM;
    for (size_t i = 0; i < f->n; i++) ord[i] = &f->t[i];
    qsort(ord, f->n, sizeof *ord, cmp_offsets);
    for (size_t i = 0; i < f->n; i++) {
      const StTensor *t = ord[i];
      if (t->begin != pos) {
        int rc;
        if (i == 0)
          rc = gpt2_errorf(err, errlen, "%s: data offsets do not start at 0 (first tensor %s "
                           "begins at %llu)", label, t->name, (unsigned long long)t->begin);
        else if (t->begin > pos)
          rc = gpt2_errorf(err, errlen, "%s: gap in data offsets: tensor %s begins at %llu but "
                           "tensor %s ends at %llu", label, t->name, (unsigned long long)t->begin,
                           ord[i - 1]->name, (unsigned long long)pos);
        else
          rc = gpt2_errorf(err, errlen, "%s: overlapping data offsets: tensor %s begins at %llu, "
                           "inside tensor %s which ends at %llu", label, t->name,
                           (unsigned long long)t->begin, ord[i - 1]->name,
                           (unsigned long long)pos);
        free(ord);
        return rc;
      }
      pos = t->end;
    }
    free(ord);
  }
  if (pos > data_size)
    return gpt2_errorf(err, errlen, "%s: file is truncated: tensor data needs %llu bytes after the "
                       "header but only %llu remain", label, (unsigned long long)pos,
                       (unsigned long long)data_size);
  if (pos < data_size)
    return gpt2_errorf(err, errlen, "%s: %llu bytes of trailing data after the last tensor (data "
                       "must end exactly at end of file)", label,
                       (unsigned long long)(data_size - pos));
  return GPT2_OK;
}

static int parse_header(StFile *f, const char *hdr, size_t n, char *err, size_t errlen) {
  const char *label = f->label;
  /* Reference: the header starts with '{' and is valid UTF-8 JSON (Jansson
  ** validates UTF-8); trailing space padding is allowed. */
  if (n == 0 || hdr[0] != '{')
    return gpt2_errorf(err, errlen, "%s: header is not a JSON object (does not start with '{')",
                       label);
  json_error_t je;
  json_t *root;
  int rc = gpt2_json_parse(hdr, n, JSON_REJECT_DUPLICATES, 1, &root, &je);
  if (rc == GPT2_ERROR)
    return gpt2_errorf(err, errlen, "%s: header is not valid JSON: %s (header byte %d)", label,
                       je.text, je.position);
  if (rc) return rc;
  if (!json_is_object(root)) {
    rc = gpt2_errorf(err, errlen, "%s: header is not a JSON object", label);
    goto done;
  }
  size_t cap = json_object_size(root);
  f->t = calloc(cap ? cap : 1, sizeof *f->t);
  if (!f->t) {
    rc = GPT2_NOMEM;
    goto done;
  }
  const char *key;
  json_t *val;
  json_object_foreach(root, key, val) {
    if (strcmp(key, "__metadata__") == 0) {
      rc = check_metadata(label, val, err, errlen);
    } else {
      rc = parse_entry(label, key, val, &f->t[f->n], err, errlen);
      f->n++; /* counted even on failure so st_close frees the name */
    }
    if (rc) goto done;
  }
  qsort(f->t, f->n, sizeof *f->t, cmp_name);
  rc = check_tiling(f, err, errlen);
done:
  json_decref(root);
  return rc;
}

int st_open(const char *path, const char *label, StFile *f, char *err, size_t errlen) {
  memset(f, 0, sizeof *f);
  f->fd = -1;
  f->label = label;
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block */
  if (fd < 0) return gpt2_errorf(err, errlen, "cannot open %s: %s", path, strerror(errno));
  f->fd = fd;
  struct stat st;
  int rc;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = gpt2_errorf(err, errlen, "%s is not a regular file", path);
    goto fail;
  }
  f->size = (size_t)st.st_size;
  if (f->size < 8) {
    rc = gpt2_errorf(err, errlen, "%s: file is truncated (%zu bytes, shorter than the 8-byte "
                     "header length)", label, f->size);
    goto fail;
  }
  unsigned char lenbuf[8];
  if ((rc = read_at(fd, lenbuf, 8, 0, label, err, errlen))) goto fail;
  uint64_t n = le64(lenbuf);
  if (n > ST_MAX_HEADER) {
    rc = gpt2_errorf(err, errlen, "%s: header length %llu exceeds the limit of %llu bytes", label,
                     (unsigned long long)n, ST_MAX_HEADER);
    goto fail;
  }
  if (8 + n > f->size) {
    rc = gpt2_errorf(err, errlen, "%s: header length %llu runs past the end of the file (%zu "
                     "bytes)", label, (unsigned long long)n, f->size);
    goto fail;
  }
  f->data_start = 8 + n;
  char *hdr = malloc(n ? n : 1);
  if (!hdr) {
    rc = GPT2_NOMEM;
    goto fail;
  }
  rc = read_at(fd, hdr, n, 8, label, err, errlen);
  if (!rc) rc = parse_header(f, hdr, n, err, errlen);
  free(hdr);
  if (rc) goto fail;
  return GPT2_OK;
fail:
  st_close(f);
  f->label = label;
  return rc;
}

const StTensor *st_find(const StFile *f, const char *name) {
  size_t lo = 0, hi = f->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = strcmp(name, f->t[mid].name);
    if (c == 0) return &f->t[mid];
    if (c < 0) hi = mid;
    else lo = mid + 1;
  }
  return NULL;
}

/* ---------------------------------------------------------------------------
** conversion
*/

int st_read_f32_range(const StFile *f, const StTensor *t, uint64_t first, size_t n, float *dst,
                      char *err, size_t errlen) {
  if (first > t->numel || n > t->numel - first)
    return gpt2_errorf(err, errlen, "%s: elements %llu..+%zu are outside tensor %s", f->label,
                       (unsigned long long)first, n, t->name);
  if (t->dtype == ST_F32) {
    /* Raw little-endian bytes into the aligned destination: a byte copy, so
    ** the file's alignment is irrelevant (docs/formats.md, "model.safetensors"). */
    int rc = read_at(f->fd, dst, n * 4, f->data_start + t->begin + first * 4, f->label, err,
                     errlen);
    if (rc) return rc;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    for (size_t i = 0; i < n; i++) {
      uint32_t u;
      memcpy(&u, dst + i, 4);
      u = __builtin_bswap32(u);
      memcpy(dst + i, &u, 4);
    }
#endif
    return GPT2_OK;
  }
  if (t->dtype != ST_F16 && t->dtype != ST_BF16)
    return gpt2_errorf(err, errlen, "%s: tensor %s has dtype %s; supported: F32, F16, BF16",
                       f->label, t->name, t->dtype_name);
  /* The halves go to the upper half of dst and are widened front to back:
  ** float i (bytes 4i..4i+3) never reaches the half of element i+1 (byte
  ** 2n+2i+2), so no bounce buffer is needed. */
  unsigned char *raw = (unsigned char *)dst + 2 * n;
  int rc = read_at(f->fd, raw, n * 2, f->data_start + t->begin + first * 2, f->label, err, errlen);
  if (rc) return rc;
  for (size_t i = 0; i < n; i++) {
    uint16_t h = le16(raw + 2 * i);
    dst[i] = t->dtype == ST_F16 ? k_f16_to_f32(h) : k_bf16_to_f32(h);
  }
  return GPT2_OK;
}

int st_read_f32(const StFile *f, const StTensor *t, float *dst, char *err, size_t errlen) {
  if (t->numel > SIZE_MAX / 4) return gpt2_errorf(err, errlen, "%s: tensor %s is too large",
                                                  f->label, t->name);
  return st_read_f32_range(f, t, 0, (size_t)t->numel, dst, err, errlen);
}

void st_close(StFile *f) {
  if (f->fd >= 0) close(f->fd);
  for (size_t i = 0; i < f->n; i++) free(f->t[i].name);
  free(f->t);
  memset(f, 0, sizeof *f);
  f->fd = -1;
}
