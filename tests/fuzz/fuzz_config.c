/*
** fuzz_config — config.json parsing (config_parse).
**
** Input: the bytes of a config.json. Invariants on success: every size in
** its documented range (config.h), n_embd divisible by n_head, the
** parameter count representable; on failure a message that starts with
** "config.json: ".
*/
#include "fuzz_common.h"

#include "config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  fz_init((*argv)[0]);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  Gpt2Config cfg;
  char err[GPT2_ERRLEN];
  err[0] = 0;
  int rc = config_parse((const char *)data, size, "config.json", &cfg, err, sizeof err);
  /* No allocation fails here: NOMEM would mean a syntax error taken for one
  ** (config.c reads a Jansson error without a message as OOM). */
  FZ_CHECK(rc != GPT2_NOMEM, "GPT2_NOMEM for a %zu-byte input", size);
  if (rc != GPT2_OK) {
    FZ_CHECK(rc == GPT2_ERROR, "rc %d", rc);
    FZ_CHECK(strncmp(err, "config.json: ", 13) == 0, "message: %s", err);
    return 0;
  }
  FZ_CHECK(cfg.n_layer >= 1 && cfg.n_layer <= CFG_MAX_LAYER, "n_layer %d", cfg.n_layer);
  FZ_CHECK(cfg.n_head >= 1 && cfg.n_embd >= 1 && cfg.n_embd <= CFG_MAX_EMBD, "n_embd %d",
           cfg.n_embd);
  FZ_CHECK(cfg.n_embd % cfg.n_head == 0, "n_embd %d n_head %d", cfg.n_embd, cfg.n_head);
  FZ_CHECK(cfg.n_positions >= 1 && cfg.n_positions <= CFG_MAX_POSITIONS, "n_positions %d",
           cfg.n_positions);
  FZ_CHECK(cfg.vocab_size >= 1 && cfg.vocab_size <= CFG_MAX_VOCAB, "vocab %d", cfg.vocab_size);
  FZ_CHECK(cfg.n_inner >= 1 && cfg.n_inner <= CFG_MAX_INNER, "n_inner %d", cfg.n_inner);
  FZ_CHECK(cfg.eos_id >= -1 && cfg.eos_id < cfg.vocab_size, "eos %d", cfg.eos_id);
  FZ_CHECK(cfg.bos_id >= -1 && cfg.bos_id < cfg.vocab_size, "bos %d", cfg.bos_id);
  FZ_CHECK(cfg.ln_eps > 0 && cfg.ln_eps <= 1, "eps %g", (double)cfg.ln_eps);
  uint64_t np;
  FZ_CHECK(config_n_params(&cfg, 0, &np) == GPT2_OK, "n_params overflows after a good parse");
  return 0;
}
