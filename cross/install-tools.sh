#!/bin/sh
# Installs the pinned tools of cross/versions.env that are missing; does nothing when all are
# there. Used by `make release` (and through it `make test`) and by .ci/run.
set -eu
cd "$(dirname "$0")/.."
. cross/versions.env

# std is built from rust-src for every target (cross/build.sh); the musl targets rustup serves
# still bring the crt objects and libc the self-contained link uses (32-bit ARM has none: zig's).
rustup target add x86_64-unknown-linux-musl aarch64-unknown-linux-musl i686-unknown-linux-musl >/dev/null
rustup component add rust-src >/dev/null

pip_version() {
    python3 -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'
}
if [ "$(pip_version ziglang)" != "$ZIGLANG_VERSION" ] ||
    [ "$(pip_version cargo-zigbuild)" != "$CARGO_ZIGBUILD_VERSION" ]; then
    python3 -m pip install --quiet --disable-pip-version-check \
        "ziglang==$ZIGLANG_VERSION" "cargo-zigbuild==$CARGO_ZIGBUILD_VERSION"
fi

missing=""
for pkg in $DEBIAN_PACKAGES; do
    dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
        missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-tools: missing Debian packages:$missing" >&2
        echo "install-tools: run: sudo apt-get install$missing" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi
