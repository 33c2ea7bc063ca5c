"""gpt2_embed: pooled final hidden states against the numpy float64 forward
pass (tests/reference.py), its options and errors, and end to end with
sqlite-vec (npm sqlite-vec-linux-x64's vec0.so, scripts/fetch-sqlite-vec.sh)
loaded into the same connection.

Tolerances: the hidden states after ln_f are float32 values of magnitude
O(1) agreeing with float64 to ~1e-6 relative; components are checked to
1e-4 absolute. sqlite-vec computes cosine distances in float32: its values
are checked against numpy's (float64 on the same float32 vectors) to 1e-5.
"""
import json
import os
import subprocess

import numpy as np
import pytest

import reference
from conftest import ROOT, connect, err, one, loaded
from make_checkpoint import write_checkpoint

EOS = 50256


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, vocab_dir):
    d = tmp_path_factory.mktemp("embed")
    cfg, w = write_checkpoint(str(d), n_layer=2, n_head=4, n_embd=64, n_positions=64,
                              vocab_dir=vocab_dir, seed=8)
    return str(d), cfg, {k: v.astype(np.float64) for k, v in w.items()}


@pytest.fixture
def db(ckpt):
    conn = loaded(ckpt[0])
    yield conn
    conn.close()


def ref_hidden(model, ids):
    """(T, C) final hidden states after ln_f: reference.logits with an
    identity LM head."""
    _, cfg, w = model
    C = cfg["n_embd"]
    return reference.logits(dict(w, **{"lm_head.weight": np.eye(C)}), cfg, ids)


def vec(blob):
    return np.frombuffer(blob, dtype="<f4").astype(np.float64)


def toks(conn, text):
    return json.loads(one(conn, "SELECT gpt2_tokenize(?)", text))


TEXTS = ["Hello world", "SQLite is a small, fast database engine.", "日本語", "x",
         "The quick brown fox jumps over the lazy dog. " * 3]


@pytest.mark.parametrize("text", TEXTS)
def test_embed_against_reference(db, ckpt, text):
    h = ref_hidden(ckpt, toks(db, text))
    mean = h.mean(0)
    cases = {None: mean, "mean": mean, "last": h[-1],
             "normalize": mean / np.linalg.norm(mean),
             "mean,normalize": mean / np.linalg.norm(mean),
             " last , normalize ": h[-1] / np.linalg.norm(h[-1])}
    for opt, want in cases.items():
        blob = one(db, "SELECT gpt2_embed(?, ?)", text, opt)
        assert len(blob) == 4 * 64
        assert np.max(np.abs(vec(blob) - want)) <= 1e-4, opt
    assert one(db, "SELECT gpt2_embed(?)", text) == one(db, "SELECT gpt2_embed(?, NULL)", text)
    # token ids embed as the text they encode
    assert one(db, "SELECT gpt2_embed(json(?))", json.dumps(toks(db, text))) == \
        one(db, "SELECT gpt2_embed(?)", text)


def test_embed_null_empty_and_limits(db, ckpt):
    assert one(db, "SELECT gpt2_embed(NULL)") is None
    assert one(db, "SELECT gpt2_embed(NULL, 'bogus')") is None
    # the empty text embeds the eos token alone (the document start)
    assert one(db, "SELECT gpt2_embed('')") == one(db, "SELECT gpt2_embed(json(?))", f"[{EOS}]")
    assert np.max(np.abs(vec(one(db, "SELECT gpt2_embed('')")) - ref_hidden(ckpt, [EOS])[0])) <= 1e-4
    ids = list(range(100, 164))  # exactly the context
    want = ref_hidden(ckpt, ids).mean(0)
    assert np.max(np.abs(vec(one(db, "SELECT gpt2_embed(json(?))", json.dumps(ids))) - want)) <= 1e-4
    assert err(db, "SELECT gpt2_embed(json(?))", json.dumps(ids + [1])) == \
        "gpt2_embed: argument 1 (text) is 65 tokens, longer than the context (64)"


def test_embed_errors(db):
    assert err(db, "SELECT gpt2_embed(1)") == \
        "gpt2_embed: argument 1 (text) must be TEXT or a JSON array of token ids, got INTEGER"
    assert err(db, "SELECT gpt2_embed('a', 'max')") == \
        "gpt2_embed: argument 2 (options) = 'max': unknown option 'max' (known: mean, last, " \
        "normalize, comma-separated)"
    assert err(db, "SELECT gpt2_embed('a', 'mean,Normalize')") == \
        "gpt2_embed: argument 2 (options) = 'mean,Normalize': unknown option 'Normalize' " \
        "(known: mean, last, normalize, comma-separated)"
    assert err(db, "SELECT gpt2_embed('a', 'mean,last')") == \
        "gpt2_embed: argument 2 (options) = 'mean,last' asks for both mean and last pooling; " \
        "choose one"
    assert err(db, "SELECT gpt2_embed('a', 3)") == \
        "gpt2_embed: argument 2 (options) must be TEXT, comma-separated words among mean, " \
        "last, normalize (e.g. 'mean,normalize'); got INTEGER"
    assert err(db, "SELECT gpt2_embed('[3]')").startswith(
        "gpt2_embed: argument 1 (text) '[3]' is token ids without SQLite's JSON subtype")
    assert "gpt2_embed: no model loaded" in err(connect(), "SELECT gpt2_embed('a')")


def test_embed_counts_rows_no_head(db):
    c0 = json.loads(one(db, "SELECT gpt2_info()"))["counters"]
    db.execute("SELECT gpt2_embed('Hello world')")
    c1 = json.loads(one(db, "SELECT gpt2_info()"))["counters"]
    assert c1["rows_computed"] - c0["rows_computed"] == 2
    assert c1["forward_calls"] - c0["forward_calls"] == 1


# ---------------------------------------------------------------------------
# sqlite-vec


@pytest.fixture(scope="module")
def vec0():
    out = subprocess.run([os.path.join(ROOT, "scripts", "fetch-sqlite-vec.sh")], check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


WORDS = "apple river cloud stone music paper engine garden winter silver orange planet".split()


def test_sqlite_vec_knn_matches_numpy(db, vec0):
    db.enable_load_extension(True)
    db.load_extension(vec0[:-3])
    db.enable_load_extension(False)
    texts = [f"Item {i}: the {WORDS[i % 12]} and the {WORDS[i * 7 % 12]} {i * 13 % 101}"
             for i in range(300)]
    db.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)")
    db.executemany("INSERT INTO docs VALUES (?, ?)", list(enumerate(texts, 1)))
    db.execute("CREATE VIRTUAL TABLE vecs USING vec0(embedding float[64] distance_metric=cosine)")
    db.execute("INSERT INTO vecs(rowid, embedding) SELECT id, gpt2_embed(body) FROM docs")
    E = np.array([vec(b) for (b,) in db.execute(
        "SELECT embedding FROM vecs ORDER BY rowid")])  # what vec0 stored
    assert E.shape == (300, 64)
    assert np.array_equal(E[41], vec(one(db, "SELECT gpt2_embed(?)", texts[41])))
    N = E / np.linalg.norm(E, axis=1, keepdims=True)
    D = 1 - N @ N.T  # cosine distances, float64
    # vec_distance_cosine on pairs
    for a, b in [(1, 2), (5, 200), (299, 17), (100, 100)]:
        got = one(db, "SELECT vec_distance_cosine(x.embedding, y.embedding) FROM vecs x, vecs y "
                      "WHERE x.rowid = ? AND y.rowid = ?", a + 1, b + 1)
        assert abs(got - D[a, b]) <= 1e-5
    # KNN: the same neighbours, in the same order up to near-ties, same distances
    for q in range(0, 300, 7):
        rows = db.execute("SELECT rowid, distance FROM vecs WHERE embedding MATCH ? AND k = 10 "
                          "ORDER BY distance", (E[q].astype("<f4").tobytes(),)).fetchall()
        order = np.argsort(D[q], kind="stable")[:10]
        assert rows[0][0] == q + 1  # its own embedding is its nearest neighbour
        for (rid, dist), j in zip(rows, order):
            assert abs(dist - D[q, j]) <= 1e-5
            assert rid - 1 == j or abs(D[q, rid - 1] - D[q, j]) <= 1e-5
    # every row's own embedding is its nearest neighbour
    own = db.execute("SELECT count(*) FROM docs WHERE (SELECT rowid FROM vecs WHERE embedding "
                     "MATCH gpt2_embed(docs.body) AND k = 1) = docs.id").fetchone()[0]
    assert own == 300
    db.execute("DROP TABLE vecs")
