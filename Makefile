# laminar: every set-up step lives here. Needs only Rust (cargo) and Python 3.11 with pip.
#   make demo   build (release) and run a real pipeline on built-in data
#   make test   build (ci profile), cargo test, pytest, execute the notebooks
#   make bench  build (release), criterion benches and the end-to-end Python benchmark

PYTHON      ?= python3
VENV        := $(CURDIR)/.venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.installed-$(shell cksum < requirements-dev.txt | cut -d' ' -f1)
MATURIN     := VIRTUAL_ENV=$(VENV) $(VENV)/bin/maturin
CARGO_TEST_PROFILE := ci

.PHONY: all demo test bench venv build-release build-test test-rust test-py test-notebooks wheel clean

all: test

$(STAMP): requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

venv: $(STAMP)

build-release: venv
	$(MATURIN) develop --release --quiet

build-test: venv
	$(MATURIN) develop --profile $(CARGO_TEST_PROFILE) --quiet

demo: build-release
	$(PY) -m laminar.demo

test: build-test test-rust test-py test-notebooks

test-rust:
	cargo test --workspace --profile $(CARGO_TEST_PROFILE)
	# benches are not run here, only built, so that they cannot rot unnoticed
	cargo build --workspace --profile $(CARGO_TEST_PROFILE) --benches
	# loom model checks of the lock-free types (the crate rebuilt against loom's atomics)
	cargo test -p laminar-core --profile $(CARGO_TEST_PROFILE) --features loom --test loom_sync --test loom_disruptor

test-py: build-test
	$(PY) -m pytest tests_py -q

test-notebooks: build-test
	$(PY) tests_py/run_notebooks.py notebooks

bench: build-release
	cargo bench -p laminar-core --bench reactor
	cargo bench -p laminar-core --bench messaging
	$(PY) benches/e2e.py --cores 1,2

wheel: venv
	$(MATURIN) build --release --out dist

clean:
	cargo clean
	rm -rf $(VENV) dist
