# gpt2 for SQLite. `make` builds build/gpt2.so; see README.md for the rest.
#
# Warnings: a user's build (`make`, `make test`, `make demo`) reports them without
# failing, so a newer compiler's new warning does not stop an install; `make WERROR=1`
# makes them fatal (.ci/run does, with gcc and clang; mk/hardening.mk's drivers always).
CC      ?= cc
PYTHON  ?= /usr/bin/python3
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra $(if $(filter-out 0,$(WERROR)),-Werror)
CFLAGS  += -std=c11 -D_GNU_SOURCE -fPIC -pthread $(WARN)
# Only what ext/ calls. OpenBLAS is not linked: the forward pass has its own
# batch-invariant kernels (README.md, "Kernels and exactness"); scripts/deps.sh still
# installs it because `make bench` measures against its sgemm (scripts/bench_*.py).
LDLIBS  += -lpcre2-8 -ljansson -lm -pthread

SRCS := $(wildcard ext/*.c)
HDRS := $(wildcard ext/*.h)

# build/gpt2.so exports only its entry points (ext/gpt2.c marks them visible): its
# internal names cannot clash with, or be interposed by, another library's in the host.
# build/gpt2_internal.so is the same code with every function visible, for the tests
# that call internals through ctypes (tests/test_kernels.py, ...); it is never loaded
# by SQLite. build/layouts.json (tests/layouts.c) gives those tests the structs' layout.
OBJS     := $(patsubst ext/%.c,build/obj/%.o,$(SRCS))
OBJS_INT := $(patsubst ext/%.c,build/obj-internal/%.o,$(SRCS))

all: build/gpt2.so

# The compile command, rewritten only when it changes (CC, CFLAGS, WERROR=1), so that
# changing it rebuilds the objects.
build/cflags.txt: FORCE | build
	@echo '$(CC) $(CPPFLAGS) $(CFLAGS)' | cmp -s - $@ || echo '$(CC) $(CPPFLAGS) $(CFLAGS)' >$@

build/obj/%.o: ext/%.c build/cflags.txt
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fvisibility=hidden -MMD -MP -c $< -o $@

build/obj-internal/%.o: ext/%.c build/cflags.txt
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

-include $(wildcard build/obj/*.d build/obj-internal/*.d)

build/gpt2.so: $(OBJS)
	$(CC) $(CFLAGS) -shared -o $@ $(OBJS) $(LDFLAGS) $(LDLIBS)

build/gpt2_internal.so: $(OBJS_INT)
	$(CC) $(CFLAGS) -shared -o $@ $(OBJS_INT) $(LDFLAGS) $(LDLIBS)

build/layouts.json: tests/layouts.c $(HDRS) build/cflags.txt
	$(CC) $(CPPFLAGS) $(CFLAGS) -Iext -o build/layouts tests/layouts.c
	build/layouts >$@.tmp && mv $@.tmp $@

build:
	mkdir -p build

deps:
	@scripts/deps.sh

vocab: deps
	@scripts/fetch-vocab.sh >/dev/null

test: deps vocab all build/gpt2_internal.so build/layouts.json
	$(PYTHON) -m pytest -q tests

clean:
	rm -rf build

include mk/hardening.mk

.PHONY: all deps vocab test clean FORCE

demo: deps vocab all
	scripts/demo.sh

# Speed against references, measured side by side in one run (not a test).
bench: deps vocab all build/gpt2_internal.so build/layouts.json
	$(PYTHON) scripts/bench_tokenizer.py
	$(PYTHON) scripts/bench_decode.py
	$(PYTHON) scripts/bench_complete.py
	$(PYTHON) scripts/bench_score.py
	$(PYTHON) scripts/bench_scaling.py
	$(PYTHON) scripts/bench_speculative.py  # the 1.5B-shaped part with BENCH_SPEC_15B=1
	$(MAKE) -s bench-dask

.PHONY: demo bench
include mk/package.mk
include mk/dask.mk
