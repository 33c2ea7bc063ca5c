"""sqlite-gpt2: GPT-2 inside SQLite. Where the bundled extension is, and loading it.

    import sqlite3, sqlite_gpt2
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    sqlite_gpt2.load(conn)
    conn.enable_load_extension(False)
"""
import os

__all__ = ["loadable_path", "load"]

try:
    from importlib.metadata import PackageNotFoundError, version as _version
    try:
        __version__ = _version("sqlite-gpt2")
    except PackageNotFoundError:  # imported from a source tree
        __version__ = None
except ImportError:  # Python < 3.8
    __version__ = None


def loadable_path():
    """Absolute path of the bundled gpt2.so (its libraries sit beside it)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpt2.so")


def load(conn):
    """Load the extension into a sqlite3.Connection (extension loading must be enabled,
    as for any extension: conn.enable_load_extension(True))."""
    conn.load_extension(loadable_path())
