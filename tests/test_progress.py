"""Progress of long jobs: gpt2_progress() while gpt2_complete runs, and the
one-line bar on stderr (drawn on a terminal, silent on a pipe)."""
import json
import os
import pty
import subprocess

import pytest

from conftest import ROOT, connect, one, err
from make_checkpoint import write_checkpoint


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("prog")
    write_checkpoint(str(d), n_layer=1, n_head=2, n_embd=32, n_positions=64, seed=8,
                     return_weights=False)
    return str(d)


@pytest.fixture
def db(ckpt):
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (ckpt,))
    conn.execute("CREATE TABLE d(k, t)")
    conn.executemany("INSERT INTO d VALUES (?, ?)",
                     [(i, None if i == 3 else f"row {i}") for i in range(7)])
    yield conn
    conn.close()


def progress(conn):
    v = one(conn, "SELECT gpt2_progress()")
    return None if v is None else json.loads(v)


def tokens_generated(conn):
    return json.loads(one(conn, "SELECT gpt2_info()"))["counters"]["tokens_generated"]


def test_progress_while_rows_come_out(db):
    assert progress(db) is None
    one(db, "SELECT gpt2_set('progress', 2)")  # draws (on pytest's stderr) and counts
    t0 = tokens_generated(db)
    cur = db.execute("SELECT key, n_tokens FROM gpt2_complete('SELECT k, t FROM d', 6, "
                     "NULL, NULL, NULL, NULL, 2)")
    first = cur.fetchone()
    p = progress(db)   # another statement on the same connection, between rows
    assert p["function"] == "gpt2_complete" and p["running"] is True
    assert p["rows_total"] == 7
    assert 1 <= p["rows_done"] < 7
    assert p["tokens"] == tokens_generated(db) - t0
    rest = cur.fetchall()
    assert len(rest) + 1 == 7 and first is not None
    p = progress(db)
    assert p["running"] is False and p["rows_done"] == 7
    assert p["tokens"] == tokens_generated(db) - t0
    assert p["seconds_left"] == 0 and p["elapsed_s"] >= 0 and p["tokens_per_s"] >= 0


@pytest.mark.parametrize("mode", [0, 1])  # stderr is no terminal here: no bar, no count
def test_total_known_once_the_query_is_read(db, mode):
    one(db, "SELECT gpt2_set('progress', ?)", mode)
    cur = db.execute("SELECT key FROM gpt2_complete('SELECT k, t FROM d', 4, NULL, NULL, "
                     "NULL, NULL, 2)")
    cur.fetchone()
    p = progress(db)
    assert p["rows_total"] is None and p["seconds_left"] is None and p["running"] is True
    cur.fetchall()
    p = progress(db)
    assert p["rows_total"] == 7 and p["rows_done"] == 7 and p["running"] is False


def test_progress_setting_range(db):
    assert err(db, "SELECT gpt2_set('progress', 3)") == \
        "gpt2_set: argument 2 (progress) = 3 is out of range [0, 2]"


def test_abandoned_job_stops_running(db):
    cur = db.execute("SELECT key FROM gpt2_complete('SELECT k, t FROM d', 4, NULL, NULL, NULL, "
                     "NULL, 1)")
    cur.fetchone()
    assert progress(db)["running"] is True
    cur.close()  # resets the statement: SQLite closes the table's cursor
    p = progress(db)
    assert p["running"] is False and p["rows_done"] < 7


SCRIPT = r"""
import sys; sys.path.insert(0, 'tests')
from conftest import connect
c = connect()
c.execute("SELECT gpt2_load(?)", (sys.argv[1],))
c.execute("SELECT gpt2_set('progress', ?)", (int(sys.argv[2]),))
c.execute("CREATE TABLE d(k, t)")
c.executemany("INSERT INTO d VALUES (?, ?)", [(i, f"row {i}") for i in range(5)])
rows = c.execute("SELECT key FROM gpt2_complete('SELECT k, t FROM d', 3, NULL, NULL, NULL, NULL, 2)").fetchall()
print(len(rows))
"""


def run_with_stderr(ckpt, mode, use_pty):
    """Run SCRIPT with stderr on a pseudo-terminal or a pipe; (stdout, stderr)."""
    env = dict(os.environ)
    if not use_pty:
        p = subprocess.run(["/usr/bin/python3", "-c", SCRIPT, ckpt, str(mode)], cwd=ROOT,
                           env=env, capture_output=True)
        return p.stdout.decode(), p.stderr.decode()
    master, slave = pty.openpty()
    p = subprocess.Popen(["/usr/bin/python3", "-c", SCRIPT, ckpt, str(mode)], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not b:
            break
        chunks.append(b)
    out = p.stdout.read().decode()
    p.wait()
    os.close(master)
    return out, b"".join(chunks).decode()


def test_bar_on_a_terminal(ckpt):
    out, tty = run_with_stderr(ckpt, 1, True)
    assert out.strip() == "5"
    assert "gpt2_complete [" in tty and "/5 rows" in tty and "tok/s" in tty
    assert tty.endswith("\r\033[K")  # cleared when the job ends


def test_silent_on_a_pipe_unless_forced(ckpt):
    out, e = run_with_stderr(ckpt, 1, False)
    assert out.strip() == "5" and e == ""
    out, tty = run_with_stderr(ckpt, 0, True)
    assert out.strip() == "5" and tty == ""
    out, e = run_with_stderr(ckpt, 2, False)
    assert "gpt2_complete [" in e and "/5 rows" in e


def test_score_rows_reports_progress(db):
    one(db, "SELECT gpt2_set('progress', 2)")
    cur = db.execute("SELECT key, n_tokens FROM gpt2_score_rows('SELECT k, t FROM d', 3)")
    first = cur.fetchone()
    p = progress(db)
    assert p["function"] == "gpt2_score_rows" and p["running"] is True
    assert p["rows_total"] == 7 and p["rows_done"] == 3  # one batch read and scored
    rows = [first] + cur.fetchall()
    p = progress(db)
    assert p["running"] is False and p["rows_done"] == 7
    assert p["tokens"] == sum(n for _, n in rows if n is not None)
