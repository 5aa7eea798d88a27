# ssm-lite: `make demo` runs a command through the agent against the bundled emulator;
# `make test` runs the whole test suite. See README.md.

CARGO ?= cargo

.PHONY: all build release demo demo-shell demo-port test lint bench clean

all: build

build:
	$(CARGO) build --release

demo:
	$(CARGO) build --quiet --bin ssm-lite -p ssm-lite
	$(CARGO) run --quiet -p ssm-emulator -- demo --agent target/debug/ssm-lite

# An interactive shell on this machine through the agent and the emulator's Session Manager.
demo-shell:
	$(CARGO) build --quiet --bin ssm-lite -p ssm-lite
	$(CARGO) run --quiet -p ssm-emulator -- shell --agent target/debug/ssm-lite

# Forwards 127.0.0.1:$(LOCAL) through a Port session to 127.0.0.1:$(REMOTE) on this machine.
LOCAL ?= 8022
REMOTE ?= 22
demo-port:
	$(CARGO) build --quiet --bin ssm-lite -p ssm-lite
	$(CARGO) run --quiet -p ssm-emulator -- port --agent target/debug/ssm-lite --local-port $(LOCAL) --remote-port $(REMOTE)

test:
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench:
	$(CARGO) build --release --bin ssm-lite
	$(CARGO) bench -p ssm-lite --bench agent
	$(CARGO) bench -p ssm-lite --bench sessions

clean:
	$(CARGO) clean
