"""The Dask engine's overhead (README.md, "Scaling out"): the same rows completed by
sqlite_gpt2.dask on a local cluster of 2 worker processes x 1 thread, and by one
gpt2_complete in one process with 2 threads, for 200 and 2,000 rows of a GPT-2
124M-shaped checkpoint (random weights, greedy, 32 new tokens). Tables compared.

    overhead = 1 - (time the workers spent inside gpt2_complete) / (2 workers x job wall time)

i.e. the share of the workers' time not spent generating: task scheduling, the model
loaded once per worker, reading rows, result transfer, the caller's commits, and the
partitions' imbalance at the end. The cluster's start is reported apart (a cluster
serves many jobs).

Run by `make bench-dask` (needs python3-dask, python3-distributed; the environment that
make sets: PYTHONPATH=bindings/python, SQLITE_GPT2_EXTENSION=build/gpt2.so).
    --quick   a tiny checkpoint and 20 / 40 rows: checks the script, measures nothing
"""
import argparse
import json
import logging
import os
import sqlite3
import sys
import time

from benchlib import BENCH_DIR, ROOT, SO, checkpoint, connect

sys.path.insert(0, os.path.join(ROOT, "bindings", "python"))
from sqlite_gpt2 import dask as gd  # noqa: E402

OPTIONS = {"max_tokens": 32}


def make_db(path, n):
    if os.path.exists(path):
        os.remove(path)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO docs VALUES (?, ?)",
                     [(i, f"Document {i}: the quick brown fox number {i} jumps over")
                      for i in range(n)])
    conn.commit()
    conn.close()


def single_process(db, ckpt, n):
    """One process, the extension's 2 threads; model load timed apart."""
    conn = connect()
    conn.execute("SELECT gpt2_set('threads', 2)")
    t = time.perf_counter()
    conn.execute("SELECT gpt2_load(?)", (ckpt,))
    t_load = time.perf_counter() - t
    conn.execute("ATTACH ? AS src", (db,))
    t = time.perf_counter()
    rows = conn.execute("SELECT key, prompt, completion, n_tokens, finish_reason FROM "
                        "gpt2_complete('SELECT id, body FROM src.docs ORDER BY id', ?)",
                        (json.dumps(OPTIONS),)).fetchall()
    t_job = time.perf_counter() - t
    conn.close()
    return t_load, t_job, sorted(rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--partition-rows", type=int, default=50)
    a = ap.parse_args()
    os.environ.setdefault(gd.EXTENSION_ENV, SO)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.path.join(ROOT, "bindings", "python"), os.environ.get("PYTHONPATH")) if p)
    shape, sizes = ("tiny", (20, 40)) if a.quick else ("124M", (200, 2000))
    ckpt = checkpoint(shape)
    os.makedirs(BENCH_DIR, exist_ok=True)

    from distributed import Client, LocalCluster
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    client = Client(cluster)
    t_cluster = time.perf_counter() - t

    print(f"## sqlite_gpt2.dask: 2 workers x 1 thread against 1 process x 2 threads "
          f"({shape} shape, F32, greedy, {OPTIONS['max_tokens']} new tokens, "
          f"{a.partition_rows} rows per partition)")
    print(f"local cluster start (2 worker processes): {t_cluster:.2f} s")
    print("| rows | 1 process x 2 threads: load + job s | tok/s | 2 workers x 1 thread: job s "
          "(model loads inside) | tok/s | workers' time in gpt2_complete | model load "
          "(sum of workers) | engine overhead | tables equal |")
    print("|---|---|---|---|---|---|---|---|---|")
    ok = True
    for n in sizes:
        db = os.path.join(BENCH_DIR, f"dask-{n}.db")
        make_db(db, n)
        t_load, t_one, ref = single_process(db, ckpt, n)
        # a fresh model load on each worker for each size: restart the worker processes
        client.restart()
        s = gd.complete(db, "SELECT id, body FROM docs", OPTIONS, table="out", model=ckpt,
                        client=client, threads=1, partition_rows=a.partition_rows,
                        progress=False)
        conn = sqlite3.connect(db)
        got = sorted(conn.execute("SELECT * FROM out").fetchall())
        conn.close()
        same = got == ref
        ok = ok and same
        tokens = sum(r[3] or 0 for r in ref)
        busy = s["task_seconds"]
        overhead = 1 - busy / (2 * s["seconds"])
        print(f"| {n} | {t_load:.2f} + {t_one:.2f} | {tokens / t_one:.1f} | {s['seconds']:.2f} | "
              f"{tokens / s['seconds']:.1f} | {busy:.2f} s | {s['load_seconds']:.2f} s | "
              f"{100 * overhead:.1f}% | {same} |")
    client.close()
    cluster.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
