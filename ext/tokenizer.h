/*
** tokenizer.h — GPT-2 byte-level BPE (owns: vocab.json, merges.txt, the
** pre-tokenisation pattern, the byte<->printable mapping, special tokens).
** Implemented by ext/tok_*.c: tok_load.c (loading: tok_vocab.c, tok_merges.c,
** tok_special.c), tok_encode.c, tok_bpe.c, tok_decode.c; shared internals in
** tok_private.h.
**
** Exactly OpenAI's encoder.py (docs/formats.md, "Tokenizer"):
**   1. the literal text of a special token encodes to it (Hugging Face's
**      behaviour): "<|endoftext|>" when the vocabulary has it, and the
**      unk/eos/bos tokens declared in tokenizer_config.json or
**      special_tokens_map.json when they are in the vocabulary; the text is
**      split at them first (leftmost match, the longest on a tie);
**   2. the rest is split by GPT-2's pattern (PCRE2, UTF+UCP, with \s spelled
**      out as Unicode White_Space so it matches Python's `regex` module);
**   3. each piece's bytes go through rank-ordered BPE merges, in encoder.py's
**      rounds (every occurrence of the best pair per round).
** Input bytes that are not valid UTF-8 (SQLite TEXT may hold them) each become
** a piece of their own, i.e. their byte's token; the valid runs between them
** are tokenized as separate texts. E.g. with GPT-2's vocabulary the bytes
** FF 41 give [187, 32] ("\xff" alone, then "A").
** A Tokenizer is immutable after tok_load and may be shared across threads
** (tok_load itself uses one helper thread while it reads the files).
*/
#ifndef GPT2_TOKENIZER_H
#define GPT2_TOKENIZER_H

#include "common.h"
#include "utf8.h" /* for callers of the UTF-8 helpers that tok_decode uses */

typedef struct Tokenizer Tokenizer;

/* Load <dir>/vocab.json and <dir>/merges.txt (and, when present,
** tokenizer_config.json / special_tokens_map.json for the unknown token and
** special tokens; the map wins). On failure returns GPT2_ERROR (message names
** the file and the line or key) or GPT2_NOMEM; *out is NULL and nothing is
** left allocated. Malformed: vocab.json not an object of {token: id}, an id
** not an integer in [0, 10,000,000], a duplicate key or id, an empty key, a
** key with a character outside GPT-2's 256 byte characters; a merges.txt
** line other than "left right", or naming a token (or a merged token) not in
** vocab.json. Accepted: gaps in the ids, "#version" lines, \r\n, trailing
** blank lines; a repeated merge pair takes its last rank. Files <= 64 MiB. */
int tok_load(const char *dir, Tokenizer **out, char *err, size_t errlen);
void tok_free(Tokenizer *t);

/* One more than the largest id in vocab.json. */
int tok_vocab_size(const Tokenizer *t);

/* Id of a token given in vocab.json's (mapped) spelling, or -1. */
int tok_find(const Tokenizer *t, const char *mapped, size_t n);

/* Encode n bytes of text, appending ids to out. A byte with no token of its
** own (small vocabularies) uses the declared unknown token, else fails:
** "no token for byte 0xC3 and no unknown token declared". On failure out is
** as it was. */
int tok_encode(const Tokenizer *t, const char *text, size_t n, IdVec *out, char *err,
               size_t errlen);

/* The raw bytes a token stands for (unmapped); NULL with *len 0 for ids that
** are out of range or unused. */
const char *tok_bytes(const Tokenizer *t, int id, size_t *len);

/* Decode ids to UTF-8 text: the tokens' bytes concatenated, with every
** maximal invalid UTF-8 subsequence replaced by U+FFFD (as Python's
** bytes.decode(errors="replace"), which Hugging Face's decode uses).
** Fails naming the id and the vocabulary size for ids out of range
** ("id 70000 is outside the vocabulary (size 50257)") or unused (a gap in
** vocab.json's ids). Special tokens decode to their literal text. */
int tok_decode(const Tokenizer *t, const int *ids, size_t n, ByteBuf *out, char *err,
               size_t errlen);

#endif
