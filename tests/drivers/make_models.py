#!/usr/bin/python3
"""Checkpoints for the C drivers (tests/drivers/*.c, tests/oom/oom_driver.c).

    /usr/bin/python3 tests/drivers/make_models.py OUTDIR [--vocab-dir DIR]

  OUTDIR/micro    1 layer, 2 heads, n_embd 8, 16 positions, 277-token vocabulary
  OUTDIR/tiny     2 layers, 4 heads, n_embd 64, 128 positions, GPT-2's real vocabulary
                  (--vocab-dir; the 557-token test vocabulary without it)
  OUTDIR/other    1 layer, 2 heads, n_embd 32, 64 positions, F16, micro's vocabulary
  OUTDIR/tok      vocab.json + merges.txt only (a tokenizer-only directory)
  OUTDIR/broken   micro with model.safetensors cut short (a load that fails late)
"""
import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from make_checkpoint import tiny_vocab, write_checkpoint, write_vocab  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--vocab-dir")
    a = ap.parse_args(argv)
    out = a.outdir
    os.makedirs(out, exist_ok=True)
    mv = os.path.join(out, "micro-vocab")
    os.makedirs(mv, exist_ok=True)
    write_vocab(mv, *tiny_vocab(20))
    kw = dict(return_weights=False)
    write_checkpoint(os.path.join(out, "micro"), n_layer=1, n_head=2, n_embd=8, n_positions=16,
                     vocab_dir=mv, seed=1, **kw)
    write_checkpoint(os.path.join(out, "tiny"), n_layer=2, n_head=4, n_embd=64, n_positions=128,
                     vocab_dir=a.vocab_dir, seed=3, **kw)
    write_checkpoint(os.path.join(out, "other"), n_layer=1, n_head=2, n_embd=32, n_positions=64,
                     dtype="F16", vocab_dir=mv, seed=5, **kw)
    tok = os.path.join(out, "tok")
    os.makedirs(tok, exist_ok=True)
    write_vocab(tok, *tiny_vocab())
    broken = os.path.join(out, "broken")
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(os.path.join(out, "micro"), broken)
    st = os.path.join(broken, "model.safetensors")
    os.truncate(st, os.path.getsize(st) - 100)
    print("driver checkpoints in", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
