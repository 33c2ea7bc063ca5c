"""The tokenizer through SQL (gpt2_load on a vocab-only directory,
gpt2_tokenize, gpt2_detokenize, gpt2_token_count).

Exactness is differential: against tests/tokref.py (OpenAI's encoder.py
algorithm on python3-regex) on >= 1 MB of real text from this machine and on
seeded random strings that mix many scripts and every white-space character,
and against js-tiktoken (an independent implementation) on the same texts
minus those where JavaScript's \\s differs (U+0085, U+FEFF, U+180E;
docs/formats.md, "Tokenizer"). Plus the documented edge rules (invalid UTF-8,
special tokens, unknown bytes), decoding with U+FFFD, and every load error.
"""
import glob
import gzip
import json
import os
import random
import sqlite3
import struct
import subprocess
import unicodedata

import pytest

from conftest import ROOT, connect, one, err
import tokref

# --- helpers -------------------------------------------------------------------


def tokenize(conn, text):
    """Ids for a str, or for raw bytes passed as TEXT (may be invalid UTF-8)."""
    if isinstance(text, bytes):
        return json.loads(one(conn, "SELECT gpt2_tokenize(CAST(? AS TEXT))", text))
    return json.loads(one(conn, "SELECT gpt2_tokenize(?)", text))


def detokenize(conn, ids):
    return one(conn, "SELECT gpt2_detokenize(?)", json.dumps(ids))


def detokenize_bytes(conn, ids):
    return one(conn, "SELECT CAST(gpt2_detokenize(?) AS BLOB)", json.dumps(ids))


@pytest.fixture(scope="module")
def gdb(vocab_dir):
    """One connection with GPT-2's real vocabulary loaded."""
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (vocab_dir,))
    yield conn
    conn.close()


@pytest.fixture(scope="module")
def ref(vocab_dir):
    return tokref.Encoder(vocab_dir)


def write_vocab(d, vocab, merges, version=True, files=None):
    """A tokenizer directory: vocab {mapped: id}, merges [(left, right)] or raw text."""
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        f.write(vocab if isinstance(vocab, str) else json.dumps(vocab))
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8", newline="") as f:
        if isinstance(merges, str):
            f.write(merges)
        else:
            f.write(("#version: 0.2\n" if version else "") +
                    "".join("%s %s\n" % m for m in merges))
    for name, content in (files or {}).items():
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
    return str(d)


# --- texts ---------------------------------------------------------------------

# U+0085 .. U+3000 are White_Space; U+180E, U+200B, U+FEFF and U+001C..U+001F
# are not (but some engines think so).
WHITESPACE = ("\t\n\v\f\r \x85\xa0\u1680\u180e"
              + "".join(chr(c) for c in range(0x2000, 0x200C))
              + "\u2028\u2029\u202f\u205f\u3000\ufeff\x1c\x1d\x1e\x1f")
CONTRACTIONS = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "\u2019s", "'", "''",
                "'x", "'sa"]


def _span(a, b, skip=()):
    return [chr(c) for c in range(a, b + 1) if c not in skip]


# Code points assigned long ago (Unicode <= 6.0), so that PCRE2 (Unicode 14)
# and python3-regex (Unicode 15) agree on their categories.
SCRIPTS = {
    "latin": list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    + _span(0xC0, 0xFF, (0xD7, 0xF7)) + _span(0x100, 0x17F),
    "greek": _span(0x391, 0x3A9, (0x3A2,)) + _span(0x3B1, 0x3C9),
    "cyrillic": _span(0x410, 0x44F),
    "arabic": _span(0x627, 0x63A) + _span(0x641, 0x64A),
    "hebrew": _span(0x5D0, 0x5EA),
    "devanagari": _span(0x905, 0x939),
    "thai": _span(0xE01, 0xE2E),
    "cjk": _span(0x4E00, 0x4FFF) + _span(0x3041, 0x3093) + _span(0x30A1, 0x30F6),
    "hangul": _span(0xAC00, 0xAFFF),
}
MARKS = (_span(0x300, 0x36F) + _span(0x64B, 0x652) + _span(0x5B0, 0x5B9)
         + _span(0x93E, 0x94D) + ["\u0e31"] + _span(0xE34, 0xE3A))
DIGITS = (list("0123456789") + _span(0x660, 0x669) + _span(0x966, 0x96F) + _span(0xE50, 0xE59)
          + _span(0xFF10, 0xFF19) + list("\u00b2\u00b3\u00b9\u00bc\u00bd\u00be")
          + _span(0x2160, 0x2182) + _span(0x2460, 0x2473))
PUNCT = list("!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~") + list(
    "\u00ab\u00bb\u201c\u201d\u2018\u2014\u2013\u2026\u00bf\u00a1\u2022\u00b7\u00a7\u00b6"
    "\u20ac\u00a3\u00a5\u00a9\u00ae\u2122\u00b0\u00b1\u00d7\u00f7\u2211\u221a\u221e\u2248"
    "\u2260\u2264\u2265\u2190\u2192\u200d\ufe0f\x00\x7f")
EMOJI = _span(0x1F600, 0x1F64F) + [
    "\U0001F44D\U0001F3FD", "\U0001F44B\U0001F3FB", "\U0001F469\U0001F3FF\u200d\U0001F4BB",
    "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466", "\u2764\ufe0f",
    "\U0001F3F3\ufe0f\u200d\U0001F308", "\U0001F1EB\U0001F1F7", "\u270C\U0001F3FE"]


def random_segment(rnd):
    kind = rnd.choice(["word", "word", "word", "digits", "space", "ws", "contraction", "punct",
                       "emoji", "marks", "long"])
    if kind == "word":
        pool = SCRIPTS[rnd.choice(list(SCRIPTS))]
        w = "".join(rnd.choice(pool) for _ in range(rnd.randint(1, 8)))
        if rnd.random() < 0.2:
            i = rnd.randint(0, len(w))
            w = w[:i] + rnd.choice(MARKS) + w[i:]
        return w
    if kind == "digits":
        return "".join(rnd.choice(DIGITS) for _ in range(rnd.randint(1, 6)))
    if kind == "space":
        return "".join(rnd.choice(" \t\n\r ") for _ in range(rnd.randint(1, 6)))
    if kind == "ws":
        return "".join(rnd.choice(WHITESPACE) for _ in range(rnd.randint(1, 3)))
    if kind == "contraction":
        return rnd.choice(CONTRACTIONS)
    if kind == "punct":
        return "".join(rnd.choice(PUNCT) for _ in range(rnd.randint(1, 4)))
    if kind == "emoji":
        return "".join(rnd.choice(EMOJI) for _ in range(rnd.randint(1, 3)))
    if kind == "marks":
        return "".join(rnd.choice(MARKS) for _ in range(rnd.randint(1, 3)))
    # a long piece (129..300 bytes) takes the heap path of the BPE
    pool = rnd.choice([SCRIPTS["latin"][:26], SCRIPTS["cjk"], [" "], ["-", "="], DIGITS[:10],
                       SCRIPTS["devanagari"] + MARKS[-20:]])
    size, out = rnd.randint(129, 300), ""
    while len(out.encode()) < size:
        out += rnd.choice(pool)
    return out


def random_text(rnd):
    parts = []
    for _ in range(rnd.randint(1, 12)):
        parts.append(random_segment(rnd))
        parts.append(rnd.choice([" ", " ", "", "\n", rnd.choice(WHITESPACE)]))
    return "".join(parts)


def mixed_texts():
    """>= 1,000 seeded random strings, plus every white-space character next to
    letters, digits and contractions."""
    texts = []
    for ws in WHITESPACE:
        texts += ["a%sb" % ws, "%s's" % ws, "it%s'll" % ws, "x%s%sy" % (ws, ws), ws, ws * 3,
                  " %s" % ws, "%s 1" % ws, "\u05e9%s\u05dc" % ws, "he%s%s's\n" % (ws, ws),
                  "%sHello" % ws, "end%s" % ws]
    rnd = random.Random(20240601)
    texts += [random_text(rnd) for _ in range(1200)]
    return texts


def corpus():
    """>= 1 MB of varied real text found on the machine, as (name, bytes)."""
    docs, budget = [], {"licenses": 400_000, "man": 450_000, "include": 350_000, "doc": 200_000}

    def add(kind, name, data):
        if budget[kind] > 0 and data:
            docs.append((name, data))
            budget[kind] -= len(data)

    for p in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(p):
            with open(p, "rb") as f:
                add("licenses", p, f.read())
    for p in sorted(glob.glob("/usr/share/man/man[1-8]/*.gz"))[::7]:
        with gzip.open(p) as f:
            add("man", p, f.read())
    for p in sorted(glob.glob("/usr/include/*.h")):
        with open(p, "rb") as f:
            add("include", p, f.read())
    for p in sorted(glob.glob("/usr/share/doc/*/copyright"))[::3]:
        with open(p, "rb") as f:
            add("doc", p, f.read())
    return docs


def is_utf8(b):
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# --- GPT-2's real vocabulary ----------------------------------------------------

KNOWN = [("Hello world", [15496, 995]), (" Hello world", [18435, 995]),
         ("hello world", [31373, 995]), ("0", [15]), ("00", [405]), ("000", [830]),
         ("0000", [2388]), ("000000000", [10535, 830]), ("<|endoftext|>", [50256]),
         ("a<|endoftext|>b", [64, 50256, 65]), ("", [])]


@pytest.mark.parametrize("text,ids", KNOWN)
def test_known_ids(gdb, text, ids):
    assert tokenize(gdb, text) == ids
    assert one(gdb, "SELECT gpt2_token_count(?)", text) == len(ids)
    assert detokenize(gdb, ids) == text


def test_load_summary_and_nulls(gdb, vocab_dir):
    info = json.loads(one(gdb, "SELECT gpt2_load(?)", vocab_dir))
    assert info["vocab_size"] == 50257
    assert one(gdb, "SELECT gpt2_tokenize(NULL)") is None
    assert one(gdb, "SELECT gpt2_detokenize(NULL)") is None
    assert one(gdb, "SELECT gpt2_token_count(NULL)") is None


def test_no_model_loaded(db):
    for sql in ["SELECT gpt2_tokenize('a')", "SELECT gpt2_detokenize('[1]')",
                "SELECT gpt2_token_count('a')"]:
        assert "gpt2_load" in err(db, sql)


def test_whitespace_engines_differ(gdb, ref, gpt2_cache):
    """\\u0085 and \\ufeff before a contraction: the original algorithm and
    js-tiktoken disagree (docs/formats.md, "Tokenizer"); we follow the original."""
    texts = ["\u0085's", "\ufeff's"]
    ours = [tokenize(gdb, t) for t in texts]
    assert ours == [ref.encode(t) for t in texts]
    js = tokref.js_tiktoken_encode(gpt2_cache, texts)
    assert all(o != j for o, j in zip(ours, js))


def test_corpus_matches_reference(gdb, ref, gpt2_cache):
    docs = corpus()
    assert sum(len(d) for _, d in docs) >= 1_000_000
    valid = []
    for name, data in docs:
        ids = tokenize(gdb, data)
        assert ids == ref.encode(data), name
        assert one(gdb, "SELECT gpt2_token_count(CAST(? AS TEXT))", data) == len(ids)
        if is_utf8(data):
            text = data.decode("utf-8")
            assert detokenize(gdb, ids) == text, name
            if not any(c in text for c in "\x85\ufeff\u180e"):
                valid.append((name, text, ids))
    assert sum(len(t) for _, t, _ in valid) >= 800_000
    js = tokref.js_tiktoken_encode(gpt2_cache, [t for _, t, _ in valid])
    for (name, _, ids), j in zip(valid, js):
        assert ids == j, name


def test_mixed_scripts_match_references(gdb, ref, gpt2_cache):
    texts = mixed_texts()
    assert len(texts) >= 1000
    ours = [tokenize(gdb, t) for t in texts]
    for t, ids in zip(texts, ours):
        assert ids == ref.encode(t), repr(t)
        assert detokenize(gdb, ids) == t, repr(t)
    joined = "".join(texts)  # one long text: the per-call memo of pieces is used
    assert len(joined) > 100_000 and tokenize(gdb, joined) == ref.encode(joined)
    plain = [(t, ids) for t, ids in zip(texts, ours)
             if not any(c in t for c in "\x85\ufeff\u180e")]
    assert len(plain) >= 900
    js = tokref.js_tiktoken_encode(gpt2_cache, [t for t, _ in plain])
    for (t, ids), j in zip(plain, js):
        assert ids == j, repr(t)


def test_every_token_alone(gdb, ref):
    """Each of the 50,257 tokens' bytes as a text of its own (a whole piece
    equal to a token is the BPE fast path)."""
    for i in range(50257):
        data = ref.by_id[i]
        assert tokenize(gdb, data) == ref.encode(data), (i, data)


def test_memo_compares_whole_pieces(gdb, ref):
    """Long texts memoize pieces by a 32-bit hash: these two pieces (same
    length and first 8 bytes) collide under ext/tok_private.h's hash_bytes, so
    a memo that trusted the hash would repeat the first one's ids."""
    text = " memorizeeyvaunx memorizestedtjt" * 200
    assert len(text) > 4096
    assert tokenize(gdb, text) == ref.encode(text)


def test_invalid_utf8_input(gdb, ref):
    """Each byte that is not part of a valid character is a piece of its own
    (its byte token); the valid runs around it are tokenized separately."""
    assert tokenize(gdb, b"\xffA") == [187, 32]
    assert tokenize(gdb, b"\xe2\x82 A") == ref.encode(b"\xe2\x82 A")
    assert tokenize(gdb, b"ab \xc3\x28 cd") == ref.encode(b"ab \xc3\x28 cd")
    # a run ends at the bad byte, so "  " before it is a run's end: \s+(?!\S)
    assert tokenize(gdb, b"x  \x80y") == ref.encode(b"x  \x80y")
    rnd = random.Random(7)
    alphabet = [b"a", b" ", b"'s", b"\xc3", b"\xa9", b"\xe2\x82", b"\xac", b"\xf0\x9f", b"\x98",
                b"\x80", b"\xff", b"\xed\xa0\x80", b"\xc0\xaf", b"1", b"\n", b"<|endoftext|>",
                "\u00e9".encode(), "\U0001F600".encode(), b"\xf4\x90\x80\x80"]
    for _ in range(600):
        data = b"".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 10)))
        ids = tokenize(gdb, data)
        assert ids == ref.encode(data), data
        assert detokenize_bytes(gdb, ids) == ref.decode(ids).encode("utf-8"), data


def test_detokenize_replacement_matches_python(gdb, ref):
    """U+FFFD for each maximal invalid subpart, as bytes.decode(errors='replace')."""
    rnd = random.Random(11)
    # ids 0..255 are GPT-2's single-byte tokens
    assert sorted(len(ref.by_id[i]) for i in range(256)) == [1] * 256
    for _ in range(1500):
        ids = [rnd.randrange(256) if rnd.random() < 0.85 else rnd.randrange(50257)
               for _ in range(rnd.randint(0, 10))]
        assert detokenize(gdb, ids) == ref.decode(ids), ids
    assert detokenize(gdb, [187]) == "\ufffd"


def test_detokenize_errors(gdb):
    assert "gpt2_detokenize" in err(gdb, "SELECT gpt2_detokenize('[1,')")
    assert "not an integer" in err(gdb, "SELECT gpt2_detokenize('[1.5]')")
    assert "not an integer" in err(gdb, "SELECT gpt2_detokenize('[\"a\"]')")
    assert "id 70000 is outside the vocabulary (size 50257)" in err(
        gdb, "SELECT gpt2_detokenize('[15496, 70000]')")
    assert "id -1 is outside the vocabulary (size 50257)" in err(
        gdb, "SELECT gpt2_detokenize('[-1]')")


# --- small vocabularies ---------------------------------------------------------

BYTES = tokref.BYTE_CHAR


def small_vocab(letters="abc", extra=()):
    vocab = {BYTES[ord(c)]: i for i, c in enumerate(letters)}
    for tok in extra:
        vocab[tok] = len(vocab)
    return vocab


def test_small_vocab_missing_bytes(tmp_path):
    """A byte without a token: the declared unknown token, or a clear error."""
    conn = connect()
    vocab = small_vocab("ab ", ["ab", "\u0120a", "<unk>"])
    merges = [("a", "b"), ("\u0120", "a")]
    d1 = write_vocab(tmp_path / "nounk", vocab, merges)
    conn.execute("SELECT gpt2_load(?)", (d1,))
    assert tokenize(conn, "ab a") == [3, 4]
    # "<unk>" is in the vocabulary but not declared: plain text, and '<' has no token
    assert "no token for byte 0x3C" in err(conn, "SELECT gpt2_tokenize('<unk>')")
    m = err(conn, "SELECT gpt2_tokenize('abz')")
    assert "no token for byte 0x7A and no unknown token declared" in m
    assert "no token for byte 0xC3 and no unknown token declared" in err(
        conn, "SELECT gpt2_tokenize('\u00e9')")
    for fname, content in [("tokenizer_config.json", {"unk_token": "<unk>"}),
                           ("special_tokens_map.json",
                            {"unk_token": {"content": "<unk>", "lstrip": False}})]:
        d2 = write_vocab(tmp_path / fname, vocab, merges, files={fname: content})
        conn.execute("SELECT gpt2_load(?)", (d2,))
        assert tokenize(conn, "abz") == [3, 5]
        assert tokenize(conn, "\u00e9 ab") == [5, 5, 2, 3]
        assert tokenize(conn, b"a\xff") == [0, 5]
        assert tokenize(conn, "a<unk>b") == [0, 5, 1]  # a declared token is special
    conn.close()


def test_declared_specials(tmp_path):
    vocab = small_vocab("abs/<>| ", ["</s>", "<s>", "<|endoftext|>", "<|end"])
    files = {"tokenizer_config.json": {"eos_token": {"content": "</s>"}, "bos_token": "<s>",
                                       "unk_token": "<|end", "pad_token": "<pad>"},
             "special_tokens_map.json": {"unk_token": None}}  # null: not declared here
    d = write_vocab(tmp_path / "s", vocab, [], files=files)
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (d,))
    assert tokenize(conn, "a</s>b<s>") == [0, 8, 1, 9]
    assert tokenize(conn, "<s>a</s>") == [9, 0, 8]  # leftmost first, whatever the kind
    assert tokenize(conn, "<|endoftext|>a") == [10, 0]  # the longest at one position
    assert tokenize(conn, "<|end|>") == [11, 6, 5]
    assert tokenize(conn, "<</s>>") == [4, 8, 5]
    assert tokenize(conn, "z") == [11]  # the unknown token
    assert detokenize(conn, [9, 0, 8]) == "<s>a</s>"
    conn.close()


def adversarial_vocab(seed):
    """Random merges over a few letters, listed in a random order: a merge may
    come before the merges that build its parts, so one-occurrence-at-a-time
    BPE or longest match would differ from encoder.py's rounds."""
    rnd = random.Random(seed)
    toks = list("abcd")
    merges = []
    while len(merges) < 70:
        x, y = rnd.choice(toks), rnd.choice(toks)
        if len(x) + len(y) > 12:
            continue
        merges.append((x, y))
        if x + y not in toks:
            toks.append(x + y)
    rnd.shuffle(merges)
    merges.append(merges[3])  # a repeated pair takes its last rank
    ids = [i for i in range(len(toks) + 1) if i != 1]
    rnd.shuffle(ids)
    vocab = {t: i for t, i in zip(toks, ids)}  # ids in random order; 1 is unused
    return vocab, merges


def test_bpe_rounds_any_vocabulary(tmp_path):
    conn = connect()
    rnd = random.Random(5)
    for seed in range(4):
        vocab, merges = adversarial_vocab(seed)
        d = write_vocab(tmp_path / str(seed), vocab, merges)
        ref = tokref.Encoder(d)
        conn.execute("SELECT gpt2_load(?)", (d,))
        texts = list(vocab)  # each token alone: the fast path must not take it blindly
        for _ in range(150):
            n = rnd.choice([rnd.randint(1, 12), rnd.randint(129, 400)])  # flat and heap paths
            texts.append("".join(rnd.choice("abcd") for _ in range(n)))
        for text in texts:
            assert tokenize(conn, text) == ref.encode(text), (seed, text)
        assert "id 1 is not used by the vocabulary" in err(conn, "SELECT gpt2_detokenize('[1]')")
    conn.close()


def test_merges_file_variants(tmp_path):
    """CRLF line ends, no #version line and trailing blank lines load the same."""
    vocab = small_vocab("ab ", ["ab", "\u0120ab"])
    conn = connect()
    for i, text in enumerate(["#version: 0.2\r\na b\r\n\u0120 ab\r\n", "a b\n\u0120 ab\n\n\n",
                              "a b\n\u0120 ab"]):
        d = write_vocab(tmp_path / str(i), vocab, text)
        conn.execute("SELECT gpt2_load(?)", (d,))
        assert tokenize(conn, "ab ab") == [3, 4]
    conn.close()


# --- load errors ----------------------------------------------------------------

OK_VOCAB = {"a": 0, "b": 1, "c": 2, "ab": 3}

BAD = [
    ("{", "a b\n", ["vocab.json", "invalid JSON", "line 1"]),
    ("[1, 2]", "a b\n", ["vocab.json", "expected a JSON object"]),
    ("{}", "", ["vocab.json", "empty"]),
    ('{"a": 0, "b": "1"}', "", ["vocab.json", 'key "b"', "integer"]),
    ('{"a": 0, "b": -1}', "", ["vocab.json", 'key "b"']),
    ('{"a": 0, "b": 1.5}', "", ["vocab.json", 'key "b"']),
    ('{"a": 0, "b": 10000001}', "", ["vocab.json", 'key "b"', "10000000"]),
    ('{"a": 0, "b": 1, "a": 2}', "", ["vocab.json", 'duplicate key "a"']),
    ('{"a": 0, "\\u0120the": 1, "\\u0120the": 2}', "", ["vocab.json", 'duplicate key "\u0120the"']),
    ('{"a": 0, "b": 0}', "", ["vocab.json", 'keys "a" and "b" both have id 0']),
    ('{"a": 0, "\u4e2d": 1}', "", ["vocab.json", 'key "\u4e2d"', "U+4E2D"]),
    ('{"a": 0, "a b": 1}', "", ["vocab.json", 'key "a b"', "U+0020"]),
    ('{"": 0}', "", ["vocab.json", "empty key"]),
    (OK_VOCAB, "#version: 0.2\na b\nc\n", ["merges.txt line 3", "two tokens"]),
    (OK_VOCAB, "a b c\n", ["merges.txt line 1", "two tokens"]),
    (OK_VOCAB, "a  b\n", ["merges.txt line 1", "two tokens"]),
    (OK_VOCAB, "a b\n b\n", ["merges.txt line 2", "two tokens"]),
    (OK_VOCAB, "a b\na z\n", ["merges.txt line 2", '"z" is not in the vocabulary']),
    (OK_VOCAB, "a b\nb c\n", ["merges.txt line 2", 'merged token "bc" is not in the vocabulary']),
    (OK_VOCAB, "a b\n\u4e2d b\n", ["merges.txt line 2", '"\u4e2d" is not in the vocabulary']),
    (OK_VOCAB, "a b\nb \x00\n", ["merges.txt line 2", "U+0000"]),
    (OK_VOCAB, "a b\n\nab c\n", ["merges.txt line 2", "blank line"]),
    # the first bad line is reported, whatever the kind of fault
    (OK_VOCAB, "a z\nb\n", ["merges.txt line 1", '"z"']),
]


@pytest.mark.parametrize("vocab,merges,needles", BAD)
def test_malformed_files(tmp_path, gdb, vocab, merges, needles):
    d = write_vocab(tmp_path / "bad", vocab, merges)
    m = err(gdb, "SELECT gpt2_load(?)", d)
    for needle in needles:
        assert needle in m, m
    assert tokenize(gdb, "Hello world") == [15496, 995]  # the previous one still works


def test_other_load_errors(tmp_path, gdb):
    d = write_vocab(tmp_path / "nomerges", OK_VOCAB, "")
    os.remove(os.path.join(d, "merges.txt"))
    assert "merges.txt" in err(gdb, "SELECT gpt2_load(?)", d)
    d = write_vocab(tmp_path / "big", OK_VOCAB, "a b\n")
    with open(os.path.join(d, "merges.txt"), "r+b") as f:
        f.truncate(65 << 20)  # sparse: costs no disk
    m = err(gdb, "SELECT gpt2_load(?)", d)
    assert "merges.txt" in m and "too large" in m
    d = write_vocab(tmp_path / "cfg", OK_VOCAB, "a b\n", files={"tokenizer_config.json": "{"})
    assert "tokenizer_config.json" in err(gdb, "SELECT gpt2_load(?)", d)
    d = write_vocab(tmp_path / "cfg2", OK_VOCAB, "a b\n",
                    files={"special_tokens_map.json": {"eos_token": 5}})
    m = err(gdb, "SELECT gpt2_load(?)", d)
    assert "special_tokens_map.json" in m and "eos_token" in m
    assert tokenize(gdb, "Hello world") == [15496, 995]


# --- UTF-8 helpers used when streaming (C level: no model needed) -----------------

HELPER = r"""
#include "utf8.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
/* stdin: records [u32 len][bytes][u32 nchunks][u32 chunk lengths...]
** stdout: [u32 len][sanitized][u32 complete_prefix][u32 len][streamed] */
static int rd(void *p, size_t n) { return fread(p, 1, n, stdin) == n; }
static void wr(const void *p, size_t n) { fwrite(p, 1, n, stdout); }
int main(void) {
  unsigned len, nc;
  while (rd(&len, 4)) {
    char *s = malloc(len + 1);
    if (!rd(s, len) || !rd(&nc, 4)) return 1;
    ByteBuf whole = {0}, out = {0}, pend = {0};
    utf8_append_sanitized(&whole, s, len);
    unsigned cp = (unsigned)utf8_complete_prefix(s, len), pos = 0;
    for (unsigned i = 0; i <= nc; i++) { /* as the generator streams tokens */
      unsigned k = len - pos;
      if (i < nc && !rd(&k, 4)) return 1;
      buf_append(&pend, s + pos, k);
      pos += k;
      size_t keep = i == nc ? pend.n : utf8_complete_prefix(pend.p, pend.n);
      utf8_append_sanitized(&out, pend.p, keep);
      memmove(pend.p, pend.p + keep, pend.n - keep);
      pend.n -= keep;
    }
    unsigned a = (unsigned)whole.n, b = (unsigned)out.n;
    wr(&a, 4); wr(whole.p, a); wr(&cp, 4); wr(&b, 4); wr(out.p, b);
    buf_free(&whole); buf_free(&out); buf_free(&pend); free(s);
  }
  return 0;
}
"""


def expected_prefix(s):
    """Hold back a final character that is cut but could still be completed."""
    for k in range(len(s) - 1, max(len(s) - 4, -1), -1):
        if s[k] & 0xC0 != 0x80:
            try:
                s[k:].decode("utf-8")
            except UnicodeDecodeError as e:
                if e.reason == "unexpected end of data":
                    return k
            return len(s)
    return len(s)


def test_utf8_helpers(tmp_path):
    exe = str(tmp_path / "utf8helper")
    with open(exe + ".c", "w") as f:
        f.write(HELPER)
    subprocess.run(["cc", "-std=c11", "-D_GNU_SOURCE", "-O1", "-I", os.path.join(ROOT, "ext"),
                    exe + ".c", os.path.join(ROOT, "ext", "utf8.c"),
                    os.path.join(ROOT, "ext", "common.c"), "-o", exe, "-ljansson"], check=True)
    rnd = random.Random(3)
    edge = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
            0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
    cases = [bytes([a]) for a in range(256)] + [bytes([a, b]) for a in range(256) for b in edge]
    cases += [bytes([a, b, c]) for a in edge for b in edge for c in edge]
    cases += [bytes(rnd.choice(edge) for _ in range(rnd.randint(4, 14))) for _ in range(4000)]
    cases += ["h\u00e9\u20ac\U0001F600".encode()[:k] for k in range(1, 11)]
    recs, chunks = [], []
    for c in cases:
        cuts = sorted(rnd.sample(range(1, len(c)), min(len(c) - 1, rnd.randint(0, 4))))
        parts = [b - a for a, b in zip([0] + cuts, cuts)]
        chunks.append(parts)
        recs.append(struct.pack("<I", len(c)) + c + struct.pack("<I", len(parts))
                    + struct.pack("<%dI" % len(parts), *parts))
    out = subprocess.run([exe], input=b"".join(recs), capture_output=True, check=True).stdout
    pos = 0
    for c in cases:
        (n,) = struct.unpack_from("<I", out, pos)
        whole = out[pos + 4:pos + 4 + n]
        pos += 4 + n
        prefix, m = struct.unpack_from("<II", out, pos)
        streamed = out[pos + 8:pos + 8 + m]
        pos += 8 + m
        expect = c.decode("utf-8", errors="replace").encode("utf-8")
        assert whole == expect, c
        assert prefix == expected_prefix(c), c
        assert streamed == expect, c  # streaming in pieces gives the same text
    assert pos == len(out)


# --- vocab.json edge cases: refused by the JSON parser (Jansson) or by the loader ----

VOCAB_BYTES_BAD = [
    (b'{"a": 0, "b\xff": 1}', ["vocab.json", "not valid UTF-8"]),
    (b'{"a": 0, "\xed\xa0\x80": 1}', ["vocab.json", "not valid UTF-8"]),  # a surrogate
    (b'{"a": 0, "b\\u0000c": 1}', ["vocab.json", "invalid JSON", "\\u0000"]),
    (b'{"a": 0, "b\x00c": 1}', ["vocab.json", "invalid JSON"]),
    (b'{"a": 0,\n "b": 1\x00, "c": 2}', ["vocab.json", "invalid JSON", "line 2", "NUL"]),
    (b'{"a": 0} x', ["vocab.json", "invalid JSON", "line 1", "end of file expected"]),
    (b'{"a": 0}\n{"b": 1}', ["vocab.json", "invalid JSON", "line 2"]),
    (b'\xef\xbb\xbf{"a": 0}', ["vocab.json", "invalid JSON"]),
    (b'{"a": 0,\n "b": }', ["vocab.json", "invalid JSON", "line 2"]),
    (b'{"a": 0, "b": [' + b'[' * 5000 + b']' * 5000 + b']}', ["vocab.json", "invalid JSON"]),
    (b'{"a": 0, "b": [1]}', ["vocab.json", 'key "b"', "integer"]),
    (b'{"a": 0, "b": null}', ["vocab.json", 'key "b"', "integer"]),
    (b'{"a": 0, "b": true}', ["vocab.json", 'key "b"', "integer"]),
    (b'{"a": 0, "b": 4294967296}', ["vocab.json", 'key "b"', "10000000"]),  # wraps in 32 bits
    (b'{"a": 0, "b": {"c": 1}}', ["vocab.json", 'key "b"', "integer"]),
    (b'{"a": 0, "b": 1e999}', ["vocab.json", "invalid JSON", "overflow"]),
    (b'{"a": 0, "b": 99999999999999999999}', ["vocab.json", "invalid JSON", "too big"]),
    (b'{"a": 0, "b": -0.5}', ["vocab.json", 'key "b"']),
    (b'{"a": 0, "b": 10000000.5}', ["vocab.json", 'key "b"']),
    (b'{"a": 0, "\\u0062": 1, "b": 2}', ["vocab.json", 'duplicate key "b"']),
    (b'{"a": 0, "\\u0100b\\u0200": 1}', ["vocab.json", "U+0200", "256"]),
    (b'{"a": 0, "\\ud800": 1}', ["vocab.json", "invalid JSON"]),  # a lone surrogate
    # escapes that decode to characters outside the mapping: refused naming them
    (b'{"a": 0, "\\b": 1}', ["vocab.json", "U+0008"]),
    (b'{"a": 0, "x\\t\\n": 1}', ["vocab.json", "U+0009"]),
    (b'{"a": 0, "\\ud83d\\ude00": 1}', ["vocab.json", "U+1F600"]),
    (b'{"a": 0, "\\uD83D\\uDE00": 1}', ["vocab.json", "U+1F600"]),
    (b'{"a": 0, "b": 1, "\xc4\xa0x": 2, "\\u0120x": 3}', ["vocab.json", 'duplicate key "\u0120x"']),
]


@pytest.mark.parametrize("data,needles", VOCAB_BYTES_BAD)
def test_malformed_vocab_bytes(tmp_path, gdb, data, needles):
    d = write_vocab(tmp_path / "bad", OK_VOCAB, "")
    with open(os.path.join(d, "vocab.json"), "wb") as f:
        f.write(data)
    m = err(gdb, "SELECT gpt2_load(?)", d)
    for needle in needles:
        assert needle in m, m
    m.encode("utf-8")  # the message itself is valid text
    assert tokenize(gdb, "Hello world") == [15496, 995]


def test_vocab_escaped_keys(tmp_path):
    """Every JSON escape form in a key decodes to the token it spells."""
    d = write_vocab(tmp_path / "esc", OK_VOCAB, "")
    with open(os.path.join(d, "vocab.json"), "wb") as f:
        f.write(b'{"a": 0, "\\"": 1, "\\\\": 2, "\\/": 3, "\\u0120": 4, "\\u0120\\u00E9": 5,'
                b' "\\u00c3\\u00a9": 6, "b": 7}')
    conn = connect()
    one(conn, "SELECT gpt2_load(?)", d)
    assert one(conn, "SELECT gpt2_detokenize('[1, 2, 3, 4, 0]')") == '"\\/ a'
    assert one(conn, "SELECT gpt2_detokenize('[6]')") == "\u00e9"  # the bytes C3 A9
    assert one(conn, "SELECT gpt2_detokenize('[5]')") == " \ufffd"  # 20 E9: E9 alone is invalid
    conn.close()


def test_vocab_ids_as_integral_numbers(tmp_path):
    """An integral number written as a real (1.0, 2e0) is an id, as in Python
    (1.0 == 1); keys may be escaped."""
    d = write_vocab(tmp_path / "ok", OK_VOCAB, "a b\n")
    with open(os.path.join(d, "vocab.json"), "wb") as f:
        f.write(b'{"a": 0, "b": 1.0, "c": 2e0, "ab": 3, "\\u0100": 10000000}')
    conn = connect()
    info = json.loads(one(conn, "SELECT gpt2_load(?)", d))
    assert info["vocab_size"] == 10000001
    assert tokenize(conn, "abc") == [3, 2]
    conn.close()
