"""Independent numpy (float64) GPT-2 forward pass, written from
docs/formats.md ("Forward pass") and Hugging Face's GPT2LMHeadModel, used as
ground truth for the extension's logits.

    logits(weights, cfg, ids)  -> np.ndarray [T, V], no cache
    greedy(weights, cfg, ids, n, stop=None) -> up to n new ids, recomputing
        the whole sequence every step (argmax, lowest id on ties); at the
        context's end as Hugging Face's generate: the token picked from the
        last position's logits is returned but never appended, so a prompt
        of T <= n_positions tokens gets at most n_positions - T + 1

weights: canonical bare names -> float arrays (tests/make_checkpoint.py);
cfg: the config.json dict.
"""
import numpy as np


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)  # biased variance
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_new(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _f64(weights):
    return {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}


def logits(weights, cfg, ids):
    W = weights if all(v.dtype == np.float64 for v in weights.values()) else _f64(weights)
    ids = np.asarray(ids, dtype=np.int64)
    T = len(ids)
    L, H, C = cfg["n_layer"], cfg["n_head"], cfg["n_embd"]
    D = C // H
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    scale_w = cfg.get("scale_attn_weights", True)
    scale_l = cfg.get("scale_attn_by_inverse_layer_idx", False)
    causal = np.tril(np.ones((T, T), dtype=bool))

    x = W["wte.weight"][ids] + W["wpe.weight"][np.arange(T)]
    for l in range(L):
        p = f"h.{l}."
        a = layernorm(x, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = a @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]  # Conv1D: x·W + b
        q, k, v = (qkv[:, i * C:(i + 1) * C].reshape(T, H, D).transpose(1, 0, 2) for i in range(3))
        s = q @ k.transpose(0, 2, 1)  # (H, T, T)
        if scale_w:
            s = s / np.sqrt(D)
        if scale_l:
            s = s / (l + 1)
        s = np.where(causal, s, -np.inf)
        o = (softmax(s) @ v).transpose(1, 0, 2).reshape(T, C)
        x = x + o @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        m = layernorm(x, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        h = gelu_new(m @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        x = x + h @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    x = layernorm(x, W["ln_f.weight"], W["ln_f.bias"], eps)
    head = W.get("lm_head.weight", W["wte.weight"])  # tied to wte when absent
    return x @ head.T


def greedy(weights, cfg, ids, n, stop=None):
    """Up to n greedy steps by full recomputation; stops after emitting
    `stop`, and after the token picked at the context's last position."""
    W = _f64(weights)
    P = cfg.get("n_positions", cfg.get("n_ctx"))
    seq, out = list(ids), []
    assert 1 <= len(seq) <= P
    for _ in range(n):
        nxt = int(np.argmax(logits(W, cfg, seq)[-1]))
        out.append(nxt)
        if nxt == stop or len(seq) == P:  # no position left to feed it at
            break
        seq.append(nxt)
    return out
