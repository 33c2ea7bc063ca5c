"""Malformed checkpoints, beyond tests/test_model.py's list: every truncation
point of each file, header lengths at the edges, JSON that is deep, huge or
trailed by junk, shapes that overflow 64 bits, config.json with absurd or
ill-typed sizes, other model types, and files that are missing, are
directories or FIFOs. Each failed gpt2_load names the file and the problem,
leaves the previously loaded model in place and working, and frees what it
allocated (the last part is checked when `make test-sanitize` runs this file
under LeakSanitizer).

Truncation: model.safetensors is cut at every byte through the header
validator (st_open, called with ctypes: microseconds a point) and, through
gpt2_load, at every byte of the length field and the JSON header, at each
tensor boundary and its neighbours and at a stride in the data (every cut in
the data fails the same size check, so the full loader adds nothing there).
config.json, vocab.json and merges.txt are cut at every byte through
gpt2_load.
"""
import ctypes
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import StFile, connect, internal_lib
from make_checkpoint import tiny_vocab, write_checkpoint, write_vocab

MICRO = dict(n_layer=1, n_head=2, n_embd=8, n_positions=16)


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    vd = str(tmp_path_factory.mktemp("vocab"))
    write_vocab(vd, *tiny_vocab(20))
    d = str(tmp_path_factory.mktemp("micro"))
    write_checkpoint(d, vocab_dir=vd, seed=1, return_weights=False, **MICRO)
    return d


@pytest.fixture(scope="module")
def conn(micro):
    """A connection whose current model is the intact micro checkpoint."""
    c = connect()
    c.execute("SELECT gpt2_load(?)", (micro,))
    yield c
    c.close()


@pytest.fixture(scope="module")
def reference(conn):
    return logits(conn)


def logits(c):
    return np.frombuffer(c.execute("SELECT gpt2_logits(json('[1, 2, 3]'))").fetchone()[0], "<f4")


def load_error(c, d, name="other"):
    """gpt2_load(d) must fail; returns its message."""
    with pytest.raises(sqlite3.Error) as e:
        c.execute("SELECT gpt2_load(?, ?)", (d, name)).fetchall()
    return str(e.value)


def still_fine(c, ref, micro):
    """The earlier model is current and computes what it did."""
    info = json.loads(c.execute("SELECT gpt2_info()").fetchone()[0])
    assert info["path"] == os.path.realpath(micro) and info["name"] == "default"
    np.testing.assert_allclose(logits(c), ref, rtol=0, atol=1e-5)
    assert c.execute("SELECT count(*) FROM gpt2_models").fetchone()[0] == 1


def copy(micro, tmp_path, name="bad"):
    d = str(tmp_path / name)
    shutil.copytree(micro, d)
    return d


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------
# truncation at every point


class StApi:
    """st_open / st_close of build/gpt2_internal.so (the numeric core has no SQLite types)."""

    def __init__(self):
        lib = internal_lib()
        self.open = lib.st_open
        self.open.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.POINTER(StFile),
                              ctypes.c_char_p, ctypes.c_size_t]
        self.open.restype = ctypes.c_int
        self.close = lib.st_close
        self.close.argtypes = [ctypes.POINTER(StFile)]
        self.file = StFile()
        self.err = ctypes.create_string_buffer(512)

    def check(self, path):
        rc = self.open(path.encode(), b"model.safetensors", self.file, self.err, 512)
        self.close(self.file)
        return rc, self.err.value.decode("utf-8")


def test_safetensors_truncated_at_every_byte(micro, tmp_path):
    st = read(os.path.join(micro, "model.safetensors"))
    api = StApi()
    p = str(tmp_path / "model.safetensors")
    for k in range(len(st)):
        write(p, st[:k])
        rc, msg = api.check(p)
        assert rc == 1, (k, rc)  # GPT2_ERROR
        assert msg.startswith("model.safetensors: ") or msg.startswith(p), (k, msg)
        if k >= 8:
            assert "truncated" in msg or "past the end" in msg or "not valid JSON" in msg or \
                "JSON object" in msg, (k, msg)
    write(p, st)
    assert api.check(p)[0] == 0


def truncation_points(st):
    n = struct.unpack("<Q", st[:8])[0]
    header = json.loads(st[8:8 + n])
    pts = set(range(0, 8 + n + 2))  # the length field, every byte of the header
    for k, v in header.items():
        if k != "__metadata__":
            for off in v["data_offsets"]:
                for d in (-1, 0, 1):
                    pts.add(8 + n + off + d)
    pts.update(range(8 + n, len(st), 97))
    return sorted(p for p in pts if 0 <= p < len(st))


def test_safetensors_truncated_through_gpt2_load(conn, reference, micro, tmp_path):
    d = copy(micro, tmp_path)
    st = read(os.path.join(micro, "model.safetensors"))
    for k in truncation_points(st):
        write(os.path.join(d, "model.safetensors"), st[:k])
        msg = load_error(conn, d)
        assert msg.startswith("gpt2_load: ") and "model.safetensors" in msg, (k, msg)
    still_fine(conn, reference, micro)


@pytest.mark.parametrize("name", ["config.json", "vocab.json", "merges.txt"])
def test_text_files_truncated_at_every_byte(conn, reference, micro, tmp_path, name):
    d = copy(micro, tmp_path)
    full = read(os.path.join(micro, name))
    loaded = 0
    for k in range(len(full)):
        write(os.path.join(d, name), full[:k])
        try:
            conn.execute("SELECT gpt2_load(?, 'other')", (d,)).fetchall()
        except sqlite3.Error as e:
            msg = str(e)
            assert msg.startswith("gpt2_load: ") and name in msg, (k, msg)
            continue
        # a cut that leaves a valid file (merges.txt at a line end, JSON before
        # trailing white space) loads: then it is a working model
        loaded += 1
        assert conn.execute("SELECT gpt2_generate('ab', 2)").fetchone()[0] is not None
        conn.execute("SELECT gpt2_unload('other'), gpt2_use('default')")
    if name != "merges.txt":
        assert loaded <= 2  # at most the cuts inside trailing white space
    still_fine(conn, reference, micro)


# ---------------------------------------------------------------------------
# safetensors headers


def header_and_data(micro):
    st = read(os.path.join(micro, "model.safetensors"))
    n = struct.unpack("<Q", st[:8])[0]
    return json.loads(st[8:8 + n]), st[8 + n:]


def put_st(d, header, data, n=None):
    hb = header if isinstance(header, bytes) else json.dumps(header).encode()
    write(os.path.join(d, "model.safetensors"),
          struct.pack("<Q", len(hb) if n is None else n) + hb + data)


def edit(fn):
    def go(d, h, data):
        h = json.loads(json.dumps(h))
        data = fn(h, data) or data
        put_st(d, h, data)
    return go


def raw(blob, n=None, data=b""):
    return lambda d, h, _: put_st(d, blob, data, n)


def set_entry(name, **kv):
    def fn(h, data):
        h[name].update(kv)
    return fn


ST_CASES = [
    ("length_u64_max", raw(b"{}", n=2**64 - 1), ["header length 18446744073709551615 exceeds"]),
    ("length_just_over_limit", raw(b"{}", n=100_000_001), ["exceeds the limit of 100000000"]),
    ("length_past_eof_by_one", raw(b"{}", n=3), ["runs past the end of the file"]),
    ("length_zero", raw(b"", n=0), ["header is not a JSON object"]),
    ("only_length", lambda d, h, data: write(os.path.join(d, "model.safetensors"),
                                             struct.pack("<Q", 2)), ["past the end"]),
    ("empty_file", lambda d, h, data: write(os.path.join(d, "model.safetensors"), b""),
     ["truncated (0 bytes"]),
    ("empty_object", raw(b"{}"), ["missing tensor wte.weight"]),
    ("trailing_junk", raw(b'{"__metadata__": {}} x'), ["not valid JSON"]),
    ("nul_in_header", raw(b'{"a\x00": 1}'), ["not valid JSON"]),
    ("deep_nesting", raw(b"{" + b'"a":[' * 3000 + b"]" * 3000 + b"}"), ["not valid JSON"]),
    ("huge_integer", edit(set_entry("wpe.weight", shape=[2**64, 8])),
     ["model.safetensors: header is not valid JSON"]),
    ("shape_overflows_u64", edit(set_entry("wpe.weight", shape=[2**32, 2**32, 2])),
     ["tensor wpe.weight: shape product overflows"]),
    ("bytes_overflow_u64", edit(set_entry("wpe.weight", shape=[2**62, 2])),
     ["tensor wpe.weight: byte size overflows"]),
    ("negative_dim", edit(set_entry("wpe.weight", shape=[-16, 8])),
     ["wpe.weight has a shape entry that is not a non-negative integer"]),
    ("float_dim", edit(set_entry("wpe.weight", shape=[16.0, 8])),
     ["wpe.weight has a shape entry that is not a non-negative integer"]),
    ("rank_17", edit(set_entry("wpe.weight", shape=[1] * 17)), ["rank 17 (limit 16)"]),
    ("offsets_three", edit(set_entry("wpe.weight", data_offsets=[0, 1, 2])),
     ["wpe.weight has no data_offsets [begin, end]"]),
    ("offsets_negative", edit(set_entry("wpe.weight", data_offsets=[-4, 508])),
     ["data_offsets that are not non-negative integers"]),
    ("dtype_not_string", edit(set_entry("wpe.weight", dtype=4)), ["wpe.weight has no dtype"]),
    ("entry_not_object", edit(lambda h, d: h.__setitem__("wpe.weight", [1, 2])),
     ["header entry wpe.weight is not an object"]),
    ("same_range_twice", edit(lambda h, d: h.__setitem__(
        "extra", dict(h["ln_f.bias"]))), ["overlapping data offsets"]),
    ("unknown_dtype_needed", edit(set_entry("wte.weight", dtype="Q4_K")),
     ["tensor wte.weight has unknown dtype Q4_K"]),
    ("f64_needed", edit(lambda h, d: h["ln_f.bias"].update(dtype="F64", shape=[4])),
     ["tensor ln_f.bias has dtype F64; supported: F32, F16, BF16"]),
    ("no_wte_but_lm_head", edit(lambda h, d: h.__setitem__("lm_head.weight", h.pop("wte.weight"))),
     ["missing tensor wte.weight"]),
    ("shape_from_other_config", edit(lambda h, d: [h[k].__setitem__("shape", [32, 8])
                                                   for k in ["wpe.weight"]] and None),
     ["wpe.weight"]),
]


@pytest.mark.parametrize("case,mutate,needles", ST_CASES, ids=[c[0] for c in ST_CASES])
def test_safetensors_headers(conn, reference, micro, tmp_path, case, mutate, needles):
    d = copy(micro, tmp_path)
    h, data = header_and_data(micro)
    mutate(d, h, data)
    msg = load_error(conn, d)
    assert msg.startswith("gpt2_load: ") and "model.safetensors" in msg, msg
    for s in needles:
        assert s in msg, msg
    still_fine(conn, reference, micro)


# ---------------------------------------------------------------------------
# config.json


def cfg_edit(**kv):
    def go(d):
        p = os.path.join(d, "config.json")
        with open(p) as f:
            cfg = json.load(f)
        cfg.update(kv)
        with open(p, "w") as f:
            json.dump(cfg, f)
    return go


def cfg_raw(text):
    return lambda d: write(os.path.join(d, "config.json"), text.encode())


CONFIG_CASES = [
    ("million_layers", cfg_edit(n_layer=1000000), "config.json: n_layer is 1000000, limit 1000"),
    ("n_head_0", cfg_edit(n_head=0), "config.json: n_head is 0, must be at least 1"),
    ("n_embd_0", cfg_edit(n_embd=0), "config.json: n_embd is 0, must be at least 1"),
    ("vocab_0", cfg_edit(vocab_size=0), "config.json: vocab_size is 0, must be at least 1"),
    ("positions_0", cfg_edit(n_positions=0), "config.json: n_positions is 0, must be at least 1"),
    ("n_inner_0", cfg_edit(n_inner=0), "config.json: n_inner is 0, must be at least 1"),
    ("n_inner_huge", cfg_edit(n_inner=1 << 21), "config.json: n_inner is 2097152, limit 1048576"),
    ("not_divisible", cfg_edit(n_head=3), "config.json: n_embd 8 is not divisible by n_head 3"),
    ("more_heads_than_dims", cfg_edit(n_head=16), "config.json: n_embd 8 is not divisible by "
     "n_head 16"),
    ("int64_max", cfg_edit(n_layer=2**63 - 1), "config.json: n_layer is 9223372036854775807, "
     "limit 1000"),
    ("too_big_for_json", cfg_raw('{"n_layer": 99999999999999999999}'), "config.json: not valid "
     "JSON"),
    ("float_size", cfg_edit(n_embd=8.0), "config.json: n_embd must be an integer, not a real "
     "number"),
    ("bool_size", cfg_edit(n_layer=True), "config.json: n_layer must be an integer, not true"),
    ("string_type", cfg_edit(model_type="GPT2"), 'config.json: model_type is "GPT2", expected '
     '"gpt2"'),
    ("llama", cfg_edit(model_type="llama"), 'config.json: model_type is "llama", expected "gpt2"'),
    ("type_number", cfg_edit(model_type=2), "config.json: model_type must be a string, not an "
     "integer"),
    ("eps_nan", cfg_raw('{"n_layer": 1, "layer_norm_epsilon": NaN}'), "config.json: not valid "
     "JSON"),
    ("eps_zero", cfg_edit(layer_norm_epsilon=0), "config.json: layer_norm_epsilon is 0, must be "
     "in (0, 1]"),
    ("eps_underflows_float", cfg_edit(layer_norm_epsilon=1e-50),
     "config.json: layer_norm_epsilon is 1e-50, below the smallest float (1.4013e-45)"),
    ("eos_negative", cfg_edit(eos_token_id=-5), "config.json: eos_token_id is -5, must be at "
     "least 0"),
    ("scale_string", cfg_edit(scale_attn_weights="yes"), "config.json: scale_attn_weights must "
     "be true or false, not a string"),
    ("array", cfg_raw("[1, 2, 3]"), "config.json: not a JSON object"),
    ("empty", cfg_raw(""), "config.json: not valid JSON"),
    ("utf16", lambda d: write(os.path.join(d, "config.json"), '{"n_layer": 1}'.encode("utf-16")),
     "config.json: not valid JSON"),
]


@pytest.mark.parametrize("case,mutate,expect", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_config(conn, reference, micro, tmp_path, case, mutate, expect):
    d = copy(micro, tmp_path)
    mutate(d)
    msg = load_error(conn, d)
    assert msg.startswith("gpt2_load: ") and expect in msg, msg
    still_fine(conn, reference, micro)


def test_config_large_but_legal_is_checked_against_the_file(conn, reference, micro, tmp_path):
    """Every size at its limit (1.6e14 parameters: the 64-bit count cannot overflow within
    the limits) but not the file's: the tensors disagree, nothing huge is allocated."""
    d = copy(micro, tmp_path)
    cfg_edit(n_layer=1000, n_embd=65536, n_head=1, n_positions=1 << 20, n_inner=1 << 20,
             vocab_size=10000000)(d)
    msg = load_error(conn, d)
    assert "model.safetensors" in msg and ("missing tensor" in msg or "has shape" in msg), msg
    still_fine(conn, reference, micro)


# ---------------------------------------------------------------------------
# missing, unreadable and odd files


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.json", "merges.txt"])
def test_missing_file(conn, reference, micro, tmp_path, name):
    d = copy(micro, tmp_path)
    os.remove(os.path.join(d, name))
    msg = load_error(conn, d)
    assert name in msg and "No such file or directory" in msg, msg
    still_fine(conn, reference, micro)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.json", "merges.txt"])
def test_directory_in_place_of_a_file(conn, reference, micro, tmp_path, name):
    """We run as root, so chmod 000 does not make a file unreadable; a
    directory in its place does (open succeeds, it is not a regular file)."""
    d = copy(micro, tmp_path)
    os.remove(os.path.join(d, name))
    os.mkdir(os.path.join(d, name))
    msg = load_error(conn, d)
    assert f"{name} is not a regular file" in msg or ("Is a directory" in msg and name in msg), msg
    still_fine(conn, reference, micro)


@pytest.mark.parametrize("name", ["config.json", "model.safetensors", "vocab.json", "merges.txt"])
def test_fifo_in_place_of_a_file_does_not_hang(micro, tmp_path, name):
    """Opening a FIFO blocks until a writer comes, unless opened O_NONBLOCK:
    run in a child with a timeout so that a regression cannot hang the suite."""
    d = copy(micro, tmp_path)
    os.remove(os.path.join(d, name))
    os.mkfifo(os.path.join(d, name))
    code = ("import sqlite3, sys; sys.path.insert(0, %r); from conftest import connect\n"
            "c = connect()\n"
            "try:\n    c.execute('SELECT gpt2_load(?)', (%r,)).fetchall()\n"
            "except sqlite3.Error as e:\n    print(e)\n") % (os.path.dirname(__file__), d)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert f"{name} is not a regular file" in out.stdout, out


def test_special_files(conn, reference, micro, tmp_path):
    d = copy(micro, tmp_path)
    os.remove(os.path.join(d, "model.safetensors"))
    os.symlink("/dev/zero", os.path.join(d, "model.safetensors"))
    assert "model.safetensors is not a regular file" in load_error(conn, d)
    os.remove(os.path.join(d, "model.safetensors"))
    os.symlink("model.safetensors", os.path.join(d, "model.safetensors"))  # a loop
    msg = load_error(conn, d)
    assert "model.safetensors" in msg and "Too many levels of symbolic links" in msg, msg
    still_fine(conn, reference, micro)


def test_model_dir_is_a_file_or_missing(conn, reference, micro, tmp_path):
    f = str(tmp_path / "file")
    write(f, b"x")
    assert load_error(conn, f) == f"gpt2_load: '{f}' is not a directory"
    assert load_error(conn, f + "/sub") == (f"gpt2_load: cannot open model directory '{f}/sub': "
                                            "Not a directory")
    empty = str(tmp_path / "empty")
    os.mkdir(empty)
    assert "vocab.json" in load_error(conn, empty)  # no weights: read as a tokenizer directory
    still_fine(conn, reference, micro)


def test_reload_after_failures_frees_and_replaces(conn, reference, micro, tmp_path):
    """Fail, succeed and replace under one name many times: memory stays flat
    (watched by LeakSanitizer under make test-sanitize), the result is right."""
    d = copy(micro, tmp_path)
    good = read(os.path.join(d, "model.safetensors"))
    for i in range(30):
        write(os.path.join(d, "model.safetensors"), good[:len(good) // 2] if i % 2 else good)
        if i % 2:
            load_error(conn, d, name="cycle")
        else:
            conn.execute("SELECT gpt2_load(?, 'cycle')", (d,)).fetchall()
            conn.execute("SELECT gpt2_unload('cycle')")
    conn.execute("SELECT gpt2_use('default')")
    still_fine(conn, reference, micro)
