"""The user-facing scripts: scripts/download-model.sh leaves nothing behind unless
it completes (a models/NAME that exists is a loadable checkpoint), and `make demo`
(scripts/demo.sh), when it falls back to a generated tiny model, names the
directory of the model it used.

The Hub is replaced by HF_ENDPOINT: a closed local port for "no network" (the
same answer as this machine's missing route, and deterministic wherever the tests
run), or a local HTTP server that serves a listing and files like the Hub's API.
"""
import hashlib
import http.server
import json
import os
import signal
import socket
import subprocess
import threading

import pytest

from conftest import ROOT, connect, one

DOWNLOAD = os.path.join(ROOT, "scripts", "download-model.sh")
DEMO = os.path.join(ROOT, "scripts", "demo.sh")
REPO = "openai-community/gpt2"
FILES = ["config.json", "vocab.json", "merges.txt", "model.safetensors"]


def closed_port_url():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}"


class FakeHub:
    """Serves /api/models/REPO/tree/main and /REPO/resolve/main/FILE from `files`
    (name -> bytes); `listed` overrides what the listing says (name -> (size, sha)),
    `missing` names files that answer 404."""

    def __init__(self, files, listed=None, missing=(), hold=None):
        self.files, self.listed, self.missing = files, listed or {}, set(missing)
        # hold: a file whose download sends half of it, sets `holding`, then waits
        # for `release`
        self.hold, self.holding, self.release = hold, threading.Event(), threading.Event()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == f"/api/models/{REPO}/tree/main":
                    body = json.dumps(hub.listing()).encode()
                else:
                    name = self.path.rsplit("/", 1)[-1]
                    if self.path != f"/{REPO}/resolve/main/{name}" or name in hub.missing \
                            or name not in hub.files:
                        self.send_error(404)
                        return
                    body = hub.files[name]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path.endswith("/" + str(hub.hold)):
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    hub.holding.set()
                    hub.release.wait()
                    return
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def listing(self):
        out = [{"type": "directory", "path": "onnx"}]
        for name, data in self.files.items():
            size, sha = self.listed.get(name, (len(data), hashlib.sha256(data).hexdigest()))
            if name == "model.safetensors":  # an LFS file: size and SHA-256 under "lfs"
                out.append({"type": "file", "path": name, "size": 135,
                            "lfs": {"size": size, "oid": sha}})
            else:
                out.append({"type": "file", "path": name, "size": size})
        return out

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ckpt_files(tmp_path_factory, vocab_dir):
    """The four files of a small real checkpoint, as the fake Hub serves them."""
    from make_checkpoint import write_checkpoint
    d = tmp_path_factory.mktemp("hubckpt")
    write_checkpoint(str(d), n_layer=1, n_head=2, n_embd=16, n_positions=32,
                     vocab_dir=vocab_dir, seed=3)
    return {f: (d / f).read_bytes() for f in FILES}


def download(root, hub_url, name="gpt2"):
    env = dict(os.environ, MODELS_DIR=str(root), HF_ENDPOINT=hub_url)
    return subprocess.run([DOWNLOAD, name], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)


def test_download_without_network_creates_nothing(tmp_path):
    root = tmp_path / "models"
    r = download(root, closed_port_url())
    assert r.returncode == 2, r
    assert "cannot reach" in r.stderr
    assert not root.exists()
    root.mkdir()  # an existing models/ stays empty
    assert download(root, closed_port_url()).returncode == 2
    assert os.listdir(root) == []


@pytest.mark.parametrize("case", ["missing_file", "bad_sha256", "wrong_size"])
def test_download_failing_midway_leaves_nothing(tmp_path, ckpt_files, case):
    if case == "missing_file":
        hub = FakeHub(ckpt_files, missing=["model.safetensors"])
    elif case == "bad_sha256":
        hub = FakeHub(ckpt_files, listed={"model.safetensors": (len(ckpt_files["model.safetensors"]),
                                                                  "0" * 64)})
    else:
        hub = FakeHub(ckpt_files, listed={"merges.txt": (len(ckpt_files["merges.txt"]) + 1, "-")})
    try:
        root = tmp_path / "models"
        r = download(root, hub.url)
        assert r.returncode == 1, r
        assert not root.exists(), list(root.iterdir())
        root.mkdir()
        assert download(root, hub.url).returncode == 1
        assert os.listdir(root) == []
    finally:
        hub.close()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_download_interrupted_leaves_nothing(tmp_path, ckpt_files, sig):
    """Ctrl-C (SIGINT to the process group) or SIGTERM while model.safetensors is
    half downloaded: the temporary directory goes, models/ too (it made it)."""
    hub, p = FakeHub(ckpt_files, hold="model.safetensors"), None
    try:
        root = tmp_path / "models"
        env = dict(os.environ, MODELS_DIR=str(root), HF_ENDPOINT=hub.url)
        # SIGINT as in a terminal: not inherited as ignored (a background job's is)
        p = subprocess.Popen([DOWNLOAD, "gpt2"], env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert hub.holding.wait(600)
        # mid-download: the files so far are in the temporary directory, not in models/gpt2
        assert [f.name.split(".download.")[0] for f in root.iterdir()] == [".gpt2"]
        if sig == signal.SIGINT:
            os.killpg(p.pid, sig)
        else:
            p.send_signal(sig)
            hub.release.set()  # the script runs its trap once curl returns
        p.communicate(timeout=600)
        assert p.returncode == 128 + sig, p.returncode
        assert not root.exists(), list(root.rglob("*"))
    finally:
        hub.close()
        if p and p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)


def test_download_complete_is_loadable(tmp_path, ckpt_files):
    hub = FakeHub(ckpt_files)
    try:
        root = tmp_path / "models"
        (root / "gpt2").mkdir(parents=True)  # left by an older version of the script
        (root / "gpt2" / "config.json").write_bytes(ckpt_files["config.json"])
        r = download(root, hub.url)
        assert r.returncode == 0, r
        assert "config.json: already complete" in r.stdout
        assert os.listdir(root) == ["gpt2"]
        assert sorted(os.listdir(root / "gpt2")) == sorted(FILES)
        r = download(tmp_path / "fresh", hub.url)
        assert r.returncode == 0, r
        assert os.listdir(tmp_path / "fresh") == ["gpt2"]
    finally:
        hub.close()
    for d in (root / "gpt2", tmp_path / "fresh" / "gpt2"):
        assert {f: (d / f).read_bytes() for f in FILES} == ckpt_files
        conn = connect()
        assert json.loads(one(conn, "SELECT gpt2_load(?)", str(d)))["n_layer"] == 1
        conn.close()


def test_demo_fallback_names_the_model_it_used(tmp_path):
    env = dict(os.environ, HF_ENDPOINT=closed_port_url(), MODELS_DIR=str(tmp_path / "models"),
               DEMO_TINY=str(tmp_path / "tiny"))
    r = subprocess.run([DEMO], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r
    assert "RANDOM" in r.stdout
    assert not (tmp_path / "models").exists()
    named = [line.split(" is in ", 1)[1] for line in r.stdout.splitlines()
             if line.startswith("demo: the model used is in ")]
    assert named == [str(tmp_path / "tiny")], r.stdout[-500:]
    conn = connect()
    assert json.loads(one(conn, "SELECT gpt2_load(?)", named[0]))["n_layer"] == 2
    assert one(conn, "SELECT length(gpt2_generate('Hello', 4)) > 0") == 1
    conn.close()
