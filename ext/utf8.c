/*
** utf8.c — UTF-8 decoding, validation and U+FFFD repair (implements utf8.h).
*/
#include "utf8.h"

#include <string.h>

size_t utf8_char(const unsigned char *s, size_t n, uint32_t *cp, size_t *sub, int *cut) {
  unsigned b = s[0];
  *cut = 0;
  *sub = 1;
  if (b < 0x80) {
    *cp = b;
    return 1;
  }
  unsigned need, lo = 0x80, hi = 0xBF;
  uint32_t c;
  if (b >= 0xC2 && b <= 0xDF)
    need = 1, c = b & 0x1F;
  else if (b >= 0xE0 && b <= 0xEF) {
    need = 2, c = b & 0x0F;
    if (b == 0xE0)
      lo = 0xA0; /* no overlongs */
    else if (b == 0xED)
      hi = 0x9F; /* no surrogates */
  } else if (b >= 0xF0 && b <= 0xF4) {
    need = 3, c = b & 0x07;
    if (b == 0xF0)
      lo = 0x90; /* no overlongs */
    else if (b == 0xF4)
      hi = 0x8F; /* nothing above U+10FFFF */
  } else
    return 0; /* 0x80..0xC1, 0xF5..0xFF never start a character */
  for (unsigned i = 1; i <= need; i++) {
    if (i >= n) {
      *sub = i;
      *cut = 1;
      return 0;
    }
    unsigned x = s[i];
    if (x < lo || x > hi) {
      *sub = i;
      return 0;
    }
    c = c << 6 | (x & 0x3F);
    lo = 0x80, hi = 0xBF;
  }
  *cp = c;
  return need + 1;
}

/* Length of the longest valid UTF-8 prefix of s[0..n). */
size_t utf8_valid_prefix(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) { /* ASCII, eight bytes at a time */
      uint64_t w;
      memcpy(&w, s + i, 8);
      if (!(w & 0x8080808080808080ull)) {
        i += 8;
        continue;
      }
    }
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    uint32_t cp;
    size_t sub;
    int cut;
    size_t k = utf8_char(s + i, n - i, &cp, &sub, &cut);
    if (!k) return i;
    i += k;
  }
  return n;
}

int utf8_append_sanitized(ByteBuf *out, const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    size_t v = utf8_valid_prefix(u + i, n - i);
    if (v && buf_append(out, u + i, v)) return GPT2_NOMEM;
    i += v;
    if (i == n) break;
    uint32_t cp;
    size_t sub;
    int cut;
    utf8_char(u + i, n - i, &cp, &sub, &cut);
    if (buf_append(out, "\xEF\xBF\xBD", 3)) return GPT2_NOMEM; /* one U+FFFD per maximal subpart */
    i += sub;
  }
  if (!out->p && buf_append(out, "", 0)) return GPT2_NOMEM;
  return GPT2_OK;
}

size_t utf8_complete_prefix(const char *s, size_t n) {
  const unsigned char *u = (const unsigned char *)s;
  /* Only the last character can be cut: find its first byte (at most 3
  ** continuation bytes back) and hold it back if more bytes could complete it. */
  size_t p = n;
  while (p > 0 && n - p < 3) {
    p--;
    if ((u[p] & 0xC0) != 0x80) {
      uint32_t cp;
      size_t sub;
      int cut;
      if (!utf8_char(u + p, n - p, &cp, &sub, &cut) && cut && p + sub == n) return p;
      return n;
    }
  }
  return n;
}
