"""Who frees a recycled KV cache when gen_prepare fails (ext/generate.h).

gpt2_complete hands a finished row's KV cache to the next row as `spare`.
When that next row fails inside gen_prepare, the cache must still be freed
exactly once. The leak this guards against is only visible to LeakSanitizer:
run `make test-sanitize PYTEST_ARGS=tests/test_ownership.py`. Under plain
`make test` the tests check the errors and that the connection stays usable.

The failing rows: an empty prompt on a checkpoint that declares no eos token
(no config eos_token_id, no <|endoftext|> in the vocabulary), and a prompt
longer than the context.
"""
import json
import os
import sqlite3

import pytest

from conftest import connect, one
from make_checkpoint import DELETE, EOT, tiny_vocab, write_checkpoint, write_vocab

P = 16  # context length


@pytest.fixture(scope="module")
def no_eos(tmp_path_factory):
    """A checkpoint with neither an eos id in config.json nor <|endoftext|>."""
    vdir = str(tmp_path_factory.mktemp("vocab"))
    vocab, merges = tiny_vocab()
    vocab = {k: v for k, v in vocab.items() if k != EOT}
    write_vocab(vdir, vocab, merges)
    d = str(tmp_path_factory.mktemp("noeos"))
    write_checkpoint(d, n_layer=1, n_head=2, n_embd=16, n_positions=P, vocab_dir=vdir, seed=3,
                     extra_config={"eos_token_id": DELETE, "bos_token_id": DELETE})
    return d


@pytest.fixture
def conn(no_eos):
    c = connect()
    c.execute("SELECT gpt2_load(?)", (no_eos,))
    assert json.loads(one(c, "SELECT gpt2_info()"))["eos_token_id"] == -1
    c.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, p TEXT)")
    yield c
    c.close()


def complete(c, batch, max_tokens):
    return c.execute("SELECT key, n_tokens FROM gpt2_complete('SELECT k, p FROM t ORDER BY k', "
                     "?, 0, 0, 1, NULL, ?)", (max_tokens, batch)).fetchall()


@pytest.mark.parametrize("max_tokens", [0, 3])
def test_failing_row_after_a_recycled_cache(conn, max_tokens):
    """Row 1 finishes (at once with max_tokens 0, else after generating), so
    its cache becomes the spare that row 2's gen_prepare receives; row 2 is
    empty and the checkpoint has no eos: the error is raised."""
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, "Hello there"), (2, "")])
    with pytest.raises(sqlite3.Error) as e:
        complete(conn, 1, max_tokens)
    assert "query row 1 (from 0), column 2 (prompt)" in str(e.value)
    assert "needs an eos token" in str(e.value)
    # the connection still works, and the first row alone completes
    conn.execute("DELETE FROM t WHERE k = 2")
    assert complete(conn, 1, max_tokens) == [(1, max_tokens)]


def test_too_long_row_after_a_recycled_cache(conn):
    conn.executemany("INSERT INTO t VALUES (?, ?)",
                     [(1, "Hello there"), (2, "x" * (4 * P))])
    with pytest.raises(sqlite3.Error) as e:
        complete(conn, 1, 0)
    assert "query row 1 (from 0), column 2 (prompt)" in str(e.value)
    assert f"longer than the context ({P})" in str(e.value)
