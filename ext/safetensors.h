/*
** safetensors.h — reading a .safetensors file (owns: the header checks the
** reference loader makes, the tensor table, reading tensors as float32).
**
** Format (docs/formats.md, "model.safetensors"): an 8-byte
** little-endian u64 N, N bytes of JSON header, then the data buffer. Each
** header entry is "name": {"dtype", "shape", "data_offsets": [begin, end]}
** with offsets relative to the data buffer; "__metadata__" is optional.
**
** st_open validates the whole file as the reference loader does:
**   - N <= 100,000,000 and 8 + N <= file size;
**   - the header is valid UTF-8 JSON, an object, starting with '{' (trailing
**     space padding allowed), with no duplicate names;
**   - every entry has a string dtype, a shape of non-negative integers and
**     two data_offsets begin <= end;
**   - sorted by begin, the entries tile the data buffer: the first begins at
**     0, each begins where the previous ended, the last ends exactly at EOF;
**   - end - begin == product(shape) * dtype size, overflow-checked, for every
**     tensor whose dtype is one the reference knows (BOOL, U8, I8, F8_E5M2,
**     F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64).
** DECISION: a tensor with an unknown dtype is accepted by st_open (its
** offsets still take part in the tiling check, its size cannot be checked);
** the caller rejects it if it needs the tensor. This keeps files loadable
** whose skipped buffers (GPT-2's attn.bias masks) use an exotic dtype.
**
** The file is read with pread(); the data is NOT assumed aligned (the
** official gpt2 file's data starts at byte 14,291), so values are only ever
** copied as bytes into the caller's buffer, never read through a float
** pointer into file memory.
*/
#ifndef GPT2_SAFETENSORS_H
#define GPT2_SAFETENSORS_H

#include "common.h"

#define ST_MAX_HEADER 100000000ULL /* reference loader's header size limit */
#define ST_MAX_RANK 16             /* shapes of higher rank are rejected */

typedef enum StDtype {
  ST_UNKNOWN = 0,
  ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3,
  ST_I16, ST_U16, ST_F16, ST_BF16,
  ST_I32, ST_U32, ST_F32,
  ST_F64, ST_I64, ST_U64
} StDtype;

typedef struct StTensor {
  char *name;              /* tensor name as in the header (owned) */
  char dtype_name[16];     /* dtype as written (truncated for display) */
  StDtype dtype;           /* ST_UNKNOWN when not a reference dtype */
  int rank;                /* number of dimensions (0 = scalar, 1 element) */
  uint64_t shape[ST_MAX_RANK];
  uint64_t numel;          /* product of shape */
  uint64_t begin, end;     /* byte range in the data buffer, end exclusive */
} StTensor;

typedef struct StFile {
  const char *label;            /* file name used in messages ("model.safetensors") */
  int fd;                       /* open read-only, -1 when closed */
  size_t size;                  /* file size in bytes */
  uint64_t data_start;          /* 8 + N */
  StTensor *t;                  /* (n) entries, sorted by name */
  size_t n;
} StFile;

/* Bytes per element, 0 for ST_UNKNOWN. */
size_t st_dtype_size(StDtype d);

/* Open path, read its header (pread) and validate the whole file; the file
** stays open for st_read_f32*. Messages start with label. On failure *f is
** left empty (st_close is still safe). */
int st_open(const char *path, const char *label, StFile *f, char *err, size_t errlen);

/* Entry called name, or NULL. */
const StTensor *st_find(const StFile *f, const char *name);

/* Read a F32, F16 or BF16 tensor as numel floats into dst (any alignment
** of the data in the file; F16 / BF16 widened exactly by kernels.h's
** k_f16_to_f32 / k_bf16_to_f32). Other dtypes: GPT2_ERROR naming it. */
int st_read_f32(const StFile *f, const StTensor *t, float *dst, char *err, size_t errlen);
/* The same for elements first .. first+n-1 (in file order) only. */
int st_read_f32_range(const StFile *f, const StTensor *t, uint64_t first, size_t n, float *dst,
                      char *err, size_t errlen);

/* Close the file and free the table. */
void st_close(StFile *f);

#endif
