#!/bin/sh
# Builds the .rpm of ssm-lite for one architecture from a static binary:
#
#   packaging/build-rpm.sh RPMARCH BINARY OUTDIR
#
# RPMARCH is x86_64, aarch64, armv6hl or i686 (RPM's names; armv6hl installs on armv7hl
# systems too); BINARY the static ssm-lite for it. Writes
# OUTDIR/ssm-lite-<version>-<release>.<RPMARCH>.rpm and prints its path.
#
# rpmbuild (Debian's rpm package) with packaging/rpm/ssm-lite.spec, which only copies files:
# the same binary, unit, template and man page as the .deb, at RHEL's paths. Version, release
# and the date of every file come from the newest debian/changelog entry, as for the .deb.
set -eu

usage() {
	echo "usage: $0 x86_64|aarch64|armv6hl|i686 BINARY OUTDIR" >&2
	exit 2
}

[ $# -eq 3 ] || usage
rpmarch=$1 binary=$2 outdir=$3
here=$(cd "$(dirname "$0")" && pwd)
changelog=$here/debian/changelog

# ELF e_machine of each architecture, to refuse a binary built for another one.
case "$rpmarch" in
x86_64) machine=62 ;;
aarch64) machine=183 ;;
armv6hl) machine=40 ;;
i686) machine=3 ;;
*) usage ;;
esac

die() {
	echo "build-rpm.sh: $*" >&2
	exit 1
}

command -v rpmbuild >/dev/null || die "rpmbuild is missing: apt-get install rpm (or \`make tools\`)"
[ -f "$binary" ] || die "$binary: no such file (build it first, e.g. \`make release\`)"
found=$(od -An --endian=little -t u2 -j 18 -N 2 "$binary" | tr -d ' ')
[ "$found" = "$machine" ] || die "$binary is for ELF machine $found, not $rpmarch ($machine)"

# The .deb's version (checked against Cargo.toml by build-deb.sh), split as RPM wants it.
version=$(sed -n '1s/^ssm-lite (\([^)]*\)).*/\1/p' "$changelog")
[ -n "$version" ] || die "cannot read the version from $changelog"
changelog_date=$(sed -n 's/^ -- .*>  //p' "$changelog" | head -n 1)
SOURCE_DATE_EPOCH=$(date -d "$changelog_date" +%s) || die "bad date in $changelog: $changelog_date"
export SOURCE_DATE_EPOCH

umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

rpmbuild -bb --quiet --target "$rpmarch-linux" \
	--define "_topdir $work" \
	--define "version ${version%-*}" \
	--define "release ${version##*-}" \
	--define "binary $(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")" \
	--define "src $here" \
	"$here/rpm/ssm-lite.spec" >/dev/null
mkdir -p "$outdir"
rpm=$outdir/ssm-lite-$version.$rpmarch.rpm
mv "$work/RPMS/$rpmarch/ssm-lite-$version.$rpmarch.rpm" "$rpm"
echo "$rpm"
