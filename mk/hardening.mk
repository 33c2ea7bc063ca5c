# Heavy checks kept out of `make test`: fuzzing, sanitizers, valgrind, OOM injection,
# ThreadSanitizer. See README.md, "Hardening".
