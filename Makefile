# ssm-lite: `make demo` runs a command through the agent against the bundled emulator;
# `make test` runs the whole test suite. See README.md.

CARGO ?= cargo

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DIST := dist
ARCHES := x86_64 aarch64 armhf i686
BINARIES := $(foreach a,$(ARCHES),$(DIST)/ssm-lite-$(VERSION)-$(a))
# Debian's name for each architecture, and how the Run Command suite runs each release binary on
# this x86_64 host: under qemu-user, emulating the oldest CPU the build promises to run on. i686
# runs natively (x86_64 kernels run i386 binaries): under qemu-i386 7.2 it gets SIGSEGV right
# after a detached thread unmaps its stack and exits (musl's thread exit), which it never did on
# the real CPU; tests/release.rs still checks it under qemu on a 32-bit-only CPU.
DEBARCH_x86_64 := amd64
DEBARCH_aarch64 := arm64
DEBARCH_armhf := armhf
DEBARCH_i686 := i386
RUNNER_aarch64 := qemu-aarch64-static
RUNNER_armhf := qemu-arm-static
QEMU_CPU_armhf := arm1176
DEBS := $(foreach a,$(ARCHES),$(DIST)/ssm-lite_$(VERSION)-1_$(DEBARCH_$(a)).deb)
# RPM's name for each architecture (armv6hl: the armhf binary is ARMv6 + VFP; armv7hl systems
# install it too), and back.
RPMARCH_x86_64 := x86_64
RPMARCH_aarch64 := aarch64
RPMARCH_armhf := armv6hl
RPMARCH_i686 := i686
RPMS := $(foreach a,$(ARCHES),$(DIST)/ssm-lite-$(VERSION)-1.$(RPMARCH_$(a)).rpm)

.PHONY: all build release tools binaries demo demo-association demo-shell demo-port test test-native \
	test-release test-artifacts lint bench soak fuzz clean help FORCE \
	build-linux build-arm build-arm64 build-linux-386 \
	package-deb package-deb-arm package-deb-arm64 package-deb-386 quick-test checkstyle coverage \
	package-rpm package-rpm-arm package-rpm-arm64 package-rpm-386

all: build

build:
	$(CARGO) build --release

demo:
	$(CARGO) build --quiet --bin ssm-lite -p ssm-lite
	$(CARGO) run --quiet -p ssm-emulator -- demo --agent target/debug/ssm-lite

# A shell and a software inventory association run by the agent; prints their statuses and the
# inventory the emulator received. Exits 1 unless both succeed.
demo-association:
	$(CARGO) build --quiet --bin ssm-lite -p ssm-lite
	$(CARGO) run --quiet -p ssm-emulator -- demo-association --agent target/debug/ssm-lite

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

# Static musl binaries for every architecture, their .debs and .rpms and SHA256SUMS, into dist/.
# With SSM_LITE_SIGNING_KEY (an Ed25519 PKCS#8 key from `ssm-lite-release genkey`), dist/ is also
# an update channel: its manifest.json signs each binary for aws:updateSsmAgent.
release: tools
	$(MAKE) binaries
	$(MAKE) $(DEBS) $(RPMS)
	cd $(DIST) && sha256sum $(notdir $(BINARIES) $(DEBS) $(RPMS)) > SHA256SUMS
	$(if $(SSM_LITE_SIGNING_KEY),$(CARGO) run --quiet --release -p ssm-lite-release -- \
	  sign "$(SSM_LITE_SIGNING_KEY)" $(VERSION) $(DIST))

# The pinned cross toolchain and the Debian packages the release tests use (cross/versions.env).
tools:
	cross/install-tools.sh

binaries: $(BINARIES)

# cargo decides whether anything changed; make always asks it.
$(DIST)/ssm-lite-$(VERSION)-%: FORCE
	cross/build.sh $* $@

$(DIST)/ssm-lite_$(VERSION)-1_%.deb: FORCE
	packaging/build-deb.sh $* $(DIST)/ssm-lite-$(VERSION)-$(ARCH_$*) $(DIST)

ARCH_amd64 := x86_64
ARCH_arm64 := aarch64
ARCH_armhf := armhf
ARCH_i386 := i686

# (Also matched by the binaries' pattern above; make takes the rule with the shorter stem.)
$(DIST)/ssm-lite-$(VERSION)-1.%.rpm: FORCE
	packaging/build-rpm.sh $* $(DIST)/ssm-lite-$(VERSION)-$(ARCH_$*) $(DIST)

ARCH_x86_64 := x86_64
ARCH_aarch64 := aarch64
ARCH_armv6hl := armhf
ARCH_i686 := i686

# Everything: the native suite and the release build run side by side (the suite mostly waits on
# child processes and sockets, the release build wants the CPU), then the release artifacts are
# tested: static binaries under qemu, the .debs installed into a Debian root
# and the .rpms into an empty one, the init script.
test: tools
	$(MAKE) -j2 test-native release
	$(MAKE) test-release

# tests/moto.rs runs moto's server from this venv (.ci/run makes it from tests/requirements.txt).
TEST_VENV ?= $(CURDIR)/.venv-tests
test-native:
	SSM_LITE_TEST_VENV=$(TEST_VENV) $(CARGO) test --workspace

test-release:
	$(MAKE) -j5 test-artifacts $(addprefix test-e2e-,$(ARCHES))

test-artifacts:
	$(CARGO) test --test release --test package --test rpm -- --ignored

# The Run Command end-to-end suite again, with the agent being a release binary (under qemu-user
# for the foreign ones). These runs and the artifact tests mostly wait, so they run side by side.
test-e2e-%:
	SSM_LITE_TEST_BIN=$(CURDIR)/$(DIST)/ssm-lite-$(VERSION)-$* SSM_LITE_TEST_RUNNER=$(RUNNER_$*) \
	  $(if $(QEMU_CPU_$*),QEMU_CPU=$(QEMU_CPU_$*)) \
	  $(CARGO) $(if $(RUNNER_$*),$(QEMU_TEST),test) --test runcommand

# Under qemu-user 7.2 (Debian bookworm) a step now and then starts and its script never runs
# (3 of about 23 full armhf runs of this suite), which looks like qemu hanging a multi-threaded
# guest's fork; it never happened on a real CPU.
# Under qemu a failed test is therefore run once more, where cargo-nextest is installed (it is on
# the CI machine); nextest reports a test that passed only the second time as FLAKY.
QEMU_TEST := $(if $(shell command -v cargo-nextest),nextest run --retries 1,test)

# rust-version in Cargo.toml is checked with that toolchain, for the agent (the emulator and the
# tests may use newer Rust).
MSRV := $(shell sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	rustup toolchain install $(MSRV) --profile minimal
	$(CARGO) +$(MSRV) check -p ssm-lite --lib --bins --locked

# The host build, then the memory rows again for the static musl build devices run (glibc's
# per-thread malloc arenas make the host build's per-session figure vary by ±25 KB).
MUSL_AGENT := $(CURDIR)/$(DIST)/ssm-lite-$(VERSION)-x86_64
bench: tools
	$(CARGO) build --release --bin ssm-lite
	$(CARGO) bench -p ssm-lite --bench agent
	$(CARGO) bench -p ssm-lite --bench sessions
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-x86_64
	SSM_BENCH_AGENT=$(MUSL_AGENT) SSM_BENCH_IDLE_SECS=10 $(CARGO) bench -p ssm-lite --bench agent
	SSM_BENCH_AGENT=$(MUSL_AGENT) $(CARGO) bench -p ssm-lite --bench sessions -- memory

# The full soak (10,000 commands and 200 sessions under windowed faults) and crash loop (100
# SIGKILLs), not in CI; their two-minute variants run in `make test`. Sizes and the seed from
# SSM_LITE_SOAK_COMMANDS, SSM_LITE_SOAK_SESSIONS, SSM_LITE_CRASH_KILLS, SSM_LITE_SOAK_SEED.
soak:
	$(CARGO) test --test soak -- --ignored --nocapture --test-threads 1

# Every fuzz target (fuzz/Cargo.toml) for FUZZ_SECONDS each, one after the other; not in CI (the
# seeds in fuzz/seeds/ are replayed by tests/fuzz_corpus.rs in `make test`). cargo-fuzz wants a
# nightly rustc for its -Z flags; RUSTC_BOOTSTRAP=1 lets the stable one take them (ASan included).
# New corpus entries go to fuzz/corpus/<target>, crashes and each target's log to
# fuzz/artifacts/<target>/; the summary gives runs and crashes per target. A crash input belongs
# in fuzz/seeds/<target>/ with its fix. An input slower than FUZZ_TIMEOUT seconds is a crash too.
FUZZ_SECONDS ?= 600
FUZZ_TIMEOUT ?= 10
FUZZ_TARGETS ?= $(shell sed -n '/^\[\[bin\]\]/,/^name/s/^name = "\(.*\)"/\1/p' fuzz/Cargo.toml)
fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build
	cd fuzz && failed=; for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t artifacts/$$t; \
	  RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$t corpus/$$t seeds/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) -print_final_stats=1 \
	    > artifacts/$$t/fuzz.log 2>&1 || failed="$$failed $$t"; \
	done; \
	for t in $(FUZZ_TARGETS); do \
	  printf '%-14s %s runs, %s crashes\n' $$t \
	    "$$(sed -n 's/^stat::number_of_executed_units: *//p' artifacts/$$t/fuzz.log | tail -n 1)" \
	    "$$(grep -c 'Test unit written to' artifacts/$$t/fuzz.log)"; \
	done; \
	test -z "$$failed" || { echo "fuzz: crashes in$$failed (see fuzz/artifacts/)"; exit 1; }

clean:
	$(CARGO) clean

# The names amazon-ssm-agent's README gives its make targets, doing the same for ssm-lite: one
# static binary (or .deb) per architecture into dist/, the native suite alone, the style checks,
# and line coverage of the native suite.
build-linux: tools
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-x86_64
build-arm: tools
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-armhf
build-arm64: tools
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-aarch64
build-linux-386: tools
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-i686
package-deb: build-linux
	$(MAKE) $(DIST)/ssm-lite_$(VERSION)-1_amd64.deb
package-deb-arm: build-arm
	$(MAKE) $(DIST)/ssm-lite_$(VERSION)-1_armhf.deb
package-deb-arm64: build-arm64
	$(MAKE) $(DIST)/ssm-lite_$(VERSION)-1_arm64.deb
package-deb-386: build-linux-386
	$(MAKE) $(DIST)/ssm-lite_$(VERSION)-1_i386.deb
package-rpm: build-linux
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-1.x86_64.rpm
package-rpm-arm: build-arm
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-1.armv6hl.rpm
package-rpm-arm64: build-arm64
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-1.aarch64.rpm
package-rpm-386: build-linux-386
	$(MAKE) $(DIST)/ssm-lite-$(VERSION)-1.i686.rpm
quick-test: test-native
checkstyle: lint

# Line coverage of the native suite (cargo-llvm-cov, installed when missing); the summary is
# printed and the HTML report left in target/llvm-cov/html.
coverage:
	command -v cargo-llvm-cov >/dev/null || $(CARGO) install cargo-llvm-cov --locked
	rustup component add llvm-tools-preview
	SSM_LITE_TEST_VENV=$(TEST_VENV) $(CARGO) llvm-cov --workspace --html
	$(CARGO) llvm-cov report --summary-only

# Every target, a line each.
help:
	@echo 'make demo               a command through the agent against the bundled emulator'
	@echo 'make demo-association   a shell and an inventory association, their statuses and inventory'
	@echo 'make demo-shell         your terminal in a shell session through the agent'
	@echo 'make demo-port          LOCAL=8022 REMOTE=22: a local port forwarded through a Port session'
	@echo 'make test               the whole suite: native, then the release artifacts'
	@echo 'make quick-test         the native suite only (test-native)'
	@echo 'make lint / checkstyle  rustfmt, clippy -D warnings, the MSRV check'
	@echo 'make coverage           line coverage of the native suite (cargo-llvm-cov)'
	@echo 'make bench              size, memory, latency and throughput figures'
	@echo 'make fuzz / soak        long runs: fuzz targets, the full soak and crash loop'
	@echo 'make build              the host release build'
	@echo 'make release            static binaries for every architecture, their .debs and .rpms, SHA256SUMS'
	@echo 'make build-linux | build-arm | build-arm64 | build-linux-386'
	@echo '                        one static binary: x86_64, armhf, aarch64, i686'
	@echo 'make package-deb | package-deb-arm | package-deb-arm64 | package-deb-386'
	@echo '                        one .deb: amd64, armhf, arm64, i386'
	@echo 'make package-rpm | package-rpm-arm | package-rpm-arm64 | package-rpm-386'
	@echo '                        one .rpm: x86_64, armv6hl, aarch64, i686'
	@echo 'make tools              the pinned cross toolchain and the release tests packages'
	@echo 'make clean              cargo clean'
