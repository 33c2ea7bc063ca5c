"""A Dask worker plugin for the killed-worker test (imported by the workers, so it needs
nothing but the standard library and distributed).

The worker process that starts executing a task whose key contains `match` exits at once
(os._exit, as a crash would), once per marker file: the first worker to create the marker
dies, every later attempt (the scheduler's rerun on another worker) runs normally.
"""
import os

from distributed.diagnostics.plugin import WorkerPlugin


class KillOnce(WorkerPlugin):
    name = "sqlite-gpt2-kill-once"

    def __init__(self, match, marker):
        self.match, self.marker = match, marker

    def transition(self, key, start, finish, **kwargs):
        if finish != "executing" or self.match not in str(key):
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.write(fd, f"{os.getpid()} {key}\n".encode())
        os.close(fd)
        os._exit(17)
