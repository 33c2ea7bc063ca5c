#!/usr/bin/python3
"""Write GPT-2 checkpoint directories with random weights (Hugging Face
layout: config.json, model.safetensors, vocab.json, merges.txt).

Used by the tests (tiny shapes, every variant a real checkpoint can take),
and by the demo and benchmarks (official shapes, real vocabulary):

    /usr/bin/python3 tests/make_checkpoint.py OUTDIR [--shape tiny|124M|355M|774M|1.5B]
                     [--dtype F32|F16|BF16] [--vocab-dir DIR] [--seed N]

The safetensors file is written here with struct/json (no safetensors
package), tensor by tensor in chunks, so a 124M checkpoint (~500 MB) takes a
few seconds.

Weights. Standard normal values times a per-kind scale, chosen by running the
reference greedy decoder (40 steps, 4 seeds, a ~560 and the 50257 token
vocabulary) over a few candidate scales. With GPT-2's usual 0.02 init, or with
a large wte, the tied head mostly sees the current token's own embedding and
greedy decoding repeats one token (runs of 25-37 seen with wte 0.5). With the
scales below, 40 greedy steps produce 27-38 distinct ids with runs of at most
3, and logits stay O(1-10) so float32 agrees with the float64 reference to
~1e-5:
    wte 0.2, wpe 1.0, c_attn 0.4, attn.c_proj 0.15, c_fc 0.3, mlp.c_proj 0.1,
    LayerNorm weight 1 + 0.1 N, all biases 0.05 N.
(WEIGHT_STD below; tests/test_model.py checks the non-collapse property.)

Rounding: F16 weights are numpy's float16 (round to nearest even), BF16 the
upper half of float32 rounded to nearest even. write_checkpoint returns the
float32 values of what was stored, so the reference runs on exactly the
weights the extension loads.
"""
import argparse
import collections
import functools
import json
import os
import re
import shutil
import struct
import sys

import numpy as np

SHAPES = {  # n_layer, n_head, n_embd, n_positions (docs/formats.md, "Checkpoint directory")
    "tiny": (2, 4, 64, 128),
    "124M": (12, 12, 768, 1024),
    "355M": (24, 16, 1024, 1024),
    "774M": (36, 20, 1280, 1024),
    "1.5B": (48, 25, 1600, 1024),
}

WEIGHT_STD = {
    "wte": 0.2, "wpe": 1.0, "attn.c_attn": 0.4, "attn.c_proj": 0.15,
    "mlp.c_fc": 0.3, "mlp.c_proj": 0.1, "ln_gain": 0.1, "bias": 0.05,
}

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "BOOL": 1, "U8": 1, "I64": 8}

EOT = "<|endoftext|>"

DELETE = object()  # extra_config value that removes a key from config.json

# ---------------------------------------------------------------------------
# vocabulary


def bytes_to_unicode():
    """GPT-2's byte -> printable character map (docs/formats.md, "Tokenizer")."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


TRAIN_TEXT = """\
The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst
of times, it was the age of wisdom, it was the age of foolishness. Once upon a time there
was a small database that wanted to write stories. Every morning it read the tables, and
every evening it wrote a new line of text. The dog ran to the park and the cat sat on the
mat. She said that they're going to the market, and we'll see what they've got. Numbers
like 1, 12, 123 and 2024 appear in the text too; so do words such as language, model,
transformer, attention, layer, token, sequence, query, select, from, where, and order.
In the beginning the story was short, but then it grew longer and longer, until the
people of the town came to hear it read aloud. Hello world! Hello, my dog is cute.
A loadable extension adds new SQL functions to the database engine: it can tokenize a
prompt, run the network over every position, and sample the next word with a seeded
random number generator. Weights are stored as floating point numbers in a file whose
header describes each tensor's name, shape and offsets. The river flowed quietly past
the old mill, where children played in the summer and skaters raced in the winter.
"Where are you going?" asked the teacher. "Home," replied the student, "because it's
late and I haven't finished my homework." Temperature 0.8, top-k 40 and top-p 0.95
are common settings; greedy decoding always picks the most likely token instead.
"""

# An approximation of GPT-2's pre-tokenisation with Python's re: good enough
# to learn plausible merges (the tokenizer itself is tested elsewhere).
_PIECE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+""")


def learn_bpe(text, n_merges):
    """Byte-level BPE merges learned from text (most frequent pair first;
    ties broken by the pair's spelling, so the result is deterministic)."""
    b2u = bytes_to_unicode()
    words = collections.Counter(
        tuple(b2u[b] for b in piece.encode("utf-8")) for piece in _PIECE.findall(text))
    merges = []
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                pairs[a, b] += c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        new = collections.Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


@functools.lru_cache(maxsize=None)
def tiny_vocab(n_merges=300):
    """(vocab dict, merges list): 256 byte tokens in GPT-2's order, the learned
    merges, then <|endoftext|> as the last id (not 50256)."""
    b2u = bytes_to_unicode()
    vocab = {}
    for b in b2u:  # insertion order = GPT-2's byte-token order
        vocab[b2u[b]] = len(vocab)
    merges = learn_bpe(TRAIN_TEXT, n_merges)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    vocab[EOT] = len(vocab)
    return vocab, merges


def write_vocab(path, vocab, merges):
    with open(os.path.join(path, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


# ---------------------------------------------------------------------------
# dtype rounding


def to_storage(x, dtype):
    """(bytes-like array as stored, float32 of the stored values)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == "F32":
        return x.astype("<f4"), x
    if dtype == "F16":
        h = x.astype("<f2")
        return h, h.astype(np.float32)
    if dtype == "BF16":
        u = x.view(np.uint32).astype(np.uint64)
        u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16  # round to nearest even
        b = u.astype("<u2")
        return b, (b.astype(np.uint32) << 16).view(np.float32)
    raise ValueError(f"unsupported dtype {dtype}")


# ---------------------------------------------------------------------------
# checkpoint


class _Tensor:
    """One entry of the file: name, dtype, shape and how to make its data."""

    def __init__(self, name, dtype, shape, make, canon=None):
        self.name, self.dtype, self.shape, self.make, self.canon = name, dtype, shape, make, canon

    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * DTYPE_SIZE.get(self.dtype, 1)


def write_checkpoint(path, *, n_layer=2, n_head=4, n_embd=64, n_positions=128, n_inner=None,
                     vocab_dir=None, vocab_size=None, dtype="F32", prefixed=False, masks=False,
                     masks_dtype=None, lm_head=False, eos_id=None, seed=0, unaligned=True,
                     scale_attn_by_inverse_layer_idx=False, extra_config=None,
                     return_weights=True):
    """Write a checkpoint directory at path; return (config dict, weights).

    weights maps canonical bare names ("wte.weight", "h.0.attn.c_attn.weight",
    ..., "lm_head.weight" when lm_head) to float32 arrays equal to what the
    file stores after dtype rounding (None when return_weights is False).
    masks writes h.i.attn.bias [1,1,P,P] and h.i.attn.masked_bias [] as the
    official files do, in masks_dtype (default: dtype; any string, e.g. an
    unknown "X9" stored as 1 byte per element). unaligned makes the data start
    at an offset that is not a multiple of 4, as in OpenAI's gpt2 file.
    """
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)

    if vocab_dir is None:
        vocab, merges = tiny_vocab()
        write_vocab(path, vocab, merges)
        tok_size = len(vocab)
        eot = vocab[EOT]
    else:
        for f in ("vocab.json", "merges.txt"):
            shutil.copyfile(os.path.join(vocab_dir, f), os.path.join(path, f))
        with open(os.path.join(vocab_dir, "vocab.json"), encoding="utf-8") as f:
            vocab = json.load(f)
        tok_size = max(vocab.values()) + 1
        eot = vocab.get(EOT, tok_size - 1)
    V = vocab_size if vocab_size is not None else tok_size
    eos = eos_id if eos_id is not None else eot
    C, P, L = n_embd, n_positions, n_layer
    F = n_inner if n_inner is not None else 4 * C

    cfg = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": eos,
        "embd_pdrop": 0.1,
        "eos_token_id": eos,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": P,
        "n_embd": C,
        "n_head": n_head,
        "n_inner": n_inner,
        "n_layer": L,
        "n_positions": P,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": scale_attn_by_inverse_layer_idx,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[dtype],
        "transformers_version": "4.40.0",
        "use_cache": True,
        "vocab_size": V,
    }
    for k, v in (extra_config or {}).items():
        if v is DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)

    # The tensor list, in the order the data is written.
    def normal(std):
        return lambda shape: rng.standard_normal(shape, dtype=np.float32) * np.float32(std)

    def gain(shape):
        return 1 + rng.standard_normal(shape, dtype=np.float32) * np.float32(WEIGHT_STD["ln_gain"])

    bias = normal(WEIGHT_STD["bias"])
    pre = "transformer." if prefixed else ""
    mdt = masks_dtype or dtype
    tensors = []

    def add(canon, shape, make, dt=dtype, stored=None):
        tensors.append(_Tensor(pre + canon if stored is None else stored, dt, shape, make, canon))

    add("wte.weight", (V, C), normal(WEIGHT_STD["wte"]))
    add("wpe.weight", (P, C), normal(WEIGHT_STD["wpe"]))
    for i in range(L):
        h = f"h.{i}."
        add(h + "ln_1.weight", (C,), gain)
        add(h + "ln_1.bias", (C,), bias)
        if masks:
            add(None, (1, 1, P, P), lambda s: np.tril(np.ones(s, np.float32)), mdt,
                stored=pre + h + "attn.bias")
            add(None, (), lambda s: np.full(s, -1e4, np.float32), mdt,
                stored=pre + h + "attn.masked_bias")
        add(h + "attn.c_attn.weight", (C, 3 * C), normal(WEIGHT_STD["attn.c_attn"]))
        add(h + "attn.c_attn.bias", (3 * C,), bias)
        add(h + "attn.c_proj.weight", (C, C), normal(WEIGHT_STD["attn.c_proj"]))
        add(h + "attn.c_proj.bias", (C,), bias)
        add(h + "ln_2.weight", (C,), gain)
        add(h + "ln_2.bias", (C,), bias)
        add(h + "mlp.c_fc.weight", (C, F), normal(WEIGHT_STD["mlp.c_fc"]))
        add(h + "mlp.c_fc.bias", (F,), bias)
        add(h + "mlp.c_proj.weight", (F, C), normal(WEIGHT_STD["mlp.c_proj"]))
        add(h + "mlp.c_proj.bias", (C,), bias)
    add("ln_f.weight", (C,), gain)
    add("ln_f.bias", (C,), bias)
    if lm_head:
        add("lm_head.weight", (V, C), normal(WEIGHT_STD["wte"]), stored="lm_head.weight")

    # Header: contiguous offsets in write order, padded with spaces so the data
    # starts 8-aligned (as the safetensors library does) or deliberately not
    # 4-aligned.
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for t in tensors:
        n = t.nbytes()
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [off, off + n]}
        off += n
    hj = json.dumps(header, separators=(",", ":")).encode()
    pad = (-(8 + len(hj))) % 8
    if unaligned:
        pad += 3  # data start = 3 mod 8
    hj += b" " * pad

    weights = {} if return_weights else None
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for t in tensors:
            _write_tensor(f, t, weights)
    return cfg, weights


def edit_config(path, **keys):
    """Set keys of the checkpoint's config.json at path (e.g. eos_token_id)."""
    cp = os.path.join(path, "config.json")
    with open(cp) as f:
        c = json.load(f)
    c.update(keys)
    with open(cp, "w") as f:
        json.dump(c, f)


def _write_tensor(f, t, weights):
    """Generate t's data (in row chunks for big tensors) and write it."""
    shape = t.shape
    if t.dtype not in ("F32", "F16", "BF16"):  # mask buffers in another dtype
        data = t.make(shape)
        size = DTYPE_SIZE.get(t.dtype, 1)  # unknown dtypes: 1 byte per element
        out = (data != 0).astype(np.uint8) if size == 1 else data.astype({2: "<i2", 4: "<i4",
                                                                           8: "<i8"}[size])
        np.ascontiguousarray(out).tofile(f)
        return
    rows = shape[0] if len(shape) == 2 else 1
    chunk = max(1, (1 << 22) // max(1, int(np.prod(shape[1:], dtype=np.int64)))) if len(shape) == 2 else 1
    keep = [] if weights is not None and t.canon else None
    for r0 in range(0, rows, chunk):
        sub = (min(chunk, rows - r0),) + tuple(shape[1:]) if len(shape) == 2 else shape
        stored, as_f32 = to_storage(t.make(sub), t.dtype)
        stored.tofile(f)
        if keep is not None:
            keep.append(as_f32)
    if keep is not None:
        weights[t.canon] = np.concatenate(keep).reshape(shape) if len(shape) == 2 else keep[0]


# ---------------------------------------------------------------------------
# command line


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--dtype", choices=["F32", "F16", "BF16"], default="F32")
    ap.add_argument("--vocab-dir", help="directory with vocab.json and merges.txt (default: the "
                    "real GPT-2 vocabulary for official shapes, a tiny one for 'tiny')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--masks", action="store_true", help="write attn.bias/masked_bias buffers")
    a = ap.parse_args(argv)
    L, H, C, P = SHAPES[a.shape]
    vocab_dir = a.vocab_dir
    if vocab_dir is None and a.shape != "tiny":
        import subprocess
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        cache = subprocess.run([os.path.join(root, "scripts", "fetch-vocab.sh")], check=True,
                               capture_output=True, text=True).stdout.strip().splitlines()[-1]
        vocab_dir = os.path.join(cache, "gpt2-vocab")
    cfg, _ = write_checkpoint(a.outdir, n_layer=L, n_head=H, n_embd=C, n_positions=P,
                              vocab_dir=vocab_dir, dtype=a.dtype, masks=a.masks, seed=a.seed,
                              unaligned=True, return_weights=False)
    size = os.path.getsize(os.path.join(a.outdir, "model.safetensors"))
    print(f"{a.outdir}: {a.shape} {a.dtype} n_layer={L} n_head={H} n_embd={C} n_positions={P} "
          f"vocab_size={cfg['vocab_size']} model.safetensors={size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
