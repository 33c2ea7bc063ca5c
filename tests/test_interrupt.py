"""sqlite3_interrupt: gpt2_generate stops within one token (SQLite >= 3.41,
tested with a runner linked against SQLite 3.50), gpt2_stream and
gpt2_complete stop between rows (any version, tested on the system SQLite);
the connection stays usable."""
import json
import os
import sqlite3
import subprocess

import pytest

from conftest import SO, connect
from make_checkpoint import write_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, vocab_dir):
    d = tmp_path_factory.mktemp("intr")
    write_checkpoint(str(d), n_layer=2, n_head=4, n_embd=64, n_positions=1024,
                     vocab_dir=vocab_dir, seed=4)
    return str(d)


@pytest.fixture(scope="module")
def sqlrun(gpt2_cache, tmp_path_factory):
    """tests/sqlrun.c linked with SQLite 3.50 (compiled once per cache)."""
    amal = os.path.join(gpt2_cache, "sqlite-amalgamation")
    exe = os.path.join(gpt2_cache, "sqlrun-3.50")
    src = os.path.join(os.path.dirname(__file__), "sqlrun.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        obj = os.path.join(gpt2_cache, "sqlite3-3.50.o")
        if not os.path.exists(obj):
            subprocess.run(["cc", "-O1", "-c", "-o", obj + ".tmp", os.path.join(amal, "sqlite3.c")],
                           check=True)
            os.replace(obj + ".tmp", obj)
        subprocess.run(["cc", "-O1", "-I", amal, "-o", exe, src, obj, "-lpthread", "-ldl", "-lm"],
                       check=True)
    return exe


def run(exe, *sql):
    out = subprocess.run([exe, SO[:-3], *sql], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("VERSION 3.50")
    return lines[1:]


def test_generate_interrupted_before_first_token(sqlrun, ckpt):
    out = run(sqlrun, f"SELECT json_extract(gpt2_load('{ckpt}'), '$.n_layer')",
              "SELECT interrupt_now(), gpt2_generate('Hello', 500)",
              "SELECT json_extract(gpt2_info(), '$.counters.tokens_generated')",
              "SELECT length(gpt2_generate('Hello', 3)) > 0")
    assert out == ["2", "ERROR 9: gpt2_generate: interrupted", "0", "1"]


def interrupt_generation_after(sqlrun, ckpt, ms):
    """A fresh runner: gpt2_generate('Hello', 1000) with sqlite3_interrupt called from
    another thread ms milliseconds after it starts. Returns (outcome, generated,
    forward calls): "early" (interrupted before the first token), "mid", or "late"
    (the generation ended first); checks that the connection is usable afterwards."""
    out = run(sqlrun, f"SELECT json_extract(gpt2_load('{ckpt}'), '$.n_layer')",
              "SELECT gpt2_set('prefix_reuse', 0)",
              f"SELECT interrupt_after_ms({ms}), length(gpt2_generate('Hello', 1000)) >= 0",
              "SELECT json_extract(gpt2_info(), '$.counters.tokens_generated'),"
              "       json_extract(gpt2_info(), '$.counters.forward_calls')",
              "SELECT length(gpt2_generate('Hello', 3)) > 0")
    assert out[0] == "2" and out[4] == "1", out
    generated, calls = map(int, out[3].split("|"))
    if out[2] == "1|1":
        return "late", generated, calls
    assert out[2] == "ERROR 9: gpt2_generate: interrupted", out
    return ("early" if generated == 0 else "mid"), generated, calls


def test_generate_interrupted_mid_way(sqlrun, ckpt):
    """The interrupt must land between two tokens of a long generation. When that
    is depends on the machine's speed, so the delay is searched for: doubled from
    1 ms while the interrupt comes before the first token, bisected if it comes
    after the end. 1,000 tokens take ~1,000 times as long as the first, so some
    delay lands mid-way on any machine; each try is a fresh process."""
    lo, hi, ms, tries = 0, None, 1, []
    while len(tries) < 40:
        outcome, generated, calls = interrupt_generation_after(sqlrun, ckpt, ms)
        tries.append((ms, outcome, generated))
        if outcome == "mid":
            break
        if outcome == "early":
            lo = ms
        else:
            hi = ms
        ms = ms * 2 if hi is None else (lo + hi) // 2
        assert lo < ms and (hi is None or ms < hi), tries
    assert outcome == "mid", tries
    assert 0 < generated < 1000
    # it stopped before the next forward step: one call per generated token
    assert calls == generated


def test_stream_and_complete_stop_between_rows(ckpt):
    conn = connect()
    conn.create_function("interrupt_now", 0, lambda: conn.interrupt())
    conn.execute("SELECT gpt2_load(?)", (ckpt,))
    info = lambda: json.loads(conn.execute("SELECT gpt2_info()").fetchone()[0])["counters"]
    c0 = info()["tokens_generated"]
    with pytest.raises(sqlite3.OperationalError) as e:
        conn.execute("SELECT interrupt_now(), token FROM gpt2_stream('Hello', 500)").fetchall()
    assert "interrupt" in str(e.value)
    assert info()["tokens_generated"] - c0 <= 2
    conn.execute("CREATE TABLE t(k, p)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, f"row {i}") for i in range(40)])
    c0 = info()["tokens_generated"]
    with pytest.raises(sqlite3.OperationalError) as e:
        conn.execute("SELECT interrupt_now(), key FROM gpt2_complete('SELECT k, p FROM t', 500, "
                     "NULL, NULL, NULL, NULL, 4)").fetchall()
    assert "interrupt" in str(e.value)
    assert info()["tokens_generated"] - c0 < 40 * 500
    assert len(conn.execute("SELECT gpt2_generate('Hello', 3)").fetchone()[0]) > 0
    conn.close()
