"""The wheel (make wheel): installed offline into fresh virtual environments, loaded
into sqlite3.connect(), and as a sqlite-utils plugin driven through the sqlite-utils
command."""
import json
import os
import re
import sqlite3
import subprocess
import zipfile

import pytest

from pkgfixtures import N_TOKENS, PROMPT, is_glibc, run, script

USE = f"""
import json, sqlite3, sys
import sqlite_gpt2
conn = sqlite3.connect(":memory:")
conn.enable_load_extension(True)
sqlite_gpt2.load(conn)
conn.enable_load_extension(False)
conn.execute("SELECT gpt2_load(?)", [sys.argv[1]])
print(json.dumps({{
    "path": sqlite_gpt2.loadable_path(),
    "module_version": sqlite_gpt2.__version__,
    "version": conn.execute("SELECT gpt2_version()").fetchone()[0],
    "text": conn.execute("SELECT gpt2_generate(?, ?)", ["{PROMPT}", {N_TOKENS}]).fetchone()[0],
}}))
"""


def venv(path, wheel, system_site=False):
    """A new virtual environment of Debian's python3 with the wheel installed offline."""
    run(["/usr/bin/python3", "-m", "venv", *(["--system-site-packages"] if system_site else []), str(path)])
    run([str(path / "bin" / "python"), "-m", "pip", "install", "--no-index", "--no-cache-dir",
         "--disable-pip-version-check", "-q", wheel])
    return str(path / "bin" / "python")


@pytest.fixture(scope="module")
def plain_venv(artifacts, tmp_path_factory):
    return venv(tmp_path_factory.mktemp("venv") / "env", artifacts["wheel"])


def test_wheel_is_a_platform_wheel(artifacts, machine, version):
    with zipfile.ZipFile(artifacts["wheel"]) as z:
        names = z.namelist()
        wheel_meta = z.read(f"sqlite_gpt2-{version}.dist-info/WHEEL").decode()
        entry_points = z.read(f"sqlite_gpt2-{version}.dist-info/entry_points.txt").decode()
    assert f"Tag: py3-none-linux_{machine}" in wheel_meta
    assert "Root-Is-Purelib: false" in wheel_meta
    assert "sqlite_gpt2/gpt2.so" in names          # in platlib, not under .data/
    assert "[sqlite_utils]" in entry_points and "sqlite_gpt2.sqlite_utils_plugin" in entry_points


def test_load_into_sqlite3_connect(plain_venv, checkpoint, expected_text, version):
    r = json.loads(run([plain_venv, "-c", USE, checkpoint], cwd="/").stdout)
    # the extension used is the wheel's own, inside the environment
    env_root = os.path.dirname(os.path.dirname(plain_venv))
    assert r["path"].startswith(env_root + os.sep) and r["path"].endswith("/sqlite_gpt2/gpt2.so")
    assert r["text"] == expected_text
    assert r["version"] == r["module_version"] == version


def test_wheel_extension_needs_only_its_own_files(plain_venv):
    """Every dependency of the installed gpt2.so outside glibc is a file beside it."""
    path = run([plain_venv, "-c", "import sqlite_gpt2; print(sqlite_gpt2.loadable_path())"]).stdout.strip()
    ldd = run(["ldd", path]).stdout
    here = os.path.dirname(path) + os.sep
    for name, where in re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M):
        assert is_glibc(name) or where.startswith(here), ldd


@pytest.fixture(scope="module")
def sqlite_utils_root():
    """A sqlite-utils with plugin support (Debian 13's 3.38, scripts/fetch-sqlite-utils.sh)."""
    return script("fetch-sqlite-utils.sh")


def sqlite_utils(python, root, *args, env_extra=None):
    """Run the sqlite-utils command of that package under the given interpreter."""
    env = {**os.environ, "PYTHONPATH": os.path.join(root, "usr/lib/python3/dist-packages"),
           **(env_extra or {})}
    return subprocess.run([python, os.path.join(root, "usr/bin/sqlite-utils"), *args],
                          capture_output=True, text=True, env=env)


def test_sqlite_utils_plugin(artifacts, sqlite_utils_root, checkpoint, expected_text, tmp_path):
    py = venv(tmp_path / "env", artifacts["wheel"], system_site=True)
    v = sqlite_utils(py, sqlite_utils_root, "--version")
    major, minor = (int(x) for x in v.stdout.split()[-1].split(".")[:2])
    assert (major, minor) >= (3, 34), v.stdout      # prepare_connection hook
    db = str(tmp_path / "data.db")
    sqlite3.connect(db).close()
    sql = f"select gpt2_generate('{PROMPT}', {N_TOKENS}) as text"
    # the model comes from GPT2_MODEL ...
    p = sqlite_utils(py, sqlite_utils_root, "query", db, sql, env_extra={"GPT2_MODEL": checkpoint})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [{"text": expected_text}]
    # ... or from gpt2_load in the query itself
    p = sqlite_utils(py, sqlite_utils_root, "query", db,
                     f"select gpt2_load('{checkpoint}') is not null as ok, gpt2_generate('{PROMPT}', {N_TOKENS}) as text")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == [{"ok": 1, "text": expected_text}]
    # the plugin is what provides the functions: the same command without the wheel has none
    bare = sqlite_utils("/usr/bin/python3", sqlite_utils_root, "query", db, sql,
                        env_extra={"GPT2_MODEL": checkpoint})
    assert bare.returncode != 0 and "no such function: gpt2_generate" in bare.stderr + bare.stdout


def test_debian_sqlite_utils_with_load_extension(plain_venv, checkpoint, expected_text, tmp_path):
    """Debian 12's sqlite-utils (3.30, no plugins): --load-extension with loadable_path()."""
    path = run([plain_venv, "-c", "import sqlite_gpt2; print(sqlite_gpt2.loadable_path())"]).stdout.strip()
    db = str(tmp_path / "data.db")
    sqlite3.connect(db).close()
    p = run(["/usr/bin/sqlite-utils", "query", db, f"select gpt2_generate('{PROMPT}', {N_TOKENS}) as text",
             "--load-extension", path], env={**os.environ, "GPT2_MODEL": checkpoint})
    assert json.loads(p.stdout) == [{"text": expected_text}]
