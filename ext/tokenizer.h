/*
** tokenizer.h — GPT-2 byte-level BPE (owns: vocab.json, merges.txt, the
** pre-tokenisation pattern, the byte<->printable mapping, special tokens).
**
** Exactly OpenAI's encoder.py (see ../shared/docs/gpt2-facts.md, "Tokenizer"):
**   1. the literal text of a special token (e.g. "<|endoftext|>") encodes to it;
**   2. the rest is split by GPT-2's pattern (PCRE2, UTF+UCP, with \s spelled
**      out as Unicode White_Space so it matches Python's `regex` module);
**   3. each piece's bytes go through rank-ordered BPE merges.
** Input bytes that are not valid UTF-8 each become a piece of their own; the
** valid runs between them are tokenized as separate texts.
** A Tokenizer is immutable after tok_load and may be shared across threads.
*/
#ifndef GPT2_TOKENIZER_H
#define GPT2_TOKENIZER_H

#include "common.h"

typedef struct Tokenizer Tokenizer;

/* Load <dir>/vocab.json and <dir>/merges.txt (and, when present,
** tokenizer_config.json / special_tokens_map.json for the unknown token and
** special tokens). On failure returns GPT2_ERROR (message names the file and
** the line or key) or GPT2_NOMEM; *out is NULL and nothing is left allocated. */
int tok_load(const char *dir, Tokenizer **out, char *err, size_t errlen);
void tok_free(Tokenizer *t);

/* One more than the largest id in vocab.json. */
int tok_vocab_size(const Tokenizer *t);

/* Id of a token given in vocab.json's (mapped) spelling, or -1. */
int tok_find(const Tokenizer *t, const char *mapped, size_t n);

/* Encode n bytes of text, appending ids to out. A byte with no token of its
** own uses the declared unknown token, else fails naming the byte. */
int tok_encode(const Tokenizer *t, const char *text, size_t n, IdVec *out,
               char *err, size_t errlen);

/* The raw bytes a token stands for (unmapped); NULL with *len 0 for ids that
** are out of range or unused. */
const char *tok_bytes(const Tokenizer *t, int id, size_t *len);

/* Decode ids to UTF-8 text: the tokens' bytes concatenated, with every
** maximal invalid UTF-8 subsequence replaced by U+FFFD (as Python's
** bytes.decode(errors="replace"), which Hugging Face's decode uses).
** Fails naming the id and the vocabulary size for ids out of range. */
int tok_decode(const Tokenizer *t, const int *ids, size_t n, ByteBuf *out,
               char *err, size_t errlen);

/* Append bytes to out, replacing invalid UTF-8 as tok_decode does. */
int utf8_append_sanitized(ByteBuf *out, const char *s, size_t n);

/* Length of the longest prefix of s[0..n) that ends on a UTF-8 character
** boundary and leaves no complete-able sequence cut (used when streaming:
** bytes after it may be completed by the next token). */
size_t utf8_complete_prefix(const char *s, size_t n);

#endif
