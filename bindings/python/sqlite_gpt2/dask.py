"""Completing and scoring big tables on a Dask cluster (README.md, "Scaling out").

    complete(db, "SELECT id, body FROM docs", {"max_tokens": 48}, table="summaries")
    score(db, "SELECT id, body FROM docs", table="ppl")
    python3 -m sqlite_gpt2.dask complete DB QUERY --table T [--options JSON] ...

The caller numbers the query's rows in key order (row k, from 0), splits the rows not yet
in the output table into partitions of consecutive rows, and runs each partition as one
Dask task. A task runs gpt2_complete (or gpt2_score_rows) over its rows on a connection
kept per worker thread, with the model loaded once per worker process. The caller inserts
each finished partition into the output table in its own transaction, so an interrupted
job keeps every committed partition and a re-run skips the keys already there.

Seeds: gpt2_complete gives its k-th query row seed + k. A partition holds the rows
first .. first + n - 1 of the whole job with no gap, in key order, and runs with seed
seed + first, so every row gets seed + (its index in the whole job) whatever the
partitioning, the worker or a re-run: the table equals one gpt2_complete over the query
ordered by key.

Requires dask and distributed (Debian: python3-dask python3-distributed) on the caller
and every worker, and this package importable on every worker.
"""
import argparse
import json
import os
import sqlite3
import sys
import threading
import time
import uuid
from urllib.parse import quote

__all__ = ["complete", "score", "JobError", "main"]

KINDS = {
    # kind: (input columns, optional trailing input column, output columns, table schema)
    "complete": (("key", "prompt"), None,
                 ("key", "prompt", "completion", "n_tokens", "finish_reason"),
                 "key PRIMARY KEY, prompt, completion TEXT, n_tokens INTEGER, finish_reason TEXT"),
    "score": (("key", "text"), "context",
              ("key", "n_tokens", "logprob", "perplexity"),
              "key PRIMARY KEY, n_tokens INTEGER, logprob REAL, perplexity REAL"),
}
DEFAULT_PARTITION_ROWS = 128
EXTENSION_ENV = "SQLITE_GPT2_EXTENSION"   # gpt2.so for the workers when the package has none


class JobError(RuntimeError):
    """Some partitions failed; every other partition is committed. `failures` lists
    (first_row, last_row, first_key, last_key, message), rows counted from 0 in key order."""

    def __init__(self, message, failures=()):
        super().__init__(message)
        self.failures = list(failures)


# --- worker side -----------------------------------------------------------------------

_local = threading.local()   # per worker thread: {(extension, model): connection}


def _extension_path(extension):
    """The gpt2.so a worker loads: the argument, $SQLITE_GPT2_EXTENSION, or the package's."""
    if extension:
        return extension
    if os.environ.get(EXTENSION_ENV):
        return os.environ[EXTENSION_ENV]
    from . import loadable_path
    path = loadable_path()
    if not os.path.exists(path):
        raise RuntimeError(f"no gpt2.so at {path} (a source tree has none): set {EXTENSION_ENV} "
                           "on the workers or pass extension=")
    return path


def _model_conn(extension, model):
    """This thread's connection with the extension and the model loaded, made once.
    Returns (connection, seconds spent loading in this call)."""
    conns = getattr(_local, "conns", None)
    if conns is None:
        conns = _local.conns = {}
    ext = _extension_path(extension)
    conn = conns.get((ext, model))
    if conn is not None:
        return conn, 0.0
    t0 = time.perf_counter()
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    conn.load_extension(ext)
    conn.enable_load_extension(False)
    if model is not None:
        conn.execute("SELECT gpt2_load(?)", (model,))
    conns[(ext, model)] = conn
    return conn, time.perf_counter() - t0


def _wrapped(query, cols):
    """The query with its columns renamed to cols (its own names may be anything)."""
    return f"WITH q({', '.join(cols)}) AS (\n{query}\n)"


def _read_range(spec):
    """The partition's rows, read from the database file (shared storage)."""
    uri = "file:" + quote(spec["db"]) + "?mode=ro"
    src = sqlite3.connect(uri, uri=True, timeout=600)
    try:
        cols = ", ".join(spec["cols"])
        sql = (_wrapped(spec["query"], spec["cols"]) +
               f" SELECT {cols} FROM q WHERE key >= ? AND key <= ? ORDER BY key")
        return src.execute(sql, (spec["lo"], spec["hi"])).fetchall()
    finally:
        src.close()


def run_partition(spec, rows=None):
    """A Dask task: one partition, its rows shipped (rows) or read from spec['db'].
    Returns {'rows': output rows, 'seconds': time in the SQL function, 'load': model load}."""
    try:
        conn, load = _model_conn(spec["extension"], spec["model"])
        if spec.get("threads"):
            conn.execute("SELECT gpt2_set('threads', ?)", (spec["threads"],))
        if rows is None:
            rows = _read_range(spec)
        if len(rows) != spec["n"]:
            raise RuntimeError(f"the query returned {len(rows)} rows in this key range, "
                               f"{spec['n']} when the job was planned (did the database change?)")
        cols = spec["cols"]
        conn.execute("DROP TABLE IF EXISTS main._gpt2_part")
        conn.execute(f"CREATE TABLE main._gpt2_part({', '.join(cols)})")
        try:
            conn.executemany(f"INSERT INTO main._gpt2_part VALUES ({', '.join('?' * len(cols))})",
                             rows)
            # ids: the prompt (text, context) columns hold token ids; json() gives them the
            # subtype that a trip through a table loses
            sel = [c if c == "key" or not spec.get("ids") else f"json({c})" for c in cols]
            inner = f"SELECT {', '.join(sel)} FROM main._gpt2_part ORDER BY rowid"
            outs = ", ".join(spec["out"])
            t0 = time.perf_counter()
            if spec["kind"] == "complete":
                out = conn.execute(f"SELECT {outs} FROM gpt2_complete(?, ?)",
                                   (inner, spec["options"])).fetchall()
            else:
                out = conn.execute(f"SELECT {outs} FROM gpt2_score_rows(?, ?)",
                                   (inner, spec["batch_size"])).fetchall()
            seconds = time.perf_counter() - t0
        finally:
            conn.execute("DROP TABLE IF EXISTS main._gpt2_part")
    except sqlite3.Error as e:  # plain RuntimeError: pickles back to the caller as is
        raise RuntimeError(str(e)) from None
    return {"rows": out, "seconds": seconds, "load": load}


# --- caller side -----------------------------------------------------------------------

def _ident(name):
    return '"' + name.replace('"', '""') + '"'


def _wrap_seed(seed):
    """seed as the extension adds to it: modulo 2^64, as a signed 64-bit integer."""
    return (seed + (1 << 63)) % (1 << 64) - (1 << 63)


def _options(options):
    """(options as a JSON text, base seed or None). Duplicate keys are refused here, as the
    extension would refuse them (the text is rebuilt per partition)."""
    if options is None:
        return {}, None
    if isinstance(options, (str, bytes)):
        def pairs(items):
            seen = set()
            for k, _ in items:
                if k in seen:
                    raise ValueError(f"options: duplicate key '{k}'")
                seen.add(k)
            return dict(items)
        options = json.loads(options, object_pairs_hook=pairs)
    if not isinstance(options, dict):
        raise ValueError("options must be a JSON object")
    seed = options.get("seed")
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)
    if isinstance(seed, bool) or not isinstance(seed, int):
        seed = None   # absent, null (random per row) or invalid (the extension says why)
    return options, seed


def _strip_query(query):
    q = query.strip()
    while q.endswith(";"):
        q = q[:-1].rstrip()
    if not q:
        raise ValueError("the query is empty")
    return q


def _query_columns(conn, query):
    cur = conn.execute(f"SELECT * FROM (\n{query}\n) LIMIT 0")
    return len(cur.description)


def _prepare_table(conn, table, kind):
    out, schema = KINDS[kind][2], KINDS[kind][3]
    conn.execute(f"CREATE TABLE IF NOT EXISTS {_ident(table)}({schema})")
    have = tuple(r[1] for r in conn.execute(f"PRAGMA table_info({_ident(table)})"))
    if have != out:
        raise ValueError(f"table {table} exists with columns {', '.join(have)}; "
                         f"{kind} writes {', '.join(out)}")
    conn.commit()


def _plan(conn, query, cols, table, partition_rows, ship):
    """Number the query's rows in key order into temp._gpt2_job and split the rows whose key
    is not yet in table into partitions of consecutive rows. Returns (total rows, rows
    already done, partitions as dicts: first, last, lo, hi, n)."""
    colist = ", ".join(cols)
    w = _wrapped(query, cols)
    n, n_keys, n_distinct = conn.execute(
        w + " SELECT count(*), count(key), count(DISTINCT key) FROM q").fetchone()
    if n_keys != n:
        raise ValueError(f"the query returned {n - n_keys} rows with a NULL key; keys must be "
                         "non-NULL and unique")
    if n_distinct != n:
        raise ValueError(f"the query returned {n - n_distinct} duplicate keys; keys must be unique")
    conn.execute("DROP TABLE IF EXISTS temp._gpt2_job")
    stored = colist if ship else "key"
    conn.execute(f"CREATE TEMP TABLE _gpt2_job(idx INTEGER PRIMARY KEY, {stored})")
    conn.execute(w + f" INSERT INTO temp._gpt2_job SELECT row_number() OVER (ORDER BY key) - 1, "
                 f"{stored} FROM q ORDER BY key")
    done = {r[0] for r in conn.execute(f"SELECT key FROM {_ident(table)}")}
    parts, run, skipped = [], None, 0
    for idx, key in conn.execute("SELECT idx, key FROM temp._gpt2_job ORDER BY idx"):
        if key in done:
            skipped += 1
            run = None
            continue
        if run is None or run["n"] == partition_rows:
            run = {"first": idx, "lo": key, "n": 0}
            parts.append(run)
        run["last"], run["hi"] = idx, key
        run["n"] += 1
    conn.commit()
    return n, skipped, parts


class _Progress:
    """One line on stderr: partitions and rows done, tokens/s."""

    def __init__(self, enabled, label, n_parts, n_rows):
        self.enabled, self.label = enabled, label
        self.n_parts, self.n_rows = n_parts, n_rows
        self.parts = self.rows = self.tokens = 0
        self.t0 = time.perf_counter()

    def update(self, rows, tokens):
        self.parts += 1
        self.rows += rows
        self.tokens += tokens
        if not self.enabled:
            return
        width = 24
        fill = width * self.rows // self.n_rows if self.n_rows else width
        rate = self.tokens / max(time.perf_counter() - self.t0, 1e-9)
        sys.stderr.write(f"\r{self.label} [{'#' * fill}{'.' * (width - fill)}] "
                         f"{self.parts}/{self.n_parts} partitions  {self.rows}/{self.n_rows} rows  "
                         f"{rate:.1f} tok/s\x1b[K")
        sys.stderr.flush()

    def close(self):
        if self.enabled and self.parts:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _local_client(workers, threads_per_worker):
    from distributed import Client, LocalCluster
    import logging
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                           processes=True, dashboard_address=None, silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _abs_if_local(path):
    return os.path.abspath(path) if path is not None and os.path.exists(path) else path


def _run(kind, db, query, *, table, options=None, batch_size=None, model=None,
         scheduler=None, scheduler_file=None, client=None, workers=None, threads=None,
         partition_rows=DEFAULT_PARTITION_ROWS, ship=False, ids=False, extension=None,
         progress=None, on_partition=None):
    from distributed import as_completed

    if not table:
        raise ValueError("table is required")
    if partition_rows < 1:
        raise ValueError("partition_rows must be at least 1")
    query = _strip_query(query)
    opts, seed = _options(options) if kind == "complete" else ({}, None)
    model = _abs_if_local(model if model is not None else os.environ.get("GPT2_MODEL"))
    db_abs = os.path.abspath(db)
    if not os.path.exists(db_abs):
        raise FileNotFoundError(f"no database at {db}")

    conn = sqlite3.connect(db_abs, timeout=600)
    own_client = own_cluster = None
    t_start = time.perf_counter()
    try:
        cols = KINDS[kind][0]
        ncols = _query_columns(conn, query)
        if kind == "score" and ncols == 3:
            cols = cols + (KINDS[kind][1],)
        elif ncols != len(cols):
            want = "2 or 3" if kind == "score" else "2"
            raise ValueError(f"the query returns {ncols} columns; {kind} needs {want} "
                             f"({', '.join(KINDS[kind][0])}{', context' if kind == 'score' else ''})")
        _prepare_table(conn, table, kind)
        n_total, skipped, parts = _plan(conn, query, cols, table, partition_rows, ship)
        summary = {"table": table, "rows": n_total, "skipped": skipped, "written": 0,
                   "partitions": len(parts), "tokens": 0, "seconds": 0.0,
                   "task_seconds": 0.0, "load_seconds": 0.0}
        if not parts:
            return summary

        if client is None:
            if scheduler or scheduler_file:
                from distributed import Client
                client = own_client = Client(scheduler, scheduler_file=scheduler_file)
            else:
                n = workers or os.cpu_count() or 1
                if threads is None:
                    threads = max(1, (os.cpu_count() or 1) // n)
                client, own_cluster = _local_client(n, 1)
                own_client = client
        nthreads = sum(client.nthreads().values()) or 1
        window = max(2, 2 * nthreads)   # partitions in flight: bounds memory and lost work

        base = {"kind": kind, "db": db_abs, "query": query, "cols": cols,
                "out": KINDS[kind][2], "model": model, "extension": extension,
                "threads": threads, "batch_size": batch_size, "ids": ids}

        # One small task first: a wrong model path, extension or option is one error.
        check = dict(base, n=1, lo=None, hi=None, options=json.dumps(opts))
        client.submit(run_partition, check, [(0,) + (None,) * (len(cols) - 1)],
                      key=f"sqlite_gpt2-check-{uuid.uuid4().hex}", pure=False).result()

        job = uuid.uuid4().hex[:12]
        bar = _Progress(progress if progress is not None else sys.stderr.isatty(),
                        f"gpt2 {kind}", len(parts), sum(p["n"] for p in parts))
        insert = (f"INSERT INTO {_ident(table)}({', '.join(KINDS[kind][2])}) "
                  f"VALUES ({', '.join('?' * len(KINDS[kind][2]))})")
        failures, part_of = [], {}
        pending = iter(enumerate(parts))

        def submit(item):
            i, p = item
            spec = dict(base, n=p["n"], lo=p["lo"], hi=p["hi"], part=i)
            if kind == "complete":
                o = dict(opts)
                if seed is not None:
                    o["seed"] = _wrap_seed(seed + p["first"])
                spec["options"] = json.dumps(o)
            rows = None
            if ship:
                rows = conn.execute(f"SELECT {', '.join(cols)} FROM temp._gpt2_job "
                                    "WHERE idx BETWEEN ? AND ? ORDER BY idx",
                                    (p["first"], p["last"])).fetchall()
            fut = client.submit(run_partition, spec, rows, key=f"sqlite_gpt2-{kind}-{job}-p{i}",
                                pure=False, retries=0)
            part_of[fut.key] = i
            return fut

        first = [submit(item) for _, item in zip(range(window), pending)]
        done_iter = as_completed(first)
        try:
            for fut in done_iter:
                p = parts[part_of.pop(fut.key)]
                try:
                    res = fut.result()
                except Exception as e:  # a task error, or KilledWorker after its retries
                    failures.append((p["first"], p["last"], p["lo"], p["hi"], str(e)))
                    res = None
                if res is not None:
                    with conn:
                        conn.executemany(insert, res["rows"])
                    tokens = sum(r[3] or 0 for r in res["rows"]) if kind == "complete" else \
                        sum(r[1] or 0 for r in res["rows"])
                    summary["written"] += len(res["rows"])
                    summary["tokens"] += tokens
                    summary["task_seconds"] += res["seconds"]
                    summary["load_seconds"] += res["load"]
                    bar.update(len(res["rows"]), tokens)
                    if on_partition is not None:
                        on_partition(p["first"], p["last"], len(res["rows"]))
                fut.release()
                nxt = next(pending, None)
                if nxt is not None:
                    done_iter.add(submit(nxt))
        except BaseException:
            for fut in list(done_iter.futures):
                fut.cancel()
            raise
        finally:
            bar.close()
        summary["seconds"] = time.perf_counter() - t_start
        if failures:
            lines = [f"partition of rows {a}..{b} (from 0, in key order), keys {lo!r} .. {hi!r}: {m}"
                     for a, b, lo, hi, m in failures]
            raise JobError(f"{kind}: {len(failures)} of {len(parts)} partitions failed "
                           "(the others are committed; a re-run retries only these):\n  "
                           + "\n  ".join(lines), failures)
        return summary
    finally:
        try:
            conn.execute("DROP TABLE IF EXISTS temp._gpt2_job")
        except sqlite3.Error:
            pass
        conn.close()
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()


def complete(db, query, options=None, *, table, **kw):
    """Complete every (key, prompt) row of query, run on the SQLite database db, into table
    (key, prompt, completion, n_tokens, finish_reason): equal to one
    gpt2_complete(query ORDER BY key, options). Keys must be non-NULL and unique; rows
    whose key is already in table are skipped. Keyword arguments:
      model           checkpoint directory as the workers see it (default $GPT2_MODEL)
      scheduler       a Dask scheduler address (or scheduler_file: the file that
                      `dask scheduler --scheduler-file` writes); client: a distributed.Client;
                      none of them: a local cluster of `workers` processes (default: one per
                      CPU), 1 thread each
      threads         the extension's threads per task (gpt2_set('threads')); local
                      cluster default: CPUs / workers
      partition_rows  rows per task (default 128)
      ship            send each partition's rows with its task instead of having the worker
                      read them from the database file (no shared storage needed)
      ids             the prompt column holds token ids (JSON arrays): as json(prompt) in
                      a single-process query (the JSON subtype does not reach the workers)
      extension       gpt2.so as the workers see it (default $SQLITE_GPT2_EXTENSION or the
                      package's own)
      progress        draw the progress bar on stderr (default: when it is a terminal)
      on_partition    called as f(first_row, last_row, n) after each partition commits
    Returns a summary dict; raises JobError naming each failed partition's key range."""
    return _run("complete", db, query, table=table, options=options, **kw)


def score(db, query, *, table, batch_size=None, **kw):
    """Score every (key, text [, context]) row of query into table (key, n_tokens, logprob,
    perplexity), equal to gpt2_score_rows(query ORDER BY key, batch_size). Other arguments
    as complete()."""
    return _run("score", db, query, table=table, batch_size=batch_size, **kw)


# --- command line ----------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m sqlite_gpt2.dask",
                                 description="Complete or score a query's rows on a Dask cluster "
                                 "into a table of the same SQLite database.")
    sub = ap.add_subparsers(dest="kind", required=True)
    for kind in ("complete", "score"):
        p = sub.add_parser(kind)
        p.add_argument("db", help="SQLite database file (read by the workers unless --ship)")
        p.add_argument("query", help="SELECT key, prompt ..." if kind == "complete"
                       else "SELECT key, text [, context] ...")
        p.add_argument("--table", required=True, help="output table (created if missing)")
        if kind == "complete":
            p.add_argument("--options", help="generation options, a JSON object")
        else:
            p.add_argument("--batch-size", type=int, help="gpt2_score_rows' batch_size")
        p.add_argument("--model", help="checkpoint directory on the workers (default $GPT2_MODEL)")
        p.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
        p.add_argument("--scheduler-file", help="the file `dask scheduler --scheduler-file` wrote")
        p.add_argument("--workers", type=int, help="local cluster: worker processes (default: CPUs)")
        p.add_argument("--threads", type=int, help="the extension's threads per task")
        p.add_argument("--partition-rows", type=int, default=DEFAULT_PARTITION_ROWS)
        p.add_argument("--ship", action="store_true",
                       help="send rows with the tasks (workers need no access to the database)")
        p.add_argument("--ids", action="store_true",
                       help="the prompt (text, context) column holds token ids as JSON arrays")
        p.add_argument("--extension", help=f"gpt2.so on the workers (default ${EXTENSION_ENV} "
                       "or the package's)")
        p.add_argument("--progress", choices=("auto", "always", "never"), default="auto")
    a = ap.parse_args(argv)
    kw = dict(table=a.table, model=a.model, scheduler=a.scheduler,
              scheduler_file=a.scheduler_file, workers=a.workers,
              threads=a.threads, partition_rows=a.partition_rows, ship=a.ship, ids=a.ids,
              extension=a.extension,
              progress={"auto": None, "always": True, "never": False}[a.progress])
    try:
        if a.kind == "complete":
            s = complete(a.db, a.query, a.options, **kw)
        else:
            s = score(a.db, a.query, batch_size=a.batch_size, **kw)
    except (JobError, ValueError, RuntimeError, sqlite3.Error, OSError) as e:
        print(f"sqlite_gpt2.dask: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sqlite_gpt2.dask: interrupted; committed partitions are kept, "
              "a re-run resumes", file=sys.stderr)
        return 130
    print(f"{a.kind}: {s['written']} rows written to {s['table']} in {s['partitions']} "
          f"partitions ({s['skipped']} already there), {s['tokens']} tokens, "
          f"{s['seconds']:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # Run through the importable module so that the tasks pickle as sqlite_gpt2.dask.*
    from sqlite_gpt2 import dask as _mod
    sys.exit(_mod.main())
