/*
** utf8.h — UTF-8 validation and repair (Unicode 15, table 3-7: well-formed
** byte sequences), shared by the tokenizer, generation and the SQL layer.
** Invalid input is replaced the way Python's bytes.decode(errors="replace")
** does it: one U+FFFD per maximal invalid subpart.
*/
#ifndef GPT2_UTF8_H
#define GPT2_UTF8_H

#include "common.h"

/* Decode the character at s[0..n) (n >= 1). Returns its length (1..4), or 0
** when the bytes are not a valid character; then *sub is the length of the
** maximal subpart (>= 1) and *cut is 1 when that subpart was stopped only by
** the end of the input (more bytes could complete it). *cp gets the code
** point. */
size_t utf8_char(const unsigned char *s, size_t n, uint32_t *cp, size_t *sub, int *cut);

/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t utf8_valid_prefix(const unsigned char *s, size_t n);

/* Append bytes to out, replacing invalid UTF-8 as tok_decode does. */
int utf8_append_sanitized(ByteBuf *out, const char *s, size_t n);

/* Length of the longest prefix of s[0..n) that does not end in a cut but
** still completable UTF-8 character (used when streaming: those bytes wait
** for the next token). Bytes that can never become a character are not held
** back, so sanitizing the prefixes one after another gives the same text as
** sanitizing the whole. */
size_t utf8_complete_prefix(const char *s, size_t n);

#endif
