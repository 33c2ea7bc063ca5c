"""The test-only build of the extension and the layout of its C structs, for
code that calls internal functions through ctypes (the tests, scripts/bench_decode.py).

build/gpt2.so exports only its SQLite entry points; build/gpt2_internal.so (`make
test` builds it) is the same code with every function visible. Struct layouts come
from the headers: tests/layouts.c, compiled against ext/, writes build/layouts.json
(size, alignment, and offset and size of each field). struct() takes the field
types from Python and the offsets and total size from C, pads between them, and
checks that the two agree, so a field added to a header elsewhere in a struct
cannot shift the tests' view of it.
"""
import ctypes
import functools
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERNAL_SO = os.path.join(ROOT, "build", "gpt2_internal.so")
LAYOUTS = os.path.join(ROOT, "build", "layouts.json")


def _need(path):
    if not os.path.exists(path):
        raise RuntimeError(f"{path} is missing: run `make test` (or make {os.path.relpath(path, ROOT)})")
    return path


def internal_lib():
    """build/gpt2_internal.so, loaded privately (RTLD_LOCAL) into this process."""
    return ctypes.CDLL(_need(INTERNAL_SO))


@functools.lru_cache(maxsize=None)
def layouts():
    with open(_need(LAYOUTS)) as f:
        return json.load(f)


def struct(name, fields):
    """A ctypes.Structure for the C struct `name` (tests/layouts.c must list it).

    fields: [(field, ctype)] for the fields Python reads or sets (a subset, in any
    order). Each gets its C offset; the gaps and the tail are opaque bytes, so the
    total size is C's. Positional construction follows `fields`' order.
    """
    lay = layouts()[name]
    members, pos = [], 0
    for i, (f, t) in enumerate(sorted(fields, key=lambda ft: lay["fields"][ft[0]][0])):
        off, size = lay["fields"][f]
        assert ctypes.sizeof(t) == size, f"{name}.{f}: {ctypes.sizeof(t)} bytes in Python, {size} in C"
        assert off >= pos and off % ctypes.alignment(t) == 0, f"{name}.{f}: offset {off}"
        if off > pos:
            members.append((f"_gap{i}", ctypes.c_ubyte * (off - pos)))
        members.append((f, t))
        pos = off + size
    if lay["size"] > pos:
        members.append(("_tail", ctypes.c_ubyte * (lay["size"] - pos)))
    names = [f for f, _ in fields]

    def __init__(self, *args, **kw):
        assert len(args) <= len(names)
        ctypes.Structure.__init__(self, **dict(zip(names, args)), **kw)

    cls = type(name, (ctypes.Structure,), {"_fields_": members, "__init__": __init__})
    assert ctypes.sizeof(cls) == lay["size"], f"{name}: {ctypes.sizeof(cls)} bytes, C has {lay['size']}"
    # the alignment of the whole struct follows from its widest declared field:
    # declare that one (C's alignment is what objects allocated in Python need)
    assert ctypes.alignment(cls) == lay["align"], f"{name}: alignment {ctypes.alignment(cls)}, C has {lay['align']}"
    for f, t in fields:
        assert getattr(cls, f).offset == lay["fields"][f][0]
    return cls
