"""sqlite-utils plugin (entry point group "sqlite_utils", sqlite-utils >= 3.34): loads the
extension into every connection sqlite-utils prepares, so its commands and
sqlite_utils.Database can call the gpt2_* functions without --load-extension."""
try:
    from sqlite_utils import hookimpl
except ImportError:  # a sqlite-utils without plugins: the same marker, from pluggy
    import pluggy

    hookimpl = pluggy.HookimplMarker("sqlite_utils")

from . import loadable_path


@hookimpl
def prepare_connection(conn):
    conn.enable_load_extension(True)
    try:
        conn.load_extension(loadable_path())
    finally:
        conn.enable_load_extension(False)
