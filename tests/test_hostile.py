"""SQL misuse: every function and table with wrong types, NULLs, negative and
huge numbers, invalid UTF-8, BLOBs, 10 MB texts and out-of-range ids. Each
call gives its documented result or an error that names the function (and,
for a bad argument, the argument, its value and the allowed range); none
crashes, and the connection keeps working afterwards.

The model is a micro checkpoint (1 layer, n_embd 8, 16 positions, 277-token
vocabulary), so every call is cheap; `make test-sanitize` runs this file
under ASan + UBSan, where a memory error would show.
"""
import json
import os
import sqlite3

import pytest

from conftest import connect
from make_checkpoint import tiny_vocab, write_checkpoint, write_vocab

V, P = None, 16  # vocabulary size (set by the fixture), context length
BIG = 10 << 20   # "10 MB"


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    global V
    vd = str(tmp_path_factory.mktemp("micro-vocab"))
    vocab, merges = tiny_vocab(20)
    write_vocab(vd, vocab, merges)
    V = len(vocab)
    d = str(tmp_path_factory.mktemp("micro"))
    write_checkpoint(d, n_layer=1, n_head=2, n_embd=8, n_positions=P, vocab_dir=vd, seed=1,
                     return_weights=False)
    tok = str(tmp_path_factory.mktemp("tok"))
    write_vocab(tok, vocab, merges)
    return d, tok


@pytest.fixture(scope="module")
def conn(micro):
    c = connect()
    c.text_factory = bytes  # results must be valid UTF-8: decoded (strictly) by the tests
    c.execute("SELECT gpt2_load(?)", (micro[0],))
    yield c
    c.close()


def call(c, sql, *args):
    """('ok', rows) or ('err', message); the message must be valid UTF-8."""
    try:
        return "ok", c.execute(sql, args).fetchall()
    except sqlite3.Error as e:
        return "err", str(e)
    # a message that is not valid UTF-8 raises UnicodeDecodeError here: a failure


def err(c, sql, *args):
    kind, v = call(c, sql, *args)
    assert kind == "err", f"{sql}: expected an error, got {v!r}"
    return v


def one(c, sql, *args):
    kind, v = call(c, sql, *args)
    assert kind == "ok", f"{sql}: {v}"
    return v[0][0]


def alive(c):
    """The connection and its model still work: greedy generation is stable."""
    a = one(c, "SELECT gpt2_generate('ab', 4)")
    b = one(c, "SELECT gpt2_generate(json('[1, 2]'), 4)")
    assert isinstance(a, bytes) and isinstance(b, bytes)
    a.decode("utf-8"), b.decode("utf-8")


# ---------------------------------------------------------------------------
# the whole matrix: every argument of every function, every hostile value

# (name, SQL template with {} for the argument list, arity range, 1 if it is a table)
FUNCS = [
    ("gpt2_version", "SELECT gpt2_version({})", 0, 0),
    ("gpt2_load", "SELECT gpt2_load({})", 1, 2),
    ("gpt2_info", "SELECT gpt2_info({})", 0, 0),
    ("gpt2_use", "SELECT gpt2_use({})", 1, 1),
    ("gpt2_unload", "SELECT gpt2_unload({})", 1, 1),
    ("gpt2_set", "SELECT gpt2_set({})", 2, 2),
    ("gpt2_tokenize", "SELECT gpt2_tokenize({})", 1, 1),
    ("gpt2_detokenize", "SELECT gpt2_detokenize({})", 1, 1),
    ("gpt2_token_count", "SELECT gpt2_token_count({})", 1, 1),
    ("gpt2_logits", "SELECT gpt2_logits({})", 1, 1),
    ("gpt2_generate", "SELECT gpt2_generate({})", 1, 6),
    ("gpt2_stream", "SELECT * FROM gpt2_stream({}) LIMIT 20", 1, 6),
    ("gpt2_complete", "SELECT * FROM gpt2_complete({}) LIMIT 20", 1, 7),
    ("gpt2_models", "SELECT * FROM gpt2_models({})", 0, 0),
]

# Well-formed values for each argument, used around the hostile one.
GOOD = {
    "gpt2_load": ["'{micro}'", "'default'"],
    "gpt2_use": ["'default'"],
    "gpt2_unload": ["'nope'"],
    "gpt2_set": ["'max_tokens_limit'", "0"],
    "gpt2_tokenize": ["'hello'"],
    "gpt2_detokenize": ["'[1, 2]'"],
    "gpt2_token_count": ["'hello'"],
    "gpt2_logits": ["'hello'"],
    "gpt2_generate": ["'hello'", "3", "0.5", "5", "0.9", "7"],
    "gpt2_stream": ["'hello'", "3", "0.5", "5", "0.9", "7"],
    "gpt2_complete": ["'SELECT 1, ''hello'''", "3", "0.5", "5", "0.9", "7", "2"],
}

HOSTILE = [
    "NULL", "0", "-1", "9223372036854775807", "-9223372036854775808", "1e308", "-1e308",
    "9e999", "-0.0", "0.5", "''", "'x'", "CAST(x'ff' AS TEXT)", "CAST(x'c3' AS TEXT)",
    "CAST(x'00ff41' AS TEXT)", "x''", "x'00ff'", "zeroblob(16)", "json('[1, 2]')",
    "json('[-1]')", "json('[9223372036854775807]')", "json('{}')", "'[1, 2]'", "'[1.5]'",
    "'[' || 999999 || ']'",
]

SQLITE_MESSAGES = ("wrong number of arguments", "too many arguments on", "no such table",
                   "unable to use function")


@pytest.mark.parametrize("name,tmpl,lo,hi", FUNCS, ids=[f[0] for f in FUNCS])
def test_every_argument_every_hostile_value(conn, micro, name, tmpl, lo, hi):
    good = [g.format(micro=micro[0]) for g in GOOD.get(name, [])]
    calls = 0
    for pos in range(max(hi, 1)):
        for h in HOSTILE:
            if hi == 0:
                args = [h]  # a function that takes no argument, given one
            else:
                args = good[:pos] + [h] + good[pos + 1:max(pos + 1, lo)]
            sql = tmpl.format(", ".join(args))
            kind, v = call(conn, sql)
            calls += 1
            if kind == "err":
                assert v.startswith(name + ":") or any(s in v for s in SQLITE_MESSAGES), (sql, v)
                assert "(null)" not in v, (sql, v)
            else:
                for row in v:
                    for x in row:
                        if isinstance(x, bytes) and name not in ("gpt2_logits", "gpt2_complete"):
                            x.decode("utf-8")  # text results are valid UTF-8
            if name in ("gpt2_load", "gpt2_unload", "gpt2_use", "gpt2_set"):
                conn.execute("SELECT gpt2_set('max_tokens_limit', 0), "
                             "gpt2_set('kv_memory_limit', 4294967296), "
                             "gpt2_set('prefix_reuse', 1), gpt2_load(?)", (micro[0],))
        alive(conn)
    assert calls >= len(HOSTILE)


def test_too_many_and_too_few_arguments(conn):
    assert err(conn, "SELECT gpt2_generate()") == (
        "gpt2_generate: takes 1 to 6 arguments (prompt [, max_tokens [, temperature [, top_k "
        "[, top_p [, seed]]]]]), got 0")
    assert "got 7" in err(conn, "SELECT gpt2_generate('a', 1, 0, 0, 1, 1, 1)")
    assert "too many arguments on gpt2_stream() - max 6" in err(
        conn, "SELECT * FROM gpt2_stream('a', 1, 0, 0, 1, 1, 1)")
    assert err(conn, "SELECT * FROM gpt2_stream") == "gpt2_stream: argument 1 (prompt) is required"
    assert err(conn, "SELECT * FROM gpt2_complete WHERE max_tokens = 3") == (
        "gpt2_complete: argument 1 (query) is required")
    assert "wrong number of arguments" in err(conn, "SELECT gpt2_set('prefix_reuse')")
    alive(conn)


# ---------------------------------------------------------------------------
# documented results for NULL, types and ranges


@pytest.mark.parametrize("sql", [
    "SELECT gpt2_load(NULL)", "SELECT gpt2_use(NULL)", "SELECT gpt2_unload(NULL)",
    "SELECT gpt2_set(NULL, 1)", "SELECT gpt2_tokenize(NULL)", "SELECT gpt2_detokenize(NULL)",
    "SELECT gpt2_token_count(NULL)", "SELECT gpt2_logits(NULL)", "SELECT gpt2_generate(NULL)",
    "SELECT gpt2_generate(NULL, -5, 'bad')",
])
def test_null_first_argument_gives_null(conn, sql):
    assert one(conn, sql) is None


def test_null_first_argument_gives_no_rows(conn):
    assert conn.execute("SELECT * FROM gpt2_stream(NULL)").fetchall() == []
    assert conn.execute("SELECT * FROM gpt2_complete(NULL)").fetchall() == []


def test_null_optional_arguments_are_defaults(conn):
    a = one(conn, "SELECT gpt2_generate('abc', NULL, NULL, NULL, NULL, 5)")
    b = one(conn, "SELECT gpt2_generate('abc', 16, 0, 0, 1, 5)")
    assert a == b  # default max_tokens: min(32, n_positions)
    assert one(conn, "SELECT gpt2_load(?, NULL) IS NOT NULL", conn.execute(
        "SELECT json_extract(gpt2_info(), '$.path')").fetchone()[0].decode())


EXACT = [
    ("SELECT gpt2_generate('a', -1)",
     "gpt2_generate: argument 2 (max_tokens) = -1 is out of range [0, 16]"),
    ("SELECT gpt2_generate('a', 9223372036854775807)",
     "gpt2_generate: argument 2 (max_tokens) = 9223372036854775807 is out of range [0, 16]"),
    ("SELECT gpt2_generate('a', '3')",
     "gpt2_generate: argument 2 (max_tokens or options) "
     "must be an INTEGER or a JSON object of options, e.g. json_object('max_tokens', 40); got TEXT '3', not a JSON object"),
    ("SELECT gpt2_generate('a', 3.5)",
     "gpt2_generate: argument 2 (max_tokens) must be an INTEGER, got REAL"),
    ("SELECT gpt2_generate('a', 3, -0.5)",
     "gpt2_generate: argument 3 (temperature) = -0.5 is out of range [0, inf)"),
    ("SELECT gpt2_generate('a', 3, 9e999)",
     "gpt2_generate: argument 3 (temperature) = inf is out of range [0, inf)"),
    ("SELECT gpt2_generate('a', 3, x'00')",
     "gpt2_generate: argument 3 (temperature) must be a number, got BLOB"),
    ("SELECT gpt2_generate('a', 3, 1, -1)",
     "gpt2_generate: argument 4 (top_k) = -1 is out of range [0, 2147483647]"),
    ("SELECT gpt2_generate('a', 3, 1, 9223372036854775807)",
     "gpt2_generate: argument 4 (top_k) = 9223372036854775807 is out of range [0, 2147483647]"),
    ("SELECT gpt2_generate('a', 3, 1, 0, 0)",
     "gpt2_generate: argument 5 (top_p) = 0 is out of range (0, 1]"),
    ("SELECT gpt2_generate('a', 3, 1, 0, 1.0000001)",
     "gpt2_generate: argument 5 (top_p) = 1 is out of range (0, 1]"),
    ("SELECT gpt2_generate('a', 3, 1, 0, 1, 0.5)",
     "gpt2_generate: argument 6 (seed) must be an INTEGER, got REAL"),
    ("SELECT gpt2_generate(x'61')",
     "gpt2_generate: argument 1 (prompt) must be TEXT or a JSON array of token ids, got BLOB"),
    ("SELECT gpt2_generate(42)",
     "gpt2_generate: argument 1 (prompt) must be TEXT or a JSON array of token ids, got INTEGER"),
    ("SELECT gpt2_logits(json('[1, -1]'))",
     "gpt2_logits: argument 1 (prompt): id -1 is outside the vocabulary (size 277)"),
    ("SELECT gpt2_logits(json('[277]'))",
     "gpt2_logits: argument 1 (prompt): id 277 is outside the vocabulary (size 277)"),
    ("SELECT gpt2_logits(json('[2147483648]'))",
     "gpt2_logits: argument 1 (prompt): id 2147483648 is outside the vocabulary (size 277)"),
    ("SELECT gpt2_logits(json('[1, 2.5]'))",
     "gpt2_logits: argument 1 (prompt): element 1 is not an integer"),
    ("SELECT gpt2_logits(json('{\"a\": 1}'))",
     "gpt2_logits: argument 1 (prompt) must be a JSON array of integers"),
    ("SELECT gpt2_detokenize('[1, 277]')",
     "gpt2_detokenize: argument 1 (ids): id 277 is outside the vocabulary (size 277)"),
    ("SELECT gpt2_detokenize('[-9223372036854775808]')",
     "gpt2_detokenize: argument 1 (ids): id -9223372036854775808 is outside the vocabulary "
     "(size 277)"),
    ("SELECT gpt2_detokenize(x'5b315d')",
     "gpt2_detokenize: argument 1 (ids) must be a JSON array of integers, got BLOB"),
    ("SELECT gpt2_detokenize('[\"a\"]')", "gpt2_detokenize: argument 1 (ids): element 0 is not "
     "an integer"),
    ("SELECT gpt2_tokenize(12)", "gpt2_tokenize: argument 1 (text) must be TEXT, got INTEGER"),
    ("SELECT gpt2_token_count(x'00')",
     "gpt2_token_count: argument 1 (text) must be TEXT, got BLOB"),
    ("SELECT gpt2_use(1)", "gpt2_use: argument 1 (name) must be TEXT, got INTEGER"),
    ("SELECT gpt2_use('nope')", "gpt2_use: no model named 'nope' (loaded: default)"),
    ("SELECT gpt2_unload(x'00')", "gpt2_unload: argument 1 (name) must be TEXT, got BLOB"),
    ("SELECT gpt2_set(1, 1)", "gpt2_set: argument 1 (name) must be TEXT, got INTEGER"),
    ("SELECT gpt2_set('nope', 1)", "gpt2_set: unknown setting 'nope' (known: prefix_reuse, "
     "max_tokens_limit, kv_memory_limit, threads, progress)"),
    ("SELECT gpt2_set('prefix_reuse', 2)",
     "gpt2_set: argument 2 (prefix_reuse) = 2 is out of range [0, 1]"),
    ("SELECT gpt2_set('max_tokens_limit', -1)",
     "gpt2_set: argument 2 (max_tokens_limit) = -1 is out of range [0, 1048576]"),
    ("SELECT gpt2_set('kv_memory_limit', 1048575)",
     "gpt2_set: argument 2 (kv_memory_limit) = 1048575 is out of range [1048576, "
     "9223372036854775807]"),
    ("SELECT gpt2_set('kv_memory_limit', NULL)",
     "gpt2_set: argument 2 (kv_memory_limit) must be an INTEGER, got NULL"),
    ("SELECT gpt2_load(1)", "gpt2_load: argument 1 (dir) must be TEXT, a directory path"),
    ("SELECT gpt2_load('/nonexistent-dir')",
     "gpt2_load: cannot open model directory '/nonexistent-dir': No such file or directory"),
    ("SELECT gpt2_load('.', '')", "gpt2_load: argument 2 (name) must be TEXT of 1 to 128 bytes"),
    ("SELECT gpt2_load('.', CAST(x'ff' AS TEXT))",
     "gpt2_load: argument 2 (name) must be valid UTF-8"),
    ("SELECT * FROM gpt2_stream('a', 17)",
     "gpt2_stream: argument 2 (max_tokens) = 17 is out of range [0, 16]"),
    ("SELECT * FROM gpt2_stream(zeroblob(4))",
     "gpt2_stream: argument 1 (prompt) must be TEXT or a JSON array of token ids, got BLOB"),
    ("SELECT * FROM gpt2_complete(1)", "gpt2_complete: argument 1 (query) must be TEXT, an SQL "
     "query"),
    ("SELECT * FROM gpt2_complete('SELECT 1, ''a''', 1, 0, 0, 1, 1, 'x')",
     "gpt2_complete: argument 7 (batch_size) must be an INTEGER, got TEXT"),
    ("SELECT * FROM gpt2_complete('SELECT 1, ''a''', 1, 0, 0, 1, 1, 9223372036854775807)",
     "gpt2_complete: argument 7 (batch_size) = 9223372036854775807 is out of range [1, 256]"),
    ("SELECT * FROM gpt2_complete('SELECT 1, x''00''')",
     "gpt2_complete: query row 0 (from 0), column 2 (prompt) must be TEXT or a JSON array of token ids, "
     "got BLOB"),
    ("SELECT * FROM gpt2_complete('SELECT 1, json(''[500]'')')",
     "gpt2_complete: query row 0 (from 0), column 2 (prompt): id 500 is outside the vocabulary (size "
     "277)"),
]


@pytest.mark.parametrize("sql,msg", EXACT, ids=[e[0][:60] for e in EXACT])
def test_exact_messages(conn, sql, msg):
    assert err(conn, sql) == msg


def test_extreme_but_valid_numbers(conn):
    """Tiny and huge temperatures, huge top_k, extreme seeds: valid, bounded."""
    for args in ["1e-300, 0, 1", "1e300, 0, 1", "1, 2147483647, 1", "1, 1, 1e-300",
                 "0.7, 0, 0.5"]:
        for seed in ["-9223372036854775808", "9223372036854775807", "0"]:
            t = one(conn, f"SELECT gpt2_generate('ab', 5, {args}, {seed})")
            t.decode("utf-8")
    # 2**64 - 1 is not an SQLite INTEGER (it reads as REAL): an error, not a wrap
    assert "argument 6 (seed) = 1.8446744073709552e+19 is out of range" in err(
        conn, "SELECT gpt2_generate('ab', 8, 1.0, 0, 1, 18446744073709551615)")
    rows = conn.execute("SELECT i FROM gpt2_stream('ab', 16, 1e300, 0, 1.0, 1)").fetchall()
    assert 1 <= len(rows) <= 16


# ---------------------------------------------------------------------------
# invalid UTF-8, 10 MB texts, out-of-range ids


def test_invalid_utf8_in_and_out(conn):
    # tokenize: each byte that is not part of a valid character is a piece of its own
    ids = json.loads(one(conn, "SELECT gpt2_tokenize(CAST(x'61ff62c3' AS TEXT))"))
    assert len(ids) == 4
    # the ids decode back to the bytes, invalid ones as U+FFFD
    assert one(conn, "SELECT gpt2_detokenize(?)", json.dumps(ids)).decode() == "a\ufffdb\ufffd"
    # every text result is valid UTF-8, whatever the prompt
    for p in ["CAST(x'ff' AS TEXT)", "CAST(x'e282' AS TEXT)", "CAST(x'00' AS TEXT)"]:
        one(conn, f"SELECT gpt2_generate({p}, 8, 1.0, 0, 1, 3)").decode("utf-8")
        for (tok,) in conn.execute(f"SELECT token FROM gpt2_stream({p}, 8, 1.0, 0, 1, 3)"):
            tok.decode("utf-8")
    # error messages that quote invalid input are valid UTF-8 (U+FFFD)
    m = err(conn, "SELECT gpt2_load(CAST(x'2f6e6fff' AS TEXT))")
    assert m == "gpt2_load: cannot open model directory '/no\ufffd': No such file or directory"
    m = err(conn, "SELECT gpt2_use(CAST(x'ff' AS TEXT))")
    assert m == "gpt2_use: no model named '\ufffd' (loaded: default)"
    m = err(conn, "SELECT gpt2_set(CAST(x'ff' AS TEXT), 1)")
    assert m.startswith("gpt2_set: unknown setting '\ufffd'")
    # a name cut at 64 / 100 bytes in a message: the cut character becomes U+FFFD
    m = err(conn, "SELECT gpt2_set(?, 1)", "a" + "\u00e9" * 100)
    assert m.startswith("gpt2_set: unknown setting 'a" + "\u00e9" * 31 + "\ufffd'"), m
    m = err(conn, "SELECT gpt2_use(?)", "a" + "\u00e9" * 100)
    assert m.startswith("gpt2_use: no model named 'a" + "\u00e9" * 49 + "\ufffd'"), m
    alive(conn)


def test_detokenize_splits_characters_as_documented(conn):
    """Ids whose bytes cut a character: U+FFFD, as Hugging Face's decode."""
    e_acute = json.loads(one(conn, "SELECT gpt2_tokenize('\u00e9')"))
    assert len(e_acute) == 2  # the micro vocabulary has no token for it
    assert one(conn, "SELECT gpt2_detokenize(?)", json.dumps(e_acute[:1])).decode() == "\ufffd"
    assert one(conn, "SELECT gpt2_detokenize(?)", json.dumps(e_acute)).decode() == "\u00e9"


def test_ten_megabyte_texts(conn):
    big = "ab " * (BIG // 3)
    assert one(conn, "SELECT gpt2_token_count(?)", big) > 0
    assert one(conn, "SELECT length(gpt2_tokenize(?)) > 0", "x" * BIG) == 1
    msg = err(conn, "SELECT gpt2_generate(?)", big)
    assert msg.startswith("gpt2_generate: argument 1 (prompt): prompt is ") and \
        "longer than the context (16)" in msg
    assert "longer than the context (16)" in err(conn, "SELECT gpt2_logits(?)", big)
    assert "longer than the context (16)" in err(
        conn, "SELECT * FROM gpt2_stream(?)", big)
    conn.execute("CREATE TEMP TABLE big(k, p)")
    conn.execute("INSERT INTO big VALUES (1, 'ok'), (2, ?)", (big,))
    assert err(conn, "SELECT * FROM gpt2_complete('SELECT k, p FROM big', 2)").startswith(
        "gpt2_complete: query row 1 (from 0), column 2 (prompt): prompt is ")
    conn.execute("DROP TABLE big")
    # ids: a 10 MB JSON array, then one out-of-range id at its end
    ids = "[" + ",".join(["65"] * (BIG // 3)) + "]"
    assert one(conn, "SELECT length(gpt2_detokenize(?))", ids) == BIG // 3
    assert "id 99999 is outside" in err(conn, "SELECT gpt2_detokenize(?)", ids[:-1] + ",99999]")
    assert "longer than the context" in err(conn, "SELECT gpt2_logits(json(?))", ids)
    # names and paths: errors quote them cut, not whole
    for sql in ["SELECT gpt2_use(?)", "SELECT gpt2_set(?, 1)", "SELECT gpt2_load(?)",
                "SELECT gpt2_load('.', ?)"]:
        assert len(err(conn, sql, "n" * BIG)) < 1000, sql
    assert one(conn, "SELECT gpt2_unload(?)", "n" * BIG) == 0
    # a 10 MB query for gpt2_complete
    q = "SELECT 1, 'a' " + " " * BIG
    assert one(conn, "SELECT count(*) FROM gpt2_complete(?, 2)", q) == 1
    alive(conn)


def test_out_of_range_ids_everywhere(conn):
    for bad in ["[-1]", f"[{V}]", "[2147483647]", "[2147483648]", "[-2147483649]",
                "[9223372036854775807]", "[1e3]", "[true]", "[null]", "[[1]]", "[1,]", "[", ""]:
        for sql in ["SELECT gpt2_detokenize(?)", "SELECT gpt2_logits(json(?))",
                    "SELECT gpt2_generate(json(?), 2)", "SELECT * FROM gpt2_stream(json(?), 2)",
                    "SELECT * FROM gpt2_complete('SELECT 1, json(?1)', 2)"]:
            if "json(?)" in sql and bad in ("[1,]", "[", ""):
                continue  # SQLite's json() rejects these itself
            if "complete" in sql:
                kind, v = call(conn, sql.replace("?1", "''" + bad + "''"))
            else:
                kind, v = call(conn, sql, bad)
            assert kind == "err", (sql, bad, v)
            assert v.startswith(sql.split("(")[0].split()[-1] + ":"), (sql, bad, v)
    alive(conn)


def test_empty_prompts(conn):
    """Documented: an empty prompt starts from the eos token."""
    a = one(conn, "SELECT gpt2_generate('', 4)")
    assert a == one(conn, "SELECT gpt2_generate(json('[]'), 4)")
    assert a == one(conn, f"SELECT gpt2_generate(json('[{V - 1}]'), 4)")
    assert len(one(conn, "SELECT gpt2_logits('')")) == 4 * V
    assert one(conn, "SELECT gpt2_tokenize('')") == b"[]"
    assert one(conn, "SELECT gpt2_token_count('')") == 0
    assert one(conn, "SELECT gpt2_detokenize('[]')") == b""


def test_generation_never_exceeds_the_context(conn):
    # a prompt of n tokens yields at most P - n + 1 (the last is never fed)
    ids = json.dumps(list(range(1, P)))  # P - 1 tokens: one fed, one more picked
    assert len(conn.execute("SELECT * FROM gpt2_stream(json(?), 16)", (ids,)).fetchall()) <= 2
    ids = json.dumps(list(range(1, P + 1)))  # exactly full: one token, from position P - 1
    rows = conn.execute("SELECT token FROM gpt2_stream(json(?), 16)", (ids,)).fetchall()
    assert len(rows) == 1
    assert one(conn, "SELECT gpt2_generate(json(?), 16)", ids) == rows[0][0]


# ---------------------------------------------------------------------------
# state misuse


def test_model_state_misuse(micro):
    c = connect()
    try:
        assert "no model loaded" in err(c, "SELECT gpt2_generate('a')")
        assert one(c, "SELECT gpt2_info()") is None
        assert one(c, "SELECT gpt2_unload('default')") == 0
        c.execute("SELECT gpt2_load(?), gpt2_load(?, 'tok')", (micro[0], micro[1]))
        assert "holds only a tokenizer" in err(c, "SELECT gpt2_generate('a')")
        assert "holds only a tokenizer" in err(c, "SELECT * FROM gpt2_stream('a')")
        assert json.loads(one(c, "SELECT gpt2_tokenize('ab')"))  # the tokenizer works
        assert "holds only a tokenizer" in err(c, "SELECT gpt2_logits(json('[300]'))")
        assert "id 300 is outside the vocabulary (size 277)" in err(
            c, "SELECT gpt2_detokenize('[300]')")
        c.execute("SELECT gpt2_use('default')")
        # unload the model a running stream uses: the stream finishes on it
        cur = c.execute("SELECT token_id FROM gpt2_stream('ab', 10, 1.0, 0, 1, 4)")
        first = cur.fetchone()
        assert one(c, "SELECT gpt2_unload('default')") == 1
        rest = cur.fetchall()
        assert first is not None and len(rest) >= 0
        assert "no model is current (loaded: tok)" in err(c, "SELECT gpt2_generate('a')")
        assert one(c, "SELECT count(*) FROM gpt2_models") == 1
        # DIRECTONLY: not from triggers or views
        c.execute("CREATE TABLE t(x)")
        c.execute("CREATE VIEW v AS SELECT gpt2_set('prefix_reuse', 0) AS s")
        assert "unsafe use of gpt2_set()" in err(c, "SELECT * FROM v")
        c.execute(f"CREATE TRIGGER tr AFTER INSERT ON t BEGIN SELECT gpt2_load('{micro[0]}'); END")
        assert "unsafe use of gpt2_load()" in err(c, "INSERT INTO t VALUES (1)")
    finally:
        c.close()


def test_complete_query_misuse(conn):
    for q, needle in [("", "is empty"), ("   ;  ", "is empty"), ("SELECT 1", "two columns"),
                      ("SELECT 1, 2, 3", "two columns"), ("SELECT 1, 'a'; SELECT 2, 'b'",
                                                          "single statement"),
                      ("CREATE TABLE z(a)", "read-only"), ("DELETE FROM nosuch", "no such table"),
                      ("PRAGMA user_version = 3", "read-only"), ("SELECT 1,", "incomplete input"),
                      ("SELECT * FROM gpt2_complete('SELECT 1')", "two columns")]:
        assert needle in err(conn, "SELECT * FROM gpt2_complete(?)", q), q
    # recursion: a query that itself completes (bounded by the inner LIMIT)
    n = one(conn, "SELECT count(*) FROM gpt2_complete('SELECT key, completion FROM "
                  "gpt2_complete(''SELECT 1, ''''ab'''''', 2)', 2)")
    assert n == 1
    alive(conn)


def test_complete_query_with_side_effects(micro):
    """gpt2_complete runs its query between rows: the query may unload, replace
    or use the model the cursor generates with (it holds a reference: this was
    a use-after-free), change settings, or generate itself."""
    c = connect()
    try:
        c.execute("SELECT gpt2_load(?)", (micro[0],))
        want = c.execute("SELECT gpt2_generate('1', 3)").fetchone()[0]
        rows = c.execute("SELECT key, completion FROM gpt2_complete("
                         "'SELECT 1, CAST(gpt2_unload(''default'') AS TEXT)', 3)").fetchall()
        assert rows == [(1, want)]
        assert "no model loaded" in err(c, "SELECT gpt2_generate('a')")
        c.execute("SELECT gpt2_load(?)", (micro[0],))
        rows = c.execute("SELECT key, completion FROM gpt2_complete('SELECT value, "
                         "CAST(gpt2_unload(''default'') AS TEXT) FROM json_each(''[1,2,3]'')', "
                         "3, 0.0, 0, 1.0, NULL, 1)").fetchall()
        assert sorted(r[0] for r in rows) == [1, 2, 3]  # rows 2 and 3 prompt '0'
        c.execute("SELECT gpt2_load(?)", (micro[0],))
        c.execute("SELECT gpt2_load(?, 'tok')", (micro[1],))
        c.execute("SELECT gpt2_use('default')")
        rows = c.execute(
            "SELECT key, completion FROM gpt2_complete('SELECT 1, gpt2_generate(''ab'', 2) "
            "UNION ALL SELECT 2, (SELECT group_concat(token, '''') FROM gpt2_stream(''x'', 2)) "
            "UNION ALL SELECT 3, CAST(gpt2_set(''max_tokens_limit'', 2) AS TEXT) "
            "UNION ALL SELECT 4, json_extract(gpt2_use(''tok''), ''$.name'')', 3)").fetchall()
        assert [r[0] for r in sorted(rows)] == [1, 2, 3, 4]
        assert json.loads(c.execute("SELECT gpt2_info()").fetchone()[0])["name"] == "tok"
    finally:
        c.close()
