"""Shared helpers for the benchmarks (run with Debian's /usr/bin/python3)."""
import ctypes
import ctypes.util
import os
import sqlite3
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# GPT2_SO: another build of the extension (the tests pass theirs, e.g. the ASan one)
SO = os.environ.get("GPT2_SO", os.path.join(ROOT, "build", "gpt2.so"))
BENCH_DIR = os.path.join(ROOT, "build", "bench")


def connect():
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    conn.load_extension(SO[:-3])
    return conn


def checkpoint(shape="124M", dtype="F32"):
    """A generated checkpoint of an official GPT-2 shape (random weights), cached."""
    d = os.path.join(BENCH_DIR, f"{shape}-{dtype}")
    if not os.path.exists(os.path.join(d, "model.safetensors")):
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "make_checkpoint.py"), d,
                        "--shape", shape, "--dtype", dtype], check=True,
                       stdout=subprocess.DEVNULL)
    return d


def sgemm_gflops(m, n, k, seconds=1.0):
    """OpenBLAS cblas_sgemm GFLOP/s on (m,k)x(k,n), measured now."""
    lib = ctypes.CDLL(ctypes.util.find_library("openblas") or "libopenblas.so.0")
    A = (ctypes.c_float * (m * k))()
    B = (ctypes.c_float * (k * n))()
    C = (ctypes.c_float * (m * n))()
    for i in range(0, m * k, 97):
        A[i] = 0.5
    for i in range(0, k * n, 89):
        B[i] = 0.25
    f = lib.cblas_sgemm
    f.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int,
                                        ctypes.c_void_p, ctypes.c_int, ctypes.c_float,
                                        ctypes.c_void_p, ctypes.c_int]
    run = lambda: f(101, 111, 111, m, n, k, 1.0, A, k, B, n, 0.0, C, n)
    run()
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t)
    return 2.0 * m * n * k / best / 1e9
