# Installing and packaging: make install/uninstall, the self-contained release archive,
# the Python wheel (with its sqlite-utils plugin) and the npm package. See README.md, "Install".
#
#   make install         build/gpt2.so -> $(DESTDIR)$(PREFIX)/lib/sqlite3/gpt2.so,
#                        scripts/download-model.sh -> $(PREFIX)/bin/gpt2-download,
#                        README's SQL reference, README.md and LICENSE -> $(PREFIX)/share/doc/gpt2-sqlite/
#   make uninstall       removes exactly those files
#   make dist            build/dist/gpt2-sqlite-VERSION-linux-ARCH.tar.gz: a gpt2.so that needs
#                        nothing outside glibc but the copies beside it (scripts/selfcontained.sh)
#   make wheel           build/dist/sqlite_gpt2-VERSION-py3-none-linux_ARCH.whl (bindings/python)
#   make npm-pack        build/dist/sqlite-gpt2-VERSION.tgz (bindings/node)
#   make packages        all three
#   make test-packages   tests/packaging: each of them installed into a temporary directory,
#                        offline, and used as a user would (not part of `make test`)
#
# VERSION is read from ext/version.h, the one place it is written.

PREFIX  ?= /usr/local
DESTDIR ?=
VERSION := $(shell sed -n 's/^\#define GPT2_VERSION "\(.*\)"/\1/p' ext/version.h)
ARCH    := $(shell uname -m)
# npm's name for the machine (os/cpu fields of package.json)
NODE_CPU := $(or $(word 2,$(subst :, ,$(filter $(ARCH):%,x86_64:x64 aarch64:arm64 armv7l:arm i686:ia32))),$(ARCH))
DIST_NAME := gpt2-sqlite-$(VERSION)-linux-$(ARCH)
DIST_TGZ  := build/dist/$(DIST_NAME).tar.gz
WHEEL     := build/dist/sqlite_gpt2-$(VERSION)-py3-none-linux_$(ARCH).whl
NPM_TGZ   := build/dist/sqlite-gpt2-$(VERSION).tgz
SC_DIR    := build/selfcontained
# the wheel's build and tests; g++ compiles better-sqlite3 where its prebuilt binary
# cannot be fetched (scripts/fetch-node-deps.sh)
PKG_DEBS  := python3-build python3-setuptools python3-wheel python3-venv python3-pip \
             python3-pluggy sqlite-utils g++
PY_SRCS   := $(shell find bindings/python -type f -not -path '*/__pycache__/*' -not -name '*.pyc')
NODE_SRCS := $(wildcard bindings/node/*)
DOCDIR     = $(PREFIX)/share/doc/gpt2-sqlite

# --- make install / uninstall -------------------------------------------------------

build/sql-reference.md: README.md | build
	{ echo '# gpt2 for SQLite $(VERSION): SQL reference'; \
	  sed -n '/^## SQL reference/,/^## /{/^## /!p}' README.md; } > $@

install: build/gpt2.so build/sql-reference.md
	install -d '$(DESTDIR)$(PREFIX)/lib/sqlite3' '$(DESTDIR)$(PREFIX)/bin' '$(DESTDIR)$(DOCDIR)'
	install -m 0755 build/gpt2.so '$(DESTDIR)$(PREFIX)/lib/sqlite3/gpt2.so'
	install -m 0755 scripts/download-model.sh '$(DESTDIR)$(PREFIX)/bin/gpt2-download'
	install -m 0644 build/sql-reference.md README.md LICENSE '$(DESTDIR)$(DOCDIR)/'

uninstall:
	rm -f '$(DESTDIR)$(PREFIX)/lib/sqlite3/gpt2.so' '$(DESTDIR)$(PREFIX)/bin/gpt2-download' \
	  '$(DESTDIR)$(DOCDIR)/sql-reference.md' '$(DESTDIR)$(DOCDIR)/README.md' '$(DESTDIR)$(DOCDIR)/LICENSE'
	-rmdir '$(DESTDIR)$(DOCDIR)' '$(DESTDIR)$(PREFIX)/lib/sqlite3' 2>/dev/null

# --- the self-contained extension, shared by the archive and the packages -----------

# relinks build/gpt2.so's objects (internals hidden) against what can go static
$(SC_DIR)/gpt2.so: build/gpt2.so scripts/selfcontained.sh
	scripts/selfcontained.sh build/gpt2.so $(SC_DIR) -- \
	  $(CC) $(CFLAGS) -shared $(OBJS) $(LDFLAGS) $(LDLIBS)

# --- make dist ----------------------------------------------------------------------

$(DIST_TGZ): $(SC_DIR)/gpt2.so README.md LICENSE
	rm -rf build/dist/$(DIST_NAME) && mkdir -p build/dist/$(DIST_NAME)
	cp -a $(SC_DIR)/. README.md LICENSE build/dist/$(DIST_NAME)/
	tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' \
	  -czf $@ -C build/dist $(DIST_NAME)
	rm -rf build/dist/$(DIST_NAME)
	@echo "dist: $@"

dist: $(DIST_TGZ)

# --- Python wheel (bindings/python) -------------------------------------------------

$(WHEEL): $(SC_DIR)/gpt2.so $(PY_SRCS) ext/version.h LICENSE
	rm -rf build/python && mkdir -p build/python build/dist
	cp -a bindings/python/. build/python/
	cp -a $(SC_DIR)/. build/python/sqlite_gpt2/
	cp ext/version.h LICENSE build/python/
	cd build/python && $(PYTHON) -m build --no-isolation --wheel --outdir ../dist . >build.log 2>&1 || \
	  { tail -n 30 build.log >&2; exit 1; }
	test -f $@ || { echo "wheel: expected $@, got: $$(ls build/dist/*.whl)" >&2; exit 1; }
	@echo "wheel: $@"

wheel: $(WHEEL)

# --- npm package (bindings/node) ----------------------------------------------------

$(NPM_TGZ): $(SC_DIR)/gpt2.so $(NODE_SRCS) ext/version.h LICENSE
	rm -rf build/node && mkdir -p build/node/lib build/dist
	cp -a bindings/node/. build/node/
	cp -a $(SC_DIR)/. build/node/lib/
	cp LICENSE build/node/
	node bindings/node/stage.js build/node/package.json '$(VERSION)' '$(NODE_CPU)'
	cd build/dist && npm pack --silent ../node >/dev/null
	test -f $@
	@echo "npm-pack: $@"

npm-pack: $(NPM_TGZ)

packages: dist wheel npm-pack

# --- tests (kept out of `make test`) ------------------------------------------------

package-deps: deps
	@scripts/deps.sh $(PKG_DEBS)

test-packages: package-deps vocab all packages
	@scripts/fetch-node-deps.sh >/dev/null
	PYTHONPATH=tests/packaging $(PYTHON) -m pytest -q -p no:cacheprovider -p pkgfixtures \
	  -o 'python_files=pkg_*.py' tests/packaging

.PHONY: install uninstall dist wheel npm-pack packages package-deps test-packages
