# Completing and scoring on a Dask cluster (bindings/python/sqlite_gpt2/dask.py,
# README.md, "Scaling out").
#
#   make test-dask   tests/dask on a local cluster of 2 worker processes with 1 thread each,
#                    and once from the installed wheel (not part of `make test`: the files
#                    are dask_*.py)
#   make bench-dask  scripts/bench_dask.py: the engine's overhead (part of `make bench`)

DASK_DEBS := python3-dask python3-distributed

dask-deps: deps
	@scripts/deps.sh $(DASK_DEBS)

# The workers import the package from the tree and load build/gpt2.so.
DASK_ENV := PYTHONPATH=$(CURDIR)/bindings/python:$(CURDIR)/tests/dask \
            SQLITE_GPT2_EXTENSION=$(CURDIR)/build/gpt2.so

test-dask: dask-deps package-deps vocab all $(WHEEL)
	$(DASK_ENV) DASK_TEST_WHEEL=$(CURDIR)/$(WHEEL) $(PYTHON) -m pytest -q -p no:cacheprovider -o 'python_files=dask_*.py' tests/dask

bench-dask: dask-deps vocab all
	$(DASK_ENV) $(PYTHON) scripts/bench_dask.py

.PHONY: dask-deps test-dask bench-dask
