/*
** planted_leak.c — the leak `make test-sanitize-selftest` must see reported, linked
** only into that target's gpt2.so (mk/hardening.mk), with -Wl,--wrap=json_loadb:
** the extension's calls to Jansson's json_loadb come here first. The first one
** (a gpt2_load reading config.json, say) leaks 4242 bytes; every call then goes on
** to the real json_loadb, so the extension works as usual.
*/
#include <jansson.h>
#include <stdlib.h>

json_t *__real_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error);
json_t *__wrap_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error);

void *volatile planted_leak_last; /* volatile: the store and the drop both happen */

json_t *__wrap_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error) {
  static int planted;
  if (!__atomic_exchange_n(&planted, 1, __ATOMIC_RELAXED)) {
    planted_leak_last = malloc(4242); /* the only pointer to it is dropped: a leak */
    planted_leak_last = NULL;
  }
  return __real_json_loadb(buffer, buflen, flags, error);
}
