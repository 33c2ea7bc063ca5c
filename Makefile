# gpt2 for SQLite. `make` builds build/gpt2.so; see README.md for the rest.
CC      ?= cc
PYTHON  ?= /usr/bin/python3
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -fPIC -Wall -Wextra -Werror -pthread
CPPFLAGS += $(shell pkg-config --cflags openblas 2>/dev/null)
LDLIBS  += -lopenblas -lpcre2-8 -ljansson -lm -pthread

SRCS := $(wildcard ext/*.c)
HDRS := $(wildcard ext/*.h)

all: build/gpt2.so

build/gpt2.so: $(SRCS) $(HDRS) | build
	$(CC) $(CPPFLAGS) $(CFLAGS) -shared -o $@ $(SRCS) $(LDFLAGS) $(LDLIBS)

build:
	mkdir -p build

deps:
	@scripts/deps.sh

vocab: deps
	@scripts/fetch-vocab.sh >/dev/null

test: deps vocab all
	$(PYTHON) -m pytest -q tests

clean:
	rm -rf build

include mk/hardening.mk

.PHONY: all deps vocab test clean

demo: deps vocab all
	scripts/demo.sh

# Speed against references, measured side by side in one run (not a test).
bench: deps vocab all
	$(PYTHON) scripts/bench_tokenizer.py
	$(PYTHON) scripts/bench_decode.py
	$(PYTHON) scripts/bench_complete.py
	$(PYTHON) scripts/bench_score.py
	$(PYTHON) scripts/bench_scaling.py
	$(MAKE) -s bench-dask

.PHONY: demo bench
include mk/package.mk
include mk/dask.mk
