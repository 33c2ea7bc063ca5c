#!/usr/bin/python3
"""Read the ASan / LSan / UBSan logs of `make test-sanitize` and decide.

    san_report.py LOGDIR [--marker PATTERN ...]

Fails (exit 1) on
  - any AddressSanitizer error (heap overflow, use after free, ...) in any process;
  - any UBSan "runtime error:";
  - any leak whose allocation stack has a frame of the extension: its module
    (gpt2.so) or its sources (/ext/), or of Jansson / PCRE2, which only the
    extension uses in these processes (their frames may hide ours: the fast
    unwinder stops in libraries built without frame pointers). The extension
    is linked with -z nodelete: SQLite dlcloses it with the connection, and
    its frames must still resolve when LeakSanitizer reports, at exit.
Leaks with none of those frames (Python's interpreter and modules, numpy, the
sqlite3 shell, bash) are counted and summarized, not failed: Python does not
free everything at exit.
"""
import glob
import os
import re
import sys

OURS = [r"gpt2\.so", r"/ext/\w+\.[ch]\b", r"libjansson", r"libpcre2"]


def blocks(text):
    """Leak reports: (header, frames) for each 'Direct/Indirect leak' entry."""
    out = []
    cur = None
    for line in text.splitlines():
        if re.match(r"(Direct|Indirect) leak of", line):
            cur = [line, []]
            out.append(cur)
        elif cur is not None and re.match(r"\s+#\d+ ", line):
            cur[1].append(line)
        elif cur is not None and not line.strip():
            cur = None
    return out


def main(argv):
    logdir = argv[1]
    ours_re = re.compile("|".join(OURS + argv[2:]))
    errors, ours, foreign, nfiles = [], [], 0, 0
    for path in sorted(glob.glob(os.path.join(logdir, "*"))):
        nfiles += 1
        with open(path, errors="replace") as f:
            text = f.read()
        for m in re.finditer(r"ERROR: AddressSanitizer.*?(?=\n\n\S|\Z)", text, re.S):
            errors.append("%s:\n%s" % (path, m.group(0)[:4000]))
        for m in re.finditer(r"^.*runtime error:.*$", text, re.M):
            errors.append("%s: %s" % (path, m.group(0)))
        for head, frames in blocks(text):
            if any(ours_re.search(fr) for fr in frames):
                ours.append("%s:\n%s\n%s" % (path, head, "\n".join(frames[:12])))
            else:
                foreign += 1
    for e in errors:
        print("SANITIZER ERROR in", e, "\n")
    for l in ours:
        print("LEAK of the extension in", l, "\n")
    print("sanitizer logs: %d files; %d errors; %d leaks of the extension; %d leak reports "
          "without extension frames (Python/numpy/tools at exit, ignored)"
          % (nfiles, len(errors), len(ours), foreign))
    return 1 if errors or ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
