"""make dist: the release archive, unpacked into a temporary directory, holds a gpt2.so
whose dependencies outside glibc all resolve to the copies beside it, and which loads
and generates from there."""
import json
import os
import re
import shutil
import subprocess
import tarfile

from pkgfixtures import N_TOKENS, PROMPT, ROOT, is_glibc, needed, run

HERE = os.path.dirname(os.path.abspath(__file__))


def unpack(archive, dest):
    with tarfile.open(archive) as t:
        t.extractall(dest)
    (top,) = os.listdir(dest)
    return os.path.join(dest, top)


def test_archive_name_and_contents(artifacts, version, machine, tmp_path):
    top = unpack(artifacts["dist"], tmp_path)
    assert os.path.basename(top) == f"gpt2-sqlite-{version}-linux-{machine}"
    files = set(os.listdir(top))
    assert {"gpt2.so", "README.md", "LICENSE"} <= files
    assert "MIT License" in open(os.path.join(top, "LICENSE"), encoding="utf-8").read()
    # every library shipped or linked in has its copyright file along
    assert os.listdir(os.path.join(top, "licenses"))


def test_dependencies_resolve_to_the_bundled_copies(artifacts, tmp_path):
    # unpacked, then moved elsewhere: nothing may point back at the first place
    top = shutil.move(unpack(artifacts["dist"], tmp_path / "a"), tmp_path / "moved")
    so = os.path.join(top, "gpt2.so")
    outside = [n for n in needed(so) if not is_glibc(n)]
    for name in outside:
        assert os.path.isfile(os.path.join(top, name)), f"{name} is needed but not shipped"
    # what the ordinary build takes from the system is either shipped or linked in
    system = [n for n in needed(os.path.join(ROOT, "build", "gpt2.so")) if not is_glibc(n)]
    for name in system:
        assert name in outside or name not in needed(so)
    # ldd resolves each one to the shipped copy, with no LD_LIBRARY_PATH help
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    ldd = run(["ldd", so], env=env).stdout
    resolved = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    for name in outside:
        assert os.path.realpath(resolved[name]) == os.path.realpath(os.path.join(top, name)), ldd
    for name, path in resolved.items():
        assert is_glibc(name) or os.path.realpath(path).startswith(os.path.realpath(top) + os.sep), ldd


def test_loading_maps_only_glibc_and_shipped_files(artifacts, checkpoint, expected_text, version, tmp_path):
    top = unpack(artifacts["dist"], tmp_path)
    out = run(["/usr/bin/python3", os.path.join(HERE, "loaded_libs.py"), os.path.join(top, "gpt2.so"),
               checkpoint, PROMPT, str(N_TOKENS)], env={"PATH": os.environ["PATH"]}).stdout
    r = json.loads(out)
    real_top = os.path.realpath(top) + os.sep
    shipped = [p for p in r["new"] if os.path.realpath(p).startswith(real_top)]
    others = [p for p in r["new"] if p not in shipped]
    assert os.path.join(real_top, "gpt2.so") in [os.path.realpath(p) for p in shipped]
    assert all(is_glibc(os.path.basename(p)) for p in others), others
    # every library shipped is the one used (statically linked ones are not files at all)
    assert {os.path.basename(p) for p in shipped} == {"gpt2.so"} | {
        f for f in os.listdir(top) if ".so." in f}
    assert r["text"] == expected_text
    assert r["version"] == r["info_version"] == version


def test_sqlite3_shell_loads_and_generates(artifacts, checkpoint, expected_text, tmp_path):
    top = unpack(artifacts["dist"], tmp_path)
    p = run(["sqlite3", "-bail", "-noheader", "-list", ":memory:",
             "-cmd", f".load {top}/gpt2", f"SELECT gpt2_load('{checkpoint}');",
             f"SELECT gpt2_generate('{PROMPT}', {N_TOKENS});"])
    assert p.stdout.endswith(expected_text + "\n")


def test_archive_is_reproducible(artifacts):
    """Rebuilding from the same tree gives the same bytes (sorted names, fixed owner and mtime)."""
    before = open(artifacts["dist"], "rb").read()
    os.remove(artifacts["dist"])
    subprocess.run(["make", "-s", "-C", ROOT, "dist"], check=True, capture_output=True)
    assert open(artifacts["dist"], "rb").read() == before


def exported(path):
    out = run(["nm", "-D", "--defined-only", path]).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


def test_static_libraries_export_nothing(artifacts, tmp_path):
    """What is linked in statically stays private: the release gpt2.so exports no symbol
    the ordinary build does not (a host's own copy of the library is never interposed)."""
    top = unpack(artifacts["dist"], tmp_path)
    extra = exported(os.path.join(top, "gpt2.so")) - exported(os.path.join(ROOT, "build", "gpt2.so"))
    assert not extra, sorted(extra)[:20]
    assert "sqlite3_gpt_init" in exported(os.path.join(top, "gpt2.so"))
