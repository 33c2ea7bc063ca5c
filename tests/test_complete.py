"""Whole-table completion (gpt2_complete), prefix reuse and several models
per connection."""
import json
import sqlite3

import pytest

from conftest import connect, one, loaded
from make_checkpoint import write_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, vocab_dir):
    d = tmp_path_factory.mktemp("cmp")
    write_checkpoint(str(d), n_layer=2, n_head=4, n_embd=64, n_positions=128,
                     vocab_dir=vocab_dir, seed=11)
    return str(d)


@pytest.fixture(scope="module")
def ckpt_eos(tmp_path_factory):
    """Tiny own vocabulary with eos made very likely, so that some rows end at once."""
    d = tmp_path_factory.mktemp("eos")
    write_checkpoint(str(d), n_layer=1, n_head=2, n_embd=32, n_positions=64, seed=2)
    return str(d)


@pytest.fixture
def db(ckpt):
    conn = loaded(ckpt)
    yield conn
    conn.close()


def info(conn):
    return json.loads(one(conn, "SELECT gpt2_info()"))


PROMPTS = [
    "Hello", "The dog", "Once upon a time, in a land far, far away, there lived a king who",
    "SQLite is", None, "a", "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22", "",
    "Summarize: the cat sat on the mat.", "Summarize: the dog ate my homework.",
    "Summarize: the dog ate my homework!", "Q:", "¿Dónde está la biblioteca?", "日本語のテキスト",
    "def f(x):\n    return", "x" * 50, "The", "The end", "Why", "How are you?",
]


def make_table(conn, prompts=PROMPTS):
    conn.execute("DROP TABLE IF EXISTS docs")
    conn.execute("CREATE TABLE docs(id, body TEXT, summary TEXT)")
    # keys of several types come back unchanged
    keys = [i if i % 3 else f"k{i}" for i in range(len(prompts))]
    keys[1] = 2.5
    keys[2] = b"\x00\x01"
    conn.executemany("INSERT INTO docs(id, body) VALUES (?, ?)", list(zip(keys, prompts)))
    return keys


@pytest.mark.parametrize("batch", [1, 3, 16])
def test_complete_equals_generate_greedy(db, batch):
    keys = make_table(db)
    rows = db.execute("SELECT key, prompt, completion, n_tokens FROM "
                      "gpt2_complete('SELECT id, body FROM docs', 12, NULL, NULL, NULL, NULL, ?)",
                      (batch,)).fetchall()
    assert sorted(map(repr, (r[0] for r in rows))) == sorted(map(repr, keys))
    by_key = {repr(r[0]): r for r in rows}
    for k, p in zip(keys, PROMPTS):
        _, prompt, completion, n_tokens = by_key[repr(k)]
        assert prompt == p
        if p is None:
            assert completion is None and n_tokens is None
            continue
        assert completion == one(db, "SELECT gpt2_generate(?, 12)", p)
        assert 0 <= n_tokens <= 12


def test_complete_equals_generate_sampled(db):
    make_table(db)
    rows = db.execute("SELECT key, prompt, completion FROM gpt2_complete("
                      "'SELECT id, body FROM docs ORDER BY rowid', 10, 0.9, 40, 0.95, 1000, 4)"
                      ).fetchall()
    order = [r[0] for r in db.execute("SELECT id FROM docs ORDER BY rowid")]
    for key, prompt, completion in rows:
        if prompt is None:
            continue
        k = [repr(x) for x in order].index(repr(key))
        want = one(db, "SELECT gpt2_generate(?, 10, 0.9, 40, 0.95, ?)", prompt, 1000 + k)
        assert completion == want


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("sample", [(1.0, 0, 1.0), (0.7, 0, 0.9), (1.2, 5, 1.0)])
def test_complete_sampled_picks_on_threads(db, threads, sample):
    """A batched step's picks run on the connection's threads (each row's own
    sampler and rng): every row still equals gpt2_generate, whatever the
    thread count, for full-vocabulary, nucleus and top-k draws."""
    make_table(db)
    db.execute("SELECT gpt2_set('threads', ?)", (threads,))
    T, k, p = sample
    rows = db.execute("SELECT key, prompt, completion FROM gpt2_complete("
                      "'SELECT id, body FROM docs ORDER BY rowid', 8, ?, ?, ?, 77, 6)",
                      (T, k, p)).fetchall()
    order = [repr(r[0]) for r in db.execute("SELECT id FROM docs ORDER BY rowid")]
    assert len(rows) == len(order)
    for key, prompt, completion in rows:
        if prompt is None:
            assert completion is None
            continue
        want = one(db, "SELECT gpt2_generate(?, 8, ?, ?, ?, ?)", prompt, T, k, p,
                   77 + order.index(repr(key)))
        assert completion == want


def test_complete_rows_with_immediate_eos(ckpt_eos):
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (ckpt_eos,))
    eos = info(conn)["eos_token_id"]
    conn.execute("CREATE TABLE t(k, p)")
    # A prompt of ids; with max_tokens 0 every row ends at once.
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, "ab" * i) for i in range(1, 6)])
    rows = conn.execute("SELECT key, completion, n_tokens FROM gpt2_complete("
                        "'SELECT k, p FROM t', 0)").fetchall()
    assert sorted(rows) == [(i, "", 0) for i in range(1, 6)]
    # Sampling at a high temperature from a tiny model: many rows meet eos early;
    # every row still equals gpt2_generate.
    rows = conn.execute("SELECT key, completion, n_tokens FROM gpt2_complete("
                        "'SELECT k, p FROM t', 40, 3.0, 0, 1.0, 5, 2)").fetchall()
    assert len(rows) == 5
    for k, completion, n in rows:
        assert completion == one(conn, "SELECT gpt2_generate(?, 40, 3.0, 0, 1.0, ?)",
                                 "ab" * k, 5 + k - 1)
    assert eos >= 0
    conn.close()


def test_complete_empty_and_bad_queries(db):
    make_table(db)
    assert db.execute("SELECT * FROM gpt2_complete('SELECT id, body FROM docs WHERE 0')"
                      ).fetchall() == []
    assert db.execute("SELECT * FROM gpt2_complete(NULL)").fetchall() == []
    cases = {
        "SELECT id FROM docs": "gpt2_complete: argument 1 (query) must return two columns, (key, prompt)",
        "SELECT nope FROM docs": "gpt2_complete: argument 1 (query): no such column: nope",
        "": "gpt2_complete: argument 1 (query) is empty",
        "DELETE FROM docs": "gpt2_complete: argument 1 (query) must be read-only (a SELECT)",
        "SELECT 1, 2; SELECT 3, 4": "gpt2_complete: argument 1 (query) must be a single statement",
    }
    for q, msg in cases.items():
        with pytest.raises(sqlite3.Error) as e:
            db.execute("SELECT * FROM gpt2_complete(?)", (q,)).fetchall()
        assert str(e.value) == msg
    with pytest.raises(sqlite3.Error) as e:
        db.execute("SELECT * FROM gpt2_complete('SELECT 1, 2', 5, 0, 0, 1, 1, 0)").fetchall()
    assert str(e.value) == "gpt2_complete: argument 7 (batch_size) = 0 is out of range [1, 256]"
    with pytest.raises(sqlite3.Error) as e:
        db.execute("SELECT * FROM gpt2_complete").fetchall()
    assert str(e.value) == "gpt2_complete: argument 1 (query) is required"


def test_fill_a_column_update_from_and_insert_select(db):
    make_table(db, ["Hello", "The dog", None, "SQLite is"])
    db.execute("UPDATE docs SET summary = c.completion FROM "
               "(SELECT key, completion FROM gpt2_complete("
               "'SELECT id, body FROM docs WHERE summary IS NULL', 8)) AS c "
               "WHERE docs.id = c.key")
    for body, summary in db.execute("SELECT body, summary FROM docs"):
        want = None if body is None else one(db, "SELECT gpt2_generate(?, 8)", body)
        assert summary == want
    db.execute("CREATE TABLE out(k, text)")
    db.execute("INSERT INTO out SELECT key, completion FROM "
               "gpt2_complete('SELECT id, body FROM docs', 8)")
    assert one(db, "SELECT count(*) FROM out") == 4


def test_batching_reduces_forward_calls(db):
    make_table(db, [f"Prompt number {i}" for i in range(20)])
    db.execute("SELECT gpt2_set('prefix_reuse', 0)")
    c0 = info(db)["counters"]
    db.execute("SELECT * FROM gpt2_complete('SELECT id, body FROM docs', 10, 0, 0, 1, 0, 20)"
               ).fetchall()
    c1 = info(db)["counters"]
    # The 20 prompts are fed together in the first step (one weight pass for
    # all of them, which also gives each its first token), then 9 decode steps.
    assert c1["forward_calls"] - c0["forward_calls"] == 10
    assert c1["tokens_generated"] - c0["tokens_generated"] == 200
    assert c1["rows_computed"] - c0["rows_computed"] == (
        sum(one(db, "SELECT gpt2_token_count(?)", f"Prompt number {i}") for i in range(20))
        + 20 * 9)


@pytest.fixture(scope="module")
def ckpt_long(tmp_path_factory, vocab_dir):
    d = tmp_path_factory.mktemp("long")
    write_checkpoint(str(d), n_layer=1, n_head=2, n_embd=32, n_positions=1024,
                     vocab_dir=vocab_dir, seed=5)
    return str(d)


def test_long_prompts_fed_over_several_steps(ckpt_long):
    """Prompts whose rows do not fit in one step (512 rows) are fed in chunks,
    alongside other rows' decoding, and still equal gpt2_generate."""
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (ckpt_long,))
    conn.execute("SELECT gpt2_set('prefix_reuse', 0)")
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    bodies = [" ".join(words[(i + k) % 10] for k in range(n))
              for i, n in enumerate([350, 5, 300, 260, 3, 280, 40])]
    keys = make_table(conn, bodies)
    lens = [one(conn, "SELECT gpt2_token_count(?)", b) for b in bodies]
    assert max(lens) > 512 and sum(lens) > 3 * 512
    got = dict(conn.execute("SELECT key, completion FROM gpt2_complete("
                            "'SELECT id, body FROM docs', 12, 0, 0, 1, 0, 4)").fetchall())
    assert len(got) == len(bodies)
    for k, b in zip(keys, bodies):
        assert got[k] == one(conn, "SELECT gpt2_generate(?, 12)", b), k
    conn.close()


def test_prefix_reuse_generate(db):
    template = "Answer the question in one word. Question: "
    qs = ["what colour is the sky?", "what is two plus two?", "who wrote Hamlet?"]
    db.execute("SELECT gpt2_set('prefix_reuse', 1)")
    c0 = info(db)["counters"]["prefix_reused"]
    with_reuse = [one(db, "SELECT gpt2_generate(?, 8)", template + q) for q in qs]
    saved = info(db)["counters"]["prefix_reused"] - c0
    n_template = one(db, "SELECT gpt2_token_count(?)", template)
    assert saved >= 2 * (n_template - 1)
    assert one(db, "SELECT gpt2_set('prefix_reuse', 0)") == 1
    c1 = info(db)["counters"]["prefix_reused"]
    without = [one(db, "SELECT gpt2_generate(?, 8)", template + q) for q in qs]
    assert info(db)["counters"]["prefix_reused"] == c1
    assert with_reuse == without


def test_prefix_reuse_complete(db):
    template = "Classify the sentiment of this review as positive or negative: "
    reviews = ["great food", "awful service", "loved it", "never again", "fine"]
    make_table(db, [template + r for r in reviews])
    results = {}
    for reuse in (1, 0):
        db.execute("SELECT gpt2_set('prefix_reuse', ?)", (reuse,))
        c0 = info(db)["counters"]["prefix_reused"]
        results[reuse] = sorted(db.execute(
            "SELECT key, completion FROM gpt2_complete('SELECT id, body FROM docs', 6, "
            "NULL, NULL, NULL, NULL, 2)").fetchall(), key=repr)
        saved = info(db)["counters"]["prefix_reused"] - c0
        n_template = one(db, "SELECT gpt2_token_count(?)", template)
        if reuse:
            assert saved >= (len(reviews) - 1) * (n_template - 1)
        else:
            assert saved == 0
    assert results[0] == results[1]


def test_several_models(ckpt, ckpt_eos):
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (ckpt,))
    conn.execute("SELECT gpt2_load(?, 'small')", (ckpt_eos,))
    rows = conn.execute("SELECT name, current, n_layer, n_embd, dtype, bytes > 0 "
                        "FROM gpt2_models").fetchall()
    assert rows == [("default", 0, 2, 64, "F32", 1), ("small", 1, 1, 32, "F32", 1)]
    assert info(conn)["n_embd"] == 32
    a = one(conn, "SELECT gpt2_generate('ab', 5)")
    conn.execute("SELECT gpt2_use('default')")
    assert info(conn)["n_embd"] == 64
    b = one(conn, "SELECT gpt2_generate('ab', 5)")
    conn.execute("SELECT gpt2_use('small')")
    assert one(conn, "SELECT gpt2_generate('ab', 5)") == a
    with pytest.raises(sqlite3.Error) as e:
        conn.execute("SELECT gpt2_use('nope')")
    assert str(e.value) == "gpt2_use: no model named 'nope' (loaded: default, small)"
    assert one(conn, "SELECT gpt2_unload('small')") == 1
    assert one(conn, "SELECT gpt2_unload('small')") == 0
    assert one(conn, "SELECT gpt2_info()") is None
    with pytest.raises(sqlite3.Error) as e:
        conn.execute("SELECT gpt2_generate('ab', 5)")
    assert "no model is current (loaded: default)" in str(e.value)
    conn.execute("SELECT gpt2_use('default')")
    assert one(conn, "SELECT gpt2_generate('ab', 5)") == b
    assert conn.execute("SELECT name, current FROM gpt2_models").fetchall() == [("default", 1)]
    # Unloading the model a running stream uses: the stream keeps its own reference.
    rows = conn.execute("SELECT gpt2_unload('default'), token FROM gpt2_stream('ab', 5)").fetchall()
    assert [r[0] for r in rows] == [1] + [0] * (len(rows) - 1)
    assert "".join(r[1] for r in rows) == b
    assert conn.execute("SELECT count(*) FROM gpt2_models").fetchone()[0] == 0
    conn.close()


def test_limits(ckpt):
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (ckpt,))
    settings = info(conn)["settings"]
    assert 1 <= settings.pop("threads") <= 64  # tests/test_shared.py checks its default
    assert settings == {"prefix_reuse": 1, "max_tokens_limit": 0, "kv_memory_limit": 4 << 30,
                        "progress": 1}
    assert one(conn, "SELECT gpt2_set('max_tokens_limit', 10)") == 0
    with pytest.raises(sqlite3.Error) as e:
        conn.execute("SELECT gpt2_generate('a', 11)")
    assert str(e.value) == ("gpt2_generate: argument 2 (max_tokens) = 11 is above the "
                            "connection's max_tokens_limit (10); see gpt2_set")
    # the default max_tokens (32) shrinks to the cap
    n = len(conn.execute("SELECT * FROM gpt2_stream('a')").fetchall())
    assert n <= 10
    with pytest.raises(sqlite3.Error) as e:
        conn.execute("SELECT * FROM gpt2_complete('SELECT 1, ''a''', 20)").fetchall()
    assert "max_tokens_limit (10)" in str(e.value)
    # KV memory: 2 layers x 64 x 2 x 4 bytes = 1 KiB per position
    conn.execute("SELECT gpt2_set('kv_memory_limit', 1 << 20)")
    conn.execute("SELECT gpt2_set('max_tokens_limit', 0)")
    conn.execute("CREATE TABLE s(value)")
    conn.executemany("INSERT INTO s VALUES (?)", [(i,) for i in range(20)])
    with pytest.raises(sqlite3.Error) as e:
        conn.execute("SELECT * FROM gpt2_complete('SELECT value, ''a b'' FROM s', 127, NULL, NULL, NULL, NULL, 16)").fetchall()
    # each row may fill the whole context (128 positions); 1 MiB holds 1024
    # positions, so the 9th live row is the first that does not fit
    assert str(e.value).startswith("gpt2_complete: 9 sequences of 1152 positions in all need "
                                   "1179648 bytes of KV cache")
    assert "kv_memory_limit (1048576)" in str(e.value)
    # A smaller batch fits.
    assert len(conn.execute("SELECT * FROM gpt2_complete('SELECT value, ''a b'' FROM s', 100, NULL, NULL, NULL, NULL, 4)").fetchall()) == 20
    with pytest.raises(sqlite3.Error) as e:
        conn.execute("SELECT gpt2_set('kv_memory_limit', 5)")
    assert str(e.value) == ("gpt2_set: argument 2 (kv_memory_limit) = 5 is out of range "
                            "[1048576, 9223372036854775807]")
    with pytest.raises(sqlite3.Error) as e:
        conn.execute("SELECT gpt2_set('nope', 5)")
    assert "unknown setting 'nope'" in str(e.value)
    conn.close()
