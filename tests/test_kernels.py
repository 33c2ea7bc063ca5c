"""The numeric kernels (ext/kernels.c) and the exactness contract of the
forward pass (ext/transformer.h, "EXACTNESS CONTRACT").

Kernels are called through ctypes on build/gpt2_internal.so, on every CPU path this
machine has (portable, avx2, avx512), with 1 and 2 threads:
  - against a float64 numpy reference, within an error bound derived from
    the float32 chain: |err| <= K * 2^-23 * (|x|·|W| + |b|)  (plus the GELU /
    exp approximation error, ~1e-6 relative);
  - bitwise invariance: row r of a product is the same float whether it was
    computed alone (M = 1), in any block of rows, by 1 or 2 threads, or on
    any CPU path;
  - exp / GELU / the 16-lane sum: vector paths bitwise equal to the scalar
    definition, which is checked against numpy.
End to end, on small generated checkpoints: the logits of a position are
bitwise identical whether computed in a prefill, one decode row at a time,
as one row of a batched call, after prefix reuse, with 1 or 2 threads, or
on any CPU path; greedy output through SQL is the same for every
GPT2_THREADS / GPT2_KERNEL setting.

16-, 8- and 4-bit weights (model_load_opts, weights = f16 / bf16 / q8 / q4):
the packing is checked bit for bit against numpy / torch roundings and the
documented Q8 / Q4 quantizations (Q4 in detail: tests/test_q4.py),
products against a float64 reference on the same rounded weights, invariance as for f32, and end to end the logits
against tests/reference.py run on the rounded weights (2e-4: float32
arithmetic only; logits here reach |8|).
"""
import ctypes
import itertools
import json
import os

import numpy as np
import pytest

from conftest import KMat, LoadOptions, Seq, connect, internal_lib
from make_checkpoint import write_checkpoint
import reference

PATHS = ["portable", "avx2", "avx512"]
TYPES = ["f32", "f16", "bf16", "q8", "q4"]  # KType order
STORE, ADD, GELU = 0, 1, 2
KQB, KQ4B = 64, 32  # kernels.h: rows per Q8 / Q4 scale block
F32P = ctypes.POINTER(ctypes.c_float)


@pytest.fixture(scope="module")
def lib():
    L = internal_lib()
    P, I, VP, SZ = ctypes.POINTER, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
    L.kpath_available.argtypes = [I]
    L.kmat_bytes.argtypes = [I, I, I]
    L.kmat_bytes.restype = SZ
    L.kmat_init.argtypes = [P(KMat), I, I, I, VP]
    L.kmat_pack_rows.argtypes = [P(KMat), F32P, SZ, I, I]
    L.kmat_pack_cols.argtypes = [P(KMat), F32P, SZ, I, I]
    L.kmat_col.argtypes = [P(KMat), I, F32P]
    L.k_gemm.argtypes = [I, I, I, I, F32P, SZ, F32P, SZ, F32P, F32P, SZ, I]
    L.k_exp_sub.argtypes = [I, F32P, I, ctypes.c_float]
    L.k_gelu_n.argtypes = [I, F32P, SZ]
    L.k_sum16.argtypes = [I, F32P, I]
    L.k_sum16.restype = ctypes.c_float
    L.k_layernorm.argtypes = [I, F32P, F32P, F32P, F32P, I, ctypes.c_float]
    L.k_exp.argtypes = [ctypes.c_float]
    L.k_exp.restype = ctypes.c_float
    L.scratch_new.restype = VP
    L.scratch_free.argtypes = [VP]
    L.scratch_set_threads.argtypes = [VP, I]
    L.scratch_set_kernel.argtypes = [VP, ctypes.c_char_p]
    L.scratch_set_kernel.restype = ctypes.c_char_p
    L.scratch_matmul.argtypes = [VP, P(KMat), F32P, I, F32P, F32P, I]
    L.model_load.argtypes = [ctypes.c_char_p, P(VP), ctypes.c_char_p, SZ]
    L.model_load_opts.argtypes = [ctypes.c_char_p, P(LoadOptions), P(VP), ctypes.c_char_p, SZ]
    L.k_f16_to_f32.argtypes = [ctypes.c_uint16]
    L.k_f16_to_f32.restype = ctypes.c_float
    L.k_f32_to_f16.argtypes = [ctypes.c_float]
    L.k_f32_to_f16.restype = ctypes.c_uint16
    L.k_f32_to_bf16.argtypes = [ctypes.c_float]
    L.k_f32_to_bf16.restype = ctypes.c_uint16
    L.model_release.argtypes = [VP]
    L.seq_new.argtypes = [VP]
    L.seq_new.restype = P(Seq)
    L.seq_free.argtypes = [P(Seq)]
    L.seq_copy_prefix.argtypes = [P(Seq), P(Seq), VP, I]
    L.gpt2_forward.argtypes = [VP, VP, I, P(I), P(P(Seq)), P(ctypes.c_ubyte), F32P,
                               ctypes.c_char_p, SZ]
    return L


@pytest.fixture(scope="module")
def paths(lib):
    got = [p for i, p in enumerate(PATHS) if lib.kpath_available(i)]
    assert got[0] == "portable"
    return got


@pytest.fixture
def sc(lib):
    s = lib.scratch_new()
    yield s
    lib.scratch_free(s)


def fp(a):
    return None if a is None else a.ctypes.data_as(F32P)


def aligned(nbytes):
    raw = np.zeros(nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + nbytes]


class Packed:
    """W (K, N) packed into panels of a type; keeps the memory alive."""

    def __init__(self, lib, W, cols=False, wtype="f32"):
        K, N = W.shape
        t = TYPES.index(wtype)
        self.buf = aligned(lib.kmat_bytes(t, K, N))
        self.m = KMat()
        lib.kmat_init(ctypes.byref(self.m), t, K, N, self.buf.ctypes.data)
        if cols:  # from Wᵀ, in chunks of whole panels, as the loader does
            WT = np.ascontiguousarray(W.T)
            for n0 in range(0, N, 128):
                n1 = min(N, n0 + 128)
                lib.kmat_pack_cols(ctypes.byref(self.m), fp(WT[n0:]), K, n0, n1)
        else:  # in chunks of 128 rows (whole scale blocks), as the loader does
            Wc = np.ascontiguousarray(W)
            for k0 in range(0, K, 2 * KQB):
                lib.kmat_pack_rows(ctypes.byref(self.m), fp(Wc[k0:]), N, k0, min(K, k0 + 2 * KQB))

    def dense(self, lib):
        """The stored matrix as f32 (K, N), read back column by column."""
        out = np.zeros((self.m.N, self.m.K), np.float32)
        for n in range(self.m.N):
            lib.kmat_col(ctypes.byref(self.m), n, fp(out[n]))
        return out.T


def gelu64(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def matmul(lib, sc, path, threads, Wp, b, x, epi, y0=None):
    assert lib.scratch_set_kernel(sc, path.encode()).decode() == path
    lib.scratch_set_threads(sc, threads)
    M, N = x.shape[0], Wp.m.N
    y = np.zeros((M, N), np.float32) if y0 is None else y0.copy()
    lib.scratch_matmul(sc, ctypes.byref(Wp.m), fp(b), M, fp(np.ascontiguousarray(x)), fp(y), epi)
    return y


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


SHAPES = [(1, 1), (3, 17), (64, 64), (100, 65), (257, 200), (33, 130)]  # (K, N)
MS = [1, 2, 5, 6, 7, 12, 13, 70]


# ---------------------------------------------------------------------------
# products


@pytest.mark.parametrize("K,N", SHAPES)
def test_matmul_matches_reference(lib, sc, paths, K, N):
    rng = np.random.default_rng(K * 1000 + N)
    W, b = rand(rng, K, N), rand(rng, N)
    Wp = Packed(lib, W)
    W64, b64 = W.astype(np.float64), b.astype(np.float64)
    for M in MS:
        x = rand(rng, M, K)
        y0 = rand(rng, M, N)
        x64 = x.astype(np.float64)
        lin = x64 @ W64 + b64
        bound = K * 2.0 ** -23 * (np.abs(x64) @ np.abs(W64) + np.abs(b64)) + 1e-30
        for path in paths:
            for threads in (1, 2):
                got = matmul(lib, sc, path, threads, Wp, b, x, STORE)
                assert np.all(np.abs(got - lin) <= bound), (path, threads, M)
                got = matmul(lib, sc, path, threads, Wp, None, x, STORE)
                assert np.all(np.abs(got - (lin - b64)) <= bound), (path, threads, M)
                got = matmul(lib, sc, path, threads, Wp, b, x, ADD, y0)
                assert np.all(np.abs(got - (y0 + lin)) <= bound + 2.0 ** -23 * np.abs(y0 + lin))
                got = matmul(lib, sc, path, threads, Wp, b, x, GELU)
                assert np.all(np.abs(got - gelu64(lin)) <= 1.2 * bound + 1e-6 * np.abs(lin) + 1e-7)


@pytest.mark.parametrize("K,N", [(257, 200), (64, 130), (5, 7)])
def test_matmul_rows_are_batch_invariant(lib, sc, paths, K, N):
    """Row r's bits do not depend on M, on the rows around it, on threads or
    on the CPU path."""
    rng = np.random.default_rng(7)
    W, b = rand(rng, K, N), rand(rng, N)
    Wp = Packed(lib, W)
    x = rand(rng, 70, K) * 3
    for epi in (STORE, GELU):
        full = matmul(lib, sc, "portable", 1, Wp, b, x, epi)
        for path in paths:
            for threads in (1, 2):
                assert np.array_equal(matmul(lib, sc, path, threads, Wp, b, x, epi), full)
            for r in (0, 1, 5, 6, 7, 69):  # alone
                one = matmul(lib, sc, path, 2, Wp, b, x[r:r + 1], epi)
                assert np.array_equal(one[0], full[r]), (path, r)
            parts = [(0, 1), (1, 7), (7, 20), (20, 26), (26, 70)]  # in blocks
            got = np.concatenate([matmul(lib, sc, path, 1, Wp, b, x[a:e], epi) for a, e in parts])
            assert np.array_equal(got, full), path


def test_strided_gemm(lib, paths):
    """k_gemm on a plain row-major W with row stride > N (attention's use):
    reference, bitwise across paths, nothing written past N."""
    rng = np.random.default_rng(3)
    for M, K, N, ldw, ldx, ldy in [(1, 64, 40, 96, 64, 50), (7, 33, 130, 131, 40, 140),
                                   (3, 9, 1, 16, 9, 3), (32, 64, 300, 1024, 64, 300)]:
        W = rand(rng, K, ldw)
        x = rand(rng, M, ldx)
        res = []
        for path in paths:
            y = np.full((M, ldy), 7.0, np.float32)
            lib.k_gemm(PATHS.index(path), M, K, N, fp(x), ldx, fp(W), ldw, None, fp(y), ldy, STORE)
            assert np.all(y[:, N:] == 7.0)
            ref = x[:, :K].astype(np.float64) @ W[:, :N].astype(np.float64)
            bound = K * 2.0 ** -23 * (np.abs(x[:, :K]) @ np.abs(W[:, :N])).astype(np.float64)
            assert np.all(np.abs(y[:, :N] - ref) <= bound + 1e-30)
            res.append(y)
        for y in res[1:]:
            assert np.array_equal(y, res[0])


def test_pack_cols_equals_pack_rows(lib):
    rng = np.random.default_rng(1)
    for K, N in [(10, 1), (48, 200), (65, 64), (7, 129)]:
        W = rand(rng, K, N)
        a, b = Packed(lib, W), Packed(lib, W, cols=True)
        assert np.array_equal(a.buf, b.buf)
        out = np.zeros(K, np.float32)
        for n in (0, N // 2, N - 1):
            lib.kmat_col(ctypes.byref(b.m), n, fp(out))
            assert np.array_equal(out, W[:, n])


# ---------------------------------------------------------------------------
# 16- and 8-bit weights


def bf16_round(a):
    """Round to nearest even bfloat16 with torch (an independent
    implementation); without torch, the bit formula."""
    a = np.ascontiguousarray(a, np.float32)
    try:
        import torch
    except ImportError:
        u = a.view(np.uint32).astype(np.uint64)
        return (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
    return torch.from_numpy(a).to(torch.bfloat16).float().numpy()


def q8_dequant(W):
    """Documented Q8: per column and block of KQB rows, s = max|w| / 127,
    q = rint(w * (127 / max)); the stored value is q * s (all float32)."""
    K, N = W.shape
    out = np.zeros_like(W)
    for k0 in range(0, K, KQB):
        blk = W[k0:k0 + KQB]
        amax = np.abs(blk).max(axis=0)
        inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
        q = np.clip(np.rint(blk * inv), -127, 127).astype(np.float32)
        out[k0:k0 + KQB] = q * (amax / np.float32(127)).astype(np.float32)
    return out


def q4_quant(W):
    """Documented Q4 (kernels.h), independently: per column and block of
    KQ4B rows, m = the element of largest |w| (first on ties, NaN never),
    s = f16(m / -8) rounded to nearest even and saturating, sf = s widened,
    q = 0 when sf == 0 else clip(rint(w / sf), -8, 7), NaN -> 0. Returns
    (q int8 (K, N), s as f16 bits uint16 (ceil(K/KQ4B), N))."""
    W = np.asarray(W, np.float32)
    K, N = W.shape
    nkb = (K + KQ4B - 1) // KQ4B
    q = np.zeros((K, N), np.int8)
    s = np.zeros((nkb, N), np.uint16)
    cols = np.arange(N)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for b in range(nkb):
            blk = W[b * KQ4B:(b + 1) * KQ4B]
            a = np.where(np.isnan(blk), np.float32(-1), np.abs(blk))
            m = blk[a.argmax(axis=0), cols]  # argmax: the first of equal maxima
            m = np.where(np.isnan(m), np.float32(0), m).astype(np.float32)
            h = np.clip(m / np.float32(-8), -65504, 65504).astype(np.float16)
            sf = h.astype(np.float32)
            v = np.rint(blk / sf)
            v = np.where((sf == 0) | np.isnan(v), 0, np.clip(v, -8, 7))
            q[b * KQ4B:(b + 1) * KQ4B] = v.astype(np.int8)
            s[b] = h.view(np.uint16)
    return q, s


def q4_dequant(W):
    """The stored Q4 values q * sf (float32)."""
    q, s = q4_quant(W)
    sf = np.repeat(s.view(np.float16).astype(np.float32), KQ4B, axis=0)[:W.shape[0]]
    return (q.astype(np.float32) * sf).astype(np.float32)


def rounded(W, wtype):
    if wtype == "f16":
        return np.clip(W, -65504, 65504).astype(np.float16).astype(np.float32)
    if wtype == "bf16":
        return bf16_round(W)
    if wtype == "q8":
        return q8_dequant(W)
    if wtype == "q4":
        return q4_dequant(W)
    return W


def chain_bound(K, wtype, x64, Wd, b):
    """|error| bound of the float32 chain against float64 on the stored
    weights: one rounding per k, plus (Q8 / Q4) two per scale block."""
    nb = {"q8": K // KQB + 1, "q4": K // KQ4B + 1}.get(wtype, 0)
    return (K + 2 * nb) * 2.0 ** -23 * (np.abs(x64) @ np.abs(Wd) + np.abs(b))


def test_half_conversions(lib):
    # every half, read back through a (1024, 64) f16 panel filled by hand
    m, raw = KMat(), aligned(lib.kmat_bytes(1, 1024, 64))
    lib.kmat_init(ctypes.byref(m), 1, 1024, 64, raw.ctypes.data)
    h = raw.view(np.uint16).reshape(1024, 64)
    h[:] = np.arange(65536, dtype=np.uint32).astype(np.uint16).reshape(1024, 64)
    got = np.zeros((64, 1024), np.float32)
    for n in range(64):
        lib.kmat_col(ctypes.byref(m), n, fp(got[n]))
    want = h.T.view(np.float16).astype(np.float32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan) and np.array_equal(got[~nan], want[~nan])
    # f32 -> f16 / bf16 through packing, against numpy / torch (round to nearest even)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(3000) * 10.0 ** rng.integers(-9, 5, 3000),
                        [0.0, -0.0, 65504, 65519.9, -65519.9, 6e-8, 3e-8, 2.9e-8, 6.1e-5, 1e-40]])
    x = np.resize(x.astype(np.float32), 3072).reshape(48, 64)
    for t, want in ((1, x.astype(np.float16).view(np.uint16)),
                    (2, (bf16_round(x).view(np.uint32) >> 16).astype(np.uint16))):
        p = Packed(lib, x, wtype=TYPES[t])
        assert np.array_equal(p.buf.view(np.uint16).reshape(48, 64), want)
    assert lib.k_f32_to_f16(1e6) == 0x7BFF and lib.k_f32_to_f16(-np.inf) == 0xFBFF  # saturates
    assert lib.k_f32_to_bf16(float("nan")) & 0x7FC0 == 0x7FC0
    # widening, the one implementation safetensors.c reads F16 / BF16 files with
    lib.k_bf16_to_f32.argtypes = [ctypes.c_uint16]
    lib.k_bf16_to_f32.restype = ctypes.c_float
    for u in list(range(0, 65536, 97)) + [0x0001, 0x03FF, 0x7C00, 0x7E01, 0x8001, 0xFC00, 0xFFFF]:
        f16 = np.array([u], np.uint16).view(np.float16).astype(np.float32)[0]
        bf = (np.array([u], np.uint32) << 16).view(np.float32)[0]
        for got, want in ((lib.k_f16_to_f32(u), f16), (lib.k_bf16_to_f32(u), bf)):
            assert (np.isnan(got) and np.isnan(want)) or np.float32(got).tobytes() == want.tobytes()


def test_kpath_parse_and_no_environment(lib, paths, monkeypatch):
    """kpath_parse takes exactly the three names; the core reads no
    GPT2_KERNEL / GPT2_THREADS (the SQL layer passes them)."""
    lib.kpath_parse.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_int)]
    lib.scratch_kernel.argtypes = [ctypes.c_void_p]
    lib.scratch_kernel.restype = ctypes.c_char_p
    lib.scratch_threads.argtypes = [ctypes.c_void_p]
    out = ctypes.c_int(-7)
    for i, name in enumerate(PATHS):
        assert lib.kpath_parse(name.encode(), ctypes.byref(out)) == 0 and out.value == i
    for bad in (b"", b"AVX2", b"avx2 ", b"avx", b"sse", None):
        out.value = -7
        assert lib.kpath_parse(bad, ctypes.byref(out)) == -1 and out.value == -7
    monkeypatch.setenv("GPT2_KERNEL", "portable")
    monkeypatch.setenv("GPT2_THREADS", "3")
    s = lib.scratch_new()
    try:
        assert lib.scratch_kernel(s).decode() == paths[-1]  # the best this CPU has
        assert lib.scratch_threads(s) == lib.scratch_default_threads()
        assert 1 <= lib.scratch_default_threads() <= min(8, len(os.sched_getaffinity(0)))
    finally:
        lib.scratch_free(s)


@pytest.mark.parametrize("wtype", ["f16", "bf16", "q8", "q4"])
def test_typed_matmul(lib, sc, paths, wtype):
    rng = np.random.default_rng(11)
    for K, N in [(3, 5), (100, 130), (257, 64), (128, 200)]:
        W, b = rand(rng, K, N), rand(rng, N)
        Wp = Packed(lib, W, wtype=wtype)
        Wd = rounded(W, wtype)
        assert np.array_equal(Wp.dense(lib), Wd)  # the stored values, bit for bit
        assert np.array_equal(Packed(lib, W, cols=True, wtype=wtype).buf, Wp.buf)
        x = rand(rng, 70, K)
        x64 = x.astype(np.float64)
        ref = x64 @ Wd.astype(np.float64) + b
        bound = chain_bound(K, wtype, x64, Wd, b)
        full = matmul(lib, sc, "portable", 1, Wp, b, x, STORE)
        assert np.all(np.abs(full - ref) <= bound + 1e-30), (wtype, K, N)
        for path in paths:
            for threads in (1, 2):
                assert np.array_equal(matmul(lib, sc, path, threads, Wp, b, x, STORE), full)
            for r in (0, 6, 69):
                assert np.array_equal(matmul(lib, sc, path, 2, Wp, b, x[r:r + 1], STORE)[0],
                                      full[r]), (wtype, path, r)


@pytest.mark.parametrize("wtype,K", [("f32", 3000), ("f16", 4200), ("q8", 8300), ("q4", 16500)])
def test_k_chunked_panels_are_exact(lib, sc, paths, wtype, K):
    """Batches of rows run over tiles of 128 panel rows in groups of up to 64
    rows, the chains parked between tiles (16- and 8-bit tiles widened
    first): rows stay bitwise what one row alone and the portable path give,
    for every epilogue (ADD: y is only read and written after the last
    tile), across group boundaries (70 rows) and with K not a multiple of
    the tile."""
    rng = np.random.default_rng(K)
    N = 70  # a ragged last panel
    W, b = rand(rng, K, N), rand(rng, N)
    Wp = Packed(lib, W, wtype=wtype)
    x, y0 = rand(rng, 70, K), rand(rng, 70, N)
    for epi in (STORE, GELU, ADD):
        full = matmul(lib, sc, "portable", 1, Wp, b, x, epi, y0 if epi == ADD else None)
        if epi == STORE:
            Wd = rounded(W, wtype) if wtype != "f32" else W
            x64 = x.astype(np.float64)
            bound = chain_bound(K, wtype, x64, Wd, b)
            assert np.all(np.abs(full - (x64 @ Wd.astype(np.float64) + b)) <= bound + 1e-30)
        for path in paths:
            for threads in (1, 2):
                for a, e in [(0, 7), (7, 15), (15, 47), (47, 70), (6, 70), (0, 64)]:
                    got = matmul(lib, sc, path, threads, Wp, b, x[a:e], epi,
                                 y0[a:e] if epi == ADD else None)
                    assert np.array_equal(got, full[a:e]), (wtype, path, threads, epi, a, e)


@pytest.fixture(scope="module")
def typed_ckpt(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("typed"))
    cfg, w = write_checkpoint(d, n_layer=2, n_head=3, n_embd=96, n_positions=64, seed=8)
    return d, cfg, w


@pytest.mark.parametrize("wtype", ["f16", "bf16", "q8", "q4"])
def test_typed_model(lib, paths, typed_ckpt, wtype):
    d, cfg, w = typed_ckpt
    V = cfg["vocab_size"]
    W = dict(w)
    for name in w:
        if name == "wte.weight":  # the tied head, (C, V) = wteᵀ, also the embedding
            W[name] = rounded(w[name].T, wtype).T
        elif name.endswith(".weight") and w[name].ndim == 2 and name != "wpe.weight":
            W[name] = rounded(w[name], wtype)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, V, 30).tolist()
    want = reference.logits(W, cfg, ids)
    core = Core(lib, d, V, wtype)
    try:
        base = core.feed(ids, [30])
        # float32 vs float64 arithmetic only (f32 itself reaches ~6e-5 here)
        np.testing.assert_allclose(base, want, atol=2e-4, rtol=0)
        for path in paths:
            for threads in (1, 2):
                core.config(path, threads)
                assert np.array_equal(core.feed(ids, [1] * 30), base), (path, threads)
                assert np.array_equal(core.feed(ids, [7, 1, 22]), base), (path, threads)
    finally:
        core.close()


def test_load_options_errors(lib, typed_ckpt):
    d = typed_ckpt[0]
    m, err = ctypes.c_void_p(), ctypes.create_string_buffer(512)
    o = LoadOptions(b"int4")
    assert lib.model_load_opts(d.encode(), ctypes.byref(o), ctypes.byref(m), err, 512) != 0
    assert err.value == b"weights: unknown format 'int4'; use f32, f16, bf16, q8 or q4"
    assert not m.value
    for w in (None, b"", b"F32", b"Q8", b"Q4"):
        o = LoadOptions(w)
        assert lib.model_load_opts(d.encode(), ctypes.byref(o), ctypes.byref(m), err, 512) == 0
        lib.model_release(m)


# ---------------------------------------------------------------------------
# exact elementwise helpers


def test_exp_scalar_definition_and_paths(lib, paths):
    x = np.concatenate([np.linspace(-100, 100, 20001), [0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0,
                                                        87.99, -87.3, 0.5 * np.log(2)]])
    x = x.astype(np.float32)
    scalar = np.array([lib.k_exp(float(v)) for v in x], np.float32)
    inside = (x > -87.0) & (x < 88.0)
    ref = np.exp(x.astype(np.float64))
    assert np.all(np.abs(scalar[inside] - ref[inside]) <= 2.5e-7 * ref[inside])
    assert np.all(np.isfinite(scalar)) and np.all(scalar[x < -88] <= 1e-37)
    for path in paths:
        y = x.copy()
        lib.k_exp_sub(PATHS.index(path), fp(y), len(y), 0.0)
        assert np.array_equal(y, scalar), path
        y = x.copy()  # the shift is one subtraction before exp
        lib.k_exp_sub(PATHS.index(path), fp(y), len(y) - 3, 2.5)
        assert np.array_equal(y[:-3], np.array([lib.k_exp(float(np.float32(v - np.float32(2.5))))
                                                for v in x[:-3]], np.float32))
        assert np.array_equal(y[-3:], x[-3:])  # nothing past n


def test_gelu_paths_and_accuracy(lib, paths):
    x = np.concatenate([np.linspace(-12, 12, 4801), [-50, -20, 20, 50, 0.0]]).astype(np.float32)
    ref = gelu64(x.astype(np.float64))
    res = []
    for path in paths:
        y = x.copy()
        lib.k_gelu_n(PATHS.index(path), fp(y), len(y) - 1)  # last left alone
        assert y[-1] == x[-1]
        assert np.all(np.abs(y[:-1] - ref[:-1]) <= 4e-7 * np.abs(ref[:-1]) + 1e-7)
        res.append(y)
    for y in res[1:]:
        assert np.array_equal(y, res[0])


def sum16_model(x):
    """The documented order: 16 float32 lanes, padded tail, fixed tree."""
    lanes = np.zeros(16, np.float32)
    n = len(x)
    for i in range(0, n, 16):
        blk = np.zeros(16, np.float32)
        blk[:min(16, n - i)] = x[i:i + 16]
        lanes = lanes + blk
    return np.float32(tree16d(lanes))


def test_sum16_order(lib, paths):
    rng = np.random.default_rng(2)
    for n in list(range(0, 40)) + [63, 64, 65, 1000, 1023]:
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)).astype(np.float32)
        want = sum16_model(x)
        for path in paths:
            got = np.float32(lib.k_sum16(PATHS.index(path), fp(x), n))
            assert got.tobytes() == want.tobytes(), (path, n)


def tree16d(lanes):
    """k_sum16's tree over 16 lanes, in the lanes' own precision."""
    s8 = lanes[:8] + lanes[8:]
    s4 = s8[:4] + s8[4:]
    s2 = s4[:2] + s4[2:]
    return s2[0] + s2[1]


def lane_sum(v, order="tree"):
    """Sum of float64 values in k_layernorm's order, or in a mutant order."""
    if order == "sequential":
        t = 0.0
        for e in v:
            t += e
        return t
    nl = 8 if order == "8 lanes" else 16
    body = len(v) // 16 * 16 if order == "tail after tree" else len(v)
    lanes = np.zeros(16)
    for i in range(body):
        lanes[i % nl] += v[i]
    if order == "lanes in order":
        t = 0.0
        for e in lanes:
            t += e
    else:
        t = tree16d(lanes)
    for e in v[body:]:
        t += e
    return t


def layernorm_model(x, w, b, eps, order="tree"):
    """The documented order (kernels.h): double sums over 16 lanes, fixed tree, then
    float32 normalisation left to right."""
    n = len(x)
    xd = x.astype(np.float64)
    mean = lane_sum(xd, order) / n
    var = lane_sum((xd - mean) * (xd - mean), order) / n
    rstd = np.float32(1.0 / np.sqrt(var + np.float64(np.float32(eps))))
    mu = np.float32(mean)
    return ((x - mu) * rstd * w + b).astype(np.float32)


def run_layernorm(lib, path, x, w, b, eps):
    o = np.empty(len(x), np.float32)
    lib.k_layernorm(PATHS.index(path), fp(o), fp(x), fp(w), fp(b), len(x), eps)
    return o


def test_layernorm_order(lib, paths):
    rng = np.random.default_rng(4)
    eps = 1e-5
    for n in [1, 2, 7, 15, 16, 17, 31, 33, 64, 96, 100, 768, 1600]:
        x = (rng.standard_normal(n) * 10.0 ** rng.integers(-2, 3, n) + 1000.0).astype(np.float32)
        w = rng.standard_normal(n).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32)
        want = layernorm_model(x, w, b, eps)
        for path in paths:
            assert run_layernorm(lib, path, x, w, b, eps).tobytes() == want.tobytes(), (path, n)


def test_layernorm_sum_order_is_observable(lib, paths):
    """Rows of 40 (a tail of 8) whose mean depends on the summation order: a 1 is
    lost next to 1e20 unless the ±1e20 cancel first. The zeros of a row come out
    as -mean·rstd (w = 1, b = 0), so every mutant order below gives other bits on
    at least one row, and every path must give the documented ones. (The variance
    runs through the same lane code as the mean, kernels.c's layernorm_with; its
    summands are all >= 0, so its order would rarely reach the float output.)"""
    n = 40
    rows = [{0: 1e20, 8: 1.0, 16: -1e20}, {0: 1e20, 1: 1.0, 8: -1e20},
            {1: 1e20, 33: 1.0, 2: -1e20}]
    w, b = np.ones(n, np.float32), np.zeros(n, np.float32)
    xs = []
    for vals in rows:
        x = np.zeros(n, np.float32)
        for i, v in vals.items():
            x[i] = v
        xs.append(x)
    wants = [layernorm_model(x, w, b, 1e-5) for x in xs]
    for mutant in ["sequential", "8 lanes", "lanes in order", "tail after tree"]:
        alts = [layernorm_model(x, w, b, 1e-5, mutant) for x in xs]
        assert any(a.tobytes() != t.tobytes() for a, t in zip(alts, wants)), mutant
    for path in paths:
        for x, want in zip(xs, wants):
            assert run_layernorm(lib, path, x, w, b, 1e-5).tobytes() == want.tobytes(), path


def test_layernorm_every_lane_triplet(lib, paths):
    """Rows {a: 1e20, b: 1, c: -1e20} for every ordered triple of lanes of one block:
    the 1 survives exactly when a and c meet before b joins them, so together the
    rows fix the whole combining tree (up to orders that give the same bits
    always); again with one of the three in a tail. Then the same three values
    in one lane over three blocks, in every order, at lengths that put the last
    one in a tail: the order along a lane.
    Each vector path must give the portable path's bits; the portable path is
    checked against the model on a sample."""
    big = 1e20
    rows = []
    for a, b, c in itertools.permutations(range(16), 3):
        rows.append((16, {a: big, b: 1.0, c: -big}))
        # one of the three in a tail (elements 32..39 of 40): its lane, after the blocks
        for t, (i, j, k) in enumerate([(32 + a, b, c), (a, 32 + b, c), (a, b, 32 + c)]):
            if (a, b, c)[t] < 8:
                rows.append((40, {i: big, j: 1.0, k: -big}))
    for k in range(16):
        for n in (48, 41 + k % 8, 64):
            for p in itertools.permutations([k, 16 + k, 32 + k]):
                if max(p) < n:
                    rows.append((n, dict(zip(p, (big, 1.0, -big)))))
    xs = []
    for n, vals in rows:
        x = np.zeros(n, np.float32)
        for i, v in vals.items():
            x[i] = v
        xs.append(x)
    one = {n: (np.ones(n, np.float32), np.zeros(n, np.float32)) for n, _ in rows}
    ref = [run_layernorm(lib, "portable", x, *one[len(x)], 1e-5) for x in xs]
    # the rows tell orders apart: at a zero of x the output is -mean·rstd, nonzero
    # exactly when the 1 was kept; both outcomes occur
    kept = [bool(r[next(i for i in range(len(x)) if x[i] == 0)] != 0) for x, r in zip(xs, ref)]
    assert any(kept) and not all(kept)
    for x, r in zip(xs[::89], ref[::89]):
        assert r.tobytes() == layernorm_model(x, *one[len(x)], 1e-5).tobytes()
    for path in paths[1:]:
        bad = [i for i, (x, r) in enumerate(zip(xs, ref))
               if run_layernorm(lib, path, x, *one[len(x)], 1e-5).tobytes() != r.tobytes()]
        assert not bad, (path, len(bad), rows[bad[0]])


# ---------------------------------------------------------------------------
# end to end: the same position's logits, however rows are grouped


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """Heads of 32, widths that are not multiples of the 64-column panel."""
    d = str(tmp_path_factory.mktemp("kern"))
    cfg, _ = write_checkpoint(d, n_layer=2, n_head=3, n_embd=96, n_positions=96, seed=5)
    return d, cfg


class Core:
    def __init__(self, lib, d, V, weights="f32"):
        self.lib, self.V = lib, V
        self.m, self.err = ctypes.c_void_p(), ctypes.create_string_buffer(512)
        o = LoadOptions(weights.encode())
        rc = lib.model_load_opts(d.encode(), ctypes.byref(o), ctypes.byref(self.m), self.err, 512)
        assert rc == 0, self.err.value
        self.sc = lib.scratch_new()
        self.seqs = []

    def config(self, path, threads):
        assert self.lib.scratch_set_kernel(self.sc, path.encode()).decode() == path
        self.lib.scratch_set_threads(self.sc, threads)

    def seq(self):
        s = self.lib.seq_new(self.m)
        self.seqs.append(s)
        return s

    def forward(self, rows):
        """rows: [(seq, token)]; logits (n, V) of every row."""
        n = len(rows)
        toks = (ctypes.c_int * n)(*[t for _, t in rows])
        seqs = (ctypes.POINTER(Seq) * n)(*[s for s, _ in rows])
        want = (ctypes.c_ubyte * n)(*([1] * n))
        out = np.zeros((n, self.V), np.float32)
        rc = self.lib.gpt2_forward(self.m, self.sc, n, toks, seqs, want, fp(out), self.err, 512)
        assert rc == 0, self.err.value
        return out

    def feed(self, toks, chunks):
        """A new sequence fed in chunks of the given sizes; all logits."""
        s, out, i = self.seq(), [], 0
        for c in chunks:
            out.append(self.forward([(s, t) for t in toks[i:i + c]]))
            i += c
        assert i == len(toks)
        return np.concatenate(out)

    def close(self):
        for s in self.seqs:
            self.lib.seq_free(s)
        self.lib.scratch_free(self.sc)
        self.lib.model_release(self.m)


def test_prefill_decode_batched_threads_paths_bitwise(lib, paths, ckpt):
    d, cfg = ckpt
    V = cfg["vocab_size"]
    rng = np.random.default_rng(9)
    a, b = rng.integers(0, V, 70).tolist(), rng.integers(0, V, 40).tolist()
    core = Core(lib, d, V)
    try:
        core.config("portable", 1)
        base = core.feed(a, [70])  # one prefill call
        base_b = core.feed(b, [40])
        for path in paths:
            for threads in (1, 2):
                core.config(path, threads)
                assert np.array_equal(core.feed(a, [70]), base), (path, threads)
                assert np.array_equal(core.feed(a, [1] * 70), base), (path, threads)  # decode
                assert np.array_equal(core.feed(a, [3, 1, 30, 2, 34]), base), (path, threads)
        # batched steps: rows of several sequences in one call, prefix copies
        core.config(paths[-1], 2)
        sa, sb = core.seq(), core.seq()
        core.forward([(sa, t) for t in a[:20]])
        core.forward([(sb, t) for t in b[:5]])
        for i in range(5):
            got = core.forward([(sb, b[5 + 2 * i]), (sb, b[6 + 2 * i]), (sa, a[20 + i])])
            assert np.array_equal(got[:2], base_b[5 + 2 * i:7 + 2 * i])
            assert np.array_equal(got[2], base[20 + i])
        sc_ = core.seq()
        assert lib.seq_copy_prefix(sc_, sa, core.m, 25) == 0  # prefix reuse
        assert np.array_equal(core.forward([(sc_, t) for t in a[25:30]]), base[25:30])
    finally:
        core.close()


def test_sql_prefix_reuse_and_settings_are_exact(ckpt, monkeypatch):
    d, cfg = ckpt
    V = cfg["vocab_size"]
    rng = np.random.default_rng(4)
    pre = rng.integers(0, V, 30).tolist()
    p1, p2 = pre + [1, 2], pre + [3]
    q = "SELECT gpt2_logits(json(?))"
    results = {}
    for kernel in PATHS:
        for threads in ("1", "2"):
            monkeypatch.setenv("GPT2_KERNEL", kernel)
            monkeypatch.setenv("GPT2_THREADS", threads)
            conn = connect()
            conn.execute("SELECT gpt2_load(?)", (d,))
            conn.execute(q, (json.dumps(p1),))
            reused = conn.execute(q, (json.dumps(p2),)).fetchone()[0]
            info = json.loads(conn.execute("SELECT gpt2_info()").fetchone()[0])
            assert info["counters"]["prefix_reused"] >= 30
            conn.execute("SELECT gpt2_set('prefix_reuse', 0)")
            fresh = conn.execute(q, (json.dumps(p2),)).fetchone()[0]
            assert reused == fresh, (kernel, threads)
            gen = conn.execute("SELECT gpt2_generate(json(?), 40)", (json.dumps(pre),)).fetchone()[0]
            sampled = conn.execute("SELECT gpt2_generate(json(?), 40, 1.0, 0, 1.0, 3)",
                                   (json.dumps(pre),)).fetchone()[0]
            results[kernel, threads] = (fresh, gen, sampled)
            conn.close()
    first = next(iter(results.values()))
    for k, v in results.items():
        assert v == first, k
