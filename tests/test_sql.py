"""The SQL surface: registered functions, NULL handling, argument errors,
gpt2_stream laziness and consistency, model state per connection, the CLI."""
import ctypes
import json
import os
import sqlite3
import re
import struct
import time
import subprocess

import pytest

from conftest import ROOT, SO, connect, one, err, loaded
from make_checkpoint import write_checkpoint
import reference


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, vocab_dir):
    """A small checkpoint with GPT-2's real vocabulary."""
    d = tmp_path_factory.mktemp("tiny")
    cfg, w = write_checkpoint(str(d), n_layer=2, n_head=4, n_embd=64, n_positions=96,
                              vocab_dir=vocab_dir, seed=3)
    return str(d), cfg, w


@pytest.fixture(scope="module")
def other(tmp_path_factory):
    """A second, different checkpoint with its own tiny vocabulary."""
    d = tmp_path_factory.mktemp("other")
    cfg, w = write_checkpoint(str(d), n_layer=1, n_head=2, n_embd=32, n_positions=64, seed=5)
    return str(d), cfg, w


@pytest.fixture
def mdb(tiny):
    conn = loaded(tiny[0])
    yield conn
    conn.close()


def counters(conn):
    return json.loads(one(conn, "SELECT gpt2_info()"))["counters"]


def test_registered_functions(db):
    names = {r[0] for r in db.execute(
        "SELECT name FROM pragma_function_list WHERE name LIKE 'gpt2%'")}
    assert names == {"gpt2_version", "gpt2_load", "gpt2_info", "gpt2_tokenize",
                     "gpt2_detokenize", "gpt2_token_count", "gpt2_logits", "gpt2_generate",
                     "gpt2_use", "gpt2_unload", "gpt2_set", "gpt2_progress", "gpt2_score",
                     "gpt2_perplexity", "gpt2_embed"}
    modules = {r[0] for r in db.execute("SELECT name FROM pragma_module_list")}
    assert {"gpt2_stream", "gpt2_complete", "gpt2_models"} <= modules
    # ext/version.h is the one place the version is written
    with open(os.path.join(ROOT, "ext", "version.h")) as f:
        declared = re.search(r'#define GPT2_VERSION "([^"]+)"', f.read()).group(1)
    assert re.fullmatch(r"\d+\.\d+\.\d+", declared)
    assert one(db, "SELECT gpt2_version()") == declared


def test_sampling_functions_not_deterministic(db):
    SQLITE_DETERMINISTIC = 0x800
    flags = dict(db.execute(
        "SELECT name, flags FROM pragma_function_list WHERE name LIKE 'gpt2%'"))
    assert flags["gpt2_generate"] & SQLITE_DETERMINISTIC == 0
    assert flags["gpt2_logits"] & SQLITE_DETERMINISTIC == 0
    assert flags["gpt2_version"] & SQLITE_DETERMINISTIC


def test_no_model_loaded(db):
    assert one(db, "SELECT gpt2_info()") is None
    for sql in ["SELECT gpt2_tokenize('a')", "SELECT gpt2_generate('a')",
                "SELECT gpt2_logits('a')", "SELECT * FROM gpt2_stream('a')",
                "SELECT gpt2_detokenize('[1]')", "SELECT gpt2_token_count('a')"]:
        assert "no model loaded; run SELECT gpt2_load(" in err(db, sql)


def test_null_in_null_out(mdb):
    for fn in ["gpt2_tokenize", "gpt2_detokenize", "gpt2_token_count", "gpt2_logits",
               "gpt2_generate", "gpt2_load"]:
        assert one(mdb, f"SELECT {fn}(NULL)") is None
    assert mdb.execute("SELECT * FROM gpt2_stream(NULL)").fetchall() == []


def test_load_summary_and_info(mdb, tiny):
    path, cfg, _ = tiny
    info = json.loads(one(mdb, "SELECT gpt2_info()"))
    assert info["path"] == os.path.realpath(path)
    assert info["name"] == "default"
    assert (info["n_layer"], info["n_head"], info["n_embd"], info["n_positions"],
            info["vocab_size"]) == (2, 4, 64, 96, 50257)
    assert info["dtype"] == "F32"
    assert info["n_params"] > 50257 * 64
    assert one(mdb, "SELECT json_valid(gpt2_load(?))", path) == 1


def test_failed_load_keeps_previous(mdb, tmp_path):
    before = one(mdb, "SELECT gpt2_generate('Hello', 5)")
    (tmp_path / "config.json").write_text("{not json")
    msg = err(mdb, "SELECT gpt2_load(?)", str(tmp_path))
    assert msg.startswith("gpt2_load: ") and "config.json" in msg
    assert "gpt2_load: cannot open model directory" in err(mdb, "SELECT gpt2_load('/nonexistent/x')")
    assert one(mdb, "SELECT gpt2_generate('Hello', 5)") == before


def test_reload_same_path_is_noop(mdb, tiny):
    c0 = counters(mdb)
    mdb.execute("SELECT gpt2_load(?)", (tiny[0],))
    # Counters live in the connection and survive; the model was not replaced.
    assert counters(mdb) == c0


def test_env_model_autoload(tiny):
    env = dict(os.environ, GPT2_MODEL=tiny[0])
    code = ("import sys; sys.path.insert(0, 'tests'); from conftest import connect;"
            "c = connect(); print(c.execute(\"SELECT gpt2_token_count('Hello world')\").fetchone()[0])")
    out = subprocess.run(["/usr/bin/python3", "-c", code], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "2"


def test_generate_argument_errors(mdb):
    assert err(mdb, "SELECT gpt2_generate('a', -1)") == \
        "gpt2_generate: argument 2 (max_tokens) = -1 is out of range [0, 96]"
    assert err(mdb, "SELECT gpt2_generate('a', 97)") == \
        "gpt2_generate: argument 2 (max_tokens) = 97 is out of range [0, 96]"
    assert err(mdb, "SELECT gpt2_generate('a', 'x')") == \
        "gpt2_generate: argument 2 (max_tokens or options) " \
        "must be an INTEGER or a JSON object of options, e.g. json_object('max_tokens', 40); got TEXT 'x': invalid token near 'x'"
    assert err(mdb, "SELECT gpt2_generate('a', 5, -0.5)") == \
        "gpt2_generate: argument 3 (temperature) = -0.5 is out of range [0, inf)"
    assert err(mdb, "SELECT gpt2_generate('a', 5, 1.0, -3)") == \
        "gpt2_generate: argument 4 (top_k) = -3 is out of range [0, 2147483647]"
    assert err(mdb, "SELECT gpt2_generate('a', 5, 1.0, 0, 0)") == \
        "gpt2_generate: argument 5 (top_p) = 0 is out of range (0, 1]"
    assert err(mdb, "SELECT gpt2_generate('a', 5, 1.0, 0, 1.5)") == \
        "gpt2_generate: argument 5 (top_p) = 1.5 is out of range (0, 1]"
    assert err(mdb, "SELECT gpt2_generate('a', 5, 1.0, 0, 1, 'seed')") == \
        "gpt2_generate: argument 6 (seed) must be an INTEGER, got TEXT"
    assert err(mdb, "SELECT gpt2_generate(12)") == \
        "gpt2_generate: argument 1 (prompt) must be TEXT or a JSON array of token ids, got INTEGER"
    assert err(mdb, "SELECT gpt2_generate(x'00')") == \
        "gpt2_generate: argument 1 (prompt) must be TEXT or a JSON array of token ids, got BLOB"
    assert err(mdb, "SELECT gpt2_generate(json('[1, 99999]'))") == \
        "gpt2_generate: argument 1 (prompt): id 99999 is outside the vocabulary (size 50257)"
    assert err(mdb, "SELECT gpt2_generate(json('[1, 2.5]'))") == \
        "gpt2_generate: argument 1 (prompt): element 1 is not an integer"
    long_prompt = json.dumps(list(range(97)))
    assert err(mdb, "SELECT gpt2_generate(json(?))", long_prompt) == \
        "gpt2_generate: argument 1 (prompt): prompt is 97 tokens, longer than the context (96)"


def test_logits_blob_matches_reference(mdb, tiny):
    _, cfg, w = tiny
    ids = [464, 3290, 318, 257]
    blob = one(mdb, "SELECT gpt2_logits(json(?))", json.dumps(ids))
    assert len(blob) == 4 * 50257
    got = struct.unpack("<50257f", blob)
    want = reference.logits(w, cfg, ids)[-1]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    # A text prompt is tokenized first.
    assert one(mdb, "SELECT gpt2_logits('Hello world') = gpt2_logits(json('[15496, 995]'))") == 1


def test_empty_prompt_starts_from_eos(mdb, tiny):
    _, cfg, w = tiny
    eos = cfg["eos_token_id"]
    want = reference.logits(w, cfg, [eos])[-1]
    got = struct.unpack("<50257f", one(mdb, "SELECT gpt2_logits('')"))
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
    assert one(mdb, "SELECT gpt2_generate('', 4) = gpt2_generate(json('[]'), 4)") == 1


def stream_ids(conn, prompt_ids, n, *more):
    args = ", ".join(["json(?)", "?"] + ["?"] * len(more))
    return [r[0] for r in conn.execute(
        f"SELECT token_id FROM gpt2_stream({args})", (json.dumps(prompt_ids), n, *more))]


def test_greedy_matches_reference_40_steps(mdb, tiny):
    _, cfg, w = tiny
    prompt = [464, 3290]
    got = stream_ids(mdb, prompt, 40)
    want = reference.greedy(w, cfg, prompt, 40)
    assert got[:40] == want[:len(got[:40])]
    assert len(set(got)) > 5  # the fixture's weights do not collapse into one token


def test_stream_equals_generate(mdb):
    for args in [(30,), (30, 0.9, 0, 1.0, 11), (30, 1.3, 50, 0.9, 12), (30, 0.7, 5, 1.0, 13)]:
        q = ", ".join("?" * len(args))
        rows = mdb.execute(f"SELECT i, token FROM gpt2_stream('Once upon a time', {q})",
                           args).fetchall()
        assert [r[0] for r in rows] == list(range(len(rows)))
        text = one(mdb, f"SELECT gpt2_generate('Once upon a time', {q})", *args)
        assert "".join(r[1] for r in rows) == text


def test_seeded_sampling_reproducible(mdb, tiny):
    a = one(mdb, "SELECT gpt2_generate('The', 20, 1.0, 0, 1.0, 123)")
    b = one(mdb, "SELECT gpt2_generate('The', 20, 1.0, 0, 1.0, 123)")
    c = one(mdb, "SELECT gpt2_generate('The', 20, 1.0, 0, 1.0, 124)")
    assert a == b and a != c
    # Another connection (fresh state) gives the same text for the same seed.
    other = connect()
    other.execute("SELECT gpt2_load(?)", (tiny[0],))
    assert one(other, "SELECT gpt2_generate('The', 20, 1.0, 0, 1.0, 123)") == a
    other.close()


def test_top_k_1_is_greedy(mdb):
    greedy = one(mdb, "SELECT gpt2_generate('The', 15)")
    assert one(mdb, "SELECT gpt2_generate('The', 15, 1.5, 1, 1.0, 9)") == greedy
    assert one(mdb, "SELECT gpt2_generate('The', 15, 1.5, 0, 1e-9, 9)") == greedy


def test_stream_logprob_is_unmodified_distribution(mdb, tiny):
    _, cfg, w = tiny
    prompt = [464, 3290]
    rows = mdb.execute("SELECT token_id, logprob FROM gpt2_stream(json(?), 3, 2.0, 5, 0.9, 1)",
                       (json.dumps(prompt),)).fetchall()
    ids = list(prompt)
    for tok, lp in rows:
        lg = reference.logits(w, cfg, ids)[-1]
        m = lg.max()
        want = lg[tok] - m - __import__("math").log(sum(__import__("math").exp(x - m) for x in lg))
        assert abs(lp - want) < 1e-4
        ids.append(tok)


def test_stream_is_lazy(mdb):
    mdb.execute("SELECT gpt2_set('prefix_reuse', 0)")
    c0 = counters(mdb)
    rows = mdb.execute("SELECT token FROM gpt2_stream('Once upon a time', 50) LIMIT 3").fetchall()
    assert len(rows) == 3
    c1 = counters(mdb)
    assert c1["tokens_generated"] - c0["tokens_generated"] == 3
    # one call for the prompt, then one single-row step per later token
    assert c1["forward_calls"] - c0["forward_calls"] == 3
    assert c1["rows_computed"] - c0["rows_computed"] == 4 + 2


def test_stream_stops_at_max_tokens_and_context(mdb):
    assert len(mdb.execute("SELECT * FROM gpt2_stream('Hi', 7)").fetchall()) <= 8
    n = len(mdb.execute("SELECT * FROM gpt2_stream(json(?), 96)",
                        (json.dumps(list(range(90))),)).fetchall())
    assert n <= 96 - 90 + 1  # 90 prompt tokens in a context of 96: at most 7 tokens
    assert mdb.execute("SELECT * FROM gpt2_stream('Hi', 0)").fetchall() == []


def test_stream_errors(mdb):
    assert err(mdb, "SELECT * FROM gpt2_stream") == "gpt2_stream: argument 1 (prompt) is required"
    assert err(mdb, "SELECT * FROM gpt2_stream('a', -2)") == \
        "gpt2_stream: argument 2 (max_tokens) = -2 is out of range [0, 96]"


def test_stream_in_a_join(mdb):
    mdb.execute("CREATE TABLE p(id INTEGER, prompt TEXT)")
    mdb.executemany("INSERT INTO p VALUES (?, ?)", [(1, "Hello"), (2, "The dog")])
    rows = mdb.execute("SELECT id, group_concat(token, '') FROM p, gpt2_stream(p.prompt, 5) "
                       "GROUP BY id ORDER BY id").fetchall()
    for id_, text in rows:
        prompt = "Hello" if id_ == 1 else "The dog"
        assert text == one(mdb, "SELECT gpt2_generate(?, 5)", prompt)


def test_update_rows_loads_once(mdb):
    mdb.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT, out TEXT)")
    mdb.executemany("INSERT INTO docs(body) VALUES (?)", [("a",), ("b c",), (None,)])
    mdb.execute("UPDATE docs SET out = gpt2_generate(body, 4)")
    rows = mdb.execute("SELECT body, out FROM docs ORDER BY id").fetchall()
    assert rows[2] == (None, None)
    for body, out in rows[:2]:
        assert out == one(mdb, "SELECT gpt2_generate(?, 4)", body)


def test_connections_are_independent(tiny, other):
    a, b = connect(), connect()
    a.execute("SELECT gpt2_load(?)", (tiny[0],))
    b.execute("SELECT gpt2_load(?)", (other[0],))
    assert json.loads(one(a, "SELECT gpt2_info()"))["n_embd"] == 64
    assert json.loads(one(b, "SELECT gpt2_info()"))["n_embd"] == 32
    a.close()
    assert json.loads(one(b, "SELECT gpt2_info()"))["n_embd"] == 32
    b.close()


def _threads_and_fds():
    with open("/proc/self/status") as f:
        threads = next(int(l.split()[1]) for l in f if l.startswith("Threads:"))
    return threads, len(os.listdir("/proc/self/fd"))


def _threads_and_fds_back_to(before):
    """The count once the kernel has caught up: pthread_join returns when a
    worker has cleared its thread id, and the kernel unhashes the exiting
    task a moment later, so right after a connection closes its worker can
    still be counted (seen under ASan). A thread that is really left behind
    never goes; the wait is polled, not timed."""
    now = _threads_and_fds()
    for _ in range(500):
        if now == before:
            break
        time.sleep(0.02)
        now = _threads_and_fds()
    return now


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
                 "uordblks", "fordblks", "keepcost")]


def _heap_in_use():
    """Bytes of the C heap in use (glibc's mallinfo2; 0 under ASan, which
    checks leaks itself)."""
    f = ctypes.CDLL(None).mallinfo2
    f.restype = _Mallinfo2
    m = f()
    return m.uordblks + m.hblkhd


def test_hundred_connections_open_load_generate_close(other):
    """100 short-lived connections, each opening, loading a model, generating
    and closing: the same output each time, and nothing left behind (no file
    descriptor, no thread; `make test-sanitize` checks the heap too)."""
    gen = "SELECT gpt2_generate('the cat', 6)"
    ref = connect()
    ref.execute("SELECT gpt2_load(?)", (other[0],))
    want = one(ref, gen)
    ref.close()
    before, heap0 = _threads_and_fds(), _heap_in_use()
    for i in range(100):
        c = connect()
        c.execute("SELECT gpt2_load(?)", (other[0],))
        assert one(c, gen) == want, i
        if i % 10 == 0:
            assert c.execute("SELECT count(*) FROM gpt2_stream('a', 3)").fetchone()[0] >= 1
        c.close()
    assert _threads_and_fds_back_to(before) == before
    # a model left behind per connection: ~0.5 MB each (55 MB for 100 left open)
    assert _heap_in_use() - heap0 < 2 << 20


def test_sqlite3_cli_loads_extension(tiny):
    sql = (f".load {SO[:-3]}\n"
           f"SELECT json_extract(gpt2_load('{tiny[0]}'), '$.n_layer');\n"
           "SELECT gpt2_tokenize('Hello world');\n"
           "SELECT count(*) FROM gpt2_stream('Hello', 4);\n")
    out = subprocess.run(["sqlite3", ":memory:"], input=sql, capture_output=True, text=True,
                         check=True)
    lines = out.stdout.split()
    assert lines[0] == "2" and lines[1] == "[15496,995]"
    assert 1 <= int(lines[2]) <= 5
