"""What build/gpt2.so shows the process that loads it: only its two SQLite entry
points. Its internal functions are hidden (-fvisibility=hidden), so a host that
already has a library with the same names (buf_append, config_load, ...: common
words) neither breaks the extension nor is broken by it. It links only the
libraries it calls (no OpenBLAS: that is the benchmarks' yardstick)."""
import json
import os
import subprocess
import sys

import pytest

from conftest import INTERNAL_SO, SO
from make_checkpoint import write_checkpoint

ENTRY_POINTS = {"sqlite3_gpt_init", "sqlite3_extension_init"}
# Names of internal functions the extension calls to load a checkpoint and generate.
DECOY_NAMES = ["buf_append", "config_load", "model_load", "pool_new", "scratch_new",
               "seq_new", "st_open", "tok_encode", "k_gemm", "sampler_pick"]

# In a fresh process: optionally load the decoy library RTLD_GLOBAL first, then the
# extension into a connection; load the checkpoint, generate; report the output and
# what the decoy's functions return, through its handle and through the global scope.
CHILD = r"""
import ctypes, json, os, sqlite3, sys
so, ckpt, decoy, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
lib = ctypes.CDLL(decoy, mode=os.RTLD_GLOBAL) if decoy != "-" else None
conn = sqlite3.connect(":memory:")
conn.enable_load_extension(True)
conn.load_extension(so)
conn.execute("SELECT gpt2_load(?)", (ckpt,))
out = conn.execute("SELECT gpt2_tokenize('Hello, world'), gpt2_generate('Hello, world', 12),"
                   " gpt2_generate('Hello, world', 12, 0.9, 0, 0.95, 7)").fetchone()
conn.close()
sent = {}
if lib:
    glob = ctypes.CDLL(None)
    sent = {n: [getattr(lib, n)(), getattr(glob, n)()] for n in names}
print(json.dumps({"out": out, "sentinels": sent}))
"""


def sentinel(i):
    return 7000 + i


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, vocab_dir):
    d = tmp_path_factory.mktemp("sym")
    write_checkpoint(str(d), n_layer=2, n_head=4, n_embd=64, n_positions=64,
                     vocab_dir=vocab_dir, seed=11)
    return str(d)


@pytest.fixture(scope="module")
def decoy(tmp_path_factory):
    """A shared library defining some of the extension's internal names, each
    returning its own sentinel."""
    d = tmp_path_factory.mktemp("decoy")
    src, so = d / "decoy.c", d / "libdecoy.so"
    src.write_text("".join(f"int {n}(void) {{ return {sentinel(i)}; }}\n"
                           for i, n in enumerate(DECOY_NAMES)))
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    return str(so)


def child(so, ckpt, decoy="-"):
    return subprocess.run([sys.executable, "-c", CHILD, so[:-3], ckpt, decoy, ",".join(DECOY_NAMES)],
                          capture_output=True, text=True, timeout=600)


def test_exports_only_the_entry_points():
    out = subprocess.run(["nm", "-D", "--defined-only", SO], capture_output=True, text=True,
                         check=True).stdout
    assert {line.split()[-1] for line in out.splitlines() if line.strip()} == ENTRY_POINTS


def test_links_only_what_it_calls():
    out = subprocess.run(["readelf", "-d", SO], capture_output=True, text=True, check=True).stdout
    needed = [line.split("[")[1].rstrip("]") for line in out.splitlines() if "(NEEDED)" in line]
    assert not [n for n in needed if "blas" in n], needed
    assert any(n.startswith("libpcre2-8") for n in needed) and any(n.startswith("libjansson") for n in needed)


def test_host_library_with_the_same_names(ckpt, decoy):
    clean = child(SO, ckpt)
    assert clean.returncode == 0, clean.stderr
    clean = json.loads(clean.stdout)
    assert json.loads(clean["out"][0]) and clean["out"][1] and clean["out"][2]
    with_decoy = child(SO, ckpt, decoy)
    assert with_decoy.returncode == 0, with_decoy.stderr
    got = json.loads(with_decoy.stdout)
    assert got["out"] == clean["out"]
    assert got["sentinels"] == {n: [sentinel(i)] * 2 for i, n in enumerate(DECOY_NAMES)}


@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="the interposed build crashes, which ASan would report as an error")
def test_the_check_catches_exported_internals(ckpt, decoy):
    """The same check on build/gpt2_internal.so (every function exported, as gpt2.so
    used to be): the decoy's functions replace the extension's own, and loading or
    generating fails."""
    clean = child(INTERNAL_SO, ckpt)
    assert clean.returncode == 0, clean.stderr
    bad = child(INTERNAL_SO, ckpt, decoy)
    assert bad.returncode != 0 or json.loads(bad.stdout)["out"] != json.loads(clean.stdout)["out"]


# Two copies of the library in one process (say, a packaged build and a local
# one): each connection must run the copy it loaded, so each copy keeps its own
# registry and a model loaded through both has one user in each.
TWO_COPIES = r"""
import json, sqlite3, sys
ckpt, copies = sys.argv[1], sys.argv[2:]
users = []
conns = []
for so in copies:
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    conn.load_extension(so)
    conn.execute("SELECT gpt2_load(?)", (ckpt,))
    conns.append(conn)
for conn in conns:
    users.append(conn.execute("SELECT users FROM gpt2_models").fetchone()[0])
print(json.dumps(users))
"""


def test_two_copies_of_the_library_stay_apart(ckpt, tmp_path):
    copies = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        dst = tmp_path / name / "gpt2.so"
        dst.write_bytes(open(SO, "rb").read())
        copies.append(str(dst)[:-3])
    both = subprocess.run([sys.executable, "-c", TWO_COPIES, ckpt, *copies],
                          capture_output=True, text=True, timeout=600)
    assert both.returncode == 0, both.stderr
    assert json.loads(both.stdout) == [1, 1]
    # the same copy twice shares its registry: one model, two users
    same = subprocess.run([sys.executable, "-c", TWO_COPIES, ckpt, copies[0], copies[0]],
                          capture_output=True, text=True, timeout=600)
    assert same.returncode == 0, same.stderr
    assert json.loads(same.stdout) == [2, 2]
