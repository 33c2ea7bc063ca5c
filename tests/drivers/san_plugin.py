"""pytest plugin for `make test-sanitize` (loaded with -p san_plugin).

At the end of the session, close every sqlite3 connection still open, so
that the extension's per-connection state is released before LeakSanitizer
looks at the heap: a connection a test forgot to close is the test's leak,
not the extension's. Anything of ours still allocated after this is a leak
of the extension."""
import gc
import sqlite3


def pytest_sessionfinish(session, exitstatus):
    gc.collect()
    for o in gc.get_objects():
        if isinstance(o, sqlite3.Connection):
            try:
                o.close()
            except Exception:  # already closed, or in use by a cursor being torn down
                pass
    gc.collect()
