"""Reference GPT-2 tokenizer for the differential tests (written for this
project; it follows the algorithm of OpenAI's gpt-2 encoder.py, see
docs/formats.md, "Tokenizer"):

  * GPT-2's pattern run by python3-regex, whose \\s is Unicode White_Space;
  * each piece's UTF-8 bytes spelled with the byte -> printable mapping;
  * BPE in rounds: the lowest-ranked adjacent pair, merged at every
    occurrence left to right, until no ranked pair is left.

Plus the extension's documented rules around it (tokenizer.h): special-token
literals are split out first (leftmost, longest); bytes that are not valid
UTF-8 are one piece each and the valid runs between them are separate texts;
a byte without a token uses the unknown token, if declared.

Also: `ensure_js_tiktoken(cache)` makes js-tiktoken (the second reference)
runnable by fetching its one dependency into the cache, outside git.
"""
import hashlib
import json
import os
import subprocess
import tarfile
import tempfile

import regex

PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
_SURROGATE = regex.compile("[\udc80-\udcff]")


def byte_chars():
    """byte -> printable character (docs/formats.md, "Tokenizer"): printable Latin-1 bytes
    stand for themselves, the 68 others get U+0100.. in increasing order."""
    keep = [b for b in range(256)
            if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    return table


BYTE_CHAR = byte_chars()
CHAR_BYTE = {c: b for b, c in BYTE_CHAR.items()}


def spell(data):
    """Raw bytes in vocab.json's mapped spelling."""
    return "".join(BYTE_CHAR[b] for b in data)


def unspell(mapped):
    return bytes(CHAR_BYTE[c] for c in mapped)


class Encoder:
    def __init__(self, vocab_dir):
        with open(os.path.join(vocab_dir, "vocab.json"), encoding="utf-8") as f:
            self.vocab = json.load(f)
        self.by_id = {i: unspell(k) for k, i in self.vocab.items()}
        self.ranks = {}
        with open(os.path.join(vocab_dir, "merges.txt"), encoding="utf-8") as f:
            rank = 0
            for line in f.read().split("\n"):
                line = line.rstrip("\r")
                if not line or line.startswith("#version"):
                    continue
                a, b = line.split(" ")
                self.ranks[(a, b)] = rank  # a repeated pair keeps its last rank
                rank += 1
        declared = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):  # the map wins
            path = os.path.join(vocab_dir, name)
            if os.path.exists(path):
                with open(path, encoding="utf-8") as f:
                    for key, v in json.load(f).items():
                        if isinstance(v, dict):
                            v = v.get("content")
                        if key in ("unk_token", "eos_token", "bos_token") and v:
                            declared[key] = v
        specials = ["<|endoftext|>"] + list(declared.values())
        self.specials = sorted({s for s in specials if spell(s.encode()) in self.vocab},
                               key=len, reverse=True)
        unk = declared.get("unk_token")
        self.unk = self.vocab.get(spell(unk.encode())) if unk else None
        self.cache = {}

    def bpe(self, word):
        """encoder.py's rounds on a mapped string; returns the mapped tokens."""
        units = list(word)
        while len(units) > 1:
            best = min(zip(units, units[1:]), key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(units):
                if i + 1 < len(units) and (units[i], units[i + 1]) == best:
                    merged.append(units[i] + units[i + 1])
                    i += 2
                else:
                    merged.append(units[i])
                    i += 1
            units = merged
        return units

    def piece_ids(self, piece):
        hit = self.cache.get(piece)
        if hit is None:
            hit = []
            for tok in self.bpe(spell(piece)):
                if tok in self.vocab:
                    hit.append(self.vocab[tok])
                elif self.unk is not None:
                    hit.append(self.unk)
                else:
                    raise ValueError("no token for byte 0x%02X" % unspell(tok)[0])
            self.cache[piece] = hit
        return hit

    def encode_segment(self, data):
        ids = []
        text = data.decode("utf-8", errors="surrogateescape")  # one surrogate per bad byte
        pos = 0
        for m in list(_SURROGATE.finditer(text)) + [None]:
            end = m.start() if m else len(text)
            for piece in PATTERN.findall(text[pos:end]):
                ids += self.piece_ids(piece.encode("utf-8"))
            if m:
                ids += self.piece_ids(bytes([ord(m.group()) - 0xDC00]))
                pos = m.end()
        return ids

    def encode(self, data):
        """Ids for text (str) or raw bytes (possibly invalid UTF-8)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        ids, pos = [], 0
        while True:
            found = None  # leftmost, then longest special literal
            for s in self.specials:
                k = data.find(s.encode(), pos)
                if k >= 0 and (found is None or k < found[0]):
                    found = (k, s)
            end = found[0] if found else len(data)
            ids += self.encode_segment(data[pos:end])
            if not found:
                return ids
            ids.append(self.vocab[spell(found[1].encode())])
            pos = end + len(found[1].encode())

    def decode(self, ids):
        return b"".join(self.by_id[i] for i in ids).decode("utf-8", errors="replace")


# --- js-tiktoken (second, independent reference) ------------------------------

BASE64_JS = ("base64-js", "1.5.1",
             "b1b7a945b52685269083425216d6597e33d97bf21699d656e92fdb3eb5210a85")


def ensure_js_tiktoken(cache):
    """Make <cache>/js-tiktoken importable: its dependency base64-js goes to
    <cache>/node_modules (found by Node's lookup from js-tiktoken/dist),
    fetched with `npm pack` and checked against a pinned SHA-256.
    Returns the js-tiktoken directory."""
    name, ver, sha = BASE64_JS
    dest = os.path.join(cache, "node_modules", name)
    if not os.path.exists(os.path.join(dest, "package.json")):
        tgz = os.path.join(cache, "%s-%s.tgz" % (name, ver))
        if not os.path.exists(tgz) or _sha256(tgz) != sha:
            with tempfile.TemporaryDirectory() as tmp:
                subprocess.run(["npm", "pack", "--silent", "%s@%s" % (name, ver)], cwd=tmp,
                               check=True, capture_output=True)
                os.replace(os.path.join(tmp, "%s-%s.tgz" % (name, ver)), tgz)
        if _sha256(tgz) != sha:
            os.remove(tgz)
            raise RuntimeError("checksum mismatch for %s" % tgz)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            with tarfile.open(tgz) as tar:  # checksum-pinned; still only plain package/ files
                members = [m for m in tar.getmembers() if (m.isfile() or m.isdir())
                           and m.name.startswith("package/") and ".." not in m.name]
                tar.extractall(tmp, members=members)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.replace(os.path.join(tmp, "package"), dest)
    return os.path.join(cache, "js-tiktoken")


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def js_tiktoken_encode(cache, texts):
    """Ids from js-tiktoken (ranks "gpt2", specials allowed) for each text,
    all in one node process."""
    here = os.path.dirname(os.path.abspath(__file__))
    jsdir = ensure_js_tiktoken(cache)
    out = subprocess.run(["node", os.path.join(here, "jstok.mjs"), jsdir],
                         input=json.dumps(texts), capture_output=True, text=True, check=True)
    return json.loads(out.stdout)
