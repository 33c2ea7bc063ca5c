"""What a new user trips over: numbers bound as REAL by drivers, token ids
that lost SQLite's JSON subtype, the KV-limit message, the environment
variables, GPT2_MODEL's rule, load errors, DIRECTONLY, loading twice, and
the documented shapes."""
import json
import os
import re
import sqlite3
import subprocess

import pytest

from conftest import ROOT, SO, connect, one, err, loaded
from make_checkpoint import write_checkpoint
import reference


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, vocab_dir):
    d = tmp_path_factory.mktemp("nu_tiny")
    cfg, _ = write_checkpoint(str(d), n_layer=2, n_head=4, n_embd=64, n_positions=96,
                              vocab_dir=vocab_dir, seed=21, return_weights=False)
    return str(d), cfg


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """One sequence's KV cache can exceed the 1 MiB minimum kv_memory_limit."""
    d = tmp_path_factory.mktemp("nu_wide")
    cfg, _ = write_checkpoint(str(d), n_layer=4, n_head=4, n_embd=256, n_positions=160, seed=4,
                              return_weights=False)
    return str(d), cfg


@pytest.fixture
def mdb(tiny):
    conn = loaded(tiny[0])
    yield conn
    conn.close()


def run_py(code, env_extra, cwd=ROOT):
    """Run code in a fresh /usr/bin/python3 with env_extra set; (rc, out, err)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPT2_MODEL", "GPT2_THREADS", "GPT2_KERNEL")}
    env.update(env_extra)
    pre = "import sys, json; sys.path.insert(0, 'tests'); from conftest import connect;"
    p = subprocess.run(["/usr/bin/python3", "-c", pre + code], cwd=cwd, env=env,
                       capture_output=True, text=True)
    return p.returncode, p.stdout.strip(), p.stderr.strip()


# ---- numbers bound as REAL -------------------------------------------------

def test_integral_reals_are_integers(mdb):
    # what a driver that binds every number as a double sends
    assert one(mdb, "SELECT gpt2_generate(?, ?)", "Hello", 5.0) == \
        one(mdb, "SELECT gpt2_generate('Hello', 5)")
    assert one(mdb, "SELECT gpt2_generate('Hi', 4.0, 0.9, 40.0, 0.95, 7.0)") == \
        one(mdb, "SELECT gpt2_generate('Hi', 4, 0.9, 40, 0.95, 7)")
    one(mdb, "SELECT gpt2_set('threads', 2.0)")
    assert json.loads(one(mdb, "SELECT gpt2_info()"))["settings"]["threads"] == 2
    rows = mdb.execute("SELECT key, completion FROM gpt2_complete("
                       "'SELECT 1, ''Hi''', 3.0, NULL, NULL, NULL, NULL, 2.0)").fetchall()
    assert rows == [(1, one(mdb, "SELECT gpt2_generate('Hi', 3)"))]
    assert [r[0] for r in mdb.execute("SELECT i FROM gpt2_stream('Hi', 3.0)")] == [0, 1, 2]


def test_fractional_reals_still_rejected(mdb):
    assert err(mdb, "SELECT gpt2_generate('Hello', 5.5)") == \
        "gpt2_generate: argument 2 (max_tokens) must be an INTEGER, got REAL"
    assert err(mdb, "SELECT gpt2_set('threads', 1.5)") == \
        "gpt2_set: argument 2 (threads) must be an INTEGER, got REAL"
    assert err(mdb, "SELECT gpt2_generate('Hello', 1e30)").startswith(
        "gpt2_generate: argument 2 (max_tokens) = 1e+30 is out of range [0, 96]")
    assert "must be an INTEGER, got REAL" in err(mdb, "SELECT * FROM gpt2_complete("
                                                 "'SELECT 1, ''a''', 3, NULL, NULL, NULL, NULL, 2.5)")


# ---- token ids that lost the JSON subtype ----------------------------------

def test_ids_without_subtype_are_an_error_not_text(mdb):
    ids = one(mdb, "SELECT gpt2_tokenize('The dog')")
    # direct: the subtype is there, the ids are used
    direct = one(mdb, "SELECT gpt2_generate(gpt2_tokenize('The dog'), 3)")
    assert direct == one(mdb, "SELECT gpt2_generate('The dog', 3)")
    mdb.execute("CREATE TABLE p(t)")
    mdb.execute("INSERT INTO p VALUES (?)", (ids,))
    for sql, args in [("SELECT gpt2_generate(t, 3) FROM p", ()),
                      ("WITH q(t) AS MATERIALIZED (SELECT gpt2_tokenize('The dog')) "
                       "SELECT gpt2_generate(t, 3) FROM q", ()),
                      ("SELECT gpt2_generate(?, 3)", (ids,)),
                      ("SELECT token FROM gpt2_stream((SELECT t FROM p), 3)", ())]:
        m = err(mdb, sql, *args)
        assert "is token ids without SQLite's JSON subtype" in m, (sql, m)
        assert "json(" in m
    # json() at the call site restores it
    assert one(mdb, "SELECT gpt2_generate(json(t), 3) FROM p") == direct
    # text that merely starts with a bracket is text
    assert isinstance(one(mdb, "SELECT gpt2_generate('[not ids]', 2)"), str)
    assert isinstance(one(mdb, "SELECT gpt2_generate('[1, 2] and more', 2)"), str)


def test_complete_ids_without_subtype_name_the_row(mdb):
    mdb.execute("CREATE TABLE d(k, t)")
    mdb.executemany("INSERT INTO d VALUES (?, ?)", [(0, "Hello"), (1, "[464,3290]")])
    m = err(mdb, "SELECT * FROM gpt2_complete('SELECT k, t FROM d ORDER BY k', 2)")
    assert m.startswith("gpt2_complete: query row 1 (from 0), column 2 (prompt) '[464,3290]' "
                        "is token ids without SQLite's JSON subtype"), m
    rows = dict(mdb.execute("SELECT key, completion FROM gpt2_complete("
                            "'SELECT k, json(t) FROM d WHERE k = 1', 2)"))
    assert rows[1] == one(mdb, "SELECT gpt2_generate(json('[464,3290]'), 2)")


# ---- the KV-limit message ---------------------------------------------------

def kv_figures(msg):
    m = re.search(r": (\d+) sequences? of (\d+) positions in all need (\d+) bytes of KV cache, "
                  r"above the connection's kv_memory_limit \((\d+)\); (.*), or raise", msg)
    assert m, msg
    return int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5]


def test_kv_limit_message_states_the_live_batch(mdb, tiny):
    cfg = tiny[1]
    per_pos = 2 * 4 * cfg["n_layer"] * cfg["n_embd"]  # float32 keys and values, every layer
    one(mdb, "SELECT gpt2_set('kv_memory_limit', 1048576)")
    mdb.execute("CREATE TABLE d(k, t)")
    mdb.executemany("INSERT INTO d VALUES (?, ?)", [(i, "Hi") for i in range(20)])
    m = err(mdb, "SELECT * FROM gpt2_complete('SELECT k, t FROM d', 90, NULL, NULL, NULL, "
                 "NULL, 20)")
    n_seqs, positions, need, limit, knobs = kv_figures(m)
    assert m.startswith("gpt2_complete: ")
    assert limit == 1048576 and need == positions * per_pos and need > limit
    n_prompt = one(mdb, "SELECT gpt2_token_count('Hi')")
    per_seq = n_prompt + 90 - 1   # the last token is never fed back
    assert positions == n_seqs * per_seq            # the live batch, all of it
    assert (n_seqs - 1) * per_seq * per_pos <= limit  # one fewer fitted
    assert 1 < n_seqs < 20
    assert knobs == "lower max_tokens or batch_size"


def test_kv_limit_message_of_scalar_functions(wide):
    d, cfg = wide
    per_pos = 2 * 4 * cfg["n_layer"] * cfg["n_embd"]
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (d,))
    one(conn, "SELECT gpt2_set('kv_memory_limit', 1048576)")
    m = err(conn, "SELECT gpt2_generate('', 150)")
    n_seqs, positions, need, limit, knobs = kv_figures(m)
    assert m.startswith("gpt2_generate: ")
    assert (n_seqs, positions) == (1, 150) and need == 150 * per_pos
    assert "batch_size" not in m and knobs == "lower max_tokens or shorten the prompt"
    long_ids = json.dumps([1] * 140)
    m = err(conn, "SELECT gpt2_logits(json(?))", long_ids)
    n_seqs, positions, need, limit, knobs = kv_figures(m)
    assert m.startswith("gpt2_logits: ") and positions == 140 and knobs == "shorten the prompt"
    conn.close()


# ---- environment variables ---------------------------------------------------

@pytest.mark.parametrize("value", ["0", "-3"])
def test_threads_env_clamped_to_one(value):
    rc, out, e = run_py("c = connect(); print(c.execute(\"SELECT gpt2_set('threads', 1)\")"
                        ".fetchone()[0])", {"GPT2_THREADS": value})
    assert (rc, out) == (0, "1"), e


@pytest.mark.parametrize("var,value,msg", [
    ("GPT2_THREADS", "two", "gpt2: GPT2_THREADS = 'two' is not an integer"),
    ("GPT2_KERNEL", "avx9", "gpt2: GPT2_KERNEL = 'avx9' is not one of portable, avx2, avx512"),
])
def test_invalid_env_rejected_at_load(var, value, msg):
    rc, out, e = run_py("connect()", {var: value})
    assert rc != 0 and msg in e


def test_kernel_env_applies(tiny):
    rc, out, e = run_py("c = connect(); c.execute('SELECT gpt2_load(?)', (sys.argv[1],));"
                        "print(json.loads(c.execute('SELECT gpt2_info()').fetchone()[0])['kernel'])"
                        .replace("sys.argv[1]", repr(tiny[0])), {"GPT2_KERNEL": "portable"})
    assert (rc, out) == (0, "portable"), e


# ---- GPT2_MODEL ------------------------------------------------------------------

def test_info_with_missing_env_model_is_an_error(tmp_path):
    missing = str(tmp_path / "nope")
    rc, out, e = run_py("c = connect(); c.execute('SELECT gpt2_info()').fetchone()",
                        {"GPT2_MODEL": missing})
    assert rc != 0 and "gpt2_info: loading $GPT2_MODEL failed: cannot open model directory" in e
    rc, out, e = run_py("c = connect(); print(c.execute('SELECT gpt2_info()').fetchone()[0])", {})
    assert (rc, out) == (0, "None"), e


def test_env_model_only_on_a_fresh_connection(tiny, vocab_dir):
    code = f"""
c = connect()
c.execute("SELECT gpt2_load({tiny[0]!r}, 'm')")
c.execute("SELECT gpt2_load({vocab_dir!r}, 'k')")
c.execute("SELECT gpt2_unload('k')")
try:
    c.execute("SELECT gpt2_token_count('a')").fetchone(); print('loaded')
except Exception as e:
    print(e)
print(sorted(r[0] for r in c.execute('SELECT name FROM gpt2_models')))
print(c.execute('SELECT gpt2_info()').fetchone()[0])
d = connect()
print(d.execute("SELECT gpt2_token_count('Hello world')").fetchone()[0])
d.execute("SELECT gpt2_unload('default')")
try:
    d.execute("SELECT gpt2_token_count('a')").fetchone(); print('reloaded')
except Exception as e:
    print(e)
"""
    rc, out, e = run_py(code, {"GPT2_MODEL": tiny[0]})
    assert rc == 0, e
    lines = out.splitlines()
    assert lines[0] == ("gpt2_token_count: no model is current (loaded: m); choose one with "
                        "gpt2_use(name)")
    assert lines[1] == "['m']"
    assert lines[2] == "None"
    assert lines[3] == "2"
    assert lines[4] == ("gpt2_token_count: no model loaded; run SELECT "
                        "gpt2_load('path/to/model-dir')")


# ---- load errors, DIRECTONLY, loading twice, shapes -------------------------------

def test_load_of_a_non_checkpoint_says_so(db, tmp_path):
    m = err(db, "SELECT gpt2_load(?)", str(tmp_path))
    assert m == (f"gpt2_load: '{tmp_path}' is not a GPT-2 checkpoint directory: it has none of "
                 "config.json, model.safetensors, vocab.json, merges.txt (a checkpoint needs "
                 "all four; a tokenizer alone needs vocab.json and merges.txt)")


@pytest.mark.parametrize("call", ["gpt2_use('m')", "gpt2_unload('m')", "gpt2_load('x')",
                                  "gpt2_set('threads', 1)"])
def test_state_changing_functions_are_direct_only(mdb, call):
    mdb.execute(f"CREATE VIEW v AS SELECT {call} AS x")
    assert f"unsafe use of {call.split('(')[0]}()" in err(mdb, "SELECT * FROM v")
    mdb.execute("CREATE TABLE t(a)")
    mdb.execute(f"CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT {call}; END")
    assert f"unsafe use of {call.split('(')[0]}()" in err(mdb, "INSERT INTO t VALUES (1)")


def test_loading_twice_keeps_models(mdb, tiny):
    mdb.enable_load_extension(True)
    mdb.load_extension(SO[:-3])
    mdb.enable_load_extension(False)
    assert [r[0] for r in mdb.execute("SELECT name FROM gpt2_models")] == ["default"]
    assert isinstance(one(mdb, "SELECT gpt2_generate('Hi', 2)"), str)


def test_tokenizer_only_summary_has_null_weights(db, vocab_dir):
    s = json.loads(one(db, "SELECT gpt2_load(?)", vocab_dir))
    assert s["weights"] is None and s["vocab_size"] == 50257


def test_query_may_end_with_a_comment(mdb):
    rows = mdb.execute("SELECT key FROM gpt2_complete('SELECT 1, ''Hi'' -- the prompt\n"
                       "; /* done */ ', 2)").fetchall()
    assert rows == [(1,)]
    assert err(mdb, "SELECT * FROM gpt2_complete('SELECT 1, ''a''; SELECT 2, ''b''', 2)") == \
        "gpt2_complete: argument 1 (query) must be a single statement"


def test_load_errors_name_files_by_full_path(tmp_path, vocab_dir):
    """config.json, model.safetensors, vocab.json and merges.txt errors all
    start with the file's full path."""
    import shutil
    base = tmp_path / "ck"
    write_checkpoint(str(base), n_layer=1, n_head=2, n_embd=32, n_positions=16, seed=1,
                     return_weights=False)
    conn = connect()
    broken = {"config.json": b'{"n_layer": "two"}', "model.safetensors": b"\x08\x00",
              "vocab.json": b"[1, 2]", "merges.txt": b"#version: 0.2\na\n"}
    for name, content in broken.items():
        d = tmp_path / ("bad_" + name.replace(".", "_"))
        shutil.copytree(base, d)
        (d / name).write_bytes(content)
        m = err(conn, "SELECT gpt2_load(?)", str(d))
        assert m.startswith(f"gpt2_load: {os.path.realpath(d)}/{name}"), m
    conn.close()


def test_loads_as_an_automatic_extension():
    """sqlite3_open fails when an automatic extension leaves an error on the
    connection: registering must leave none (the already-loaded check)."""
    import ctypes
    import ctypes.util
    code = r"""
import ctypes, ctypes.util, sys
lib = ctypes.CDLL(ctypes.util.find_library("sqlite3"))
ext = ctypes.CDLL(sys.argv[1])
init = ctypes.cast(ext.sqlite3_gpt_init, ctypes.c_void_p)
assert lib.sqlite3_auto_extension(init) == 0
db = ctypes.c_void_p()
rc = lib.sqlite3_open(b":memory:", ctypes.byref(db))
st = ctypes.c_void_p()
lib.sqlite3_prepare_v2(db, b"SELECT gpt2_version()", -1, ctypes.byref(st), None)
step = lib.sqlite3_step(st)
lib.sqlite3_column_text.restype = ctypes.c_char_p
print(rc, step, lib.sqlite3_column_text(st, 0).decode())
lib.sqlite3_finalize(st)
lib.sqlite3_close(db)
"""
    p = subprocess.run(["/usr/bin/python3", "-c", code, SO], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    rc, step, version = p.stdout.split()
    assert (rc, step) == ("0", "100")  # SQLITE_OK, SQLITE_ROW
    assert version == one(connect(), "SELECT gpt2_version()")
