"""Weight formats, one copy of the weights per process, compute threads.

- gpt2_load(dir, name, weights): f32 / f16 / bf16 / q8 load, show in the
  summary, gpt2_info and gpt2_models, take the bytes model.h's layout says
  (computed here from the config), and give logits close to f32's within the
  tolerances below; a bad value is an error worded exactly; the same path and
  name in another format reloads.
- Sharing (ext/registry.h), on a checkpoint of ~52 MB of weights: a second
  connection's load of the same checkpoint and format adds almost nothing to
  the process's RSS and shows users = 2; the model outlives the first
  connection and is freed with the last (RSS falls back, a later load reads
  the file again); another format or a rewritten file is a separate copy;
  threads loading at once all share one copy and generate what a sequential
  run does. RSS is measured in a fresh python process, away from pytest's
  own allocations.
- gpt2_set('threads', n): range errors; the default ($GPT2_THREADS, else the
  CPUs, at most 8); n = 2 really starts a worker (counted in
  /proc/self/task) and n = 1 joins it; greedy text identical for 1 and 2
  threads through gpt2_generate, gpt2_stream and gpt2_complete.
  gpt2_info() reports the kernel path ($GPT2_KERNEL honoured).
"""
import json
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from conftest import connect, one, err
from make_checkpoint import write_checkpoint

FORMATS = ["f32", "f16", "bf16", "q8"]
KNB, KQB = 64, 64  # kernels.h: panel width, Q8 rows per scale block

# Max |logit - f32 logit| / max |f32 logit| over a few prompts. Measured on
# the `small` checkpoint: f16 1.0e-3, bf16 1.1e-2, q8 4.2e-2 (16-bit floats
# keep 11 / 8 significant bits, q8 ~7 bits of each 64-row block's maximum);
# the bounds leave about 3-5x headroom.
TOL = {"f16": 5e-3, "bf16": 4e-2, "q8": 1.5e-1}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("small"))
    cfg, _ = write_checkpoint(d, n_layer=2, n_head=4, n_embd=128, n_positions=64, seed=7,
                              return_weights=False)
    return d, cfg


def info(conn):
    return json.loads(one(conn, "SELECT gpt2_info()"))


def logits(conn, prompt):
    return np.frombuffer(one(conn, "SELECT gpt2_logits(?)", prompt), "<f4")


def r64(n):
    return (n + 63) // 64 * 64


def kmat_bytes(fmt, K, N):
    """kernels.c's kmat_bytes: panels of 64 columns, Q8 adds block scales."""
    npan = (N + KNB - 1) // KNB
    size = {"f32": 4, "f16": 2, "bf16": 2, "q8": 1}[fmt]
    b = r64(npan * K * KNB * size)
    if fmt == "q8":
        b += r64(npan * ((K + KQB - 1) // KQB) * KNB * 4)
    return b


def expected_bytes(cfg, fmt):
    """(total, matrices) bytes of model.c's arena for a tied-head checkpoint."""
    C, V, P, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]
    F = 4 * C
    vec = r64(P * C * 4) + 2 * r64(C * 4)  # wpe, ln_f
    vec += L * (4 * r64(C * 4) + r64(3 * C * 4) + 2 * r64(C * 4) + r64(F * 4))
    mats = kmat_bytes(fmt, C, V)  # the tied head, wteᵀ
    mats += L * (kmat_bytes(fmt, C, 3 * C) + kmat_bytes(fmt, C, C) + kmat_bytes(fmt, C, F)
                 + kmat_bytes(fmt, F, C))
    return vec + mats, mats


# ---------------------------------------------------------------------------
# weights option


def test_each_format_loads_and_is_reported(small):
    d, cfg = small
    conn = connect()
    f32 = None
    for i, fmt in enumerate(FORMATS):
        name = f"m_{fmt}"
        s = json.loads(one(conn, "SELECT gpt2_load(?, ?, ?)", d, name, fmt.upper() if i % 2 else fmt))
        assert s["weights"] == fmt and s["dtype"] == "F32"
        total, mats = expected_bytes(cfg, fmt)
        assert s["bytes"] == total, fmt
        assert info(conn)["weights"] == fmt
        if fmt == "f32":
            f32 = (total, mats)
        else:
            vec = total - mats
            ratio = mats / f32[1]
            # f16/bf16: half the matrix bytes; q8: a quarter plus one f32 scale per
            # 64 values (1/64 of the f32 bytes)
            assert ratio == pytest.approx({"f16": 0.5, "bf16": 0.5, "q8": 0.25 + 1 / 64}[fmt],
                                          abs=0.01), fmt
            assert vec == f32[0] - f32[1]  # vectors and wpe stay f32
        text = one(conn, "SELECT gpt2_generate('hello world', 8)")
        assert isinstance(text, str) and len(text) > 0
    rows = conn.execute("SELECT name, weights, bytes, dtype FROM gpt2_models").fetchall()
    assert [(r[0], r[1]) for r in rows] == [(f"m_{f}", f) for f in FORMATS]
    assert [r[2] for r in rows] == [expected_bytes(cfg, f)[0] for f in FORMATS]
    # existing columns kept, weights added at the end
    cols = [r[1] for r in conn.execute("SELECT * FROM pragma_table_info('gpt2_models')")]
    assert cols == ["name", "path", "current", "n_layer", "n_embd", "n_params", "dtype", "bytes",
                    "weights", "users"]
    conn.close()


def test_default_and_null_are_f32(small):
    d, _ = small
    conn = connect()
    assert json.loads(one(conn, "SELECT gpt2_load(?)", d))["weights"] == "f32"
    assert json.loads(one(conn, "SELECT gpt2_load(?, 'b', NULL)", d))["weights"] == "f32"
    assert json.loads(one(conn, "SELECT gpt2_load(?, NULL, 'Bf16')", d))["name"] == "default"
    assert one(conn, "SELECT weights FROM gpt2_models WHERE name = 'default'") == "bf16"
    conn.close()


def test_formats_close_to_f32(small):
    d, _ = small
    conn = connect()
    prompts = ["hello world", "the cat sat on", "a b c d e f g"]
    ref = {}
    errs = {}
    for fmt in FORMATS:
        one(conn, "SELECT gpt2_load(?, 'x', ?)", d, fmt)
        got = np.array([logits(conn, p) for p in prompts])
        if fmt == "f32":
            ref = got
            continue
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        errs[fmt] = rel
        assert 0 < rel <= TOL[fmt], (fmt, rel)  # > 0: really another format
        # the greedy choice survives rounding on these prompts
        assert (got.argmax(1) == ref.argmax(1)).all(), fmt
    assert errs["f16"] < errs["bf16"] < errs["q8"]
    conn.close()


@pytest.mark.parametrize("value,msg", [
    ("'q2'", "gpt2_load: argument 3 (weights) = 'q2' is not one of 'f32', 'f16', 'bf16', 'q8', "
     "'q4'"),
    ("''", "gpt2_load: argument 3 (weights) = '' is not one of 'f32', 'f16', 'bf16', 'q8', 'q4'"),
    ("'f32 '", "gpt2_load: argument 3 (weights) = 'f32 ' is not one of 'f32', 'f16', 'bf16', "
     "'q8', 'q4'"),
    ("8", "gpt2_load: argument 3 (weights) must be TEXT, one of 'f32', 'f16', 'bf16', 'q8', "
     "'q4'; got INTEGER"),
    ("x'6638'", "gpt2_load: argument 3 (weights) must be TEXT, one of 'f32', 'f16', 'bf16', "
     "'q8', 'q4'; got BLOB"),
])
def test_bad_weights_value(small, value, msg):
    d, _ = small
    conn = connect()
    one(conn, "SELECT gpt2_load(?, 'keep')", d)
    assert err(conn, f"SELECT gpt2_load(?, 'keep', {value})", d) == msg
    # nothing changed
    assert conn.execute("SELECT name, weights FROM gpt2_models").fetchall() == [("keep", "f32")]
    conn.close()


def test_same_path_and_name_other_format_reloads(small):
    d, cfg = small
    conn = connect()
    one(conn, "SELECT gpt2_load(?)", d)
    a = logits(conn, "hello")
    s = json.loads(one(conn, "SELECT gpt2_load(?, 'default', 'q8')", d))
    assert s["weights"] == "q8" and s["bytes"] == expected_bytes(cfg, "q8")[0]
    assert conn.execute("SELECT name, weights FROM gpt2_models").fetchall() == [("default", "q8")]
    b = logits(conn, "hello")
    assert not np.array_equal(a, b)
    # the same format again is a no-op: the prefix cache of the last call
    # survives it (a reload drops it); back to f32 gives f32's logits again
    assert json.loads(one(conn, "SELECT gpt2_load(?, 'default', 'Q8')", d)) == s
    before = info(conn)["counters"]["prefix_reused"]
    logits(conn, "hello world")
    assert info(conn)["counters"]["prefix_reused"] > before
    one(conn, "SELECT gpt2_load(?, 'default', 'f32')", d)
    assert np.array_equal(logits(conn, "hello"), a)
    conn.close()


def test_tokenizer_only_ignores_weights(tmp_path, small):
    d, _ = small
    t = tmp_path / "tok"
    t.mkdir()
    for f in ("vocab.json", "merges.txt"):
        (t / f).write_bytes(open(f"{d}/{f}", "rb").read())
    conn = connect()
    s = json.loads(one(conn, "SELECT gpt2_load(?, 't', 'q8')", str(t)))
    assert s["weights"] is None
    assert one(conn, "SELECT weights FROM gpt2_models") is None
    assert json.loads(one(conn, "SELECT gpt2_load(?, 't', 'f16')", str(t)))["weights"] is None
    assert one(conn, "SELECT gpt2_token_count('hello world')") > 0
    # a bad value is still an error
    assert err(conn, "SELECT gpt2_load(?, 't', 'int4')", str(t)).startswith(
        "gpt2_load: argument 3 (weights) = 'int4' is not one of")
    conn.close()


# ---------------------------------------------------------------------------
# one copy per process


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """4 layers of width 512: ~52 MB of f32 weights (above glibc's largest
    mmap threshold, so the arena is its own mapping and RSS shows it)."""
    d = str(tmp_path_factory.mktemp("big"))
    cfg, _ = write_checkpoint(d, n_layer=4, n_head=8, n_embd=512, n_positions=128, seed=11,
                              return_weights=False)
    assert expected_bytes(cfg, "f32")[0] >= 40 << 20
    return d, cfg


RSS_SCRIPT = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[2])
    from conftest import connect, one

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024

    def users(c):
        return one(c, "SELECT users FROM gpt2_models WHERE name = 'default'")

    d, out = sys.argv[1], {}
    a, b = connect(), connect()
    r0 = rss()
    bytes_ = json.loads(one(a, "SELECT gpt2_load(?)", d))["bytes"]
    r1 = rss()
    one(b, "SELECT gpt2_load(?)", d)
    r2 = rss()
    out["bytes"] = bytes_
    out["first"], out["second"] = r1 - r0, r2 - r1
    out["users"] = [users(a), users(b), json.loads(one(b, "SELECT gpt2_info()"))["users"]]
    gen = "SELECT gpt2_generate('hello world', 20)"
    out["gen_a"], out["gen_b"] = one(a, gen), one(b, gen)
    a.close()
    out["users_after_a"] = users(b)
    out["gen_b2"] = one(b, gen)
    r3 = rss()
    b.close()
    r4 = rss()
    out["freed"] = r3 - r4
    c = connect()
    one(c, "SELECT gpt2_load(?)", d)
    out["reload"] = rss() - r4
    out["users_c"] = users(c)
    out["gen_c"] = one(c, gen)
    print(json.dumps(out))
""")


def test_two_connections_share_one_copy(big):
    d, _ = big
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ)
    if env.get("ASAN_OPTIONS"):  # under make test-sanitize: freed memory must not be
        env["ASAN_OPTIONS"] += ":quarantine_size_mb=0"  # held back, or RSS cannot drop
    res = subprocess.run([sys.executable, "-c", RSS_SCRIPT, d, here], capture_output=True,
                         text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    w = r["bytes"]
    assert r["first"] >= 0.9 * w, r  # the first load holds the weights
    assert r["second"] < 0.1 * w, r  # the second shares them
    assert r["users"] == [2, 2, 2]
    assert r["gen_a"] == r["gen_b"] == r["gen_b2"] == r["gen_c"] and r["gen_a"]
    assert r["users_after_a"] == 1
    assert r["freed"] >= 0.9 * w, r  # freed with the last user: the table kept nothing
    assert r["reload"] >= 0.9 * w, r  # so loading again reads the file again
    assert r["users_c"] == 1


def users(conn, name="default"):
    return one(conn, "SELECT users FROM gpt2_models WHERE name = ?", name)


def test_other_format_is_another_copy(small):
    d, _ = small
    a, b, c = connect(), connect(), connect()
    one(a, "SELECT gpt2_load(?)", d)
    one(b, "SELECT gpt2_load(?, 'default', 'f16')", d)
    assert (users(a), users(b)) == (1, 1)
    one(c, "SELECT gpt2_load(?, 'default', 'F16')", d)  # the format's spelling does not matter
    assert (users(a), users(b), users(c)) == (1, 2, 2)
    # one connection, two names, one copy
    one(a, "SELECT gpt2_load(?, 'again')", d)
    assert (users(a), users(a, "again")) == (2, 2)
    one(a, "SELECT gpt2_unload('again')")
    assert users(a) == 1
    for x in (a, b, c):
        x.close()


def test_rewritten_checkpoint_loads_afresh(tmp_path):
    d = str(tmp_path / "ck")
    write_checkpoint(d, n_layer=1, n_head=2, n_embd=64, n_positions=32, seed=1,
                     return_weights=False)
    a = connect()
    one(a, "SELECT gpt2_load(?)", d)
    old = logits(a, "hello")
    # Rewrite in place with other weights: same inode, same size, and the old
    # mtime put back; only the ctime tells.
    st = os.stat(os.path.join(d, "model.safetensors"))
    write_checkpoint(d, n_layer=1, n_head=2, n_embd=64, n_positions=32, seed=2,
                     return_weights=False)
    for f in os.listdir(d):
        os.utime(os.path.join(d, f), ns=(st.st_atime_ns, st.st_mtime_ns))
    st2 = os.stat(os.path.join(d, "model.safetensors"))
    assert (st2.st_ino, st2.st_size, st2.st_mtime_ns) == (st.st_ino, st.st_size, st.st_mtime_ns)
    b = connect()
    one(b, "SELECT gpt2_load(?)", d)
    assert (users(a), users(b)) == (1, 1)
    new = logits(b, "hello")
    assert not np.array_equal(old, new)
    assert np.array_equal(logits(a, "hello"), old)  # a keeps its copy
    # a third connection shares the new copy
    c = connect()
    one(c, "SELECT gpt2_load(?)", d)
    assert (users(b), users(c)) == (2, 2)
    assert np.array_equal(logits(c, "hello"), new)
    for x in (a, b, c):
        x.close()


def test_generations_keep_a_shared_model_alive(small):
    d, _ = small
    a, b = connect(), connect()
    one(a, "SELECT gpt2_load(?)", d)
    want = [r[0] for r in a.execute("SELECT token FROM gpt2_stream('hello', 12)")]
    cur = a.execute("SELECT token FROM gpt2_stream('hello', 12)")
    got = [cur.fetchone()[0]]
    one(a, "SELECT gpt2_unload('default')")  # the open stream still holds the model
    one(b, "SELECT gpt2_load(?)", d)  # and b shares it: it is alive
    assert users(b) == 1
    got += [r[0] for r in cur.fetchall()]
    assert got == want
    a.close()
    assert "".join(want) == one(b, "SELECT gpt2_generate('hello', 12)")
    b.close()


@pytest.mark.parametrize("fmt", ["f32", "q8"])
def test_threads_load_at_once(big, fmt):
    d, _ = big
    n = 4
    seq = connect()
    one(seq, "SELECT gpt2_load(?, 'default', ?)", d, fmt)
    prompts = [f"thread {i} says" for i in range(n)]
    want = [one(seq, "SELECT gpt2_generate(?, 12)", p) for p in prompts]
    seq.close()  # nothing left loaded: the threads race to load first

    start, loaded = threading.Barrier(n), threading.Barrier(n)
    out, errors = [None] * n, []

    def run(i):
        try:
            c = connect()
            start.wait()
            one(c, "SELECT gpt2_load(?, 'default', ?)", d, fmt)
            loaded.wait()
            u = users(c)
            out[i] = (u, one(c, "SELECT gpt2_generate(?, 12)", prompts[i]))
            loaded.wait()  # hold the model until everyone has read users
            c.close()
        except Exception as e:  # reported below
            errors.append(repr(e))
            start.abort()
            loaded.abort()

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert not errors
    assert [o[0] for o in out] == [n] * n  # one copy for all
    assert [o[1] for o in out] == want


# ---------------------------------------------------------------------------
# compute threads


@pytest.mark.parametrize("value,msg", [
    ("0", "gpt2_set: argument 2 (threads) = 0 is out of range [1, 64]"),
    ("65", "gpt2_set: argument 2 (threads) = 65 is out of range [1, 64]"),
    ("-1", "gpt2_set: argument 2 (threads) = -1 is out of range [1, 64]"),
    ("2.5", "gpt2_set: argument 2 (threads) must be an INTEGER, got REAL"),
    ("'2'", "gpt2_set: argument 2 (threads) must be an INTEGER, got TEXT"),
    ("NULL", "gpt2_set: argument 2 (threads) must be an INTEGER, got NULL"),
])
def test_threads_bad_values(small, value, msg):
    conn = connect()
    one(conn, "SELECT gpt2_load(?)", small[0])
    before = info(conn)["settings"]["threads"]
    assert err(conn, f"SELECT gpt2_set('threads', {value})") == msg
    assert info(conn)["settings"]["threads"] == before
    assert one(conn, "SELECT gpt2_set('threads', 64)") == before
    assert one(conn, "SELECT gpt2_set('threads', 1)") == 64
    conn.close()


THREADS_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, sys.argv[2])
    from conftest import connect, one

    def tasks():
        return len(os.listdir("/proc/self/task"))

    c = connect()
    one(c, "SELECT gpt2_load(?)", sys.argv[1])
    info = lambda: json.loads(one(c, "SELECT gpt2_info()"))
    out = {"default": info()["settings"]["threads"], "kernel": info()["kernel"]}
    gen = "SELECT gpt2_generate('a b c', 24)"
    out["prev"] = one(c, "SELECT gpt2_set('threads', 1)")
    out["t1"] = one(c, gen)
    n1 = tasks()
    one(c, "SELECT gpt2_set('threads', 2)")
    out["info2"] = info()["settings"]["threads"]
    out["t2"] = one(c, gen)
    out["workers2"] = tasks() - n1
    out["stream2"] = "".join(r[0] for r in c.execute("SELECT token FROM gpt2_stream('a b c', 24)"))
    out["complete2"] = one(c, "SELECT completion FROM gpt2_complete('SELECT 1, ''a b c''', 24)")
    one(c, "SELECT gpt2_set('threads', 1)")
    out["workers1"] = tasks() - n1
    out["t1b"] = one(c, gen)
    print(json.dumps(out))
""")


def run_threads_script(d, **env):
    here = os.path.dirname(os.path.abspath(__file__))
    e = {k: v for k, v in os.environ.items() if k not in ("GPT2_THREADS", "GPT2_KERNEL")}
    e.update(env, OPENBLAS_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", THREADS_SCRIPT, d, here], capture_output=True,
                         text=True, timeout=300, env=e)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_threads_setting(small):
    d, _ = small
    r = run_threads_script(d)
    cpus = min(len(os.sched_getaffinity(0)), 8)
    assert r["default"] == r["prev"] == cpus
    assert r["info2"] == 2
    # threads = 2 really runs a worker thread, and going back to 1 joins it
    assert r["workers2"] == 1 and r["workers1"] == 0, r
    # the kernels are thread-invariant: identical greedy text on every path
    assert r["t1"] == r["t2"] == r["t1b"] == r["stream2"] == r["complete2"] and r["t1"]
    assert r["kernel"] in ("portable", "avx2", "avx512")


def test_threads_default_from_env_and_kernel_reported(small):
    d, _ = small
    r = run_threads_script(d, GPT2_THREADS="3", GPT2_KERNEL="portable")
    assert r["default"] == r["prev"] == 3
    assert r["kernel"] == "portable"
    assert r["t1"] == r["t2"]
    r = run_threads_script(d, GPT2_THREADS="1000")  # clamped, not an error
    assert r["default"] == 64
