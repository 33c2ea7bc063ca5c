#!/usr/bin/env python3
"""Tokenizer benchmark (`make bench`): our tokenizer through SQL next to
js-tiktoken 1.0.21 on the same >= 5 MB of English text, in the same run, on
one core; plus the time to load vocab.json + merges.txt.

Usage: /usr/bin/python3 scripts/bench_tokenizer.py [--mb 6]
Env:   GPT2_SO  the extension to load (default build/gpt2.so)
"""
import argparse
import glob
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import tokref  # noqa: E402  (js-tiktoken set-up)


def english_text(limit):
    """English prose found on Debian: the common licenses, Vim's manual, the
    packages' copyright files (in that order, sorted, up to limit bytes)."""
    paths = (sorted(glob.glob("/usr/share/common-licenses/*"))
             + sorted(glob.glob("/usr/share/vim/vim*/doc/*.txt"))
             + sorted(glob.glob("/usr/share/doc/*/copyright")))
    parts, size, used = [], 0, 0
    for p in paths:
        if size >= limit:
            break
        try:
            with open(p, "rb") as f:
                data = f.read()
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        parts.append(text)
        size += len(data)
        used += 1
    return "\n".join(parts).encode("utf-8")[:limit].decode("utf-8", "ignore"), used


def connect(so):
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    conn.load_extension(so)
    return conn


def load_ms(so, vocab_dir, runs=21):
    times = []
    for _ in range(runs):
        conn = connect(so)
        t0 = time.perf_counter()
        conn.execute("SELECT gpt2_load(?)", (vocab_dir,)).fetchone()
        times.append((time.perf_counter() - t0) * 1e3)
        conn.close()
    return statistics.median(times), min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=6.0, help="megabytes of text (>= 5)")
    args = ap.parse_args()
    so = os.environ.get("GPT2_SO", os.path.join(ROOT, "build", "gpt2.so"))
    so = so[:-3] if so.endswith(".so") else so
    cache = subprocess.run([os.path.join(ROOT, "scripts", "fetch-vocab.sh")], check=True,
                           capture_output=True, text=True).stdout.strip().splitlines()[-1]
    vocab_dir = os.path.join(cache, "gpt2-vocab")
    jsdir = tokref.ensure_js_tiktoken(cache)

    text, nfiles = english_text(int(args.mb * 1e6))
    nbytes = len(text.encode("utf-8"))
    if nbytes < 5e6:
        sys.exit("bench_tokenizer: found only %.1f MB of English text" % (nbytes / 1e6))

    # Load time: the loader uses a helper thread when a second core is free.
    # For scale on this machine: parsing vocab.json alone with Python's C json.
    with open(os.path.join(vocab_dir, "vocab.json"), "rb") as f:
        raw = f.read()
    pyjson = []
    for _ in range(5):
        t0 = time.perf_counter()
        json.loads(raw)
        pyjson.append((time.perf_counter() - t0) * 1e3)
    load_med, load_min = load_ms(so, vocab_dir)
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})  # one core from here on (node inherits it)
    load1_med, _ = load_ms(so, vocab_dir)

    conn = connect(so)
    conn.execute("SELECT gpt2_load(?)", (vocab_dir,))
    best, ntok = float("inf"), None
    for _ in range(3):
        t0 = time.perf_counter()
        ntok = conn.execute("SELECT gpt2_token_count(?)", (text,)).fetchone()[0]
        best = min(best, time.perf_counter() - t0)

    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt") as f:
        f.write(text)
        f.flush()
        out = subprocess.run(["node", os.path.join(ROOT, "tests", "jstok.mjs"), jsdir,
                              "--bench", f.name], check=True, capture_output=True, text=True)
    js = json.loads(out.stdout)

    print("tokenizer benchmark: %.2f MB of English text (%d files: common-licenses, Vim docs, "
          "copyright files), pinned to CPU %d" % (nbytes / 1e6, nfiles, cpu))
    print("  load vocab.json + merges.txt: %.1f ms median of 21 (min %.1f); on one core %.1f ms"
          % (load_med, load_min, load1_med))
    print("    (for scale: Python's json.loads of vocab.json alone takes %.1f ms here)"
          % statistics.median(pyjson))
    print("  gpt2 (SQL gpt2_token_count): %7.2f MB/s  %d tokens" % (nbytes / best / 1e6, ntok))
    print("  js-tiktoken 1.0.21 (node):   %7.2f MB/s  %d tokens"
          % (js["bytes"] / js["seconds"] / 1e6, js["tokens"]))
    if js["tokens"] != ntok:
        print('  note: token counts differ (white-space engines differ, docs/formats.md, "Tokenizer")')


if __name__ == "__main__":
    main()
