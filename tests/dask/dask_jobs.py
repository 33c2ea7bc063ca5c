"""sqlite_gpt2.dask on a local Dask cluster of 2 worker processes with 1 thread each:
every output table equals one single-process gpt2_complete / gpt2_score_rows over the
query ordered by key. Run by `make test-dask` (the files are dask_*.py, so `make test`
does not collect them); needs python3-dask and python3-distributed.
"""
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import ROOT, SO, connect
from make_checkpoint import write_checkpoint

distributed = pytest.importorskip("distributed")
sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
from sqlite_gpt2 import dask as gd  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# The workers import sqlite_gpt2.dask (and killer.py) and load build/gpt2.so.
WORKER_ENV = {
    "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "bindings", "python"), HERE]),
    gd.EXTENSION_ENV: SO,
}
SAMPLED = {"max_tokens": 6, "temperature": 0.9, "top_k": 40, "seed": 1234}
GREEDY = {"max_tokens": 5}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    write_checkpoint(str(d), n_layer=2, n_head=4, n_embd=64, n_positions=128, seed=11,
                     return_weights=False)
    return str(d)


@pytest.fixture(scope="module")
def client():
    os.environ.update(WORKER_ENV)   # inherited by the spawned worker processes
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=50)
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


def make_db(path, rows):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE docs(id PRIMARY KEY, body, ctx)")
    conn.executemany("INSERT INTO docs VALUES (?, ?, ?)", rows)
    conn.commit()
    conn.close()
    return str(path)


def text_rows(n, start=0):
    return [(i, f"Row {i}: the cat and the dog", None) for i in range(start, start + n)]


def reference(db, ckpt, sql):
    """Rows of one single-process call, sorted by key the way SQLite sorts."""
    conn = connect(db)
    conn.execute("SELECT gpt2_load(?)", (ckpt,))
    conn.execute("CREATE TEMP TABLE ref AS " + sql)
    rows = conn.execute("SELECT * FROM temp.ref ORDER BY key").fetchall()
    conn.close()
    return rows


def table(db, name):
    conn = sqlite3.connect(db)
    rows = conn.execute(f"SELECT * FROM {name} ORDER BY key").fetchall()
    conn.close()
    return rows


def ref_complete(db, ckpt, options, query="SELECT id, body FROM docs ORDER BY id"):
    return reference(db, ckpt, "SELECT key, prompt, completion, n_tokens, finish_reason "
                     f"FROM gpt2_complete('{query}', '{json.dumps(options)}')")


def test_complete_equals_single_process(tmp_path, ckpt, client):
    db = make_db(tmp_path / "a.db", text_rows(23))
    s = gd.complete(db, "SELECT id, body FROM docs", SAMPLED, table="out", model=ckpt,
                    client=client, partition_rows=4)
    assert (s["rows"], s["written"], s["skipped"], s["partitions"]) == (23, 23, 0, 6)
    ref = ref_complete(db, ckpt, SAMPLED)
    assert table(db, "out") == ref
    # per-row seeds really differ: same prompt text would give other completions
    assert len({r[2] for r in ref}) > 1
    # another partitioning (and shipping the rows) gives the same table
    gd.complete(db, "SELECT id, body FROM docs;", json.dumps(SAMPLED), table="out2",
                model=ckpt, client=client, partition_rows=7, ship=True)
    assert table(db, "out2") == ref


def test_greedy_with_stop_and_null_prompts(tmp_path, ckpt, client):
    rows = text_rows(10)
    rows[0] = (0, None, None)
    rows[5] = (5, None, None)
    rows[9] = (9, None, None)
    db = make_db(tmp_path / "n.db", rows)
    opts = dict(GREEDY, stop=[" the"], min_tokens=1)
    gd.complete(db, "SELECT id, body FROM docs", opts, table="out", model=ckpt,
                client=client, partition_rows=3)
    got = table(db, "out")
    assert got == ref_complete(db, ckpt, opts)
    assert [r[0] for r in got if r[2] is None] == [0, 5, 9]
    assert all(r[3] is None and r[4] is None for r in got if r[1] is None)


def test_keys_of_any_type(tmp_path, ckpt, client):
    keys = [7, -3, 2.5, "b", "a", "", b"\x00\x01", b"\xff", 10**15, "ünï"]
    rows = [(k, f"Prompt number {i}", None) for i, k in enumerate(keys)]
    db = make_db(tmp_path / "k.db", rows)
    for ship in (False, True):
        out = f"out_{int(ship)}"
        gd.complete(db, "SELECT id, body FROM docs", SAMPLED, table=out, model=ckpt,
                    client=client, partition_rows=3, ship=ship)
        got = table(db, out)
        assert got == ref_complete(db, ckpt, SAMPLED)
        assert {type(r[0]) for r in got} == {int, float, str, bytes}


def test_token_id_prompts(tmp_path, ckpt, client):
    rows = [(i, json.dumps([5 + i, 7, 11 * i % 50]), None) for i in range(7)] + [(7, None, None)]
    db = make_db(tmp_path / "i.db", rows)
    gd.complete(db, "SELECT id, body FROM docs", SAMPLED, table="out", model=ckpt,
                client=client, partition_rows=3, ids=True)
    got = table(db, "out")
    assert got == ref_complete(db, ckpt, SAMPLED, "SELECT id, json(body) FROM docs ORDER BY id")
    assert got[0][1] == "[5,7,0]" and got[0][3] == 6
    # without ids=True they are TEXT that looks like ids: refused, as gpt2_complete does
    with pytest.raises(gd.JobError, match="is token ids without SQLite's JSON subtype"):
        gd.complete(db, "SELECT id, body FROM docs", SAMPLED, table="out2", model=ckpt,
                    client=client)


def test_resume_after_interrupt(tmp_path, ckpt, client):
    db = make_db(tmp_path / "r.db", text_rows(20))
    seen = []

    def stop_after_two(first, last, n):
        seen.append((first, last))
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        gd.complete(db, "SELECT id, body FROM docs", SAMPLED, table="out", model=ckpt,
                    client=client, partition_rows=3, on_partition=stop_after_two)
    ref = ref_complete(db, ckpt, SAMPLED)
    kept = table(db, "out")
    committed = sorted(k for a, b in seen for k in range(a, b + 1))
    assert [r[0] for r in kept] == committed and len(kept) == 6
    assert kept == [r for r in ref if r[0] in committed]
    # the re-run (other partition size) completes only the rest, with the same seeds
    s = gd.complete(db, "SELECT id, body FROM docs", SAMPLED, table="out", model=ckpt,
                    client=client, partition_rows=5)
    assert (s["skipped"], s["written"]) == (6, 14)
    assert table(db, "out") == ref
    s = gd.complete(db, "SELECT id, body FROM docs", SAMPLED, table="out", model=ckpt,
                    client=client)
    assert (s["skipped"], s["written"], s["partitions"]) == (20, 0, 0)


def test_killed_worker(tmp_path, ckpt, client):
    import killer
    db = make_db(tmp_path / "w.db", text_rows(16))
    marker = str(tmp_path / "killed")
    plugin = killer.KillOnce("-p1", marker)
    client.register_worker_plugin(plugin)
    try:
        gd.complete(db, "SELECT id, body FROM docs", SAMPLED, table="out", model=ckpt,
                    client=client, partition_rows=4)
    finally:
        client.unregister_worker_plugin(plugin.name)
    assert os.path.exists(marker)   # a worker process did exit executing partition 1
    assert table(db, "out") == ref_complete(db, ckpt, SAMPLED)


def test_error_names_partition_key_range(tmp_path, ckpt, client):
    rows = [(f"k{i:02}", f"Prompt {i}", None) for i in range(12)]
    rows[7] = ("k07", 42, None)   # an INTEGER prompt: gpt2_complete refuses it
    db = make_db(tmp_path / "e.db", rows)
    with pytest.raises(gd.JobError) as e:
        gd.complete(db, "SELECT id, body FROM docs", GREEDY, table="out", model=ckpt,
                    client=client, partition_rows=3)
    msg = str(e.value)
    assert "1 of 4 partitions failed" in msg
    assert "rows 6..8 (from 0, in key order), keys 'k06' .. 'k08'" in msg
    assert "query row 1 (from 0), column 2 (prompt)" in msg
    assert e.value.failures[0][:4] == (6, 8, "k06", "k08")
    # the other partitions are committed
    assert [r[0] for r in table(db, "out")] == [f"k{i:02}" for i in range(12) if not 6 <= i <= 8]


def test_bad_input_refused_before_running(tmp_path, ckpt, client):
    db = make_db(tmp_path / "b.db", text_rows(3))
    with pytest.raises(ValueError, match="1 rows with a NULL key"):
        gd.complete(db, "SELECT id, body FROM docs UNION ALL SELECT NULL, 'x'", GREEDY,
                    table="out", model=ckpt, client=client)
    with pytest.raises(ValueError, match="1 duplicate keys"):
        gd.complete(db, "SELECT id, body FROM docs UNION ALL SELECT 1, 'x'", GREEDY,
                    table="out", model=ckpt, client=client)
    with pytest.raises(ValueError, match="returns 3 columns"):
        gd.complete(db, "SELECT * FROM docs", GREEDY, table="out", model=ckpt, client=client)
    with pytest.raises(RuntimeError, match="option 'top_p' = 1.5 is out of range"):
        gd.complete(db, "SELECT id, body FROM docs", {"top_p": 1.5}, table="out",
                    model=ckpt, client=client)
    with pytest.raises(RuntimeError, match="gpt2_load"):
        gd.complete(db, "SELECT id, body FROM docs", GREEDY, table="out",
                    model=str(tmp_path / "nowhere"), client=client)
    assert table(db, "out") == []


def test_score_equals_single_process(tmp_path, ckpt, client):
    rows = text_rows(14)
    rows[3] = (3, None, None)
    rows[4] = (4, "", None)
    for i in range(8, 14):
        rows[i] = (i, " dog", f"Context {i}: the cat")
    db = make_db(tmp_path / "s.db", rows)
    gd.score(db, "SELECT id, body, ctx FROM docs", table="sc", model=ckpt, client=client,
             partition_rows=4, batch_size=3)
    ref = reference(db, ckpt, "SELECT key, n_tokens, logprob, perplexity FROM "
                    "gpt2_score_rows('SELECT id, body, ctx FROM docs ORDER BY id', 3)")
    assert table(db, "sc") == ref
    gd.score(db, "SELECT id, body FROM docs", table="sc2", model=ckpt, client=client,
             partition_rows=5, ship=True)
    assert table(db, "sc2") == reference(
        db, ckpt, "SELECT key, n_tokens, logprob, perplexity FROM "
        "gpt2_score_rows('SELECT id, body FROM docs ORDER BY id')")


def test_command_line(tmp_path, ckpt):
    """The command on its own local cluster of 2 workers; exit status and table."""
    db = make_db(tmp_path / "c.db", text_rows(9))
    env = dict(os.environ, **WORKER_ENV)
    cmd = [sys.executable, "-m", "sqlite_gpt2.dask", "complete", db, "SELECT id, body FROM docs",
           "--table", "out", "--options", json.dumps(SAMPLED), "--model", ckpt,
           "--workers", "2", "--partition-rows", "2", "--progress", "always"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "5/5 partitions  9/9 rows" in p.stderr
    assert "9 rows written to out in 5 partitions (0 already there)" in p.stderr
    assert table(db, "out") == ref_complete(db, ckpt, SAMPLED)
    p = subprocess.run(cmd[:6] + ["--table", "docs", "--model", ckpt], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 1
    assert "table docs exists with columns id, body, ctx" in p.stderr


def test_scheduler_and_worker_processes(tmp_path, ckpt):
    """README's multi-host recipe on one machine: `dask scheduler`, two `dask worker`
    processes (1 thread each), the command pointed at the scheduler."""
    db = make_db(tmp_path / "m.db", text_rows(10))
    env = dict(os.environ, **WORKER_ENV)
    sched_file = str(tmp_path / "scheduler.json")
    dask_cmd = [sys.executable, "-m", "dask"]   # the `dask` command, this interpreter
    procs = [subprocess.Popen(dask_cmd + ["scheduler", "--port", "0", "--no-dashboard",
                                          "--scheduler-file", sched_file],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen(
                dask_cmd + ["worker", "--scheduler-file", sched_file, "--nthreads", "1",
                            "--no-dashboard"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for ship in ([], ["--ship"]):
            out = "out_ship" if ship else "out"
            p = subprocess.run([sys.executable, "-m", "sqlite_gpt2.dask", "complete", db,
                                "SELECT id, body FROM docs", "--table", out,
                                "--options", json.dumps(SAMPLED), "--model", ckpt,
                                "--scheduler-file", sched_file, "--partition-rows", "3",
                                "--threads", "1"] + ship,
                               env=env, capture_output=True, text=True, timeout=600)
            assert p.returncode == 0, p.stderr
            assert table(db, out) == ref_complete(db, ckpt, SAMPLED)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)


def test_installed_wheel(tmp_path, ckpt):
    """The command from the wheel installed in a venv (Dask from the system): the workers
    load the wheel's own gpt2.so, nothing from the source tree."""
    wheel = os.environ.get("DASK_TEST_WHEEL")
    if not wheel:
        pytest.skip("DASK_TEST_WHEEL not set (make test-dask sets it)")
    venv = str(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    py = os.path.join(venv, "bin", "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", wheel], check=True)
    db = make_db(tmp_path / "v.db", text_rows(8))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", gd.EXTENSION_ENV)}
    p = subprocess.run([py, "-m", "sqlite_gpt2.dask", "complete", db, "SELECT id, body FROM docs",
                        "--table", "out", "--options", json.dumps(SAMPLED), "--model", ckpt,
                        "--workers", "2", "--partition-rows", "3"],
                       env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    assert table(db, "out") == ref_complete(db, ckpt, SAMPLED)
