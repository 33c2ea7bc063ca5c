/*
** tok_bytemap.c — GPT-2's byte <-> printable character mapping (vocab.json
** and merges.txt spell every byte as a printable character; docs/formats.md,
** "Tokenizer"): bytes '!'..'~', 0xA1..0xAC, 0xAE..0xFF map to themselves;
** the other 68, in increasing order, to U+0100 + n. Also the helpers that
** quote tokens and lines in error messages.
*/
#include "tok_private.h"
#include "utf8.h"

static int byte_is_printable(unsigned b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

static uint32_t byte_to_cp(unsigned b) {
  if (byte_is_printable(b)) return b;
  if (b <= 0x20) return 0x100 + b;                            /* n = 0..32 */
  if (b >= 0x7F && b <= 0xA0) return 0x100 + 33 + (b - 0x7F); /* n = 33..66 */
  return 0x100 + 67;                                          /* 0xAD */
}

/* The byte a mapped character stands for, or -1. */
static int cp_to_byte(uint32_t cp) {
  if (cp < 0x100) return byte_is_printable(cp) ? (int)cp : -1;
  if (cp > 0x100 + 67) return -1;
  unsigned n = cp - 0x100;
  if (n <= 32) return (int)n;
  if (n <= 66) return (int)(0x7F + n - 33);
  return 0xAD;
}

int tk_unmap(const char *s, size_t n, unsigned char *out, size_t *outn, uint32_t *bad) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0, k = 0;
  *outn = 0;
  while (i < n) {
    uint32_t cp;
    size_t sub;
    int cut;
    size_t len = utf8_char(u + i, n - i, &cp, &sub, &cut);
    if (!len) return UNMAP_UTF8;
    int b = cp_to_byte(cp);
    if (b < 0) {
      *bad = cp;
      return UNMAP_CHAR;
    }
    out[k++] = (unsigned char)b;
    i += len;
  }
  *outn = k;
  return 0;
}

const char *tk_mapped(const char *p, size_t n, char *buf, size_t cap) {
  size_t k = 0;
  for (size_t i = 0; i < n && k + 3 < cap; i++) {
    uint32_t cp = byte_to_cp((unsigned char)p[i]);
    if (cp < 0x80)
      buf[k++] = (char)cp;
    else {
      buf[k++] = (char)(0xC0 | cp >> 6);
      buf[k++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  buf[k] = 0;
  return buf;
}

int tk_clip(const char *s, size_t n, size_t max) {
  if (n <= max) return (int)n;
  while (max && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
  return (int)max;
}

