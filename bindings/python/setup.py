"""Build glue for the sqlite-gpt2 wheel (make wheel stages this folder under build/python
with the self-contained gpt2.so, ext/version.h and LICENSE beside it).

The version comes from ext/version.h. The wheel is a platform wheel for any Python 3
(py3-none-linux_<arch>): it carries a native library but no Python extension module,
so it does not depend on the interpreter's ABI.
"""
import os
import re

from setuptools import Distribution, setup
from wheel.bdist_wheel import bdist_wheel

HERE = os.path.dirname(os.path.abspath(__file__))


def version():
    for cand in (os.path.join(HERE, "version.h"), os.path.join(HERE, "..", "..", "ext", "version.h")):
        if os.path.exists(cand):
            with open(cand, encoding="utf-8") as f:
                m = re.search(r'^#define GPT2_VERSION "([^"]+)"', f.read(), re.M)
            if m:
                return m.group(1)
    raise SystemExit("setup.py: GPT2_VERSION not found in version.h")


class NativeDistribution(Distribution):
    """Holds a native library: installed to platlib, wheel not pure."""

    def has_ext_modules(self):
        return True


class PlatformWheel(bdist_wheel):
    """Tagged py3-none-<platform>: native payload, no CPython ABI."""

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


if not os.path.exists(os.path.join(HERE, "sqlite_gpt2", "gpt2.so")):
    raise SystemExit("setup.py: sqlite_gpt2/gpt2.so is missing; build the wheel with `make wheel`")

setup(version=version(), distclass=NativeDistribution, cmdclass={"bdist_wheel": PlatformWheel})
