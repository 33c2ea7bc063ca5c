"""Generation options (README, "Generation options"): the options object of
gpt2_generate / gpt2_stream / gpt2_complete, the logits processors, stop
strings, min_tokens and finish reasons.

References are independent of the extension: greedy continuations come from
tests/reference.py (float64 numpy forward pass, full recomputation) with the
published definitions applied in numpy — Hugging Face's repetition penalty,
OpenAI's frequency / presence penalties and logit bias —; stop-string results
are derived from the plain (option-free) output by the definition "the text
ends before the first stop string the text contains".
"""
import collections
import json
import os

import numpy as np
import pytest

import reference
from conftest import connect, err, one
from make_checkpoint import edit_config, write_checkpoint

P = 40      # context
STEPS = 16  # greedy steps compared


def text(v):
    return v.decode() if isinstance(v, bytes) else v


def ref_greedy(w, cfg, prompt, n, eos, proc=None, min_tokens=0):
    """Up to n greedy ids: numpy logits, proc(logits, prompt, out) applied,
    eos suppressed while len(out) < min_tokens; ends after eos or at the
    context end (P - len(prompt) + 1 tokens)."""
    seq, out = list(prompt), []
    for _ in range(n):
        lg = reference.logits(w, cfg, seq)[-1].astype(np.float64)
        if proc:
            lg = proc(lg.copy(), prompt, out)
        if len(out) < min_tokens:
            lg[eos] = -np.inf
        nxt = int(np.argmax(lg))
        out.append(nxt)
        if nxt == eos or len(seq) == P:
            break
        seq.append(nxt)
    return out


def repetition(p):
    """Hugging Face RepetitionPenaltyLogitsProcessor."""
    def f(lg, prompt, out):
        for j in set(prompt) | set(out):
            lg[j] = lg[j] / p if lg[j] > 0 else lg[j] * p
        return lg
    return f


def penalties(freq, pres):
    """OpenAI: logit[j] -= c[j] * frequency_penalty + (c[j] > 0) * presence_penalty."""
    def f(lg, prompt, out):
        for j, c in collections.Counter(out).items():
            lg[j] -= c * freq + (c > 0) * pres
        return lg
    return f


def bias(b):
    def f(lg, prompt, out):
        for j, v in b.items():
            lg[j] += v
        return lg
    return f


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small checkpoint whose eos id is the 4th greedy token after prompt A
    (so plain generation from A ends on eos after 3 tokens)."""
    d = str(tmp_path_factory.mktemp("opts"))
    cfg, w = write_checkpoint(d, n_layer=2, n_head=2, n_embd=32, n_positions=P, seed=5)
    V = cfg["vocab_size"]
    rng = np.random.default_rng(3)
    for _ in range(50):
        a = rng.integers(0, V, 4).tolist()
        r = reference.greedy(w, cfg, a, 8)
        if r[3] not in r[:3] and r[3] not in a:
            break
    else:
        pytest.fail("no prompt with a fresh 4th greedy token")
    eos = r[3]
    edit_config(d, eos_token_id=eos, bos_token_id=eos)
    cfg = dict(cfg, eos_token_id=eos)
    prompts = []  # ones whose first STEPS greedy tokens have no eos
    for k in (3, 5, 7, 9):
        for _ in range(50):
            ids = rng.integers(0, V, k).tolist()
            if eos not in reference.greedy(w, cfg, ids, STEPS):
                prompts.append(ids)
                break
    assert len(prompts) == 4
    return {"dir": d, "cfg": cfg, "w": w, "V": V, "eos": eos, "A": a, "prompts": prompts}


@pytest.fixture
def conn(model):
    c = connect()
    c.execute("SELECT gpt2_load(?)", (model["dir"],))
    yield c
    c.close()


def stream_ids(conn, ids, opts):
    return [r[0] for r in conn.execute("SELECT token_id FROM gpt2_stream(json(?), ?)",
                                       (json.dumps(ids), json.dumps(opts)))]


# --------------------------------------------------------------------------
# processors against numpy


PROCESSORS = [
    ({"repetition_penalty": 4.0}, repetition(4.0)),
    ({"repetition_penalty": 0.5}, repetition(0.5)),
    ({"frequency_penalty": 2.0}, penalties(2.0, 0)),
    ({"presence_penalty": 2.0}, penalties(0, 2.0)),
    ({"frequency_penalty": 1.5, "presence_penalty": -0.5}, penalties(1.5, -0.5)),
    ({"frequency_penalty": -2.0}, penalties(-2.0, 0)),
]


@pytest.mark.parametrize("opts,proc", PROCESSORS, ids=lambda x: json.dumps(x) if isinstance(x, dict) else "")
def test_greedy_under_processor_equals_numpy(conn, model, opts, proc):
    changed = False
    for ids in model["prompts"]:
        want = ref_greedy(model["w"], model["cfg"], ids, STEPS, model["eos"], proc)
        plain = ref_greedy(model["w"], model["cfg"], ids, STEPS, model["eos"])
        changed |= want != plain
        assert stream_ids(conn, ids, dict(opts, max_tokens=STEPS)) == want, ids
        # the sampled path reads the same processed logits: top_k 1 is greedy
        assert stream_ids(conn, ids, dict(opts, max_tokens=STEPS, temperature=1.0, top_k=1,
                                          seed=9)) == want, ids
    assert changed, "the option changes nothing here: the test would prove nothing"


def test_logit_bias_and_all_processors_together(conn, model):
    V = model["V"]
    for ids in model["prompts"]:
        plain = ref_greedy(model["w"], model["cfg"], ids, STEPS, model["eos"])
        b = {plain[0]: -100.0, plain[2]: -3.5, (plain[1] + 7) % V: 4.25}
        want = ref_greedy(model["w"], model["cfg"], ids, STEPS, model["eos"], bias(b))
        assert want[0] != plain[0]
        opts = {"max_tokens": STEPS, "logit_bias": {str(k): v for k, v in b.items()}}
        assert stream_ids(conn, ids, opts) == want
        procs = [repetition(1.7), penalties(0.4, 0.3), bias(b)]  # the documented order

        def every(lg, prompt, out):
            for f in procs:
                lg = f(lg, prompt, out)
            return lg
        want = ref_greedy(model["w"], model["cfg"], ids, STEPS, model["eos"], every)
        opts.update(repetition_penalty=1.7, frequency_penalty=0.4, presence_penalty=0.3)
        assert stream_ids(conn, ids, opts) == want


def test_logit_bias_sampled(conn, model):
    """-100 on the most likely first token: never drawn; +100 on an unlikely
    one: always drawn (temperature 1, 200 seeds)."""
    ids = model["prompts"][1]
    lg = reference.logits(model["w"], model["cfg"], ids)[-1]
    # a temperature at which the top token is likely (the random model is flat)
    T = next(t for t in (1.0, 0.5, 0.3, 0.2, 0.1) if reference.softmax(lg / t).max() > 0.2)
    top, low = int(np.argmax(lg)), int(np.argmin(lg))
    q = "SELECT token_id FROM gpt2_stream(json(?), ?)"

    def draws(b):
        out = []
        for s in range(200):
            o = {"max_tokens": 1, "temperature": T, "seed": s}
            if b:
                o["logit_bias"] = b
            out.append(one(conn, q, json.dumps(ids), json.dumps(o)))
        return out
    assert top in draws(None)
    assert top not in draws({str(top): -100})
    assert set(draws({str(low): 100})) == {low}


def test_logprob_is_the_unmodified_models(conn, model):
    ids = model["prompts"][0]
    lg = reference.logits(model["w"], model["cfg"], ids)[-1]
    logp = lg - lg.max() - np.log(np.exp(lg - lg.max()).sum())
    low = int(np.argmin(lg))
    tok, lp = conn.execute("SELECT token_id, logprob FROM gpt2_stream(json(?), ?)",
                           (json.dumps(ids), json.dumps({"max_tokens": 1, "logit_bias":
                                                         {str(low): 100}}))).fetchone()
    assert tok == low
    assert abs(lp - logp[low]) < 1e-4


def test_min_tokens(conn, model):
    a, eos = model["A"], model["eos"]
    q = "SELECT gpt2_generate(json(?), ?)"
    r = json.loads(one(conn, q, json.dumps(a), json.dumps({"max_tokens": 12, "result": "json"})))
    assert r["finish_reason"] == "eos" and r["n_tokens"] == 3
    for k in (2, 3, 4, 9):
        want = ref_greedy(model["w"], model["cfg"], a, 12, eos, min_tokens=k)
        got = stream_ids(conn, a, {"max_tokens": 12, "min_tokens": k})
        assert got == want, k
        if k > 3:
            assert eos not in got[:k] and len(got) > k - 1


# --------------------------------------------------------------------------
# stop strings


def plain_rows(conn, ids, n):
    return [text(r[0]) for r in conn.execute("SELECT token FROM gpt2_stream(json(?), ?)",
                                             (json.dumps(ids), n))]


def expected_stop(rows, stops):
    """Token by token, the first time the text contains a stop string: the
    text before its earliest occurrence. None when it never does."""
    t = ""
    for r in rows:
        t += r
        hits = [t.find(s) for s in stops if s in t]
        if hits:
            return t[:min(hits)]
    return None


def check_stop(conn, ids, stops, n=STEPS):
    rows = plain_rows(conn, ids, n)
    want = expected_stop(rows, stops)
    o = json.dumps({"max_tokens": n, "stop": stops})
    g = json.loads(one(conn, "SELECT gpt2_generate(json(?), json_insert(?, '$.result', 'json'))",
                       json.dumps(ids), o))
    srows = conn.execute("SELECT token, finish_reason FROM gpt2_stream(json(?), ?)",
                         (json.dumps(ids), o)).fetchall()
    streamed = "".join(text(r[0]) for r in srows)
    if want is None:
        assert g["text"] == "".join(rows) and g["finish_reason"] != "stop"
    else:
        assert g["text"] == want and g["finish_reason"] == "stop"
        assert srows[-1][1] == "stop"
    assert streamed == g["text"]  # concatenation equals generate; nothing after it came out
    assert all(r[1] is None for r in srows[:-1])
    return rows, g, srows


def test_stop_split_across_tokens(conn, model):
    done = 0
    for ids in model["prompts"]:
        rows = plain_rows(conn, ids, STEPS)
        for k in range(1, len(rows) - 1):
            if len(rows[k - 1]) >= 2 and len(rows[k]) >= 1:
                s = rows[k - 1][-2:] + rows[k][:1]
                if s in "".join(rows[:k - 1]) + rows[k - 1][:-1]:
                    continue  # an earlier occurrence: not the case wanted
                _, g, srows = check_stop(conn, ids, [s])
                assert g["text"] == "".join(rows[:k - 1]) + rows[k - 1][:-2]
                # the row that began the stop string showed none of it
                assert len(srows) == k + 1
                done += 1
                break
    assert done


def test_stop_at_the_very_start(conn, model):
    for ids in model["prompts"]:
        rows = plain_rows(conn, ids, STEPS)
        t = "".join(rows)
        _, g, srows = check_stop(conn, ids, [t[:1]])
        assert g["text"] == "" and g["n_tokens"] == 1
        assert [text(r[0]) for r in srows] == [""]


def test_stop_overlapping_and_several(conn, model):
    ids = model["prompts"][2]
    t = "".join(plain_rows(conn, ids, STEPS))
    assert len(t) > 12
    i = len(t) // 2
    check_stop(conn, ids, [t[i:i + 4], t[i + 1:i + 3]])   # one inside the other
    check_stop(conn, ids, [t[i + 2:i + 5], t[i:i + 3]])   # overlapping, the later listed first
    check_stop(conn, ids, [t[i:i + 3], t[i:i + 3]])       # twice the same
    check_stop(conn, ids, ["\u2603never", t[i:i + 2], "\u00e9t\u00e9"])


def test_stream_holds_back_a_false_start(conn, model):
    """A stop string whose beginning occurs but never completes: that text is
    held, then emitted once it cannot start the stop string any more."""
    ids = model["prompts"][3]
    rows = plain_rows(conn, ids, STEPS)
    t = "".join(rows)
    k = next(k for k in range(len(rows) - 1) if len(rows[k]) >= 2)
    stop = rows[k][-2:] + "\u2603"  # never generated
    _, g, srows = check_stop(conn, ids, [stop])
    assert g["text"] == t and g["finish_reason"] == "length"
    got = [text(r[0]) for r in srows]
    assert got[k] == rows[k][:-2]  # the possible start was held ...
    assert got[k + 1].startswith(rows[k][-2:])  # ... and released with the next row


def test_stop_in_complete(conn, model):
    ids = model["prompts"][1]
    rows = plain_rows(conn, ids, STEPS)
    s = "".join(rows)[5:7]
    want = expected_stop(rows, [s])
    conn.execute("CREATE TABLE t(k, p)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(0, json.dumps(ids)), (1, None)])
    got = conn.execute("SELECT key, completion, finish_reason FROM gpt2_complete("
                       "'SELECT k, json(p) FROM t', ?)",
                       (json.dumps({"max_tokens": STEPS, "stop": [s]}),)).fetchall()
    assert sorted(got, key=lambda r: r[0]) == [(0, want, "stop"), (1, None, None)]


# --------------------------------------------------------------------------
# finish reasons


def context_prompt(model):
    """P - 2 ids whose 3 context-end tokens contain no eos."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        ids = rng.integers(0, model["V"], P - 2).tolist()
        if model["eos"] not in reference.greedy(model["w"], model["cfg"], ids, 3):
            return ids
    pytest.fail("no prompt")


def test_finish_reasons(conn, model):
    a = model["A"]
    ids = model["prompts"][0]
    t = "".join(plain_rows(conn, ids, 8))
    cases = [  # (prompt, options, reason, tokens)
        (a, {"max_tokens": 10}, "eos", 3),
        (ids, {"max_tokens": 2}, "length", 2),
        (ids, {"max_tokens": 8, "stop": t[3:5]}, "stop", None),
        (context_prompt(model), {"max_tokens": P}, "context", 3),
        (context_prompt(model), {"max_tokens": 3}, "context", 3),  # both at once: context
        (ids, {"max_tokens": 0}, "length", 0),
    ]
    conn.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, p, o)")
    for k, (p, o, why, n) in enumerate(cases):
        conn.execute("INSERT INTO t VALUES (?, ?, ?)", (k, json.dumps(p), json.dumps(o)))
        g = json.loads(one(conn, "SELECT gpt2_generate(json(?), json_insert(?, '$.result', 'json'))",
                           json.dumps(p), json.dumps(o)))
        assert g["finish_reason"] == why, (k, g)
        if n is not None:
            assert g["n_tokens"] == n
        assert g["text"] == text(one(conn, "SELECT gpt2_generate(json(?), ?)", json.dumps(p),
                                     json.dumps(o)))
        rows = conn.execute("SELECT finish_reason FROM gpt2_stream(json(?), ?)",
                            (json.dumps(p), json.dumps(o))).fetchall()
        if o["max_tokens"]:
            assert [r[0] for r in rows] == [None] * (len(rows) - 1) + [why], k
        else:
            assert rows == []
        c = conn.execute("SELECT completion, n_tokens, finish_reason FROM gpt2_complete("
                         "'SELECT k, json(p) FROM t WHERE k = ' || ?, ?)",
                         (k, json.dumps(o))).fetchall()
        assert c == [(g["text"], g["n_tokens"], why)], k
    # positional forms report them too
    assert one(conn, "SELECT finish_reason FROM gpt2_complete('SELECT 1, json(p) FROM t "
               "WHERE k = 1', 2)") == "length"


def test_result_json_has_the_json_subtype(conn, model):
    a = json.dumps(model["A"])  # 3 tokens, then eos
    r = one(conn, "SELECT json_type(gpt2_generate(json(?), json_object('max_tokens', 2, "
            "'result', 'json')), '$.n_tokens')", a)
    assert r == "integer"
    r = one(conn, "SELECT json_array(gpt2_generate(json(?), json_object('max_tokens', 2, "
            "'result', 'json')))", a)
    assert json.loads(r)[0]["n_tokens"] == 2  # nested as an object, not a string


# --------------------------------------------------------------------------
# the options object itself


def test_options_with_or_without_the_subtype(conn, model):
    plain = text(one(conn, "SELECT gpt2_generate('ab', 5, 0.9, 0, 1, 42)"))
    for sql, args in [
        ("SELECT gpt2_generate('ab', json_object('max_tokens', 5, 'temperature', 0.9, 'seed', 42))", ()),
        ("SELECT gpt2_generate('ab', ?)", ('{"max_tokens": 5, "temperature": 0.9, "seed": 42}',)),
        ("SELECT gpt2_generate('ab', ?)", ('{"max_tokens": 5.0, "temperature": 0.9, "seed": 42, '
                                           '"top_k": null, "stop": []}',)),
    ]:
        assert text(one(conn, sql, *args)) == plain
    got = "".join(text(r[0]) for r in conn.execute(
        "SELECT token FROM gpt2_stream('ab', json_object('max_tokens', 5, 'temperature', 0.9, "
        "'seed', 42))"))
    assert got == plain


def test_complete_equals_generate_row_by_row(conn, model):
    conn.execute("CREATE TABLE t(k INTEGER PRIMARY KEY, p)")
    prompts = model["prompts"] + [model["A"], [], model["prompts"][0]]
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(k, json.dumps(p)) for k, p in enumerate(prompts)])
    t = "".join(plain_rows(conn, model["prompts"][2], 10))
    opts = [
        {"max_tokens": 12, "temperature": 0.9, "seed": 5, "repetition_penalty": 1.3,
         "frequency_penalty": 0.5, "presence_penalty": 0.2, "min_tokens": 4,
         "logit_bias": {"3": 2.0, "10": -1.0}, "stop": [t[4:6], "zz"]},
        {"max_tokens": 9, "temperature": 1.2, "top_k": 20, "top_p": 0.9, "seed": -3,
         "frequency_penalty": -1},
        {"max_tokens": 9, "repetition_penalty": 2.0, "stop": t[2:3]},
    ]
    for o in opts:
        for batch in (1, 3, 16):
            oc = dict(o, batch_size=batch)
            rows = conn.execute("SELECT key, completion, n_tokens, finish_reason FROM gpt2_complete("
                                "'SELECT k, json(p) FROM t ORDER BY k', ?)",
                                (json.dumps(oc),)).fetchall()
            assert sorted(r[0] for r in rows) == list(range(len(prompts)))
            for k, completion, n, why in rows:
                og = dict(o, result="json")
                if "seed" in o:
                    og["seed"] = o["seed"] + k
                g = json.loads(one(conn, "SELECT gpt2_generate(json(?), ?)",
                                   json.dumps(prompts[k]), json.dumps(og)))
                assert (completion, n, why) == (g["text"], g["n_tokens"], g["finish_reason"]), (o, batch, k)


def test_same_result_with_any_thread_count(conn, model):
    o = json.dumps({"max_tokens": 12, "temperature": 0.8, "seed": 1, "repetition_penalty": 1.2,
                    "frequency_penalty": 0.7, "logit_bias": {"5": 1.5}})
    q = "SELECT gpt2_generate(json(?), ?)"
    outs = set()
    for th in (1, 2, 3):
        conn.execute("SELECT gpt2_set('threads', ?)", (th,))
        outs.add(text(one(conn, q, json.dumps(model["prompts"][1]), o)))
    assert len(outs) == 1


# --------------------------------------------------------------------------
# errors

G = "SELECT gpt2_generate('a', ?)"


@pytest.mark.parametrize("opts,msg", [
    ({"max_tokenz": 3}, "gpt2_generate: unknown option 'max_tokenz'; the options are max_tokens, "
     "temperature, top_k, top_p, seed, stop, repetition_penalty, frequency_penalty, "
     "presence_penalty, logit_bias, min_tokens, draft, draft_tokens, result"),
    ({"batch_size": 3}, "gpt2_generate: unknown option 'batch_size'"),
    ({"top_p": 1.5}, "gpt2_generate: option 'top_p' = 1.5 is out of range (0, 1]"),
    ({"top_p": 0}, "gpt2_generate: option 'top_p' = 0 is out of range (0, 1]"),
    ({"top_p": "0.5"}, "gpt2_generate: option 'top_p' = \"0.5\" must be a number"),
    ({"max_tokens": -1}, "gpt2_generate: option 'max_tokens' = -1 is out of range [0, 40]"),
    ({"max_tokens": 41}, "gpt2_generate: option 'max_tokens' = 41 is out of range [0, 40]"),
    ({"max_tokens": 2.5}, "gpt2_generate: option 'max_tokens' = 2.5 must be an integer"),
    ({"max_tokens": True}, "gpt2_generate: option 'max_tokens' = true must be an integer"),
    ({"temperature": -0.1}, "gpt2_generate: option 'temperature' = -0.1 is out of range [0, inf)"),
    ({"temperature": [1]}, "gpt2_generate: option 'temperature' = [1] must be a number"),
    ({"top_k": -1}, "gpt2_generate: option 'top_k' = -1 is out of range [0, 2147483647]"),
    ({"top_k": "5"}, "gpt2_generate: option 'top_k' = \"5\" must be an integer"),
    ({"seed": 1.5}, "gpt2_generate: option 'seed' = 1.5 must be an integer"),
    ({"seed": 1e19}, "gpt2_generate: option 'seed' = 1e+19 is out of range "
     "[-9223372036854775808, 9223372036854775807]"),
    ({"repetition_penalty": 0}, "gpt2_generate: option 'repetition_penalty' = 0 is out of range (0, inf)"),
    ({"repetition_penalty": -1.5}, "gpt2_generate: option 'repetition_penalty' = -1.5 is out of range (0, inf)"),
    ({"frequency_penalty": 2.5}, "gpt2_generate: option 'frequency_penalty' = 2.5 is out of range [-2, 2]"),
    ({"presence_penalty": -3}, "gpt2_generate: option 'presence_penalty' = -3 is out of range [-2, 2]"),
    ({"presence_penalty": {}}, "gpt2_generate: option 'presence_penalty' = {} must be a number"),
    ({"min_tokens": -1}, "gpt2_generate: option 'min_tokens' = -1 is out of range [0, 40]"),
    ({"min_tokens": "x"}, "gpt2_generate: option 'min_tokens' = \"x\" must be an integer"),
    ({"result": "xml"}, "gpt2_generate: option 'result' = \"xml\" must be 'text' or 'json'"),
    ({"result": 1}, "gpt2_generate: option 'result' = 1 must be 'text' or 'json'"),
    ({"stop": 5}, "gpt2_generate: option 'stop' = 5 must be a string or an array of strings"),
    ({"stop": ["a", 5]}, "gpt2_generate: option 'stop' = [\"a\",5] must be a string or an array of strings"),
    ({"stop": ""}, "gpt2_generate: option 'stop' = \"\" has a string of 0 bytes; each must be 1 to 256 bytes"),
    ({"stop": ["x" * 257]}, "gpt2_generate: option 'stop' = [\"" + "x" * 62 +
     "... has a string of 257 bytes; each must be 1 to 256 bytes"),
    ({"stop": list("abcdefghi")}, "gpt2_generate: option 'stop' = [\"a\",\"b\",\"c\",\"d\",\"e\","
     "\"f\",\"g\",\"h\",\"i\"] has 9 strings; at most 8 are allowed"),
    ({"logit_bias": [1]}, "gpt2_generate: option 'logit_bias' = [1] must be a JSON object mapping "
     "token ids to biases, e.g. {\"464\": -100}"),
    ({"logit_bias": {"x": 1}}, "gpt2_generate: option 'logit_bias': key 'x' is not a token id "
     "(a decimal integer in [0, V))"),
    ({"logit_bias": {"-1": 1}}, "gpt2_generate: option 'logit_bias': key '-1' is not a token id "
     "(a decimal integer in [0, V))"),
    ({"logit_bias": {"99999": 1}}, "gpt2_generate: option 'logit_bias': token id 99999 is outside "
     "the vocabulary (size V)"),
    ({"logit_bias": {"3": 101}}, "gpt2_generate: option 'logit_bias': '3' = 101 is out of range [-100, 100]"),
    ({"logit_bias": {"3": "1"}}, "gpt2_generate: option 'logit_bias': '3' = \"1\" must be a number"),
    ({"logit_bias": {"3": 1, "03": 2}}, "gpt2_generate: option 'logit_bias': token id 3 is given twice"),
])
def test_option_errors(conn, model, opts, msg):
    msg = msg.replace("V)", "%d)" % model["V"])
    got = err(conn, G, json.dumps(opts))
    assert got.startswith(msg) if msg.endswith("'batch_size'") else got == msg


def test_not_an_object(conn, model):
    pre = ("gpt2_generate: argument 2 (max_tokens or options) must be an INTEGER or a JSON "
           "object of options, e.g. json_object('max_tokens', 40); got TEXT ")
    assert err(conn, G, "[1, 2]") == pre + "'[1, 2]', not a JSON object"
    assert err(conn, G, "40") == pre + "'40', not a JSON object"
    assert err(conn, G, "{\"a\": ") .startswith(pre + "'{\"a\": ': ")
    assert err(conn, G, '{"seed": 1, "seed": 2}').startswith(pre + "'{\"seed\": 1, \"seed\": 2}': duplicate")


def test_max_tokens_limit_applies_to_options(conn, model):
    conn.execute("SELECT gpt2_set('max_tokens_limit', 4)")
    assert err(conn, G, '{"max_tokens": 5}') == ("gpt2_generate: option 'max_tokens' = 5 is above "
                                                 "the connection's max_tokens_limit (4); see gpt2_set")


def test_options_and_positional_do_not_mix(conn, model):
    o = '{"max_tokens": 3}'
    assert err(conn, "SELECT gpt2_generate('a', ?, 0.5)", o) == (
        "gpt2_generate: argument 3 (temperature) cannot be given with an options object in "
        "argument 2; put 'temperature' in the options")
    assert err(conn, "SELECT gpt2_generate('a', ?, NULL, NULL, NULL, 7)", o) == (
        "gpt2_generate: argument 6 (seed) cannot be given with an options object in "
        "argument 2; put 'seed' in the options")
    assert err(conn, "SELECT * FROM gpt2_stream('a', ?, NULL, 3)", o) == (
        "gpt2_stream: argument 4 (top_k) cannot be given with an options object in "
        "argument 2; put 'top_k' in the options")
    assert err(conn, "SELECT * FROM gpt2_complete('SELECT 1, ''a''', ?, NULL, NULL, NULL, NULL, 4)",
               o) == ("gpt2_complete: argument 7 (batch_size) cannot be given with an options "
                      "object in argument 2; put 'batch_size' in the options")
    # NULL positional arguments are absent, as everywhere
    assert one(conn, "SELECT length(gpt2_generate('a', ?, NULL)) >= 0", o) == 1


def test_function_specific_keys(conn, model):
    assert err(conn, "SELECT * FROM gpt2_stream('a', ?)", '{"result": "json"}').startswith(
        "gpt2_stream: unknown option 'result'; the options are max_tokens, ")
    assert err(conn, "SELECT * FROM gpt2_complete('SELECT 1, ''a''', ?)", '{"result": "json"}') \
        .endswith("logit_bias, min_tokens, draft, draft_tokens, batch_size")
    assert err(conn, "SELECT * FROM gpt2_complete('SELECT 1, ''a''', ?)", '{"batch_size": 0}') == \
        "gpt2_complete: option 'batch_size' = 0 is out of range [1, 256]"
    assert err(conn, "SELECT * FROM gpt2_stream('a', ?)", '{"top_p": 2}') == \
        "gpt2_stream: option 'top_p' = 2 is out of range (0, 1]"
