#!/bin/sh
# Regenerates packaging/debian/copyright: ssm-lite's own notice, then one paragraph for each
# component statically linked into /usr/bin/ssm-lite (the crates, the Rust standard library,
# musl libc) and the text of every license they use.
#
#   packaging/gen-copyright.sh
#
# Run it after every change of Cargo.lock or cross/versions.env and commit the result:
# `cargo test --test package` fails while the file is stale. The output is committed rather than
# made at build time so that building the .deb needs neither the network nor this script's
# inputs. Needs the crate sources in cargo's registry (any `cargo build` fetches them), a Rust
# toolchain and the pinned zig (cross/install-tools.sh). Same inputs, same bytes.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
cd "$top"
. cross/versions.env

die() {
	echo "gen-copyright.sh: $*" >&2
	exit 1
}

targets="x86_64-unknown-linux-musl aarch64-unknown-linux-musl arm-unknown-linux-musleabihf i686-unknown-linux-musl"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

# The crates in the binary: normal dependencies of ssm-lite for each release target, the union
# over the four. Not build or dev dependencies, nor proc macros (serde_derive, thiserror-impl)
# and what only they use (syn, quote...): those run inside the compiler and leave no code of
# their own in the binary. tests/package.rs computes the same set.
for t in $targets; do
	cargo tree --locked --offline -p ssm-lite -e normal,no-proc-macro --target "$t" \
		--prefix none --format '{p}' ||
		die "cargo tree failed for $t (missing crate sources? run \`cargo fetch --locked\`)"
done >"$work/tree"
# Where each crate's sources are (manifest_path), its license, authors and `links`.
filters=$(for t in $targets; do printf ' --filter-platform %s' "$t"; done)
# shellcheck disable=SC2086 # $filters is a list of options
cargo metadata --format-version 1 --locked --offline $filters >"$work/metadata" ||
	die "cargo metadata failed (missing crate sources? run \`cargo fetch --locked\`)"

# musl's notice as zig ships it; zig must be the pinned one the release is linked with.
zig=$(python3 -c 'import ziglang, os; print(os.path.dirname(ziglang.__file__))' 2>/dev/null) ||
	die "zig is not installed: run cross/install-tools.sh"
found=$(python3 -m pip show ziglang 2>/dev/null | sed -n 's/^Version: //p')
[ "$found" = "$ZIGLANG_VERSION" ] ||
	die "zig is $found, cross/versions.env pins $ZIGLANG_VERSION: run cross/install-tools.sh"
# Two license texts that every Rust toolchain ships (version-independent).
sysroot=$(rustc --print sysroot) || die "rustc not found"

RUST_VERSION=$RUST_VERSION ZIGLANG_VERSION=$ZIGLANG_VERSION MUSL_COPYRIGHT=$zig/lib/libc/musl/COPYRIGHT \
	RUST_LICENSES=$sysroot/share/doc/rust/licenses python3 - "$work/tree" "$work/metadata" \
	>"$work/copyright" <<'EOF'
import json, os, re, sys

env = os.environ
tree, metadata = sys.argv[1:3]
rust, zig = env["RUST_VERSION"], env["ZIGLANG_VERSION"]
LINKED = "statically linked into /usr/bin/ssm-lite"

def fail(msg):
    sys.exit("gen-copyright.sh: " + msg)

def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()

# A copyright statement: a line starting with "Copyright" (after comment marks), not a clause
# of a license text ("copyright notice") nor a template ("[yyyy]", "<year>").
STATEMENT = re.compile(r"^[\s/#*;-]*(Copyright\b.*)")
NOT_STATEMENT = re.compile(r"^Copyright\s+(notice|holder|owner|license|statement)|yyyy|<year>", re.I)

def statements(text, head=None):
    out = []
    for line in text.splitlines()[:head]:
        m = STATEMENT.match(line)
        if m and not NOT_STATEMENT.search(m.group(1)):
            out.append(re.sub(r"\s*(\*/)?\s*$", "", m.group(1)))
    return out

LICENSE_FILE = re.compile(r"licen[cs]e|copying|copyright|notice", re.I)
NATIVE = (".c", ".h", ".S", ".inl", ".pl", ".asm")

def holders(pkg):
    """Copyright statements of the crate's license files (at any depth: ring keeps some beside the
    code they cover); for crates that compile C or assembly (`links`), also those at the top of
    those sources, where their authors put them; else the crate's authors."""
    d = os.path.dirname(pkg["manifest_path"])
    licenses, native = [], set()
    for root, dirs, files in os.walk(d):
        dirs[:] = sorted(x for x in dirs if x not in ("tests", "test", "benches", "examples"))
        for f in sorted(files):
            path = os.path.join(root, f)
            if LICENSE_FILE.search(f):
                licenses += statements(read(path))
            elif pkg["links"] and f.endswith(NATIVE):
                native.update(statements(read(path), 40))
    found = list(dict.fromkeys(licenses + sorted(native)))
    where = f", {pkg['repository']}" if pkg["repository"] else ""
    return found or pkg["authors"] or [f"The {pkg['name']} authors{where}"]

def dep5_license(spdx):
    return re.sub(r"\s+WITH\s+", " with ", re.sub(r"\s*/\s*|\s+OR\s+", " or ",
                  re.sub(r"\s+AND\s+", " and ", spdx)))

def names(expr):
    return re.split(r"\s+(?:and|or)\s+", re.sub(r"[(),]", " ", expr).strip())

def field(name, lines):
    """A deb822 field; continuation lines indented, empty ones as " ."."""
    first, rest = lines[0], lines[1:]
    pad = " " * (len(name) + 2) if name == "Copyright" else " "
    return "\n".join([f"{name}: {first}".rstrip()] + [pad + l if l.strip() else " ." for l in rest])

def paragraph(files, copyright, license, comment=None):
    out = [field("Files", [files]), field("Copyright", copyright), field("License", [license])]
    if comment:
        out.append(field("Comment", comment))
    return "\n".join(out)

# --- the crates ---
pkgs = {(p["name"], p["version"]): p for p in json.load(open(metadata))["packages"]}
crates = set()
for line in open(tree):
    m = re.match(r"^(\S+) v(\S+)( \(.*\))?$", line.strip())
    if not m:
        fail(f"unexpected cargo tree line: {line!r}")
    if pkgs[m[1], m[2]]["source"] is not None:  # ssm-lite itself and other path crates
        crates.add((m[1], m[2]))
crate_dir = {name: os.path.dirname(pkgs[name, v]["manifest_path"]) for name, v in sorted(crates)}

paragraphs = [paragraph("*", ["2026 The ssm-lite authors"], "Apache-2.0")]
used = {"Apache-2.0"}
for name, version in sorted(crates):
    pkg = pkgs[name, version]
    if not pkg["license"]:
        fail(f"{name} {version} has no SPDX license in Cargo.toml: handle it by hand")
    lic = dep5_license(pkg["license"])
    used.update(names(lic))
    paragraphs.append(paragraph(f"vendor/{name}-{version}/*", holders(pkg), lic,
                                [f"Rust crate {name} {version} from crates.io, {LINKED}."]))

# --- the Rust toolchain: standard library, compiler_builtins, libunwind ---
# std's holders, read by hand from share/doc/rust/COPYRIGHT-library.html of the pinned toolchain
# and the license files of the crates std is built from (its library/Cargo.lock): review them
# when the pin changes.
STD_REVIEWED_FOR = "1.95.0"
if rust != STD_REVIEWED_FOR:
    fail(f"the standard library's notices were reviewed for Rust {STD_REVIEWED_FOR}, "
         f"cross/versions.env pins {rust}: check share/doc/rust/COPYRIGHT-library.html of the "
         "new toolchain, update the holders in this script and STD_REVIEWED_FOR")
lib = f"vendor/rust-{rust}/library"
paragraphs += [
    paragraph(f"{lib}/*", [
        "The Rust Project Developers (see https://thanks.rust-lang.org)",
        "Copyright (c) 2014 Alex Crichton",
        "Copyright (c) 2014-2020 The Rust Project Developers",
        "Copyright (c) 2015 The Gimli Developers",
        "Copyright (c) 2016 Amanieu d'Antras",
        "Copyright (c) 2016-2018 The gimli Developers",
        "Copyright (C) Jonas Schievink <jonasschievink@gmail.com>",
        "Copyright 2013-2014 RAD Game Tools and Valve Software",
        "Copyright 2010-2014 Rich Geldreich and Tenacious Software LLC",
        "Copyright (c) 2017 Frommi",
        "Copyright (c) 2017-2024 oyvindln",
        "Copyright 2019 The Crossbeam Project Developers"], "MIT or Apache-2.0", [
        f"The Rust {rust} standard library (std, core, alloc, panic_abort, std_detect, unwind)",
        "and the crates it is built from on Linux (addr2line, adler2, cfg-if, gimli, hashbrown,",
        f"libc, miniz_oxide, object, rustc-demangle), {LINKED}."]),
    paragraph(f"{lib}/core/src/unicode/unicode_data.rs", ["1991-2024 Unicode, Inc"],
              "Unicode-3.0", ["The Unicode character tables of Rust's core library."]),
    paragraph(f"{lib}/compiler-builtins/*", [
        "Alex Crichton <alex@alexcrichton.com>",
        "Amanieu d'Antras <amanieu@gmail.com>",
        "Jorge Aparicio <japaricious@gmail.com>",
        "Trevor Gross <tg@trevorgross.com>",
        "The LLVM Project contributors"], "MIT and Apache-2.0 with LLVM exception", [
        "compiler_builtins, the compiler's intrinsics, part ported from LLVM's compiler-rt,",
        f"{LINKED}."]),
    paragraph("vendor/llvm-project/libunwind/*", ["The LLVM Project contributors"],
              "Apache-2.0 with LLVM exception",
              [f"LLVM's libunwind, which the Rust standard library links in on musl, {LINKED}."]),
]
used.update({"MIT", "Unicode-3.0", "Apache-2.0 with LLVM exception"})

# --- musl, from zig's copy: its notice and what it says of the third-party parts ---
musl = read(env["MUSL_COPYRIGHT"])
portions = re.search(r"^Portions of this software.*?(?=^All other files)", musl, re.S | re.M)
if not statements(musl) or not portions:
    fail(f"{env['MUSL_COPYRIGHT']} has changed its layout: update this script")
paragraphs.append(paragraph(f"vendor/zig-{zig}/lib/libc/musl/*", statements(musl)[:1], "MIT", [
    f"musl libc as zig {zig} bundles it (lib/libc/musl), {LINKED}.",
    "From musl's COPYRIGHT file:", ""] + portions[0].strip().splitlines()))

# --- license texts, one stand-alone paragraph each ---
APACHE = """On Debian systems, the complete text of the Apache License, Version 2.0
can be found in "/usr/share/common-licenses/Apache-2.0"."""
# Where each text is taken from: a license file of a bundled crate (any version), or a file of
# the Rust toolchain. Copyright lines and comment marks are dropped: the text is generic.
TEXT_FROM = {
    "0BSD": ("adler2", "LICENSE-0BSD"),
    "BSD-3-Clause": ("subtle", "LICENSE"),
    "CDLA-Permissive-2.0": ("webpki-roots", "LICENSE"),
    "ISC": ("untrusted", "LICENSE.txt"),
    "MIT": ("cfg-if", "LICENSE-MIT"),
    "Unlicense": ("memchr", "UNLICENSE"),
    "Unicode-3.0": (None, "Unicode-3.0.txt"),
    "Zlib": ("miniz_oxide", "LICENSE-ZLIB.md"),
}

def text(name):
    if name == "Apache-2.0":
        return APACHE
    if name == "Apache-2.0 with LLVM exception":
        return APACHE + "\n\n" + read(os.path.join(env["RUST_LICENSES"], "LLVM-exception.txt"))
    crate, file = TEXT_FROM.get(name, (None, None))
    if crate is None and file:
        return read(os.path.join(env["RUST_LICENSES"], file))
    if crate not in crate_dir:
        fail(f"no text for license {name}: add a source for it to TEXT_FROM")
    lines = [re.sub(r"^// ?", "", l) for l in read(os.path.join(crate_dir[crate], file)).splitlines()]
    return "\n".join(l for l in lines if not statements(l))

for name in sorted(used, key=str.lower):
    body = [l.expandtabs().rstrip() for l in text(name).strip("\n").splitlines()]
    while body and not body[0]:
        body.pop(0)
    paragraphs.append(field("License", [name] + body))

header = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ssm-lite
Upstream-Contact: ssm-lite developers <ssm-lite@example.org>
Comment: Generated by packaging/gen-copyright.sh; do not edit.
 .
 /usr/bin/ssm-lite is one static binary: besides ssm-lite's own code it
 contains the Rust crates, the Rust standard library and musl libc listed
 below. None of their files is in this package; each paragraph names the
 sources compiled into the binary the way a source tree holding them would:
 vendor/NAME-VERSION/ for a crate (the layout of `cargo vendor
 --versioned-dirs`), the release's own layout for the toolchain's parts."""
print("\n\n".join([header] + paragraphs))
EOF
mv "$work/copyright" "$here/debian/copyright"
echo "packaging/debian/copyright: $(grep -c '^Files:' "$here/debian/copyright") components"
