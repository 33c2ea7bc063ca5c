"""make install / make uninstall with PREFIX and DESTDIR, into a temporary directory:
the extension loads from its installed path, gpt2-download runs as a command, the SQL
reference is installed as a doc file, and uninstall removes all of it."""
import os
import re
import subprocess
import sys

from pkgfixtures import N_TOKENS, PROMPT, ROOT, make, run


def installed_files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


def test_install_layout_and_uninstall(tmp_path, version):
    dest = tmp_path / "stage"
    make("install", f"DESTDIR={dest}")          # PREFIX defaults to /usr/local
    assert installed_files(dest) == [
        "usr/local/bin/gpt2-download",
        "usr/local/lib/sqlite3/gpt2.so",
        "usr/local/share/doc/gpt2-sqlite/LICENSE",
        "usr/local/share/doc/gpt2-sqlite/README.md",
        "usr/local/share/doc/gpt2-sqlite/sql-reference.md",
    ]
    assert os.access(dest / "usr/local/bin/gpt2-download", os.X_OK)
    # the SQL reference: every function README documents, and nothing of the next section
    ref = (dest / "usr/local/share/doc/gpt2-sqlite/sql-reference.md").read_text(encoding="utf-8")
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    headings = re.findall(r"^### (gpt2_\w+)", readme, re.M)
    assert len(headings) >= 10
    for h in headings:
        assert f"### {h}" in ref
    assert version in ref.splitlines()[0]
    assert "\n## Tokenizer" not in ref
    make("uninstall", f"DESTDIR={dest}")
    assert installed_files(dest) == []


def test_prefix_is_honoured(tmp_path):
    dest = tmp_path / "stage"
    make("install", f"DESTDIR={dest}", "PREFIX=/opt/gpt2")
    assert (dest / "opt/gpt2/lib/sqlite3/gpt2.so").is_file()
    assert (dest / "opt/gpt2/bin/gpt2-download").is_file()
    make("uninstall", f"DESTDIR={dest}", "PREFIX=/opt/gpt2")
    assert installed_files(dest) == []


def test_load_from_installed_path(tmp_path, checkpoint, expected_text, version):
    dest = tmp_path / "stage"
    make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    lib = dest / "usr/lib/sqlite3/gpt2"
    p = run(["sqlite3", "-bail", "-noheader", "-list", ":memory:", "-cmd", f".load {lib}",
             "SELECT gpt2_version();", f"SELECT gpt2_load('{checkpoint}') IS NOT NULL;",
             f"SELECT gpt2_generate('{PROMPT}', {N_TOKENS});"])
    assert p.stdout == f"{version}\n1\n{expected_text}\n"


def test_gpt2_download_is_a_command(tmp_path):
    dest = tmp_path / "stage"
    make("install", f"DESTDIR={dest}")
    cmd = str(dest / "usr/local/bin/gpt2-download")
    bad = subprocess.run([cmd, "no-such-model"], capture_output=True, text=True)
    assert bad.returncode == 1 and "unknown model 'no-such-model'" in bad.stderr
    # no route to the Hub (a closed local port): exit 2, and nothing created anywhere
    work = tmp_path / "work"
    work.mkdir()
    p = subprocess.run([cmd, "gpt2"], cwd=work, capture_output=True, text=True,
                       env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9"})
    assert p.returncode == 2, p.stderr
    assert "cannot reach" in p.stderr
    assert os.listdir(work) == []
    assert not (dest / "usr/local/models").exists()
    # with a Hub (a local fake one): the models directory is the user's current one,
    # not one under the installation prefix
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from make_checkpoint import write_checkpoint
    from test_scripts import FILES, FakeHub
    ck = tmp_path / "ck"
    write_checkpoint(str(ck), n_layer=1, n_head=2, n_embd=16, n_positions=32, seed=3,
                     return_weights=False)
    hub = FakeHub({f: (ck / f).read_bytes() for f in FILES})
    try:
        p = subprocess.run([cmd, "gpt2"], cwd=work, capture_output=True, text=True,
                           env={**os.environ, "HF_ENDPOINT": hub.url},
                           stdin=subprocess.DEVNULL)
    finally:
        hub.close()
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(work / "models" / "gpt2")) == sorted(FILES)
    assert not (dest / "usr/local/models").exists()
