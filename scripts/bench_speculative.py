"""Speculative decoding (README, "Speculative decoding"): greedy decode speed
with and without a draft, next to the acceptance rate measured in the same
run. Not a test; run with Debian's /usr/bin/python3.

    bench_speculative.py [--quick] [--15b] [--tokens N]

Part 1, a GPT-2 124M-shaped target (random weights: benchlib.checkpoint) in
f32, drafted by
  - itself (every draft accepted: the cost of the rounds alone),
  - its q8, bf16 and q4 copies,
  - perturbed copies — the target's every tensor plus Gaussian noise of a
    few sizes times the tensor's own standard deviation —, held as q8,
    which make the agreement a dial.
Part 1b, the same shape built as part 2's draft below (random embeddings,
small blocks: BLOCK_SCALE), whose greedy choices have clear margins, so that its q8 and
q4 copies agree with it often; drafted by itself, those copies and
perturbed copies held as q4 (noise times each tensor's std: the dial).
(On part 1's random checkpoint the logits are chaotic: even an f16 copy
agrees with f32 on a minority of greedy steps, bench_decode.py.)
Part 2 (--15b, or BENCH_SPEC_15B=1; writes ~6.5 GB and needs as much RAM),
a 1.5B-shaped target (48 layers, 25 heads, n_embd 1600) drafted by a
124M-shaped model, both constructed here so that they agree often:
  - the draft: the 124M shape, embeddings random (wte 0.2, wpe 1.0 as
    tests/make_checkpoint.py), every block's matrices random times a small
    scale (PAIR_BLOCK_SCALE: with 0.02, as part 1b, 48 random layers add up
    to more than the embeddings and the pair agrees on ~2% of steps), layer
    norms 1 / 0, biases 0;
  - the target: the draft's wte and wpe padded with zeros to n_embd 1600,
    ln_f weight 1 on the draft's 768 channels and 0 on the padding, blocks
    random times the same small scale.
With small blocks both models are close to one function of the last
token and its position (ln_f of its embedding against the embeddings), so
their greedy choices agree often but not always (the blocks differ, and the
layer norms see 1600 channels in the target, 768 in the draft). It says
nothing about real checkpoints: the acceptance rate printed next to each
speed-up is what the speed-up depends on.

Every speculative output is checked equal to the plain one (greedy).
--quick runs both parts on tiny shapes, to check that the script works.
"""
import argparse
import json
import os
import shutil
import struct
import sys
import time

import numpy as np

from benchlib import BENCH_DIR, ROOT, checkpoint, connect

sys.path.insert(0, os.path.join(ROOT, "tests"))
from make_checkpoint import write_checkpoint  # noqa: E402

NOISES = [0.05, 0.2, 0.5]
PAIR_BLOCK_SCALE = 0.002  # part 2: 48 layers of 0.02 would outweigh the embeddings
STRUCT_NOISES = [0.1, 0.3, 1.0, 3.0]
BLOCK_SCALE = 0.02
PROMPT = "The meaning of life is"


# ---------------------------------------------------------------------------
# checkpoints


def read_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n)), 8 + n


def write_tensors(path, tensors):
    """model.safetensors at path from [(name, shape, make)] in order, F32;
    make(r0, r1) returns rows r0..r1 of the tensor (all of a 1-D one)."""
    header, off = {}, 0
    for name, shape, _ in tensors:
        n = int(np.prod(shape)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + n]}
        off += n
    hj = json.dumps(header).encode()
    hj += b" " * ((-len(hj)) % 8)
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for name, shape, make in tensors:
            rows = shape[0] if len(shape) == 2 else 1
            step = max(1, (1 << 22) // (shape[1] if len(shape) == 2 else 1))
            for r0 in range(0, rows, step):
                np.ascontiguousarray(make(r0, min(rows, r0 + step)), dtype="<f4").tofile(f)
    os.replace(tmp, path)


def perturbed(src, noise, seed=1):
    """A copy of checkpoint src with every tensor + noise * its std * N(0, 1)."""
    dst = f"{src}-noise{noise}"
    st = os.path.join(dst, "model.safetensors")
    if os.path.exists(st):
        return dst
    os.makedirs(dst, exist_ok=True)
    for f in ("config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))
    header, start = read_header(os.path.join(src, "model.safetensors"))
    data = np.memmap(os.path.join(src, "model.safetensors"), dtype=np.uint8, mode="r")
    rng = np.random.default_rng(seed)
    tensors = []
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", "perturbed() reads F32 checkpoints"
        a, b = t["data_offsets"]
        x = data[start + a:start + b].view("<f4").reshape(t["shape"])
        std = float(np.std(x[: min(len(x), 4096)]))

        def make(r0, r1, x=x, std=std):
            v = x[r0:r1] if x.ndim == 2 else x
            return v + noise * std * rng.standard_normal(v.shape, dtype=np.float32)
        tensors.append((name, tuple(t["shape"]), make))
    write_tensors(st, tensors)
    return dst


def gpt2_tensors(L, C, P, V, wte, wpe, lnf_w, block, rng):
    """The tensor list of a GPT-2 checkpoint (bare names, tied head)."""
    F = 4 * C
    ones = lambda n: (lambda r0, r1: np.ones(n, np.float32))
    zeros = lambda n: (lambda r0, r1: np.zeros(n, np.float32))
    small = lambda cols: (lambda r0, r1: block * rng.standard_normal((r1 - r0, cols), np.float32))
    t = [("wte.weight", (V, C), wte), ("wpe.weight", (P, C), wpe)]
    for i in range(L):
        h = f"h.{i}."
        t += [(h + "ln_1.weight", (C,), ones(C)), (h + "ln_1.bias", (C,), zeros(C)),
              (h + "attn.c_attn.weight", (C, 3 * C), small(3 * C)),
              (h + "attn.c_attn.bias", (3 * C,), zeros(3 * C)),
              (h + "attn.c_proj.weight", (C, C), small(C)), (h + "attn.c_proj.bias", (C,), zeros(C)),
              (h + "ln_2.weight", (C,), ones(C)), (h + "ln_2.bias", (C,), zeros(C)),
              (h + "mlp.c_fc.weight", (C, F), small(F)), (h + "mlp.c_fc.bias", (F,), zeros(F)),
              (h + "mlp.c_proj.weight", (F, C), small(C)), (h + "mlp.c_proj.bias", (C,), zeros(C))]
    t += [("ln_f.weight", (C,), lnf_w), ("ln_f.bias", (C,), zeros(C))]
    return t


def write_config(src, dst, L, H, C):
    """config.json of src with another shape, and src's vocabulary."""
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    cfg.update(n_layer=L, n_head=H, n_embd=C, n_inner=None)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))
    return cfg


def write_structured(vocab_src, d, shape, scale, rng):
    """Write at d a checkpoint built like part 2's draft (see the header):
    random embeddings, blocks at `scale`; its greedy choices have clear
    margins. Returns its embeddings (part 2's target reuses them)."""
    (L, H, C) = shape
    cfg = write_config(vocab_src, d, L, H, C)
    V, P = cfg["vocab_size"], cfg["n_positions"]
    wte = 0.2 * rng.standard_normal((V, C), np.float32)
    wpe = 1.0 * rng.standard_normal((P, C), np.float32)
    write_tensors(os.path.join(d, "model.safetensors"),
                  gpt2_tensors(L, C, P, V, lambda a, b: wte[a:b], lambda a, b: wpe[a:b],
                               lambda a, b: np.ones(C, np.float32), scale, rng))
    return wte, wpe


def structured(vocab_src, shape, tag):
    """The part-1b checkpoint of this shape (written once, then cached)."""
    d = os.path.join(BENCH_DIR, f"spec-structured-{tag}")
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        write_structured(vocab_src, d, shape, BLOCK_SCALE, np.random.default_rng(11))
    return d


def pair_15b(vocab_src, draft_shape, target_shape, tag):
    """(draft dir, target dir) of part 2 (see the header)."""
    (Lt, Ht, Ct), Cd = target_shape, draft_shape[2]
    dd = os.path.join(BENCH_DIR, f"spec-draft-{tag}-{PAIR_BLOCK_SCALE}")
    td = os.path.join(BENCH_DIR, f"spec-target-{tag}-{PAIR_BLOCK_SCALE}")
    if os.path.exists(os.path.join(td, "model.safetensors")):
        return dd, td
    rng = np.random.default_rng(7)
    wte, wpe = write_structured(vocab_src, dd, draft_shape, PAIR_BLOCK_SCALE, rng)
    write_config(vocab_src, td, Lt, Ht, Ct)
    (V, _), (P, _) = wte.shape, wpe.shape
    pad = lambda x: (lambda a, b: np.pad(x[a:b], ((0, 0), (0, Ct - Cd))))
    lnf = np.concatenate([np.ones(Cd, np.float32), np.zeros(Ct - Cd, np.float32)])
    write_tensors(os.path.join(td, "model.safetensors"),
                  gpt2_tensors(Lt, Ct, P, V, pad(wte), pad(wpe), lambda a, b: lnf,
                               PAIR_BLOCK_SCALE, rng))
    return dd, td


# ---------------------------------------------------------------------------
# measuring


def counters(conn):
    return json.loads(conn.execute("SELECT gpt2_info()").fetchone()[0])["counters"]


def run(conn, n, draft=None, k=4):
    o = {"max_tokens": n, "result": "json"}
    if draft:
        o.update(draft=draft, draft_tokens=k)
    c0 = counters(conn)
    t = time.perf_counter()
    r = json.loads(conn.execute("SELECT gpt2_generate(?, ?)", (PROMPT, json.dumps(o))).fetchone()[0])
    dt = time.perf_counter() - t
    c1 = counters(conn)
    prop = c1["draft_proposed"] - c0["draft_proposed"]
    acc = c1["draft_accepted"] - c0["draft_accepted"]
    passes = c1["verify_passes"] - c0["verify_passes"]
    return r, r["n_tokens"] / dt, (acc / prop if prop else None), ((acc + passes) / passes if passes else None)


def table(conn, n, drafts, ks):
    run(conn, n)  # warm-up: pages, thread pool
    base, tps, _, _ = run(conn, n)
    print(f"  plain decode: {tps:8.1f} tok/s ({base['n_tokens']} tokens)")
    print(f"  {'draft':<22} {'k':>3} {'accept':>7} {'tok/pass':>8} {'tok/s':>8} {'speed-up':>8}")
    for name in drafts:
        for k in ks:
            r, s, acc, tpp = run(conn, n, name, k)
            if r != base:
                raise SystemExit(f"draft {name}: output differs from plain decoding")
            print(f"  {name:<22} {k:>3} {acc:>7.1%} {tpp:>8.2f} {s:>8.1f} {s / tps:>7.2f}x")


def part_124m(quick, n):
    print("124M-shaped target (f32)" if not quick else "tiny target (f32), --quick")
    if quick:
        d = os.path.join(BENCH_DIR, "spec-quick")
        if not os.path.exists(os.path.join(d, "model.safetensors")):
            write_checkpoint(d, seed=3, return_weights=False)
    else:
        d = checkpoint("124M")
    self_drafts(d, ("q8", "bf16", "q4"), NOISES, "q8", quick, n)


def part_structured(quick, n):
    """The 124M shape built as part 2's draft: drafts of controlled agreement."""
    vocab_src = os.path.join(BENCH_DIR, "spec-quick") if quick else checkpoint("124M")
    d = structured(vocab_src, (2, 4, 64) if quick else (12, 12, 768), "quick" if quick else "124M")
    print("124M-shaped target built with small blocks (f32); perturbed drafts held as q4"
          if not quick else "tiny structured target (f32), --quick")
    self_drafts(d, ("q8", "q4"), STRUCT_NOISES, "q4", quick, n)


def self_drafts(d, formats, noises, noise_fmt, quick, n):
    """The table for target d drafted by itself, its copies in formats and
    perturbed copies (each noise) held in noise_fmt."""
    conn = connect()
    drafts = ["default"]
    for fmt in formats:
        conn.execute("SELECT gpt2_load(?, ?, ?)", (d, fmt, fmt))
        drafts.append(fmt)
    for noise in noises:
        name = f"noise {noise} ({noise_fmt})"
        conn.execute("SELECT gpt2_load(?, ?, ?)", (perturbed(d, noise), name, noise_fmt))
        drafts.append(name)
    conn.execute("SELECT gpt2_load(?)", (d,))
    table(conn, n, drafts, [2, 4] if quick else [2, 4, 8])
    conn.close()


def part_15b(quick, n):
    vocab_src = os.path.join(BENCH_DIR, "spec-quick") if quick else checkpoint("124M")
    if quick:
        dd, td = pair_15b(vocab_src, (2, 4, 64), (3, 6, 96), "quick")
        print("tiny draft / target pair, --quick")
    else:
        dd, td = pair_15b(vocab_src, (12, 12, 768), (48, 25, 1600), "15b")
        print("1.5B-shaped target (f32), 124M-shaped draft (f32, q8 and q4)")
    conn = connect()
    conn.execute("SELECT gpt2_load(?, 'draft')", (dd,))
    conn.execute("SELECT gpt2_load(?, 'draft q8', 'q8')", (dd,))
    conn.execute("SELECT gpt2_load(?, 'draft q4', 'q4')", (dd,))
    conn.execute("SELECT gpt2_load(?)", (td,))
    table(conn, n, ["draft", "draft q8", "draft q4"], [2, 4] if quick else [4, 8])
    conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes: check the script works")
    ap.add_argument("--15b", dest="big", action="store_true",
                    help="also the 1.5B-shaped target (or BENCH_SPEC_15B=1)")
    ap.add_argument("--tokens", type=int, default=None)
    a = ap.parse_args()
    n = a.tokens or (12 if a.quick else 128)
    os.makedirs(BENCH_DIR, exist_ok=True)
    part_124m(a.quick, n)
    part_structured(a.quick, n)
    if a.big or a.quick or os.environ.get("BENCH_SPEC_15B") == "1":
        part_15b(a.quick, n)
    else:
        print("1.5B-shaped target: skipped (--15b or BENCH_SPEC_15B=1 runs it)")


if __name__ == "__main__":
    main()
