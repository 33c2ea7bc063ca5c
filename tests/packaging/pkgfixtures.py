"""Fixtures and helpers of the packaging tests, loaded as a pytest plugin by
`make test-packages` (PYTHONPATH=tests/packaging pytest -p pkgfixtures). They are kept
out of `make test`: its pytest collects test_*.py, these files are pkg_*.py, and this
module is not a conftest.py (whose name would clash with tests/conftest.py).

The artifacts (release archive, wheel, npm tarball) are built from the working tree by
`make` here; a small checkpoint with GPT-2's real vocabulary is generated once; and the
text the ordinary build (build/gpt2.so) generates from it is what every package must
reproduce.
"""
import os
import re
import sqlite3
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests"))

PROMPT = "Hello"
N_TOKENS = 5


def run(cmd, **kw):
    """Run a command; on failure, fail the test with its output."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    p = subprocess.run(cmd, **kw)
    if p.returncode != 0:
        pytest.fail(f"{cmd!r} exited {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def make(*targets, **kw):
    return run(["make", "-s", "-C", ROOT, *targets], **kw)


def script(name):
    """Run one of scripts/ that prints a directory as its last line."""
    return run([os.path.join(ROOT, "scripts", name)]).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def version():
    with open(os.path.join(ROOT, "ext", "version.h"), encoding="utf-8") as f:
        return re.search(r'^#define GPT2_VERSION "([^"]+)"', f.read(), re.M).group(1)


@pytest.fixture(scope="session")
def machine():
    return os.uname().machine


@pytest.fixture(scope="session")
def artifacts(version, machine):
    """Paths of the three release artifacts, built by make from the working tree."""
    make("dist", "wheel", "npm-pack")
    dist = os.path.join(ROOT, "build", "dist")
    paths = {
        "dist": os.path.join(dist, f"gpt2-sqlite-{version}-linux-{machine}.tar.gz"),
        "wheel": os.path.join(dist, f"sqlite_gpt2-{version}-py3-none-linux_{machine}.whl"),
        "npm": os.path.join(dist, f"sqlite-gpt2-{version}.tgz"),
    }
    for p in paths.values():
        assert os.path.isfile(p), p
    return paths


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """A tiny-shaped checkpoint with GPT-2's real vocabulary (tests/make_checkpoint.py)."""
    from make_checkpoint import write_checkpoint
    vocab_dir = os.path.join(script("fetch-vocab.sh"), "gpt2-vocab")
    path = str(tmp_path_factory.mktemp("ckpt") / "tiny-gpt2")
    write_checkpoint(path, n_layer=2, n_head=4, n_embd=64, n_positions=128,
                     vocab_dir=vocab_dir, seed=3, return_weights=False)
    return path


@pytest.fixture(scope="session")
def expected_text(checkpoint):
    """gpt2_generate(PROMPT, N_TOKENS) by the ordinary build, build/gpt2.so."""
    make("all")
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    conn.load_extension(os.path.join(ROOT, "build", "gpt2"))
    conn.execute("SELECT gpt2_load(?)", [checkpoint])
    text = conn.execute("SELECT gpt2_generate(?, ?)", [PROMPT, N_TOKENS]).fetchone()[0]
    conn.close()
    assert text, "the reference generation is empty: pick another seed"
    return text


GLIBC = re.compile(r"^(linux-vdso|ld-linux[^/]*|libc|libm|libmvec|libpthread|libdl|librt|libresolv|"
                   r"libutil|libanl)\.so")


def needed(path):
    """The DT_NEEDED sonames of an ELF file (readelf -d)."""
    out = run(["readelf", "-d", path]).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def is_glibc(soname):
    return bool(GLIBC.match(soname))
