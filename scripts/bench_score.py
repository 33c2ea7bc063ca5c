#!/usr/bin/python3
"""Scoring speed (issue: scoring), on a generated checkpoint of GPT-2 124M
shape with random weights (cached under build/bench/), all in one run:

  1. whole-table scoring: gpt2_score_rows over ROWS rows of ~30 tokens vs
     gpt2_score row by row (goal >= 3x); values compared (must be equal);
  2. gpt2_perplexity of a 5,000-token text vs 512-token prefill tok/s
     (gpt2_logits) (goal >= 80%), with the default stride (n_positions / 2)
     and stride n_positions, next to the ratio the arithmetic allows: every
     scored row runs the LM head (2·n_embd·vocab FLOPs), which prefill does
     not, and overlapping windows recompute their first n_positions - stride
     rows;
  3. zero-shot classification: one 200-token prompt over 5 labels
     (ORDER BY gpt2_score(' ' || label, :prompt) DESC LIMIT 1) vs scoring the
     prompt once (goal <= 1.3x), with gpt2_info()'s counters.

    /usr/bin/python3 scripts/bench_score.py            # 124M shape (minutes)
    /usr/bin/python3 scripts/bench_score.py --quick    # tiny shape: checks the script runs

Each timing is the best of --repeat runs (the machines are shared).
"""
import argparse
import json
import random
import sys
import time

from benchlib import checkpoint, connect

WORDS = ("the of and to in is was for on that with as by at from his her an which "
         "database table query index row column value engine small fast reliable file "
         "memory page cache write read lock journal transaction commit model token text "
         "river mountain city garden music winter summer light stone paper market").split()


def best_of(n, fn):
    best, out = float("inf"), None
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def counters(conn):
    return json.loads(conn.execute("SELECT gpt2_info()").fetchone()[0])["counters"]


def clear_prefix(conn):
    """Setting prefix_reuse to 0 drops the cached state; then back on."""
    conn.execute("SELECT gpt2_set('prefix_reuse', 0)")
    conn.execute("SELECT gpt2_set('prefix_reuse', 1)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny shape, small sizes")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    shape = "tiny" if a.quick else "124M"
    rows_n, words_per_row = (50, 12) if a.quick else (1000, 25)
    long_n, prefill_n, prompt_n = (400, 96, 50) if a.quick else (5000, 512, 200)
    reps = 1 if a.quick else a.repeat

    conn = connect()
    info = json.loads(conn.execute("SELECT gpt2_load(?)", (checkpoint(shape),)).fetchone()[0])
    C, V, P, L = info["n_embd"], info["vocab_size"], info["n_positions"], info["n_layer"]
    rng = random.Random(1)
    print(f"## Scoring ({shape} shape, F32, random weights, threads "
          f"{json.loads(conn.execute('SELECT gpt2_info()').fetchone()[0])['settings']['threads']})")
    print()

    # 1. whole-table scoring vs row by row
    conn.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO docs(body) VALUES (?)",
                     [(" ".join(rng.choice(WORDS) for _ in range(words_per_row)),)
                      for _ in range(rows_n)])
    n_tok = conn.execute("SELECT sum(gpt2_token_count(body)) FROM docs").fetchone()[0]
    conn.execute("SELECT gpt2_set('prefix_reuse', 0)")  # measure batching alone
    t_rows, by_row = best_of(reps, lambda: conn.execute(
        "SELECT id, gpt2_score(body) FROM docs ORDER BY id").fetchall())
    t_tab, by_tab = best_of(reps, lambda: conn.execute(
        "SELECT key, logprob FROM gpt2_score_rows('SELECT id, body FROM docs ORDER BY id')"
    ).fetchall())
    conn.execute("SELECT gpt2_set('prefix_reuse', 1)")
    same = by_row == by_tab
    print(f"### gpt2_score_rows vs gpt2_score per row ({rows_n} rows, {n_tok / rows_n:.1f} "
          f"tokens each, best of {reps})")
    print("| method | seconds | scored tokens/s |")
    print("|---|---|---|")
    print(f"| gpt2_score, row by row | {t_rows:.2f} | {n_tok / t_rows:.0f} |")
    print(f"| gpt2_score_rows (batch_size 64) | {t_tab:.2f} | {n_tok / t_tab:.0f} |")
    print(f"speed-up: {t_rows / t_tab:.2f}x (goal >= 3x); values bitwise equal: {same}")
    print()

    # 2. perplexity of a long text vs prefill
    ids = [rng.randrange(V - 1) for _ in range(long_n)]
    pre = json.dumps([rng.randrange(V - 1) for _ in range(prefill_n)])
    conn.execute("SELECT gpt2_set('prefix_reuse', 0)")
    t_pre, _ = best_of(reps, lambda: conn.execute("SELECT gpt2_logits(json(?))", (pre,)).fetchone())
    ppl_rows = []
    for stride in (P // 2, P):
        t, (ppl,) = best_of(reps, lambda: conn.execute(
            "SELECT gpt2_perplexity(json(?), ?)", (json.dumps(ids), stride)).fetchone())
        ppl_rows.append((stride, t, ppl))
    conn.execute("SELECT gpt2_set('prefix_reuse', 1)")
    # FLOPs per token: the blocks (2 x 12 C^2 per layer) plus attention
    # (4 C per visible key per layer); the LM head 2 C V per scored token
    body = 2 * 12 * C * C * L
    att = lambda t_avg: 4 * C * t_avg * L
    pre_flops = body + att(prefill_n / 2)
    print(f"### gpt2_perplexity of {long_n} tokens vs {prefill_n}-token prefill (best of {reps})")
    print("| what | seconds | tokens/s | vs prefill | arithmetic allows |")
    print("|---|---|---|---|---|")
    print(f"| prefill (gpt2_logits, {prefill_n} tokens) | {t_pre:.2f} | {prefill_n / t_pre:.0f} "
          f"| 100% | |")
    for stride, t, ppl in ppl_rows:
        # fed rows per scored token: (P / stride) in steady state; windows of P
        # fed rows see P / 2 keys on average
        per_tok = (P / stride) * (body + att(P / 2)) + 2 * C * V
        tps = long_n / t
        print(f"| gpt2_perplexity, stride {stride} | {t:.2f} | {tps:.0f} | "
              f"{100 * tps / (prefill_n / t_pre):.0f}% | {100 * pre_flops / per_tok:.0f}% |")
    print("(goal >= 80%; the last column is prefill FLOPs per token / perplexity FLOPs per "
          "scored token: the LM head alone costs "
          f"{100 * 2 * C * V / pre_flops:.0f}% of a prefill row)")
    print()

    # 3. classification: shared prompt, 5 labels
    prompt = json.dumps([rng.randrange(V - 1) for _ in range(prompt_n)])
    conn.execute("CREATE TABLE labels(label TEXT)")
    conn.executemany("INSERT INTO labels VALUES (?)",
                     [(x,) for x in ("positive", "negative", "neutral", "mixed", "unknown")])

    def once():
        clear_prefix(conn)
        return conn.execute("SELECT gpt2_score(json(?))", (prompt,)).fetchone()

    def classify():
        clear_prefix(conn)
        return conn.execute("SELECT label FROM labels ORDER BY gpt2_score(' ' || label, json(?)) "
                            "DESC LIMIT 1", (prompt,)).fetchone()

    t_once, _ = best_of(reps, once)
    c0 = counters(conn)
    t_cls, (label,) = best_of(reps, classify)
    c1 = counters(conn)
    rows = (c1["rows_computed"] - c0["rows_computed"]) // reps
    reused = (c1["prefix_reused"] - c0["prefix_reused"]) // reps
    print(f"### Classification: a {prompt_n}-token prompt over 5 labels (best of {reps})")
    print("| what | seconds |")
    print("|---|---|")
    print(f"| gpt2_score(prompt), once | {t_once:.3f} |")
    print(f"| ORDER BY gpt2_score(' ' || label, prompt) LIMIT 1 | {t_cls:.3f} |")
    print(f"ratio: {t_cls / t_once:.2f}x (goal <= 1.3x); per classification: {rows} rows "
          f"computed, {reused} positions reused; chosen: {label}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
