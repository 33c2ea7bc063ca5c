"""The npm package (make npm-pack): its tarball installed offline into a temporary project
next to better-sqlite3 12 (scripts/fetch-node-deps.sh), loaded, generating."""
import json
import os
import shutil

import pytest

from pkgfixtures import N_TOKENS, PROMPT, run, script

# The README's call: JavaScript numbers, which better-sqlite3 binds as REAL.
README_CALL = f"""
const Database = require("better-sqlite3");
const gpt2 = require("sqlite-gpt2");
const db = new Database(":memory:");
gpt2.load(db);
db.prepare("SELECT gpt2_load(?)").get(process.argv[2]);
const text = db.prepare("SELECT gpt2_generate(?, ?) AS text").get("{PROMPT}", {N_TOKENS}).text;
console.log(JSON.stringify({{text}}));
"""

# The same with an integer bound as INTEGER (a BigInt), plus what the package exposes.
BIGINT_CALL = f"""
const Database = require("better-sqlite3");
const gpt2 = require("sqlite-gpt2");
const db = new Database(":memory:");
gpt2.load(db);
const version = db.prepare("SELECT gpt2_version() AS v").get().v;
db.prepare("SELECT gpt2_load(?)").get(process.argv[2]);
const text = db.prepare("SELECT gpt2_generate(?, ?) AS text").get("{PROMPT}", {N_TOKENS}n).text;
const other = new Database(":memory:");
other.loadExtension(gpt2.getLoadablePath());
console.log(JSON.stringify({{path: gpt2.getLoadablePath(), version, text,
  otherVersion: other.prepare("SELECT gpt2_version() AS v").get().v}}));
"""


@pytest.fixture(scope="module")
def project(artifacts, tmp_path_factory):
    """A temporary project: better-sqlite3 from the cache, then the packed tarball, offline."""
    deps = script("fetch-node-deps.sh")
    proj = tmp_path_factory.mktemp("node") / "app"
    proj.mkdir()
    for f in ("package.json", "package-lock.json"):
        shutil.copy(os.path.join(deps, f), proj / f)
    shutil.copytree(os.path.join(deps, "node_modules"), proj / "node_modules", symlinks=True)
    env = {**os.environ, "npm_config_offline": "true", "npm_config_audit": "false",
           "npm_config_fund": "false", "npm_config_update_notifier": "false"}
    run(["npm", "install", "--ignore-scripts", artifacts["npm"]], cwd=proj, env=env)
    return proj


def node(project, code, *args):
    """Run code as a script of the project (it requires the project's node_modules)."""
    (project / "main.js").write_text(code)
    return run(["node", "main.js", *args], cwd=project)


def test_installed_package(project, version):
    meta = json.loads((project / "node_modules/sqlite-gpt2/package.json").read_text())
    assert meta["version"] == version
    assert meta["os"] == ["linux"]
    assert (project / "node_modules/sqlite-gpt2/lib/gpt2.so").is_file()
    deps = json.loads((project / "package.json").read_text())["dependencies"]
    assert "sqlite-gpt2" in deps and "better-sqlite3" in deps


def test_load_and_generate_bigint(project, checkpoint, expected_text, version):
    r = json.loads(node(project, BIGINT_CALL, checkpoint).stdout)
    assert r["path"] == str(project / "node_modules/sqlite-gpt2/lib/gpt2.so")
    assert r["version"] == r["otherVersion"] == version
    assert r["text"] == expected_text


def test_load_and_generate_readme_call(project, checkpoint, expected_text):
    """Needs the extension to accept integral REALs for integer arguments."""
    r = json.loads(node(project, README_CALL, checkpoint).stdout)
    assert r["text"] == expected_text
