"""Scoring: gpt2_score, gpt2_perplexity, gpt2_token_logprobs, gpt2_score_rows,
against an independent numpy float64 forward pass (tests/reference.py), the
sliding window against Hugging Face's stride recipe written out here, batched
against row-by-row, prefix reuse through gpt2_info()'s counters, and every
error message.

Tolerances: the extension's logits are float32 and agree with the float64
reference to ~1e-6 relative (logits are O(1-10) on these checkpoints), so a
token's log-probability is checked to 1e-4 absolute and a sum of n of them
to n * 1e-4. Batched and row-by-row results are compared for exact equality:
the exactness contract (transformer.h) makes the logits bitwise equal, and
the log-softmax and the float64 sums run in a fixed order."""
import json
import math

import numpy as np
import pytest

import reference
from conftest import connect, err, one, loaded
from make_checkpoint import write_checkpoint
from test_interrupt import run, sqlrun  # noqa: F401 (a fixture)

TOK = 1e-4  # per-token tolerance, see the module docstring


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, vocab_dir):
    d = tmp_path_factory.mktemp("score")
    cfg, w = write_checkpoint(str(d), n_layer=2, n_head=4, n_embd=64, n_positions=128,
                              vocab_dir=vocab_dir, seed=21)
    return str(d), cfg, {k: v.astype(np.float64) for k, v in w.items()}


@pytest.fixture(scope="module")
def short(tmp_path_factory, vocab_dir):
    """n_positions 16: texts of a few dozen tokens need the sliding window."""
    d = tmp_path_factory.mktemp("short")
    cfg, w = write_checkpoint(str(d), n_layer=2, n_head=2, n_embd=32, n_positions=16,
                              vocab_dir=vocab_dir, seed=5)
    return str(d), cfg, {k: v.astype(np.float64) for k, v in w.items()}


@pytest.fixture
def db(ckpt):
    conn = loaded(ckpt[0])
    yield conn
    conn.close()


@pytest.fixture
def sdb(short):
    conn = loaded(short[0])
    yield conn
    conn.close()


EOS = 50256


def toks(conn, text):
    return json.loads(one(conn, "SELECT gpt2_tokenize(?)", text))


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def ref_token_lps(model, seq, s0):
    """log p(seq[t] | seq[:t]) for t >= s0, one pass (len(seq) - 1 <= n_positions)."""
    _, cfg, w = model
    ls = log_softmax(reference.logits(w, cfg, seq[:-1]))
    return [ls[t - 1, seq[t]] for t in range(s0, len(seq))]


def ref_windowed(model, seq, s0, stride):
    """Hugging Face's perplexity recipe (stride loop over windows of
    max_length tokens, scoring only the tokens no earlier window scored)
    with max_length = n_positions + 1: the window's last token is never fed,
    so n_positions + 1 tokens fit. Returns {t: log p} for t >= s0."""
    _, cfg, w = model
    max_length = cfg["n_positions"] + 1
    out, prev_end = {}, 0
    for begin in range(0, len(seq), stride):
        end = min(begin + max_length, len(seq))
        targets = range(max(prev_end, 1), end)  # the tokens not scored before
        if any(t >= s0 for t in targets):
            ls = log_softmax(reference.logits(w, cfg, seq[begin:end - 1]))
            for t in targets:
                if t >= s0:
                    assert t not in out
                    out[t] = ls[t - 1 - begin, seq[t]]
        prev_end = end
        if end == len(seq):
            break
    assert sorted(out) == list(range(s0, len(seq)))  # every token once
    return out


def counters(conn):
    return json.loads(one(conn, "SELECT gpt2_info()"))["counters"]


TEXTS = ["Hello world", " the cat sat on the mat.", "SQLite is a small, fast database engine.",
         "日本語のテキスト", "¿Dónde está la biblioteca?", "x", "1 2 3 4 5 6 7 8 9 10"]


# ---------------------------------------------------------------------------
# values against the reference


@pytest.mark.parametrize("text", TEXTS)
def test_score_without_context_starts_at_eos(db, ckpt, text):
    ids = toks(db, text)
    want = ref_token_lps(ckpt, [EOS] + ids, 1)
    got = one(db, "SELECT gpt2_score(?)", text)
    assert abs(got - sum(want)) <= TOK * len(ids)
    assert one(db, "SELECT gpt2_score(?, NULL)", text) == got
    assert one(db, "SELECT gpt2_score(?, '')", text) == got  # empty context: eos too
    ppl = one(db, "SELECT gpt2_perplexity(?)", text)
    assert math.isclose(ppl, math.exp(-sum(want) / len(ids)), rel_tol=TOK)


@pytest.mark.parametrize("text,context", [(" Paris", "The capital of France is"),
                                          (" world", "Hello"), ("!", "日本"),
                                          (" a b c d e f g", "The letters:")])
def test_score_with_context(db, ckpt, text, context):
    c, t = toks(db, context), toks(db, text)  # tokenized separately
    want = ref_token_lps(ckpt, c + t, len(c))
    assert abs(one(db, "SELECT gpt2_score(?, ?)", text, context) - sum(want)) <= TOK * len(t)
    # token ids (JSON subtype) score the same as the text they encode
    assert one(db, "SELECT gpt2_score(json(?), json(?))", json.dumps(t), json.dumps(c)) == \
        one(db, "SELECT gpt2_score(?, ?)", text, context)


def test_token_logprobs_against_reference(db, ckpt):
    context, text = "Once upon a time", " there was a little dog who liked to run."
    c, t = toks(db, context), toks(db, text)
    _, cfg, w = ckpt
    lg = reference.logits(w, cfg, c + t[:-1])
    ls = log_softmax(lg)
    rows = db.execute("SELECT i, token_id, token, logprob, rank, top FROM "
                      "gpt2_token_logprobs(?, ?, 5)", (text, context)).fetchall()
    assert [r[0] for r in rows] == list(range(len(t)))
    assert [r[1] for r in rows] == t
    assert "".join(r[2] for r in rows) == text
    for i, tid, _, lp, rank, top in rows:
        row = lg[len(c) - 1 + i]
        assert abs(lp - ls[len(c) - 1 + i, tid]) <= TOK
        # rank: 1 + tokens above it (lower ids win ties); allow reference-side near-ties
        lt = row[tid]
        assert 1 + np.sum(row > lt + 1e-4) <= rank <= 1 + np.sum(row > lt - 1e-4)
        top = json.loads(top)
        assert len(top) == 5
        order = np.argsort(-row, kind="stable")
        for k, alt in enumerate(top):
            assert abs(alt["logprob"] - ls[len(c) - 1 + i, alt["token_id"]]) <= TOK
            assert abs(row[alt["token_id"]] - row[order[k]]) <= 1e-4  # k-th best, up to ties
            assert alt["token"] == one(db, "SELECT gpt2_detokenize(?)", f"[{alt['token_id']}]")
        assert [a["logprob"] for a in top] == sorted((a["logprob"] for a in top), reverse=True)
        assert (rank == 1) == (top[0]["token_id"] == tid)


def test_greedy_tokens_have_rank_one(db):
    """Rank 1 is the token greedy decoding picks, ties included."""
    prompt = "The dog"
    cont = one(db, "SELECT gpt2_generate(?, 12)", prompt)
    ids = json.loads(json.dumps(toks(db, prompt)))
    gen = json.loads(one(db, "SELECT json_group_array(token_id) FROM gpt2_stream(?, 12)", prompt))
    gen = [g for g in gen if g != EOS]
    assert one(db, "SELECT gpt2_detokenize(?)", json.dumps(gen)) == cont
    ranks = [r[0] for r in db.execute("SELECT rank FROM gpt2_token_logprobs(json(?), json(?))",
                                      (json.dumps(gen), json.dumps(ids)))]
    assert ranks == [1] * len(gen)
    # and gpt2_stream's logprobs are the same numbers (to float rounding)
    s = db.execute("SELECT logprob FROM gpt2_stream(?, 12)", (prompt,)).fetchall()[:len(gen)]
    lp = db.execute("SELECT logprob FROM gpt2_token_logprobs(json(?), json(?))",
                    (json.dumps(gen), json.dumps(ids))).fetchall()
    for (a,), (b,) in zip(s, lp):
        assert abs(a - b) <= 1e-5


def test_token_text_whole_characters(db):
    text = "naïve 日本語 🙂 ok"
    rows = db.execute("SELECT token_id, token FROM gpt2_token_logprobs(?)", (text,)).fetchall()
    assert [r[0] for r in rows] == toks(db, text)
    assert "".join(r[1] for r in rows) == text
    assert any(r[1] == "" for r in rows)  # a character split across tokens waits
    assert one(db, "SELECT count(*) FROM gpt2_token_logprobs(?) WHERE top IS NULL", text) == \
        len(rows)


def test_null_and_empty(db):
    assert one(db, "SELECT gpt2_score(NULL)") is None
    assert one(db, "SELECT gpt2_score(NULL, 'x')") is None
    assert one(db, "SELECT gpt2_perplexity(NULL)") is None
    assert one(db, "SELECT gpt2_score('')") == 0.0
    assert one(db, "SELECT gpt2_score('', 'Hello')") == 0.0
    assert one(db, "SELECT gpt2_score(json('[]'))") == 0.0
    assert one(db, "SELECT gpt2_perplexity('')") is None
    assert db.execute("SELECT * FROM gpt2_token_logprobs(NULL)").fetchall() == []
    assert db.execute("SELECT * FROM gpt2_token_logprobs('')").fetchall() == []
    assert db.execute("SELECT * FROM gpt2_score_rows(NULL)").fetchall() == []


# ---------------------------------------------------------------------------
# sliding window


LONG = ("It was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief.")


@pytest.mark.parametrize("stride", [None, 1, 5, 8, 15, 16])
def test_perplexity_sliding_window(sdb, short, stride):
    ids = toks(sdb, LONG)
    assert len(ids) > 2 * 16
    want = ref_windowed(short, [EOS] + ids, 1, stride or 8)  # default: n_positions / 2
    mean = sum(want.values()) / len(ids)
    got = one(sdb, "SELECT gpt2_perplexity(?, ?)", LONG, stride)
    assert math.isclose(got, math.exp(-mean), rel_tol=TOK)
    rows = sdb.execute("SELECT logprob FROM gpt2_token_logprobs(?)", (LONG,)).fetchall()
    if stride in (None, 8):
        for t, (lp,) in enumerate(rows, 1):
            assert abs(lp - want[t]) <= TOK


def test_fits_in_one_window_is_one_pass(sdb, short):
    """eos + 16 tokens: 16 fed positions, the whole context, one pass."""
    ids = list(range(300, 316))
    want = ref_token_lps(short, [EOS] + ids, 1)
    c0 = counters(sdb)
    got = one(sdb, "SELECT gpt2_score(json(?))", json.dumps(ids))
    assert abs(got - sum(want)) <= TOK * 16
    assert counters(sdb)["rows_computed"] - c0["rows_computed"] == 16
    ids17 = ids + [316]  # one more: two windows
    want = ref_windowed(short, [EOS] + ids17, 1, 8)
    assert abs(one(sdb, "SELECT gpt2_score(json(?))", json.dumps(ids17))
               - sum(want.values())) <= TOK * 17


def test_long_context_is_context_only(sdb, short):
    context, text = LONG, " The end."
    c, t = toks(sdb, context), toks(sdb, text)
    want = ref_windowed(short, c + t, len(c), 8)
    c0 = counters(sdb)
    got = one(sdb, "SELECT gpt2_score(?, ?)", text, context)
    assert abs(got - sum(want.values())) <= TOK * len(t)
    # only the windows that score a text token run
    assert counters(sdb)["rows_computed"] - c0["rows_computed"] <= 2 * 16


# ---------------------------------------------------------------------------
# prefix reuse


def test_classification_computes_the_context_once(db):
    db.execute("CREATE TABLE labels(label TEXT)")
    labels = ["positive", "negative", "neutral", "mixed", "unknown"]
    db.executemany("INSERT INTO labels VALUES (?)", [(x,) for x in labels])
    prompt = "Review: the food was cold and the waiter was rude. Sentiment:"
    n_ctx = len(toks(db, prompt))
    expected = {x: one(db, "SELECT gpt2_score(?, ?)", " " + x, prompt) for x in labels}
    db.execute("SELECT gpt2_set('prefix_reuse', 1)")
    db.execute("SELECT gpt2_score('unrelated text')")  # the cache holds something else
    c0 = counters(db)
    best = one(db, "SELECT label FROM labels ORDER BY gpt2_score(' ' || label, ?) DESC LIMIT 1",
               prompt)
    c1 = counters(db)
    assert best == max(labels, key=lambda x: expected[x])
    n_lab = [len(toks(db, " " + x)) for x in labels]
    # the first label computes the context; each other one its own tokens
    # plus the context's last position (its logits score the label's first token)
    assert c1["rows_computed"] - c0["rows_computed"] == n_ctx - 1 + sum(n_lab)
    assert c1["prefix_reused"] - c0["prefix_reused"] == (len(labels) - 1) * (n_ctx - 1)
    # with reuse off, the same values, every row recomputed
    db.execute("SELECT gpt2_set('prefix_reuse', 0)")
    got = dict(db.execute("SELECT label, gpt2_score(' ' || label, ?) FROM labels", (prompt,)))
    assert got == expected
    c2 = counters(db)
    assert c2["prefix_reused"] == c1["prefix_reused"]
    assert c2["rows_computed"] - c1["rows_computed"] == sum(n_ctx - 1 + k for k in n_lab)


def test_reuse_shared_with_generation(db):
    """The state gpt2_score leaves serves gpt2_generate's prompt, and the other way."""
    prompt = "The quick brown fox jumps over the lazy"
    base = one(db, "SELECT gpt2_score(' dog', ?)", prompt)
    db.execute("SELECT gpt2_generate(?, 3)", (prompt,))
    c0 = counters(db)
    assert one(db, "SELECT gpt2_score(' dog', ?)", prompt) == base
    assert counters(db)["prefix_reused"] - c0["prefix_reused"] == len(toks(db, prompt)) - 1


# ---------------------------------------------------------------------------
# batched table


ROWS = TEXTS + [None, "", LONG * 3, "The end"]


def make_table(conn, with_context):
    conn.execute("DROP TABLE IF EXISTS docs")
    conn.execute("CREATE TABLE docs(id, body, ctx)")
    keys = [i if i % 3 else f"k{i}" for i in range(len(ROWS))]
    keys[1], keys[2], keys[4] = 2.5, b"\x00\x01", None
    ctxs = [None if i % 2 else "Context number %d:" % i for i in range(len(ROWS))]
    ctxs[3] = ""
    conn.executemany("INSERT INTO docs VALUES (?, ?, ?)", list(zip(keys, ROWS, ctxs)))
    return keys, ctxs


@pytest.mark.parametrize("batch", [None, 1, 3, 4096])
@pytest.mark.parametrize("with_context", [False, True])
def test_score_rows_equals_row_by_row(db, batch, with_context):
    keys, ctxs = make_table(db, with_context)
    q = "SELECT id, body, ctx FROM docs" if with_context else "SELECT id, body FROM docs"
    rows = db.execute("SELECT key, n_tokens, logprob, perplexity FROM gpt2_score_rows(?, ?)",
                      (q, batch)).fetchall()
    assert [r[0] for r in rows] == keys  # query order, keys of any type unchanged
    db.execute("SELECT gpt2_set('prefix_reuse', 0)")
    for (key, n, lp, ppl), text, c in zip(rows, ROWS, ctxs):
        if text is None:
            assert (n, lp, ppl) == (None, None, None)
            continue
        c = c if with_context else None
        assert n == len(toks(db, text))
        assert lp == one(db, "SELECT gpt2_score(?, ?)", text, c)  # bitwise
        if n == 0:
            assert lp == 0.0 and ppl is None
        else:
            assert ppl == math.exp(-lp / n)
            if c is None:
                assert ppl == one(db, "SELECT gpt2_perplexity(?)", text)


def test_score_rows_shares_forward_calls(db):
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
    db.executemany("INSERT INTO t(body) VALUES (?)", [(f"Row {i}: a short text",) for i in range(40)])
    c0 = counters(db)
    rows = db.execute("SELECT key FROM gpt2_score_rows('SELECT id, body FROM t')").fetchall()
    c1 = counters(db)
    assert len(rows) == 40
    n = sum(len(toks(db, f"Row {i}: a short text")) for i in range(40))
    assert c1["rows_computed"] - c0["rows_computed"] == n  # eos + text - last token
    assert c1["forward_calls"] - c0["forward_calls"] <= -(-n // 256)


def test_score_rows_long_rows_on_small_context(sdb):
    sdb.execute("CREATE TABLE t(id, body)")
    texts = [LONG, "short", LONG[:40], None, LONG * 2]
    sdb.executemany("INSERT INTO t VALUES (?, ?)", list(enumerate(texts)))
    rows = sdb.execute("SELECT key, logprob FROM gpt2_score_rows('SELECT id, body FROM t', 2)"
                       ).fetchall()
    for (k, lp), t in zip(rows, texts):
        assert lp == (None if t is None else one(sdb, "SELECT gpt2_score(?)", t))


# ---------------------------------------------------------------------------
# errors


def test_flags_not_deterministic(db):
    flags = dict(db.execute("SELECT name, flags FROM pragma_function_list "
                            "WHERE name IN ('gpt2_score', 'gpt2_perplexity', 'gpt2_embed')"))
    assert len(flags) == 3 and all(f & 0x800 == 0 for f in flags.values())
    modules = {r[0] for r in db.execute("SELECT name FROM pragma_module_list")}
    assert {"gpt2_token_logprobs", "gpt2_score_rows"} <= modules


def test_no_model_loaded():
    c = connect()
    for sql in ["SELECT gpt2_score('a')", "SELECT gpt2_perplexity('a')",
                "SELECT * FROM gpt2_token_logprobs('a')",
                "SELECT * FROM gpt2_score_rows('SELECT 1, 2')"]:
        fname = sql.split("(")[0].split()[-1]
        assert err(c, sql).startswith(f"{fname}: no model loaded; run SELECT gpt2_load(")


def test_scalar_errors(db):
    assert err(db, "SELECT gpt2_score(5)") == \
        "gpt2_score: argument 1 (text) must be TEXT or a JSON array of token ids, got INTEGER"
    assert err(db, "SELECT gpt2_score('a', x'00')") == \
        "gpt2_score: argument 2 (context) must be TEXT or a JSON array of token ids, got BLOB"
    assert err(db, "SELECT gpt2_score('[1, 2]')").startswith(
        "gpt2_score: argument 1 (text) '[1, 2]' is token ids without SQLite's JSON subtype")
    assert err(db, "SELECT gpt2_score('a', json('[99999]'))") == \
        "gpt2_score: argument 2 (context): id 99999 is outside the vocabulary (size 50257)"
    assert err(db, "SELECT gpt2_perplexity(2.5)") == \
        "gpt2_perplexity: argument 1 (text) must be TEXT or a JSON array of token ids, got REAL"
    assert err(db, "SELECT gpt2_perplexity('a', 0)") == \
        "gpt2_perplexity: argument 2 (stride) = 0 is out of range [1, 2147483647]"
    assert err(db, "SELECT gpt2_perplexity('a', 129)") == \
        "gpt2_perplexity: argument 2 (stride) = 129 is out of range [1, 128]"
    assert err(db, "SELECT gpt2_perplexity('a', 'x')") == \
        "gpt2_perplexity: argument 2 (stride) must be an INTEGER, got TEXT"
    assert one(db, "SELECT gpt2_perplexity('a', 128)") is not None


def test_kv_memory_limit(tmp_path):
    d = str(tmp_path)  # 8 KiB of KV cache per position: 1 MiB is 128 positions
    write_checkpoint(d, n_layer=4, n_head=4, n_embd=256, n_positions=256, seed=3)
    c = connect()
    c.execute("SELECT gpt2_load(?)", (d,))
    c.execute("SELECT gpt2_set('kv_memory_limit', 1048576)")
    ids = json.dumps([1] * 200)  # with the eos start, 200 fed positions
    assert err(c, "SELECT gpt2_score(json(?))", ids) == \
        "gpt2_score: 1 sequence of 200 positions in all need 1638400 bytes of KV cache, above " \
        "the connection's kv_memory_limit (1048576); shorten the text, or raise the limit " \
        "with gpt2_set('kv_memory_limit', bytes)"
    assert err(c, "SELECT * FROM gpt2_token_logprobs(json(?))", ids).startswith(
        "gpt2_token_logprobs: 1 sequence of 200 positions in all need ")
    assert err(c, "SELECT gpt2_embed(json(?))", ids).startswith(
        "gpt2_embed: 1 sequence of 200 positions in all need ")
    q = ("WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 30) "
         "SELECT i, 'x x x x x x x x x x' FROM r")
    n = one(c, "SELECT gpt2_token_count('x x x x x x x x x x')")  # + eos - last = n fed
    assert err(c, "SELECT * FROM gpt2_score_rows(?)", q) == \
        f"gpt2_score_rows: 30 sequences of {30 * n} positions in all need {30 * n * 8192} " \
        "bytes of KV cache, above the connection's kv_memory_limit (1048576); lower " \
        "batch_size or shorten the texts, or raise the limit with gpt2_set('kv_memory_limit', " \
        "bytes)"
    assert len(c.execute("SELECT * FROM gpt2_score_rows(?, 4)", (q,)).fetchall()) == 30
    assert one(c, "SELECT gpt2_score(json(?))", json.dumps([1] * 100)) < 0


def test_table_errors(db):
    assert err(db, "SELECT * FROM gpt2_token_logprobs") == \
        "gpt2_token_logprobs: argument 1 (text) is required"
    assert err(db, "SELECT * FROM gpt2_token_logprobs('a', NULL, 21)") == \
        "gpt2_token_logprobs: argument 3 (top_n) = 21 is out of range [0, 20]"
    assert err(db, "SELECT * FROM gpt2_token_logprobs('a', NULL, -1)") == \
        "gpt2_token_logprobs: argument 3 (top_n) = -1 is out of range [0, 20]"
    assert err(db, "SELECT * FROM gpt2_token_logprobs(1)") == \
        "gpt2_token_logprobs: argument 1 (text) must be TEXT or a JSON array of token ids, " \
        "got INTEGER"
    assert err(db, "SELECT * FROM gpt2_token_logprobs('a', 1)") == \
        "gpt2_token_logprobs: argument 2 (context) must be TEXT or a JSON array of token ids, " \
        "got INTEGER"
    S = "SELECT * FROM gpt2_score_rows(?, ?)"
    assert err(db, "SELECT * FROM gpt2_score_rows") == \
        "gpt2_score_rows: argument 1 (query) is required"
    assert err(db, S, 5, None) == "gpt2_score_rows: argument 1 (query) must be TEXT, an SQL query"
    assert err(db, S, "SELEC 1", None).startswith("gpt2_score_rows: argument 1 (query): ")
    assert err(db, S, "", None) == "gpt2_score_rows: argument 1 (query) is empty"
    assert err(db, S, "SELECT 1, 2; SELECT 3, 4", None) == \
        "gpt2_score_rows: argument 1 (query) must be a single statement"
    db.execute("CREATE TABLE w(a, b)")
    assert err(db, S, "DELETE FROM w RETURNING a, b", None) == \
        "gpt2_score_rows: argument 1 (query) must be read-only (a SELECT)"
    for q in ("SELECT 1", "SELECT 1, 2, 3, 4"):
        assert err(db, S, q, None) == \
            "gpt2_score_rows: argument 1 (query) must return two or three columns, " \
            "(key, text [, context])"
    assert err(db, S, "SELECT 1, 'a'", 0) == \
        "gpt2_score_rows: argument 2 (batch_size) = 0 is out of range [1, 4096]"
    assert err(db, S, "SELECT 1, 'a'", 4097) == \
        "gpt2_score_rows: argument 2 (batch_size) = 4097 is out of range [1, 4096]"
    assert err(db, S, "SELECT 1, 'a' UNION ALL SELECT 2, 7", None) == \
        "gpt2_score_rows: query row 1 (from 0), column 2 (text) must be TEXT or a JSON array " \
        "of token ids, got INTEGER"
    assert err(db, S, "SELECT 1, 'a', 'b' UNION ALL SELECT 2, 'c', x'01'", None) == \
        "gpt2_score_rows: query row 1 (from 0), column 3 (context) must be TEXT or a JSON " \
        "array of token ids, got BLOB"
    assert err(db, S, "SELECT 1, '[5]'", None).startswith(
        "gpt2_score_rows: query row 0 (from 0), column 2 (text) '[5]' is token ids without")
    assert err(db, S, "SELECT 1, 'a' FROM (SELECT abs(-9223372036854775807 - 1))", None) == \
        "gpt2_score_rows: argument 1 (query) failed: integer overflow"


def test_no_eos_token(tmp_path, vocab_dir):
    """A checkpoint without an eos token can only score after a context."""
    d = str(tmp_path)
    write_checkpoint(d, n_layer=1, n_head=2, n_embd=32, n_positions=32, vocab_dir=vocab_dir,
                     vocab_size=50256, seed=1,
                     extra_config={"eos_token_id": None, "bos_token_id": None})
    with open(f"{d}/vocab.json", encoding="utf-8") as f:
        vocab = json.load(f)
    del vocab["<|endoftext|>"]
    with open(f"{d}/vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f)
    c = connect()
    c.execute("SELECT gpt2_load(?)", (d,))
    assert json.loads(one(c, "SELECT gpt2_info()"))["eos_token_id"] == -1
    assert err(c, "SELECT gpt2_score('a')") == \
        "gpt2_score: without a context the text is scored after the eos token, and the " \
        "checkpoint declares none; pass a context (gpt2_score's argument 2)"
    assert err(c, "SELECT gpt2_perplexity('a')").startswith("gpt2_perplexity: without a context")
    assert err(c, "SELECT gpt2_score('a', '')") == \
        "gpt2_score: argument 2 (context) is empty, and the checkpoint declares no eos token " \
        "to start from instead; pass a non-empty context"
    assert one(c, "SELECT gpt2_score('a', 'b')") < 0
    assert err(c, "SELECT gpt2_embed('')") == \
        "gpt2_embed: argument 1 (text) is empty, and the checkpoint declares no eos token to " \
        "embed instead"


def test_interrupted(sqlrun, ckpt):  # noqa: F811
    out = run(sqlrun, f"SELECT json_extract(gpt2_load('{ckpt[0]}'), '$.n_layer')",
              "SELECT interrupt_now(), gpt2_score('Hello')",
              "SELECT interrupt_now(), gpt2_embed('Hello')",
              "SELECT gpt2_score('') = 0")
    assert out == ["2", "ERROR 9: gpt2_score: interrupted", "ERROR 9: gpt2_embed: interrupted",
                   "1"]
