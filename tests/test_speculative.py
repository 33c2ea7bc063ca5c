"""Speculative decoding (README, "Speculative decoding"; ext/speculate.h):
the 'draft' and 'draft_tokens' options of gpt2_generate, gpt2_stream and
gpt2_complete.

Greedy: the output (text, ids, log-probabilities, n_tokens, finish_reason)
equals the output without a draft, for every kind of draft — the target
itself, its q8, q4 and bf16 copies, differently seeded models of the same
vocabulary (one of another shape, one with a shorter context) —, prompt
lengths up to the context end, processors and stop strings on.
Sampling: seeded runs reproduce; the distribution of the first generated
tokens equals the target's, computed independently (tests/reference.py's
float64 forward pass, with temperature, top-k and the repetition penalty
applied in numpy), by a chi-square test on a fixed set of seeds.
Counters: the identity a round implies (every verify pass yields its
accepted drafts plus one token of the target's).
"""
import json
import os
import shutil
import struct

import numpy as np
import pytest

import reference
from conftest import SO, connect, err, one
from make_checkpoint import edit_config, write_checkpoint

P = 24  # the target's context


@pytest.fixture(scope="module")
def ck(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("spec"))
    d = {}
    shape = dict(n_layer=2, n_head=2, n_embd=32, n_positions=P)
    d["target"] = os.path.join(base, "target")
    cfg, w = write_checkpoint(d["target"], seed=5, **shape)
    d["other"] = os.path.join(base, "other")
    _, wo = write_checkpoint(d["other"], seed=6, **shape)
    d["wide"] = os.path.join(base, "wide")  # another shape, same vocabulary
    write_checkpoint(d["wide"], n_layer=1, n_head=4, n_embd=64, n_positions=P, seed=7,
                     return_weights=False)
    d["short"] = os.path.join(base, "short")  # a context shorter than the target's
    write_checkpoint(d["short"], n_layer=1, n_head=2, n_embd=32, n_positions=8, seed=8,
                     return_weights=False)
    V = cfg["vocab_size"]
    d["bigger"] = os.path.join(base, "bigger")  # vocab_size differs
    write_checkpoint(d["bigger"], vocab_size=V + 3, seed=9, return_weights=False, **shape)
    d["eos"] = os.path.join(base, "eos")  # eos differs
    shutil.copytree(d["other"], d["eos"])
    edit_config(d["eos"], eos_token_id=5, bos_token_id=5)
    d["swapped"] = os.path.join(base, "swapped")  # two tokens' ids swapped
    shutil.copytree(d["other"], d["swapped"])
    vp = os.path.join(d["swapped"], "vocab.json")
    with open(vp, encoding="utf-8") as f:
        vocab = json.load(f)
    inv = {i: t for t, i in vocab.items()}
    vocab[inv[300]], vocab[inv[301]] = 301, 300
    with open(vp, "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    d["perturbed"] = os.path.join(base, "perturbed")  # the target plus noise
    write_perturbed(d["target"], d["perturbed"], w, 0.5, 1)
    d["tok"] = os.path.join(base, "tok")  # a tokenizer alone
    os.makedirs(d["tok"])
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(d["target"], f), os.path.join(d["tok"], f))
    d["cfg"], d["w"], d["w_other"], d["V"] = cfg, w, wo, V
    d["swap_tokens"] = (inv[300], inv[301])
    return d


def write_perturbed(src, dst, w, noise, seed):
    """A copy of checkpoint src (weights w) with every tensor plus noise
    times its own standard deviation times N(0, 1), stored as F32."""
    os.makedirs(dst)
    for f in ("config.json", "vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(src, f), os.path.join(dst, f))
    rng = np.random.default_rng(seed)
    header, blobs, off = {}, [], 0
    for name in sorted(w):
        a = w[name].astype(np.float64)
        a = (a + noise * a.std() * rng.standard_normal(a.shape)).astype("<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        blobs.append(a.tobytes())
        off += a.nbytes
    hj = json.dumps(header).encode()
    hj += b" " * ((-len(hj)) % 8)
    with open(os.path.join(dst, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj + b"".join(blobs))


def open_conn(ck):
    c = connect()
    c.execute("SELECT gpt2_load(?, 'other')", (ck["other"],))
    c.execute("SELECT gpt2_load(?, 'wide')", (ck["wide"],))
    c.execute("SELECT gpt2_load(?, 'short')", (ck["short"],))
    c.execute("SELECT gpt2_load(?, 'q8', 'q8')", (ck["target"],))
    c.execute("SELECT gpt2_load(?, 'bf16', 'bf16')", (ck["target"],))
    c.execute("SELECT gpt2_load(?, 'q4', 'q4')", (ck["target"],))
    c.execute("SELECT gpt2_load(?, 'perturbed')", (ck["perturbed"],))
    c.execute("SELECT gpt2_load(?)", (ck["target"],))  # 'default', current
    return c


@pytest.fixture(scope="module")
def conn(ck):
    c = open_conn(ck)
    yield c
    c.close()


DRAFTS = ["default", "q8", "q4", "bf16", "perturbed", "other", "wide", "short"]


def counters(c):
    return json.loads(one(c, "SELECT gpt2_info()"))["counters"]


def gen(c, prompt, **o):
    """gpt2_generate's JSON result for a prompt (text, or a list of ids)."""
    o = dict(o, result="json")
    if isinstance(prompt, list):
        return json.loads(one(c, "SELECT gpt2_generate(json(?), ?)", json.dumps(prompt),
                              json.dumps(o)))
    return json.loads(one(c, "SELECT gpt2_generate(?, ?)", prompt, json.dumps(o)))


def prompts(V):
    rng = np.random.default_rng(3)
    out = ["", "Hello there", "The dog and the cat"]
    out += [rng.integers(0, V - 1, n).tolist() for n in (1, 2, P - 6, P - 2, P - 1, P)]
    return out


PROCESSORS = {"repetition_penalty": 1.3, "frequency_penalty": 0.4, "presence_penalty": 0.3,
              "logit_bias": {"101": 2.5, "40": -3}, "min_tokens": 6}


# ---------------------------------------------------------------------------
# greedy: identical to decoding without a draft


@pytest.mark.parametrize("draft", DRAFTS)
@pytest.mark.parametrize("k", [1, 4, 16])
def test_greedy_generate_identical(conn, ck, draft, k):
    for p in prompts(ck["V"]):
        for o in ({"max_tokens": P}, dict(PROCESSORS, max_tokens=P), {"max_tokens": 7}):
            plain = gen(conn, p, **o)
            assert gen(conn, p, draft=draft, draft_tokens=k, **o) == plain, (p, o)
            # a stop string that the plain text contains
            t = plain["text"]
            if len(t) >= 6:
                so = dict(o, stop=[t[len(t) // 2:len(t) // 2 + 2]])
                plain = gen(conn, p, **so)
                assert plain["finish_reason"] == "stop"
                assert gen(conn, p, draft=draft, draft_tokens=k, **so) == plain, (p, so)


def stream(c, prompt, **o):
    return c.execute("SELECT i, token_id, token, logprob, finish_reason FROM gpt2_stream(json(?), ?)",
                     (json.dumps(prompt), json.dumps(o))).fetchall()


@pytest.mark.parametrize("draft", DRAFTS)
def test_greedy_stream_identical(conn, ck, draft):
    """Rows, ids, text and the target's log-probabilities (bitwise)."""
    for p in prompts(ck["V"])[3:]:
        for o in ({"max_tokens": P}, dict(PROCESSORS, max_tokens=P, stop=["e", "a"])):
            plain = stream(conn, p, **o)
            for k in (1, 3, 16):
                assert stream(conn, p, draft=draft, draft_tokens=k, **o) == plain, (p, o, k)


def complete(c, rows, **o):
    """{key: (completion, n_tokens, finish_reason)} of gpt2_complete over rows."""
    c.execute("DROP TABLE IF EXISTS src")
    c.execute("CREATE TABLE src(k INTEGER, p)")
    c.executemany("INSERT INTO src VALUES (?, ?)", rows)
    got = c.execute("SELECT key, completion, n_tokens, finish_reason FROM gpt2_complete("
                    "'SELECT k, CASE WHEN k % 2 THEN p ELSE json(p) END FROM src', ?)",
                    (json.dumps(o),)).fetchall()
    return {r[0]: r[1:] for r in got}


def complete_rows(V):
    """(key, prompt): ids (even keys, as JSON) and texts (odd keys), one NULL."""
    rng = np.random.default_rng(4)
    rows = []
    for k in range(14):
        if k == 5:
            rows.append((k, None))
        elif k % 2:
            rows.append((k, ["Once", "The cat", "a b c", "Hello there", ""][k % 5]))
        else:
            rows.append((k, json.dumps(rng.integers(0, V - 1, [1, 3, P - 1, P, 9][k % 5]).tolist())))
    return rows


@pytest.mark.parametrize("draft", DRAFTS)
def test_greedy_complete_identical(conn, ck, draft):
    rows = complete_rows(ck["V"])
    for o in ({"max_tokens": P}, dict(PROCESSORS, max_tokens=12, stop=["e "])):
        plain = complete(conn, rows, batch_size=4, **o)
        for k, bs in ((1, 3), (4, 4), (16, 16)):
            assert complete(conn, rows, batch_size=bs, draft=draft, draft_tokens=k, **o) == plain


def test_identical_draft_accepts_everything(conn, ck):
    """The target drafting for itself: every draft accepted (greedy)."""
    for draft in ("default", "twin"):
        if draft == "twin":
            conn.execute("SELECT gpt2_load(?, 'twin')", (ck["target"],))
            conn.execute("SELECT gpt2_use('default')")
        c0 = counters(conn)
        for p in prompts(ck["V"]):
            gen(conn, p, max_tokens=P, draft=draft, draft_tokens=3, **PROCESSORS)
        c1 = counters(conn)
        proposed = c1["draft_proposed"] - c0["draft_proposed"]
        assert proposed > 20
        assert c1["draft_accepted"] - c0["draft_accepted"] == proposed
    conn.execute("SELECT gpt2_unload('twin')")


# ---------------------------------------------------------------------------
# counters


@pytest.mark.parametrize("draft,temperature", [("other", 0), ("q8", 0), ("other", 1.0),
                                               ("default", 0.8)])
def test_counter_identity(conn, ck, draft, temperature):
    """No eos (banned) and no stop string: every generation's first token
    comes from its prompt, then each verify pass yields its accepted drafts
    plus one target token."""
    eos = ck["V"] - 1
    o = {"max_tokens": P, "draft": draft, "draft_tokens": 3, "temperature": temperature,
         "seed": 11, "logit_bias": {str(eos): -100}}
    ps = prompts(ck["V"])
    c0 = counters(conn)
    n_out = sum(gen(conn, p, **o)["n_tokens"] for p in ps)
    c1 = counters(conn)
    d = {k: c1[k] - c0[k] for k in c0 if isinstance(c0[k], int)}
    assert d["tokens_generated"] == n_out
    assert n_out == len(ps) + d["draft_accepted"] + d["verify_passes"]
    assert 0 <= d["draft_accepted"] <= d["draft_proposed"] <= 3 * d["verify_passes"]
    if draft == "other" and temperature == 0:
        assert d["draft_accepted"] < d["draft_proposed"]  # a model that disagrees
    assert c1["draft_acceptance"] == pytest.approx(c1["draft_accepted"] / c1["draft_proposed"])
    assert c1["tokens_per_pass"] == pytest.approx(
        (c1["draft_accepted"] + c1["verify_passes"]) / c1["verify_passes"])


def test_counters_null_before_any_round(ck):
    c = open_conn(ck)
    k = counters(c)
    assert (k["draft_proposed"], k["draft_accepted"], k["verify_passes"]) == (0, 0, 0)
    assert k["draft_acceptance"] is None and k["tokens_per_pass"] is None
    gen(c, "Hello", max_tokens=5)  # no draft: nothing counted
    assert counters(c)["verify_passes"] == 0
    c.close()


# ---------------------------------------------------------------------------
# sampling


@pytest.mark.parametrize("draft", ["other", "q8", "q4", "default"])
def test_seeded_sampling_reproducible(conn, draft):
    o = {"max_tokens": 20, "temperature": 1.2, "top_p": 0.95, "draft": draft, "draft_tokens": 4,
         "repetition_penalty": 1.2}
    texts = [gen(conn, "The cat", seed=s, **o)["text"] for s in range(8)]
    assert texts == [gen(conn, "The cat", seed=s, **o)["text"] for s in range(8)]
    assert len(set(texts)) > 1
    # gpt2_complete: row k uses seed + k, and equals gpt2_generate with that seed
    rows = [r for r in complete_rows(1000) if r[0] % 2 and r[1] is not None]  # texts
    got = complete(conn, rows, batch_size=3, seed=100, **o)
    for i, (k, p) in enumerate(rows):
        r = gen(conn, p, seed=100 + i, **o)
        assert got[k] == (r["text"], r["n_tokens"], r["finish_reason"])
    # gpt2_stream: the same tokens as gpt2_generate
    s = "".join(r[0] for r in conn.execute("SELECT token FROM gpt2_stream('The cat', ?)",
                                           (json.dumps(dict(o, seed=3)),)))
    assert s == gen(conn, "The cat", seed=3, **o)["text"]


def ref_dist(w, cfg, ids, T, top_k, rep):
    """The target's next-token distribution: float64 logits, repetition
    penalty over the ids so far, top-k, softmax at temperature T."""
    lg = reference.logits(w, cfg, ids)[-1].astype(np.float64)
    for j in set(ids):
        lg[j] = lg[j] / rep if lg[j] > 0 else lg[j] * rep
    order = np.argsort(-lg, kind="stable")
    # the float32 model must rank the same k tokens first
    assert lg[order[top_k - 1]] - lg[order[top_k]] > 1e-3
    p = np.zeros_like(lg)
    keep = order[:top_k]
    e = np.exp((lg[keep] - lg[keep].max()) / T)
    p[keep] = e / e.sum()
    return p


def chi2_pvalue(counts, probs):
    from scipy.stats import chi2
    counts, probs = np.asarray(counts, float), np.asarray(probs, float)
    n = counts.sum()
    e = n * probs
    big = e >= 5
    c = np.append(counts[big], counts[~big].sum())
    e = np.append(e[big], e[~big].sum())
    if e[-1] == 0:
        c, e = c[:-1], e[:-1]
    stat = ((c - e) ** 2 / e).sum()
    return chi2.sf(stat, len(e) - 1)


PROMPT = [17, 200, 45]
N_DRAWS = 24000
ALPHA = 1e-6


def test_sampled_tokens_follow_the_target(ck, conn):
    """The first three generated tokens, drafted by a perturbed copy of the
    target (accepted about half the time), over N_DRAWS seeds. t1 comes from
    the prompt's logits; max_tokens 3 leaves room for one draft after it, so
    t2 is an accepted draft or a resampled one, and t3 the extra token after
    an accepted draft or a plain step after a rejection. The joint
    distribution of (t1, t2, t3) against the target's, computed in numpy (27
    cells), chi-square at ALPHA: with these seeds the p-value is ~0.27.
    Tried once with broken rules: accepting every draft gives outputs outside
    the target's support; resampling from p instead of max(0, p - q) gives
    a p-value of 0, and drawing from the residual without normalizing it
    4e-111."""
    T, K, REP = 1.3, 3, 1.5
    w, cfg = ck["w"], ck["cfg"]
    joint = {}
    p1 = ref_dist(w, cfg, PROMPT, T, K, REP)
    for a in np.flatnonzero(p1):
        p2 = ref_dist(w, cfg, PROMPT + [int(a)], T, K, REP)
        for b in np.flatnonzero(p2):
            p3 = ref_dist(w, cfg, PROMPT + [int(a), int(b)], T, K, REP)
            for c in np.flatnonzero(p3):
                joint[(int(a), int(b), int(c))] = p1[a] * p2[b] * p3[c]
    assert all(ck["V"] - 1 not in cell for cell in joint)  # eos would end the text early
    conn.execute("DROP TABLE IF EXISTS draws")
    conn.execute("CREATE TABLE draws(k INTEGER)")
    conn.executemany("INSERT INTO draws VALUES (?)", [(i,) for i in range(N_DRAWS)])
    o = {"max_tokens": 3, "temperature": T, "top_k": K, "repetition_penalty": REP, "seed": 1,
         "draft": "perturbed", "draft_tokens": 2, "batch_size": 256}
    c0 = counters(conn)
    rows = conn.execute("SELECT completion FROM gpt2_complete('SELECT k, json(''%s'') FROM draws', ?)"
                        % json.dumps(PROMPT), (json.dumps(o),)).fetchall()
    c1 = counters(conn)
    seen = {}
    for (text,) in rows:
        seen[text] = seen.get(text, 0) + 1
    # texts to token triples: decode every cell's triple and match text
    by_text = {}
    for cell in joint:
        t = one(conn, "SELECT gpt2_detokenize(?)", json.dumps(list(cell)))
        by_text.setdefault(t, []).append(cell)
    counts, probs = [], []
    for t, cells in by_text.items():
        counts.append(seen.pop(t, 0))
        probs.append(sum(joint[c] for c in cells))
    assert not seen, "outputs outside the target's support: %r" % list(seen)[:5]
    assert abs(sum(probs) - 1) < 1e-9
    pvalue = chi2_pvalue(counts, probs)
    print("p-value %.3g" % pvalue)
    assert pvalue > ALPHA
    # the rule was exercised both ways
    acc = c1["draft_accepted"] - c0["draft_accepted"]
    prop = c1["draft_proposed"] - c0["draft_proposed"]
    assert 0.2 * prop < acc < 0.8 * prop


# ---------------------------------------------------------------------------
# lifetime


def test_draft_unloaded_mid_stream(ck):
    c = open_conn(ck)
    o = json.dumps({"max_tokens": P, "draft": "other"})
    plain = [r[0] for r in c.execute("SELECT token_id FROM gpt2_stream('The cat', ?)",
                                     (json.dumps({"max_tokens": P}),))]
    cur = c.execute("SELECT token_id FROM gpt2_stream('The cat', ?)", (o,))
    got = [cur.fetchone()[0]]
    assert one(c, "SELECT gpt2_unload('other')") == 1
    got += [r[0] for r in cur]
    assert got == plain
    assert err(c, "SELECT gpt2_generate('a', ?)", o).startswith(
        "gpt2_generate: option 'draft' = \"other\" is not a loaded model")
    c.close()


# ---------------------------------------------------------------------------
# errors


def test_errors(ck):
    c = open_conn(ck)
    c.execute("SELECT gpt2_load(?, 'bigger')", (ck["bigger"],))
    c.execute("SELECT gpt2_load(?, 'eos')", (ck["eos"],))
    c.execute("SELECT gpt2_load(?, 'swapped')", (ck["swapped"],))
    c.execute("SELECT gpt2_load(?, 'tok')", (ck["tok"],))
    c.execute("SELECT gpt2_use('default')")
    V = ck["V"]
    G = "SELECT gpt2_generate('a', ?)"
    loaded = "other, wide, short, q8, bf16, q4, perturbed, default, bigger, eos, swapped, tok"
    cases = [
        ({"draft": "nope"}, "gpt2_generate: option 'draft' = \"nope\" is not a loaded model "
         "(loaded: %s); load it first with gpt2_load(dir, name)" % loaded),
        ({"draft": 3}, "gpt2_generate: option 'draft' = 3 must be the name of a loaded model "
         "(a string)"),
        ({"draft": ""}, "gpt2_generate: option 'draft' = \"\" must be the name of a loaded model "
         "(a string)"),
        ({"draft_tokens": 0}, "gpt2_generate: option 'draft_tokens' = 0 is out of range [1, 16]"),
        ({"draft_tokens": 17}, "gpt2_generate: option 'draft_tokens' = 17 is out of range [1, 16]"),
        ({"draft_tokens": 2.5}, "gpt2_generate: option 'draft_tokens' = 2.5 must be an integer"),
        ({"draft": "bigger"}, "gpt2_generate: option 'draft' = \"bigger\" has another vocabulary "
         "than the model 'default' it would draft for: vocab_size %d vs %d (draft vs model)"
         % (V + 3, V)),
        ({"draft": "eos"}, "gpt2_generate: option 'draft' = \"eos\" has another vocabulary than "
         "the model 'default' it would draft for: eos token 5 vs %d (draft vs model)" % (V - 1)),
        ({"draft": "swapped"}, "gpt2_generate: option 'draft' = \"swapped\" has another vocabulary "
         "than the model 'default' it would draft for: token 300 is '%s' vs '%s' (draft vs model)"
         % tuple(one(c, "SELECT gpt2_detokenize(?)", "[%d]" % i) for i in (301, 300))),
        ({"draft": "tok"}, "gpt2_generate: option 'draft' = \"tok\" holds only a tokenizer "
         "(no model.safetensors); a draft must be a full checkpoint"),
    ]
    for o, msg in cases:
        assert err(c, G, json.dumps(o)) == msg
    assert err(c, "SELECT * FROM gpt2_stream('a', ?)", '{"draft_tokens": 99}') == \
        "gpt2_stream: option 'draft_tokens' = 99 is out of range [1, 16]"
    assert err(c, "SELECT * FROM gpt2_stream('a', ?)", '{"draft": "x"}').startswith(
        "gpt2_stream: option 'draft' = \"x\" is not a loaded model (loaded: ")
    assert err(c, "SELECT * FROM gpt2_complete('SELECT 1, ''a''', ?)", '{"draft": "eos"}') \
        .startswith("gpt2_complete: option 'draft' = \"eos\" has another vocabulary")
    # draft_tokens without a draft: checked, then unused
    assert gen(c, "a", max_tokens=3, draft_tokens=2) == gen(c, "a", max_tokens=3)
    c.close()


def test_bench_script_runs():
    """scripts/bench_speculative.py --quick: its three parts on tiny shapes (no timing
    checked), on the build under test (GPT2_SO: the script's own path may resolve to
    another tree)."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, os.path.join(root, "scripts", "bench_speculative.py"),
                        "--quick"], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, GPT2_SO=SO))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("plain decode") == 3
    assert "noise 0.5 (q8)" in r.stdout and "noise 3.0 (q4)" in r.stdout
    assert "draft q8" in r.stdout and "draft q4" in r.stdout


def test_kv_limit_counts_the_draft(ck):
    """gpt2_complete: a live batch that fits kv_memory_limit alone does not
    with its draft's caches (the tiny target takes 512 bytes a position, the
    'wide' draft as much)."""
    c = open_conn(ck)
    c.execute("SELECT gpt2_set('kv_memory_limit', 1048576)")
    ids = json.dumps(list(range(1, P)))
    q = ("WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 60) "
         "SELECT x, json('%s') FROM n" % ids)
    o = {"max_tokens": P, "batch_size": 60}
    rows = c.execute("SELECT count(*) FROM gpt2_complete(?, ?)", (q, json.dumps(o))).fetchone()
    assert rows == (60,)  # 60 x 24 positions x 512 bytes fit
    m = err(c, "SELECT count(*) FROM gpt2_complete(?, ?)", q, json.dumps(dict(o, draft="wide")))
    assert m.startswith("gpt2_complete: ") and "above the connection's kv_memory_limit (1048576)" in m
    c.close()
