"""Whole-table completion against row-at-a-time generation (issue: batched
generation). On a GPT-2 124M-shaped checkpoint with random weights:
32 rows x 32 new tokens through gpt2_complete vs gpt2_generate per row, in the
same run, completions compared; then tokens/s for several batch sizes next to
the sgemm compute limit measured in the same run."""
import json
import sys
import time

from benchlib import checkpoint, connect, sgemm_gflops

ROWS, NEW = 32, 32
FORMAT_REPS = 5  # the format ratios are within this machine's swing: more reps than elsewhere


def main():
    d = checkpoint("124M")
    conn = connect()
    conn.execute("SELECT gpt2_load(?)", (d,))
    conn.execute("SELECT gpt2_set('prefix_reuse', 0)")  # measure batching alone
    conn.execute("CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO docs(body) VALUES (?)",
                     [(f"Document {i}: the quick brown fox number {i} jumps",) for i in range(64)])
    q = f"SELECT id, body FROM docs WHERE id <= {ROWS}"
    info = json.loads(conn.execute("SELECT gpt2_info()").fetchone()[0])
    n_params = info["n_params"]

    t = time.perf_counter()
    one_by_one = {i: conn.execute("SELECT gpt2_generate(body, ?) FROM docs WHERE id = ?",
                                  (NEW, i)).fetchone()[0] for i in range(1, ROWS + 1)}
    t_rows = time.perf_counter() - t

    def complete(batch, rows=ROWS):
        qq = f"SELECT id, body FROM docs WHERE id <= {rows}"
        t = time.perf_counter()
        out = conn.execute("SELECT key, completion, n_tokens FROM gpt2_complete(?, ?, 0, 0, 1, 0, ?)",
                           (qq, NEW, batch)).fetchall()
        return time.perf_counter() - t, out

    # the machines are shared: batched runs are short, so repeat them and
    # give the median and the best; the speed-up uses the median
    runs = [complete(32) for _ in range(5)]
    same = all(all(one_by_one[k] == c for k, c, _ in out) and len(out) == ROWS for _, out in runs)
    toks = sum(n for _, _, n in runs[0][1])
    ts = sorted(t for t, _ in runs)
    t_batch, t_best = ts[len(ts) // 2], ts[0]
    print(f"## gpt2_complete vs gpt2_generate (124M shape, F32, {ROWS} rows x {NEW} new tokens)")
    print(f"| method | seconds | tokens/s |")
    print(f"|---|---|---|")
    print(f"| gpt2_generate, row at a time | {t_rows:.2f} | {toks / t_rows:.1f} |")
    print(f"| gpt2_complete, batch_size 32, median of 5 | {t_batch:.2f} | {toks / t_batch:.1f} |")
    print(f"| gpt2_complete, batch_size 32, best of 5 | {t_best:.2f} | {toks / t_best:.1f} |")
    print(f"speed-up (median): {t_rows / t_batch:.2f}x; completions identical (all 5 runs): {same}")
    print()
    gf = sgemm_gflops(32, 3072, 768)
    complete(32)  # untimed: a first run also sizes the scratch buffers
    print(f"## tokens/s by batch size ({max(64, ROWS)} rows where the batch allows; best of 3)")
    print("| batch_size | tokens/s | GFLOP/s (2 x params x tokens/s) | % of sgemm |")
    print("|---|---|---|---|")
    for b in (1, 4, 16, 32, 64):
        rows = max(b, 16) if b < 64 else 64
        dt, out = min((complete(b, rows) for _ in range(3)), key=lambda r: r[0])
        tps = sum(n for _, _, n in out) / dt
        g = 2 * n_params * tps / 1e9
        print(f"| {b} | {tps:.1f} | {g:.1f} | {100 * g / gf:.0f}% |")
    print(f"OpenBLAS sgemm (32x768 . 768x3072), same run: {gf:.1f} GFLOP/s")
    print()
    # batched steps by weight format: a 16-, 8- or 4-bit tile is widened to
    # f32 once and then runs the f32 kernel, so each should keep f32's pace
    # (goal: batch 32 >= 700 tok/s, batch 64 >= 750, every format >= f32);
    # the formats alternate rep by rep so a busy spell hits them all
    import sqlite3
    forms = []
    for w in ("f32", "f16", "bf16", "q8", "q4"):
        try:
            conn.execute("SELECT gpt2_load(?, ?, ?)", (d, "fmt_" + w, w))
            forms.append(w)
            conn.execute("SELECT gpt2_use(?)", ("fmt_" + w,))
            complete(32)  # untimed, as above
        except sqlite3.Error as e:
            print(f"({w}: not measured: {e})")
    best = {(w, b): 0.0 for w in forms for b in (32, 64)}
    for _ in range(FORMAT_REPS):
        for w in forms:
            conn.execute("SELECT gpt2_use(?)", ("fmt_" + w,))
            for b in (32, 64):
                dt, out = complete(b, b)
                best[w, b] = max(best[w, b], sum(n for _, _, n in out) / dt)
    print(f"## gpt2_complete by weight format ({NEW} new tokens per row, rows = batch_size, "
          f"best of {FORMAT_REPS}, formats alternating)")
    print("| weights | batch 32 tok/s | GFLOP/s | vs f32 | batch 64 tok/s | GFLOP/s | vs f32 |")
    print("|---|---|---|---|---|---|---|")
    for w in forms:
        cells = []
        for b in (32, 64):
            t = best[w, b]
            cells += [f"{t:.1f}", f"{2 * n_params * t / 1e9:.1f}", f"{t / best['f32', b]:.2f}x"]
        print(f"| {w} | " + " | ".join(cells) + " |")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
