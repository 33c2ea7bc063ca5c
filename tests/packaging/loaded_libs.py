"""Run by the packaging tests in a fresh Debian python3: load an extension, report which
shared objects the load mapped into the process (/proc/self/maps before and after), then
load a checkpoint and generate.

    python3 loaded_libs.py EXTENSION CHECKPOINT PROMPT N_TOKENS  ->  JSON on stdout
"""
import json
import sqlite3
import sys


def mapped():
    with open("/proc/self/maps", encoding="utf-8") as f:
        return {p[5] for p in (line.split() for line in f) if len(p) >= 6 and ".so" in p[5]}


ext, ckpt, prompt, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
conn = sqlite3.connect(":memory:")
conn.execute("SELECT 1")
before = mapped()
conn.enable_load_extension(True)
conn.load_extension(ext)
conn.enable_load_extension(False)
new = sorted(mapped() - before)
conn.execute("SELECT gpt2_load(?)", [ckpt])
text = conn.execute("SELECT gpt2_generate(?, ?)", [prompt, n]).fetchone()[0]
info = json.loads(conn.execute("SELECT gpt2_info()").fetchone()[0])
version = conn.execute("SELECT gpt2_version()").fetchone()[0]
print(json.dumps({"new": new, "text": text, "version": version, "info_version": info.get("version")}))
