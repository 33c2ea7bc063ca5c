"""The 4-bit weight format q4 (ext/kernels.h, "PACKED WEIGHTS"; gpt2_load(dir, name, 'q4')).

- Quantization: the packed nibbles and f16 scales, byte for byte, against an
  independent numpy implementation of the documented rule (test_kernels.q4_quant),
  through kmat_pack_rows and kmat_pack_cols, including hostile blocks (all
  zero, one huge value, ties, NaN / Inf, subnormal and saturating scales, K = 1);
  kmat_col (the embedding lookup) returns q·sf.
- Products: every CPU path this machine has, 1 and 2 threads, every epilogue,
  with and without bias, ragged shapes and M = 1..13 and 70 (row blocks),
  bitwise equal to the portable path; the portable path bitwise equal to a
  numpy emulation of the documented chain with exactly rounded float32 FMAs.
  A path the CPU lacks is reported as skipped, not passed.
- End to end: logits within a stated tolerance of f32's, generation through
  SQL, the format and bytes reported by gpt2_load / gpt2_info / gpt2_models.
"""
import ctypes
import json

import numpy as np
import pytest

from conftest import connect, one
from make_checkpoint import write_checkpoint
from test_kernels import (ADD, GELU, KQ4B, PATHS, STORE, Core, Packed, fp, lib, matmul,  # noqa: F401
                          paths, q4_quant, rand, rounded, sc)
import reference

Q4 = 4  # KType
KNB = 64


def r64(n):
    return (n + 63) // 64 * 64


def q4_bytes(K, N):
    """kmat_bytes for Q4 by the layout of kernels.h: (np, K, 32) bytes of
    nibbles, then (np, ceil(K/32), 64) f16 scales, each part 64-aligned."""
    npan = (N + KNB - 1) // KNB
    return r64(npan * K * KNB // 2) + r64(npan * ((K + KQ4B - 1) // KQ4B) * KNB * 2)


def unpack(buf, K, N):
    """(q (K, np*64) int8, s (ceil(K/32), np*64) uint16) read from a packed
    buffer by the documented layout."""
    npan, nkb = (N + KNB - 1) // KNB, (K + KQ4B - 1) // KQ4B
    nib = buf[:npan * K * 32].reshape(npan, K, 32)
    lo, hi = (nib & 15).astype(np.int8) - 8, (nib >> 4).astype(np.int8) - 8
    q = np.concatenate([lo, hi], axis=2)  # (np, K, 64): byte j -> columns j, j + 32
    off = r64(npan * K * 32)
    s = buf[off:off + npan * nkb * KNB * 2].view(np.uint16).reshape(npan, nkb, KNB)
    return (q.transpose(1, 0, 2).reshape(K, npan * KNB),
            s.transpose(1, 0, 2).reshape(nkb, npan * KNB))


def hostile(rng, K, N):
    """Random weights with special blocks in some columns."""
    W = rand(rng, K, N) * np.float32(0.1)
    W[:, 0] = 0.0  # all-zero blocks
    if N > 1:
        W[:, 1] = rand(rng, K) * np.float32(1e-3)
        W[K // 2, 1] = 1e4  # one huge value: the rest rounds to 0
    if N > 2:
        W[:, 2] = np.float32(0.5) * np.sign(rand(rng, K))  # ties: the first one sets the sign
    if N > 3:
        W[:, 3] = rand(rng, K) * np.float32(1e-7)  # m / 8 is an f16 subnormal (or 0)
    if N > 4:
        W[:, 4] = rand(rng, K) * np.float32(1e6)  # |m| / 8 above 65504: saturating scale
    if N > 5:
        W[::3, 5] = np.nan
    if N > 6:
        W[K // 3, 6] = np.inf
    if N > 7:
        W[:, 7] = np.nan  # no maximum at all
    if N > 8:
        W[:, 8] = -0.0
    return W


@pytest.mark.parametrize("K,N", [(1, 1), (1, 70), (31, 9), (32, 64), (33, 65), (100, 130),
                                 (257, 200)])
def test_quantization_matches_numpy(lib, K, N):
    rng = np.random.default_rng(K * 7 + N)
    W = hostile(rng, K, N)
    assert lib.kmat_bytes(Q4, K, N) == q4_bytes(K, N)
    p = Packed(lib, W, wtype="q4")
    q, s = unpack(p.buf, K, N)
    wq, ws = q4_quant(W)
    assert np.array_equal(q[:, :N], wq)
    assert np.array_equal(s[:, :N], ws)
    assert np.all(q[:, N:] == 0)  # padding columns
    assert np.array_equal(Packed(lib, W, cols=True, wtype="q4").buf, p.buf)
    # kmat_col: q * sf, exactly
    sf = np.repeat(ws.view(np.float16).astype(np.float32), KQ4B, axis=0)[:K]
    want = wq.astype(np.float32) * sf
    out = np.zeros(K, np.float32)
    for n in range(N):
        lib.kmat_col(ctypes.byref(p.m), n, fp(out))
        assert np.array_equal(out, want[:, n]), n


def test_quantization_rule_by_hand(lib):
    """A few blocks whose packed values follow from the rule by hand."""
    W = np.zeros((33, 3), np.float32)
    W[:32, 0] = 1.0
    W[5, 0] = -4.0  # m = -4: s = f16(0.5), q = rint(w / 0.5)
    W[6, 0] = 3.9  # 7.8 -> clamped to 7
    W[7, 0] = 0.25  # 0.5 -> 0 (to even)
    W[8, 0] = 0.75  # 1.5 -> 2
    W[32, 0] = 2.0  # the second block, one row: m = 2, s = -0.25, q = -8
    W[3, 1], W[9, 1] = 3.0, -3.0  # tie: the first sets the sign, s = -0.375
    q, s = unpack(Packed(lib, W, wtype="q4").buf, 33, 3)
    h = s.view(np.float16).astype(np.float32)
    assert h[0, 0] == 0.5 and q[5, 0] == -8 and q[6, 0] == 7 and q[7, 0] == 0 and q[8, 0] == 2
    assert q[0, 0] == 2 and h[1, 0] == -0.25 and q[32, 0] == -8
    assert h[0, 1] == -0.375 and q[3, 1] == -8
    assert q[9, 1] == 7  # +8 does not exist: clamped
    assert np.all(np.delete(q[:, 1], [3, 9]) == 0)
    assert np.all(q[:, 2] == 0) and np.all(h[:, 2] == 0)  # all zero


def test_hostile_values(lib):
    """Non-finite and extreme weights (kernels.h): NaN is stored as 0 and is
    never the maximum; Inf saturates the scale at ±65504 and is stored as
    ∓8·scale; a huge value sends the rest of its block to 0."""
    K = 40
    W = np.ones((K, 3), np.float32)
    W[3, 0] = np.nan
    W[4, 1] = np.inf
    W[10, 2] = 1e30
    p = Packed(lib, W, wtype="q4")
    out = np.zeros(K, np.float32)
    lib.kmat_col(ctypes.byref(p.m), 0, fp(out))
    assert out[3] == 0 and np.all(np.delete(out, 3) == 1.0)
    lib.kmat_col(ctypes.byref(p.m), 1, fp(out))
    assert out[4] == 8 * 65504 and np.all(out[:32][np.arange(32) != 4] == 0)
    assert np.all(out[32:] == 1.0)  # the next block is untouched
    lib.kmat_col(ctypes.byref(p.m), 2, fp(out))
    assert out[10] == 8 * 65504 and np.all(out[:32][np.arange(32) != 10] == 0)


# ---------------------------------------------------------------------------
# products


def fma32(a, b, c):
    """Exactly rounded float32 fma(a, b, c), elementwise, in numpy: a·b is
    exact in float64 (24 + 24 bits), TwoSum gives a·b + c exactly as hi + lo,
    and hi is rounded to float32 with lo breaking the ties that rounding hi
    alone would get wrong."""
    a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    p = a * b
    hi = p + c
    bb = hi - p
    lo = (p - (hi - bb)) + (c - bb)
    r = hi.astype(np.float32)
    r64 = r.astype(np.float64)
    nb = np.nextafter(r, np.where(hi > r64, np.float32(np.inf), np.float32(-np.inf)))
    tie = (hi != r64) & (hi == (r64 + nb.astype(np.float64)) / 2)
    away = tie & (lo != 0) & (np.sign(lo) == np.sign(hi - r64))
    return np.where(away, nb, r).astype(np.float32)


def test_fma32_emulation():
    e = 2.0 ** -23
    f = np.float32
    # (1 + e)(1 - e) - 1 = -e², which a float32 multiply then add loses
    assert fma32(f(1 + e), f(1 - e), f(-1)) == f(-(e * e))
    # a·b + c lands just off a float32 midpoint by 2^-70: rounding through
    # float64 alone would see the exact midpoint and round to even instead
    assert fma32(f(1 + e), f(2.0 ** -24 * (1 - e)), f(1 + e)) == f(1 + e)  # just below: down
    assert fma32(f(1 + e), f(-(2.0 ** -24) * (1 - e)), f(1 + 3 * e)) == f(1 + 3 * e)  # above: up
    assert fma32(f(1), f(2.0 ** -24), f(1 + e)) == f(1 + 2 * e)  # an exact tie: to even
    # random triples against exact rational arithmetic: the result is a
    # nearest float32 (ties to even)
    from fractions import Fraction
    rng = np.random.default_rng(0)
    n = 3000
    a = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(np.float32)
    b = (rng.standard_normal(n) * 2.0 ** rng.integers(-20, 20, n)).astype(np.float32)
    c = (-(a.astype(np.float64) * b) * (1 + rng.standard_normal(n) * 2.0 ** -rng.integers(
        0, 30, n))).astype(np.float32)  # cancellation of every depth
    got = fma32(a, b, c)
    for i in range(n):
        t = Fraction(float(a[i])) * Fraction(float(b[i])) + Fraction(float(c[i]))
        g = got[i]
        d = abs(Fraction(float(g)) - t)
        for nb in (np.nextafter(g, f(np.inf)), np.nextafter(g, f(-np.inf))):
            dn = abs(Fraction(float(nb)) - t)
            assert d < dn or (d == dn and g.view(np.uint32) % 2 == 0), (a[i], b[i], c[i])


def chain(x, q, sf, b):
    """The documented Q4 chain (kernels.h) in numpy: per 32-row block, part =
    fma over k of x·q from 0, then acc = fma(part, sf, acc); acc from b."""
    M, K = x.shape
    acc = np.broadcast_to(b if b is not None else np.float32(0), (M, q.shape[1])).astype(np.float32)
    for j, k0 in enumerate(range(0, K, KQ4B)):
        part = np.zeros_like(acc)
        for k in range(k0, min(K, k0 + KQ4B)):
            part = fma32(x[:, k:k + 1], q[k][None, :].astype(np.float32), part)
        acc = fma32(part, sf[j][None, :], acc)
    return acc


SHAPES = [(1, 1), (1, 70), (31, 64), (33, 65), (95, 3), (100, 130), (257, 200)]  # (K, N)
MS = list(range(1, 14)) + [70]


@pytest.mark.parametrize("K,N", SHAPES)
def test_chain_emulated_exactly(lib, sc, K, N):
    rng = np.random.default_rng(K + 13 * N)
    W, b = hostile(rng, K, N), rand(rng, N)  # stored values are finite
    Wp = Packed(lib, W, wtype="q4")
    q, s = q4_quant(W)
    sf = s.view(np.float16).astype(np.float32)
    x = rand(rng, 13, K)
    for bias in (b, None):
        got = matmul(lib, sc, "portable", 1, Wp, bias, x, STORE)
        assert np.array_equal(got, chain(x, q, sf, bias)), bias is None
    y0 = rand(rng, 13, N)
    got = matmul(lib, sc, "portable", 1, Wp, b, x, ADD, y0)
    assert np.array_equal(got, y0 + chain(x, q, sf, b))


@pytest.mark.parametrize("path", PATHS[1:])
@pytest.mark.parametrize("K,N", SHAPES)
def test_paths_bitwise_equal_portable(lib, sc, paths, path, K, N):
    if path not in paths:
        pytest.skip(f"this CPU has no {path} path: not run")
    rng = np.random.default_rng(K * 3 + N)
    W, b = rand(rng, K, N) * np.float32(0.2), rand(rng, N)
    Wp = Packed(lib, W, wtype="q4")
    for M in MS:
        x, y0 = rand(rng, M, K), rand(rng, M, N)
        full = matmul(lib, sc, "portable", 1, Wp, b, x, STORE)
        for epi, bias, y in ((STORE, b, None), (STORE, None, None), (ADD, b, y0), (ADD, None, y0),
                             (GELU, b, None), (GELU, None, None)):
            want = matmul(lib, sc, "portable", 1, Wp, bias, x, epi, y)
            for threads in (1, 2):
                got = matmul(lib, sc, path, threads, Wp, bias, x, epi, y)
                assert np.array_equal(got, want), (M, epi, bias is None, threads)
        for r in (0, M - 1):  # a row alone is the same row
            one_row = matmul(lib, sc, path, 2, Wp, b, x[r:r + 1], STORE)
            assert np.array_equal(one_row[0], full[r])


def test_all_zero_and_huge_blocks_in_products(lib, sc, paths):
    """Products over the hostile blocks (zero scales, a huge value, K = 1
    ragged rows) on every path equal the portable path and the dequantized
    float64 product within the chain's error bound."""
    rng = np.random.default_rng(5)
    for K, N in [(1, 9), (45, 9), (70, 130)]:
        W = hostile(rng, K, N)  # NaN stored as 0, Inf as 8 * 65504
        Wp = Packed(lib, W, wtype="q4")
        Wd = Wp.dense(lib).astype(np.float64)
        x = rand(rng, 9, K)
        ref = x.astype(np.float64) @ Wd
        nb = K // KQ4B + 1
        bound = (K + 2 * nb) * 2.0 ** -23 * (np.abs(x.astype(np.float64)) @ np.abs(Wd))
        want = matmul(lib, sc, "portable", 1, Wp, None, x, STORE)
        assert np.all(np.abs(want - ref) <= bound + 1e-30)
        assert np.all(want[:, 0] == 0)  # the all-zero column
        for path in paths:
            assert np.array_equal(matmul(lib, sc, path, 2, Wp, None, x, STORE), want), path


# ---------------------------------------------------------------------------
# end to end

# max |logit - f32 logit| / max |f32 logit| over the prompts below on the
# `small` checkpoint (test_shared.py's): measured 0.38 (q8: 0.036), and
# 0.46-0.52 with seeds 1-3. A 4-bit step is 16x a q8 step (max/8 against
# max/127), and these random weights' sharp attention amplifies it (see
# scripts/bench_decode.py, fanin_checkpoint). The bound leaves about 2x
# headroom; weights quantized wrongly give errors of the order of 1.
TOL = 0.8


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("small"))
    cfg, _ = write_checkpoint(d, n_layer=2, n_head=4, n_embd=128, n_positions=64, seed=7,
                              return_weights=False)
    return d, cfg


def logits(conn, prompt):
    return np.frombuffer(one(conn, "SELECT gpt2_logits(?)", prompt), "<f4")


def test_q4_logits_close_to_f32(small):
    d, _ = small
    conn = connect()
    prompts = ["hello world", "the cat sat on", "a b c d e f g"]
    got = {}
    for fmt in ("f32", "q8", "q4"):
        one(conn, "SELECT gpt2_load(?, 'x', ?)", d, fmt)
        got[fmt] = np.array([logits(conn, p) for p in prompts])
    ref = got["f32"]
    rel = {f: np.abs(got[f] - ref).max() / np.abs(ref).max() for f in ("q8", "q4")}
    assert 0 < rel["q4"] <= TOL, rel
    assert rel["q8"] < rel["q4"]  # fewer bits, larger error
    conn.close()


def test_ragged_model_matches_reference(lib, paths, tmp_path):
    """A checkpoint whose widths are no multiple of 32 or 64 (C = 40, 3C =
    120, F = 160): logits equal tests/reference.py run on the q4 values of
    every matrix (the tied head's columns are wte's rows) up to float32
    arithmetic, and bitwise the same for every path, thread count and
    grouping of rows."""
    cfg, w = write_checkpoint(str(tmp_path), n_layer=2, n_head=2, n_embd=40, n_positions=48,
                              seed=3)
    W = dict(w)
    for name in w:
        if name == "wte.weight":
            W[name] = rounded(w[name].T, "q4").T
        elif name.endswith(".weight") and w[name].ndim == 2 and name != "wpe.weight":
            W[name] = rounded(w[name], "q4")
    V = cfg["vocab_size"]
    ids = np.random.default_rng(2).integers(0, V, 40).tolist()
    want = reference.logits(W, cfg, ids)
    core = Core(lib, str(tmp_path), V, "q4")
    try:
        base = core.feed(ids, [40])
        np.testing.assert_allclose(base, want, atol=2e-4, rtol=0)
        for path in paths:
            for threads in (1, 2):
                core.config(path, threads)
                assert np.array_equal(core.feed(ids, [1] * 40), base), (path, threads)
                assert np.array_equal(core.feed(ids, [13, 1, 26]), base), (path, threads)
    finally:
        core.close()


def test_q4_through_sql(small, monkeypatch):
    d, cfg = small
    conn = connect()
    s = json.loads(one(conn, "SELECT gpt2_load(?, 'four', 'Q4')", d))
    C, V, P, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]
    F = 4 * C
    vec = r64(P * C * 4) + 2 * r64(C * 4)  # wpe, ln_f: float32
    vec += L * (4 * r64(C * 4) + r64(3 * C * 4) + 2 * r64(C * 4) + r64(F * 4))
    mats = q4_bytes(C, V) + L * (q4_bytes(C, 3 * C) + q4_bytes(C, C) + q4_bytes(C, F)
                                 + q4_bytes(F, C))
    assert s["weights"] == "q4" and s["bytes"] == vec + mats and s["dtype"] == "F32"
    info = json.loads(one(conn, "SELECT gpt2_info()"))
    assert info["weights"] == "q4" and info["bytes"] == s["bytes"]
    assert conn.execute("SELECT name, weights, bytes FROM gpt2_models").fetchall() == [
        ("four", "q4", vec + mats)]
    # 4.5 bits per weight: the matrices take 0.5625 / 4 of their f32 bytes
    f32 = json.loads(one(conn, "SELECT gpt2_load(?, 'f', 'f32')", d))
    assert mats / (f32["bytes"] - vec) == pytest.approx(0.5625 / 4, abs=0.01)
    one(conn, "SELECT gpt2_use('four')")
    text = one(conn, "SELECT gpt2_generate('hello world', 8)")
    assert isinstance(text, str) and len(text) > 0
    # greedy generation is the same for every kernel path and thread count
    # (batch invariance holds within the format)
    outs = set()
    for kernel in PATHS:
        for threads in ("1", "2"):
            monkeypatch.setenv("GPT2_KERNEL", kernel)  # a path this CPU lacks falls back
            monkeypatch.setenv("GPT2_THREADS", threads)
            c2 = connect()
            c2.execute("SELECT gpt2_load(?, 'x', 'q4')", (d,))
            outs.add(one(c2, "SELECT gpt2_generate('the cat sat on', 12)"))
            c2.close()
    assert len(outs) == 1
    conn.close()
