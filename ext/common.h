/*
** common.h — small shared definitions for the gpt2 extension's modules
** (owns: status codes, the error-message convention, growable id and byte
** buffers, whole-file reading, path joining, the Jansson key check and the
** allocation of large streamed buffers).
** No SQLite types here: the numeric core and the tokenizer are usable
** (and testable) without SQLite.
*/
#ifndef GPT2_COMMON_H
#define GPT2_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* Status codes returned by every module. Messages go to a caller-owned
** buffer `char *err, size_t errlen` (always NUL-terminated when errlen>0). */
enum { GPT2_OK = 0, GPT2_ERROR = 1, GPT2_NOMEM = 2, GPT2_INTERRUPTED = 3 };

#define GPT2_ERRLEN 512

/* printf-style helper that writes into err (may be NULL). Returns GPT2_ERROR. */
int gpt2_errorf(char *err, size_t errlen, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Growable vector of token ids. */
typedef struct IdVec {
  int *v;      /* ids */
  size_t n;    /* used */
  size_t cap;  /* allocated */
} IdVec;

int  idvec_push(IdVec *iv, int id);              /* GPT2_OK or GPT2_NOMEM */
int  idvec_reserve(IdVec *iv, size_t cap);        /* GPT2_OK or GPT2_NOMEM */
void idvec_free(IdVec *iv);

/* Growable byte buffer. */
typedef struct ByteBuf {
  char *p;
  size_t n;
  size_t cap;
} ByteBuf;

int  buf_append(ByteBuf *b, const void *data, size_t n);   /* GPT2_OK or GPT2_NOMEM */
void buf_free(ByteBuf *b);

/* Read a whole file into memory (NUL-terminated). Errors name the path. */
int gpt2_read_file(const char *path, char **out, size_t *len, size_t max_len,
                   char *err, size_t errlen);

/* Join dir and name into a newly allocated path (NULL on OOM). */
char *gpt2_path_join(const char *dir, const char *name);

/* Parse JSON text with Jansson (flags as json_loadb's) into *out, telling
** out-of-memory from a syntax error, which Jansson 2.14 does not always do:
** an allocation failure can read as a syntax error (a failure that does not
** repeat identically on a second parse is taken as one), and with verify a
** long token can come out misspelt from a parse that succeeds (a second
** parse that differs is taken as one; callers with a cheaper check of
** their own pass verify 0). A NUL byte is a syntax error (Jansson skips one
** after a number). GPT2_OK; GPT2_NOMEM; GPT2_ERROR with *je describing the
** syntax error (je->text, line, column, position). */
struct json_t;
struct json_error_t;
int gpt2_json_parse(const char *text, size_t n, size_t flags, int verify, struct json_t **out,
                    struct json_error_t *je);

/* A large buffer that every step streams through (model weights, KV
** caches): 64-byte aligned; from GPT2_HUGE_MIN bytes on, 2 MB aligned and
** advised to the kernel as transparent huge pages (madvise, a hint), so
** that streaming it costs few TLB misses and filling it few page faults.
** Free with free(). NULL on OOM. */
#define GPT2_HUGE_MIN ((size_t)4 << 20)
void *gpt2_alloc_large(size_t bytes);

#endif
