#!/bin/sh
# Builds the .deb of ssm-lite for one architecture from a static binary:
#
#   packaging/build-deb.sh DEBARCH BINARY OUTDIR
#
# DEBARCH is amd64, arm64, armhf or i386; BINARY the static ssm-lite for it.
# Writes OUTDIR/ssm-lite_<version>_<DEBARCH>.deb and prints its path.
#
# Plain dpkg-deb, no debhelper: the package is one static binary and a few
# text files. Reproducible: the same inputs give the same bytes. Every
# timestamp is the date of the newest debian/changelog entry (SOURCE_DATE_EPOCH),
# owners are root, modes are set explicitly, gzip leaves out names and times,
# and xz runs single-threaded (its output depends on the thread count).
set -eu

usage() {
	echo "usage: $0 amd64|arm64|armhf|i386 BINARY OUTDIR" >&2
	exit 2
}

[ $# -eq 3 ] || usage
debarch=$1 binary=$2 outdir=$3
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
changelog=$here/debian/changelog

# ELF e_machine of each architecture, to refuse a binary built for another one.
case "$debarch" in
amd64) machine=62 ;;
arm64) machine=183 ;;
armhf) machine=40 ;;
i386) machine=3 ;;
*) usage ;;
esac

die() {
	echo "build-deb.sh: $*" >&2
	exit 1
}

[ -f "$binary" ] || die "$binary: no such file (build it first, e.g. \`make release\`)"
[ "$(head -c 4 "$binary" | od -An -c | tr -d ' ')" = '177ELF' ] || die "$binary is not an ELF binary"
# e_machine: 16 bits at offset 18, little-endian on all four architectures.
found=$(od -An --endian=little -t u2 -j 18 -N 2 "$binary" | tr -d ' ')
[ "$found" = "$machine" ] || die "$binary is for ELF machine $found, not $debarch ($machine)"

# The version of the newest changelog entry; its upstream part must be the
# crate's, so a new release cannot be packaged without a changelog entry.
version=$(sed -n '1s/^ssm-lite (\([^)]*\)).*/\1/p' "$changelog")
crate_version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$top/Cargo.toml")
[ -n "$version" ] || die "cannot read the version from $changelog"
[ "${version%-*}" = "$crate_version" ] ||
	die "$changelog is at $version but Cargo.toml at $crate_version: add a changelog entry"
changelog_date=$(sed -n 's/^ -- .*>  //p' "$changelog" | head -n 1)
SOURCE_DATE_EPOCH=$(date -d "$changelog_date" +%s) || die "bad date in $changelog: $changelog_date"
export SOURCE_DATE_EPOCH

umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
root=$work/root

# put MODE SOURCE DEST: one file of the package, its directories 0755.
put() {
	mkdir -p "$root/$(dirname "$3")"
	cp "$2" "$root/$3"
	chmod "$1" "$root/$3"
}

put 0755 "$binary" usr/bin/ssm-lite
put 0644 "$here/systemd/ssm-lite.service" lib/systemd/system/ssm-lite.service
put 0755 "$here/sysv/ssm-lite" etc/init.d/ssm-lite
put 0644 "$here/default/ssm-lite" etc/default/ssm-lite
put 0644 "$here/logrotate/ssm-lite" etc/logrotate.d/ssm-lite
put 0644 "$here/config/amazon-ssm-agent.json.template" etc/ssm-lite/amazon-ssm-agent.json.template
put 0644 "$here/debian/copyright" usr/share/doc/ssm-lite/copyright
put 0644 "$here/debian/lintian-overrides" usr/share/lintian/overrides/ssm-lite
put 0644 "$here/man/ssm-lite.8" usr/share/man/man8/ssm-lite.8
gzip -9n "$root/usr/share/man/man8/ssm-lite.8"
put 0644 "$changelog" usr/share/doc/ssm-lite/changelog.Debian
gzip -9n "$root/usr/share/doc/ssm-lite/changelog.Debian"

# Installed-Size as dpkg-gencontrol counts it, from file sizes rather than
# disk blocks (which differ between file systems): KiB per file rounded up,
# 1 per directory.
installed_size=$(find "$root" -mindepth 1 -printf '%y %s\n' |
	awk '$1 == "f" { kib += int(($2 + 1023) / 1024); next } { kib += 1 } END { print kib }')

mkdir "$root/DEBIAN"
for script in postinst prerm postrm; do
	put 0755 "$here/debian/$script" "DEBIAN/$script"
done
(cd "$root" && find etc -type f | LC_ALL=C sort | sed 's|^|/|') >"$root/DEBIAN/conffiles"
# Checksums of the installed files, for `dpkg --verify` and debsums; not of
# the conffiles, whose checksums dpkg keeps in its own database.
(cd "$root" && find usr lib -type f | LC_ALL=C sort | xargs md5sum) >"$root/DEBIAN/md5sums"
# No Depends: the binary is static (no libc), and the maintainer scripts use
# only Essential packages (dpkg, coreutils, init-system-helpers, util-linux).
# logrotate only matters for the init script's log file.
cat >"$root/DEBIAN/control" <<EOF
Package: ssm-lite
Version: $version
Architecture: $debarch
Maintainer: ssm-lite developers <ssm-lite@example.org>
Installed-Size: $installed_size
Suggests: logrotate
Section: admin
Priority: optional
Description: small agent for AWS Systems Manager (Run Command, Session Manager)
 ssm-lite does the job of Amazon's SSM Agent on small Linux machines: it runs
 the commands that AWS Systems Manager Run Command sends, and opens Session
 Manager shells and port forwarding sessions. It speaks the same protocols as
 amazon-ssm-agent and understands its configuration file, so it can replace
 that agent on an existing fleet.
 .
 The package is a single statically linked binary with no dependencies. It
 runs under systemd or a SysV-style init; machines outside EC2 register with
 a hybrid activation (ssm-lite register).
EOF
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles" "$root/DEBIAN/md5sums"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$outdir"
deb=$outdir/ssm-lite_${version}_$debarch.deb
dpkg-deb --root-owner-group -Zxz --threads-max=1 --build "$root" "$deb" >/dev/null
echo "$deb"
