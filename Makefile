# ssm-lite: `make demo` runs a command through the agent against the bundled emulator;
# `make test` runs the whole test suite. See README.md.

CARGO ?= cargo

.PHONY: all build release demo test lint bench clean

all: build

build:
	$(CARGO) build --release

demo:
	$(CARGO) build --quiet --bin ssm-lite -p ssm-lite
	$(CARGO) run --quiet -p ssm-emulator -- demo --agent target/debug/ssm-lite

test:
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	$(CARGO) build --release --bin ssm-lite
	$(CARGO) bench -p ssm-lite --bench agent

clean:
	$(CARGO) clean
