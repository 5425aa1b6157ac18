# Every target creates .venv on first use; nothing is installed outside it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test test-deps test-fast bench binary clean wheels test-e2e test-binary bench-binary build-deps test-release

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/kuma-cp run $(ARGS)

test: $(DEVSTAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The Debian programs some e2e tests drive (a headless browser for the GUI, iptables and iproute2 for the
# transparent proxy); those tests skip without them.
# Needs root and Debian's package mirror; the only target that installs outside .venv.
SYSTEM_TOOLS := chromium chromium-driver prometheus iptables iproute2
test-deps:
	@missing=$$(for p in $(SYSTEM_TOOLS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

test-fast: $(DEVSTAMP)
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: $(DEVSTAMP)
	$(BIN)/python tests/perf/api_bench.py
	$(BIN)/python tests/perf/generate_bench.py
	$(BIN)/python tests/perf/gui_bench.py
	$(BIN)/python tests/perf/fleet.py --proxies 100 --scenario all

# The frozen build (build/freeze.py): the release, frozen with the CPython build/floor_python.py builds
# against glibc 2.28 (once per machine, cached in build/out/floor-python; it needs `make build-deps`),
# its own venv in build/out/venv-floor pinned by build/constraints.txt, offline once `make wheels` has
# filled build/wheelhouse. ENVOY=none leaves Envoy out of the tarball.
ENVOY ?= auto

binary:
	$(PYTHON) build/freeze.py binary --envoy $(ENVOY)

# What the glibc 2.28 toolchain build and the release proof need from Debian (installed when missing).
build-deps:
	@missing=""; for t in make:make cc:build-essential perl:perl patch:patch tclsh:tcl curl:curl \
	    objdump:binutils debootstrap:debootstrap; do command -v $${t%%:*} >/dev/null || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && apt-get install -y -qq $$missing; fi

wheels:
	$(PYTHON) build/freeze.py wheels

# End-to-end tests; KUMA_TEST_BINARY=dist/kuma-cp runs them against the frozen file (rebuilt first
# when older than the code).
test-e2e: $(DEVSTAMP)
	$(if $(filter dist/kuma-cp,$(KUMA_TEST_BINARY)),$(PYTHON) build/freeze.py --python auto --no-tarball --if-stale)
	$(BIN)/python -m pytest -q tests/e2e $(PYTEST_ARGS)

# The frozen file's own tests (builds dist/kuma-cp first when it is missing or older than the code).
test-binary: $(DEVSTAMP)
	$(BIN)/python -m pytest -q tests/e2e/test_binary.py $(PYTEST_ARGS)

bench-binary: $(DEVSTAMP)
	$(PYTHON) build/freeze.py --python auto --no-tarball --if-stale
	$(BIN)/python tests/perf/binary_bench.py

# The release proof (README "Tests and benchmarks"): the glibc 2.28 release and its tarball (`make
# binary`), then tests/release in a Debian 11 root that debootstrap makes in build/out/roots (once).
# About 10 minutes the first time on 2 cores (the toolchain, the root), about a minute after that.
test-release: $(DEVSTAMP) build-deps
	$(PYTHON) build/freeze.py binary
	KUMA_TEST_RELEASE=1 $(BIN)/python -m pytest -q tests/release $(PYTEST_ARGS)

# Keeps what is paid once per machine: the glibc 2.28 CPython and the Debian 11 root (`rm -rf
# build/out` drops them too; never while a test-release runs: its root has /dev mounted).
clean:
	rm -rf --one-file-system $(VENV) dist .pytest_cache
	find build/out -mindepth 1 -maxdepth 1 ! -name floor-python ! -name roots -exec rm -rf --one-file-system {} +
