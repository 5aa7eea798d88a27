#!/bin/sh
# Builds one static, stripped release binary: cross/build.sh ARCH OUT
# ARCH is x86_64, aarch64, armhf (ARMv6 + VFP, so Raspberry Pi Zero/1 as well as ARMv7) or i686.
# Each ARCH builds in its own target dir, so `make -j2 release` can build two at once.
set -eu
cd "$(dirname "$0")/.."
. cross/versions.env
arch=$1 out=$2

case $arch in
x86_64) triple=x86_64-unknown-linux-musl ;;
aarch64) triple=aarch64-unknown-linux-musl ;;
i686) triple=i686-unknown-linux-musl ;;
armhf) triple=arm-unknown-linux-musleabihf ;;
*)
    echo "cross/build.sh: unknown architecture '$arch' (x86_64, aarch64, armhf, i686)" >&2
    exit 2
    ;;
esac

rust=$(rustc --version | cut -d' ' -f2)
if [ "$rust" != "$RUST_VERSION" ]; then
    echo "cross/build.sh: warning: rustc $rust, releases are pinned to $RUST_VERSION;" \
        "the binary will not be byte-identical to a pinned build" >&2
fi

# Paths of this checkout, the cargo registry and the toolchain end up in panic messages; mapping
# them to fixed names makes the bytes independent of where the build ran.
sysroot=$(rustc --print sysroot)
flags="--remap-path-prefix=$PWD=/ssm-lite --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo"
flags="$flags --remap-path-prefix=$sysroot=/rust"
# panic = "abort" never unwinds, so the unwind tables serve only the stack trace a panic prints
# (with RUST_BACKTRACE); dropping them saves ~350 KB on x86_64. A panic still prints its message,
# file and line, then aborts. (-C force-unwind-tables=no leaves them in: std's bitcode asks for them.)
flags="$flags -C link-arg=-Wl,--no-eh-frame-hdr -C link-arg=-Wl,-T,$PWD/cross/no-unwind-tables.ld"
export CARGO_TARGET_DIR="$PWD/target/cross/$arch"

# std is rebuilt from rust-src with the release profile (opt-level "z", LTO with the agent) and
# `optimize_for_size`, which also leaves out std's backtrace symbolizer (gimli, addr2line,
# miniz_oxide): with no unwind tables there is no backtrace to symbolize. That takes the x86_64
# binary from 2,959,488 to 2,649,904 bytes (measured). RUSTC_BOOTSTRAP unlocks -Zbuild-std on the
# pinned stable toolchain; rustup has no prebuilt std for 32-bit ARM musl at all.
std="-Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size"
if [ "$arch" = armhf ]; then
    # With no rustup self-contained dir for this target, zig brings musl's crt objects and libc,
    # hence link-self-contained=no.
    flags="$flags -C link-self-contained=no"
fi
# shellcheck disable=SC2086 # $std is two flags
RUSTC_BOOTSTRAP=1 RUSTFLAGS="$flags" \
    cargo zigbuild --locked --release --target "$triple" --bin ssm-lite $std

mkdir -p "$(dirname "$out")"
cp "$CARGO_TARGET_DIR/$triple/release/ssm-lite" "$out"
