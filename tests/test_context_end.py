"""The end of the context (ext/generate.h, "STOP RULES").

With a context of P positions and a prompt of n tokens (an empty prompt is
the eos token, n = 1), generation yields up to P - n + 1 tokens, as Hugging
Face's generate and minGPT do: the last one is picked from the logits at
position P - 1 and never fed back. So a prompt of exactly P tokens yields 1.

Checked on a small checkpoint (P = 16) for gpt2_generate, gpt2_stream and
gpt2_complete, with max_tokens = P (the largest the SQL accepts): the count
is exactly P - n + 1 and the greedy ids equal tests/reference.py's greedy
continuation (float64 numpy, full recomputation). The checkpoint's eos id is
chosen, from the reference alone, among ids greedy decoding never produces
here, so no run stops early at eos.
"""
import json
import os

import numpy as np
import pytest

import reference
from conftest import connect, one
from make_checkpoint import edit_config, write_checkpoint

P = 16
LENGTHS = [0, 1, 2, 5, P - 2, P - 1, P]  # 0: the empty prompt


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(dir, eos, {n: (prompt ids, reference continuation)})."""
    d = str(tmp_path_factory.mktemp("ctx"))
    cfg, w = write_checkpoint(d, n_layer=2, n_head=2, n_embd=32, n_positions=P, seed=21)
    V = cfg["vocab_size"]
    rng = np.random.default_rng(8)
    prompts = {n: rng.integers(0, V, n).tolist() for n in LENGTHS if n}
    refs = {n: reference.greedy(w, cfg, ids, P) for n, ids in prompts.items()}
    seen = {t for r in refs.values() for t in r}
    # an eos id greedy never reaches from these prompts nor from itself
    for eos in range(V - 1, -1, -1):
        if eos in seen:
            continue
        ref0 = reference.greedy(w, cfg, [eos], P)
        if eos not in ref0:
            break
    else:
        pytest.fail("no id is unreachable by greedy decoding")
    prompts[0], refs[0] = [], ref0
    edit_config(d, eos_token_id=eos, bos_token_id=eos)
    return d, eos, {n: (prompts[n], refs[n]) for n in LENGTHS}


@pytest.fixture
def conn(model):
    c = connect()
    c.execute("SELECT gpt2_load(?)", (model[0],))
    yield c
    c.close()


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def expected(n):
    return P - max(n, 1) + 1


def test_reference_follows_the_rule(model):
    _, eos, cases = model
    for n, (_, ref) in cases.items():
        assert len(ref) == expected(n), n
        assert eos not in ref


def test_generate(conn, model):
    _, _, cases = model
    assert json.loads(one(conn, "SELECT gpt2_info()"))["eos_token_id"] == model[1]
    for n, (ids, ref) in cases.items():
        got = one(conn, "SELECT gpt2_generate(json(?), ?)", json.dumps(ids), P)
        want = one(conn, "SELECT gpt2_detokenize(?)", json.dumps(ref))
        assert text(got) == text(want), n


def test_stream(conn, model):
    _, _, cases = model
    for n, (ids, ref) in cases.items():
        rows = conn.execute("SELECT i, token_id FROM gpt2_stream(json(?), ?)",
                            (json.dumps(ids), P)).fetchall()
        assert rows == list(enumerate(ref)), n
        assert len(rows) == expected(n)


def test_stream_below_max_tokens(conn, model):
    """max_tokens, not the context, ends it when it comes first."""
    _, _, cases = model
    ids, ref = cases[5]
    for k in (1, 5, expected(5) - 1):
        rows = conn.execute("SELECT token_id FROM gpt2_stream(json(?), ?)",
                            (json.dumps(ids), k)).fetchall()
        assert [r[0] for r in rows] == ref[:k]


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_complete(conn, model, batch):
    _, _, cases = model
    conn.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, p TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(n, json.dumps(ids))
                                                     for n, (ids, _) in cases.items()])
    rows = conn.execute("SELECT key, completion, n_tokens FROM gpt2_complete("
                        "'SELECT k, json(p) FROM t', ?, 0, 0, 1, NULL, ?)", (P, batch)).fetchall()
    assert sorted(r[0] for r in rows) == sorted(cases)
    for n, completion, n_tokens in rows:
        assert n_tokens == expected(n), n
        want = one(conn, "SELECT gpt2_detokenize(?)", json.dumps(cases[n][1]))
        assert text(completion) == text(want), n


def test_gen_positions_and_seq_bytes(model):
    """The KV positions a generation may fill, and their bytes (the SQL
    layer's kv_memory_limit checks use both)."""
    import ctypes
    from clayout import internal_lib
    lib = internal_lib()  # the test build: build/gpt2.so exports only its entry points
    VP, I = ctypes.c_void_p, ctypes.c_int
    lib.model_load.argtypes = [ctypes.c_char_p, ctypes.POINTER(VP), ctypes.c_char_p,
                               ctypes.c_size_t]
    lib.model_release.argtypes = [VP]
    lib.gen_positions.argtypes = [VP, I, I]
    lib.seq_bytes.argtypes = [VP, I]
    lib.seq_bytes.restype = ctypes.c_size_t
    m, err = VP(), ctypes.create_string_buffer(512)
    assert lib.model_load(model[0].encode(), ctypes.byref(m), err, 512) == 0, err.value
    try:
        for n in range(0, P + 1):
            for k in range(0, P + 3):
                # prompt (empty: the eos token) + every generated token but the last
                want = min(max(n, 1) + max(k - 1, 0), P)
                assert lib.gen_positions(m, n, k) == want, (n, k)
        with open(os.path.join(model[0], "config.json")) as f:
            c = json.load(f)
        for n in (0, 1, 7, P):
            # keys and values, float32, every layer
            assert lib.seq_bytes(m, n) == 2 * 4 * c["n_layer"] * c["n_embd"] * n
    finally:
        lib.model_release(m)
