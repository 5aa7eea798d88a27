//! `AWS:Application` from the package databases: dpkg, opkg and apk files read directly (some
//! boards have no dpkg-query), rpm through its own tool on a real root (its database is not a
//! text file). Attributes as upstream's `ApplicationData`, each value cleaned as its
//! `cleanupJSONField` does: first line only, at most 100 bytes.

use super::{Entry, GatherError, Host, entry_of, put_nonempty, read_capped, rfc3339, under};
use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, UNIX_EPOCH};

/// At most this many packages are reported; a larger database is cut (and logged).
const MAX_ENTRIES: usize = 50_000;
/// Package databases (and rpm's output) are read up to this size.
const FILE_CAP: u64 = 64 << 20;
/// Upstream's `maxSummaryLength`, which it applies to every attribute.
const MAX_VALUE: usize = 100;

/// The fields of rpm's answer, in this order (upstream's `rpmQueryFormatArgs`), separated by
/// ASCII unit separators and each package ended by a record separator: values may hold newlines.
const RPM_FORMAT: &str = "%{NAME}\x1f%{VENDOR}\x1f%{VERSION}\x1f%{RELEASE}\x1f%{EPOCH}\x1f\
%{INSTALLTIME}\x1f%{GROUP}\x1f%{ARCH}\x1f%{URL}\x1f%{SUMMARY}\x1f%{SOURCERPM}\x1e";

/// Every installed package of every database the host has, in the databases' order (stable from
/// run to run, so the content hash is), unsorted as upstream's.
pub(super) fn gather(host: &Host<'_>) -> Result<Vec<Entry>, GatherError> {
    let mut apps = Vec::new();
    let root = host.root;
    if let Some(text) = read_capped(&under(root, Path::new("/var/lib/dpkg/status")), FILE_CAP)? {
        debian_like(&text, "deb", &mut apps);
    }
    let mut seen_opkg = Vec::new();
    for path in ["/usr/lib/opkg/status", "/var/lib/opkg/status"] {
        let path = under(root, Path::new(path));
        // OpenWrt links one to the other: read the file once.
        let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        if seen_opkg.contains(&real) {
            continue;
        }
        if let Some(text) = read_capped(&path, FILE_CAP)? {
            debian_like(&text, "ipk", &mut apps);
        }
        seen_opkg.push(real);
    }
    if let Some(text) = read_capped(&under(root, Path::new("/lib/apk/db/installed")), FILE_CAP)? {
        apk(&text, &mut apps);
    }
    if root == Path::new("/") {
        rpm(&mut apps);
    }
    if apps.len() > MAX_ENTRIES {
        log::warn!("inventory: more than {MAX_ENTRIES} packages; only the first are reported");
        apps.truncate(MAX_ENTRIES);
    }
    Ok(apps)
}

/// dpkg's `status` file, or opkg's (same stanza format; `kind` is the package file extension).
/// Only installed packages count: dpkg-query also lists removed ones whose config files remain.
fn debian_like(text: &str, kind: &str, apps: &mut Vec<Entry>) {
    for stanza in text.split("\n\n") {
        let get = |key| field(stanza, key);
        let (name, version) = (get("Package"), get("Version"));
        if name.is_empty() || version.is_empty() || !installed(get("Status")) {
            continue;
        }
        let arch = get("Architecture");
        let mut e = entry(name, get("Maintainer"), version, arch);
        put(&mut e, "ApplicationType", get("Section"));
        put(&mut e, "URL", get("Homepage"));
        put(&mut e, "Summary", get("Description"));
        // Upstream builds it from parts: `${Package}_${Version}_${Architecture}.deb`.
        put(
            &mut e,
            "PackageId",
            &format!("{name}_{version}_{arch}.{kind}"),
        );
        put(&mut e, "InstalledTime", &epoch_time(get("Installed-Time")));
        apps.push(e);
        if apps.len() > MAX_ENTRIES {
            return;
        }
    }
}

/// `Status: <want> <flag> <state>`: installed (held or not), not marked as needing a reinstall.
fn installed(status: &str) -> bool {
    let words: Vec<&str> = status.split_whitespace().collect();
    matches!(words.as_slice(), [_, flag, "installed"] if *flag != "reinstreq")
}

/// The first line of field `key` of a dpkg-style stanza (continuation lines start with a blank),
/// trailing blanks kept as dpkg-query prints them.
fn field<'a>(stanza: &'a str, key: &str) -> &'a str {
    stanza
        .lines()
        .filter(|l| !l.starts_with([' ', '\t']))
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| *k == key)
        .map_or("", |(_, v)| v.trim_start())
}

/// Alpine's `lib/apk/db/installed`: one `X:value` line per field, packages apart by a blank line.
/// It records no install time (`t:` is the build time), so InstalledTime stays unset.
fn apk(text: &str, apps: &mut Vec<Entry>) {
    for stanza in text.split("\n\n") {
        let get = |key: char| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
                .unwrap_or("")
        };
        let (name, version) = (get('P'), get('V'));
        if name.is_empty() || version.is_empty() {
            continue;
        }
        let mut e = entry(name, get('m'), version, get('A'));
        put(&mut e, "URL", get('U'));
        put(&mut e, "Summary", get('T'));
        put(&mut e, "PackageId", &format!("{name}-{version}.apk"));
        apps.push(e);
        if apps.len() > MAX_ENTRIES {
            return;
        }
    }
}

/// `rpm -qa` with upstream's fields; no rpm on the host is no error, a failing one is logged.
fn rpm(apps: &mut Vec<Entry>) {
    match rpm_query("rpm") {
        Ok(Some(out)) => rpm_records(&out, apps),
        Ok(None) => {}
        Err(e) => log::warn!("inventory: rpm packages not listed: {e}"),
    }
}

/// The output of `program` (rpm, or a stand-in in tests) run as `rpm -qa`; `None` when there is
/// no such program.
fn rpm_query(program: &str) -> Result<Option<String>, String> {
    let mut cmd = crate::sys::child::command(program);
    cmd.args(["-qa", "--queryformat", RPM_FORMAT]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot run rpm -qa: {e}")),
    };
    let mut out = Vec::new();
    let read = match child.stdout.take() {
        Some(stdout) => stdout.take(FILE_CAP).read_to_end(&mut out),
        None => Ok(0),
    };
    // The pipe is closed now: an rpm still writing past the cap ends on EPIPE.
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for rpm -qa: {e}"))?;
    read.map_err(|e| format!("cannot read rpm -qa's output: {e}"))?;
    if !status.success() && out.is_empty() {
        return Err(format!("rpm -qa failed ({status})"));
    }
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}

/// The records `RPM_FORMAT` prints; a record without all its fields is skipped.
fn rpm_records(out: &str, apps: &mut Vec<Entry>) {
    for record in out.split('\x1e') {
        let f: Vec<&str> = record.split('\x1f').collect();
        let [
            name,
            vendor,
            version,
            release,
            epoch,
            time,
            group,
            arch,
            url,
            summary,
            srpm,
        ] = f.as_slice()
        else {
            continue;
        };
        let mut e = entry(name.trim_start(), vendor, version, arch);
        put(&mut e, "Release", release);
        put(&mut e, "Epoch", if *epoch == "(none)" { "" } else { epoch });
        put(&mut e, "InstalledTime", &epoch_time(time));
        put(&mut e, "ApplicationType", group);
        put(&mut e, "URL", url);
        put(&mut e, "Summary", summary);
        put(&mut e, "PackageId", srpm);
        apps.push(e);
        if apps.len() > MAX_ENTRIES {
            return;
        }
    }
}

/// The attributes upstream always sends (no `omitempty`).
fn entry(name: &str, publisher: &str, version: &str, arch: &str) -> Entry {
    entry_of(&[
        ("Name", clean(name)),
        ("Publisher", clean(publisher)),
        ("Version", clean(version)),
        ("Architecture", &architecture(clean(arch))),
    ])
}

fn put(e: &mut Entry, key: &str, value: &str) {
    put_nonempty(e, key, clean(value));
}

/// Upstream's `cleanupJSONField`: the first line, without CRs, cut to 100 bytes.
fn clean(value: &str) -> &str {
    let line = value.lines().next().unwrap_or("").trim_end_matches('\r');
    let mut end = line.len().min(MAX_VALUE);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

/// Upstream's `model.FormatArchitecture`: dpkg's `amd64` is `x86_64`, Go's `386` is `i386`;
/// every other name (`arm64`, `armhf`, `all`, `noarch`, `aarch64`) stays, lower-cased (ASCII:
/// architecture names are).
pub(super) fn architecture(arch: &str) -> String {
    match arch.trim().to_ascii_lowercase().as_str() {
        "amd64" => "x86_64".into(),
        "386" => "i386".into(),
        other => other.into(),
    }
}

/// A time in Unix seconds as RFC 3339; text that is no (representable) time stays as it is, as
/// upstream leaves it.
fn epoch_time(secs: &str) -> String {
    let secs = secs.trim();
    let time = secs
        .parse()
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)));
    time.map_or_else(|| secs.into(), rfc3339)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{root, write};
    use super::*;

    fn host(root: &Path) -> Host<'_> {
        Host {
            root,
            agent_version: "0.1.0",
        }
    }

    fn by_name<'a>(apps: &'a [Entry], name: &str) -> &'a Entry {
        apps.iter()
            .find(|e| e["Name"] == name)
            .unwrap_or_else(|| panic!("{name} in {apps:?}"))
    }

    const DPKG: &str = "\
Package: sed
Essential: yes
Status: install ok installed
Priority: required
Section: utils
Installed-Size: 304
Maintainer: Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>
Architecture: amd64
Multi-Arch: foreign
Version: 4.8-1ubuntu2
Depends: dpkg (>= 1.15.4) | install-info
Description: GNU stream editor for filtering/transforming text
 sed reads the specified files or the standard input if no
 files are specified, makes editing changes according to a
 .
 list of commands, and writes the results to the standard output.
Homepage: https://www.gnu.org/software/sed/

Package: old-tool
Status: deinstall ok config-files
Priority: optional
Architecture: all
Version: 1.0
Conffiles:
 /etc/old-tool.conf 0123456789abcdef

Package: libc6
Status: hold ok installed
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: arm64
Version: 2.36-9+deb12u4
Description: GNU C Library: Shared libraries and Timezone data with a summary line that is much longer than one hundred bytes

Package: broken
Status: install reinstreq half-installed
Architecture: amd64
Version: 0.1

Package: no-version
Status: install ok installed
Architecture: amd64

Package: tzdata
Status: install ok installed
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
Architecture: all
Version: 1:2024a-0+deb12u1
Description: time zone and daylight-saving time data
";

    #[test]
    fn dpkg_lists_installed_packages_with_upstreams_attributes() {
        let root = root("dpkg");
        write(&root, "/var/lib/dpkg/status", DPKG);
        let apps = gather(&host(&root)).unwrap();
        let names: Vec<&str> = apps.iter().map(|e| e["Name"].as_str()).collect();
        assert_eq!(
            names,
            ["sed", "libc6", "tzdata"],
            "config-files, half-installed, no version: out"
        );
        let sed: Entry = [
            ("Name", "sed"),
            (
                "Publisher",
                "Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>",
            ),
            ("Version", "4.8-1ubuntu2"),
            ("ApplicationType", "utils"),
            ("Architecture", "x86_64"),
            ("URL", "https://www.gnu.org/software/sed/"),
            (
                "Summary",
                "GNU stream editor for filtering/transforming text",
            ),
            ("PackageId", "sed_4.8-1ubuntu2_amd64.deb"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(by_name(&apps, "sed"), &sed);
        let libc = by_name(&apps, "libc6");
        assert_eq!(
            libc["Architecture"], "arm64",
            "only amd64 and 386 are renamed"
        );
        assert_eq!(libc["Summary"].len(), 100);
        assert!(libc["Summary"].starts_with("GNU C Library: Shared libraries"));
        assert!(
            !libc.contains_key("URL") && !libc.contains_key("ApplicationType"),
            "{libc:?}"
        );
        let tz = by_name(&apps, "tzdata");
        assert_eq!(
            tz["Version"], "1:2024a-0+deb12u1",
            "the epoch stays, as dpkg-query shows it"
        );
        assert_eq!(tz["PackageId"], "tzdata_1:2024a-0+deb12u1_all.deb");
    }

    #[test]
    fn apk_database_is_read() {
        let root = root("apk");
        write(
            &root,
            "/lib/apk/db/installed",
            "C:Q1abc=\nP:musl\nV:1.2.4_git20230717-r4\nA:x86_64\nS:383152\nI:622592\n\
             T:the musl c library (libc) implementation\nU:https://musl.libc.org/\nL:MIT\n\
             o:musl\nm:Timo Teräs <timo.teras@iki.fi>\nt:1700000000\nc:abc\n\
             F:lib\nR:libc.musl-x86_64.so.1\n\n\
             C:Q1def=\nP:busybox\nV:1.36.1-r15\nA:aarch64\nT:Size optimized toolbox\n\
             U:https://busybox.net/\nm:Sören Tempel <soeren+alpine@soeren-tempel.net>\n\n\
             C:Q1broken=\nV:1.0\nA:x86_64\n",
        );
        let apps = gather(&host(&root)).unwrap();
        assert_eq!(apps.len(), 2, "the stanza without P: is skipped: {apps:?}");
        let musl = by_name(&apps, "musl");
        assert_eq!(musl["Version"], "1.2.4_git20230717-r4");
        assert_eq!(musl["Architecture"], "x86_64");
        assert_eq!(musl["Publisher"], "Timo Teräs <timo.teras@iki.fi>");
        assert_eq!(musl["URL"], "https://musl.libc.org/");
        assert_eq!(musl["Summary"], "the musl c library (libc) implementation");
        assert_eq!(musl["PackageId"], "musl-1.2.4_git20230717-r4.apk");
        assert!(!musl.contains_key("InstalledTime"), "t: is the build time");
        assert_eq!(by_name(&apps, "busybox")["Architecture"], "aarch64");
    }

    #[test]
    fn opkg_status_is_read_once_through_its_link() {
        let root = root("opkg");
        let status = write(
            &root,
            "/usr/lib/opkg/status",
            "Package: busybox\nVersion: 1.36.1-1\nDepends: libc\nStatus: install user installed\n\
             Architecture: mipsel_24kc\nConffiles:\n /etc/syslog.conf 1234\nInstalled-Time: 1700000000\n\n\
             Package: luci-app-firewall\nVersion: git-23.051.66410-a505bb1\nStatus: install user not-installed\n\
             Architecture: all\n\n\
             Package: kernel\nVersion: 5.15.137-1-abc\nStatus: install hold installed\n\
             Architecture: mipsel_24kc\nInstalled-Time: notanumber\n\n\
             Package: future\nVersion: 1\nStatus: install ok installed\n\
             Installed-Time: 18446744073709551615\n",
        );
        std::fs::create_dir_all(root.join("var/lib/opkg")).unwrap();
        std::os::unix::fs::symlink(&status, root.join("var/lib/opkg/status")).unwrap();
        let apps = gather(&host(&root)).unwrap();
        let names: Vec<&str> = apps.iter().map(|e| e["Name"].as_str()).collect();
        assert_eq!(names, ["busybox", "kernel", "future"]);
        let bb = by_name(&apps, "busybox");
        assert_eq!(bb["InstalledTime"], "2023-11-14T22:13:20Z");
        assert_eq!(bb["PackageId"], "busybox_1.36.1-1_mipsel_24kc.ipk");
        assert_eq!(
            bb["Publisher"], "",
            "always sent, empty when the database has none"
        );
        assert_eq!(by_name(&apps, "kernel")["InstalledTime"], "notanumber");
        assert_eq!(
            by_name(&apps, "future")["InstalledTime"],
            "18446744073709551615"
        );
    }

    #[test]
    fn rpm_records_take_upstreams_fields() {
        let out = format!(
            "{}{}",
            "python3\x1fAmazon Linux\x1f3.9.16\x1f1.amzn2023.0.6\x1f(none)\x1f1700000000\x1f\
             Unspecified\x1fx86_64\x1fhttps://www.python.org/\x1fPython 3.9 interpreter\x1f\
             python3.9-3.9.16-1.amzn2023.0.6.src.rpm\x1e",
            "\nbash\x1fAmazon Linux\x1f5.2.15\x1f3.amzn2023\x1f2\x1f1700000001\x1fUnspecified\x1f\
             x86_64\x1fhttps://www.gnu.org/software/bash\x1fThe GNU Bourne Again shell\nsecond\x1f\
             bash-5.2.15-3.amzn2023.src.rpm\x1e\ntruncated\x1fAmazon\x1e"
        );
        let mut apps = Vec::new();
        rpm_records(&out, &mut apps);
        assert_eq!(apps.len(), 2, "{apps:?}");
        let py = &apps[0];
        assert_eq!(py["Name"], "python3");
        assert_eq!(py["Release"], "1.amzn2023.0.6");
        assert!(!py.contains_key("Epoch"), "(none) is no epoch");
        assert_eq!(py["InstalledTime"], "2023-11-14T22:13:20Z");
        assert_eq!(py["PackageId"], "python3.9-3.9.16-1.amzn2023.0.6.src.rpm");
        assert_eq!(
            apps[1]["Name"], "bash",
            "the newline after a record is not part of the name"
        );
        assert_eq!(apps[1]["Epoch"], "2");
        assert_eq!(apps[1]["Summary"], "The GNU Bourne Again shell");
    }

    /// `echo` stands in for rpm (a script written here could meet ETXTBSY from another test's
    /// fork): it prints the arguments, which makes one record of the format's 11 fields.
    #[test]
    fn rpm_runs_as_a_process_and_its_absence_is_no_error() {
        let out = rpm_query("echo").unwrap().unwrap();
        let mut apps = Vec::new();
        rpm_records(&out, &mut apps);
        assert_eq!(apps.len(), 1, "{out:?}");
        assert_eq!(apps[0]["Name"], "-qa --queryformat %{NAME}");
        assert_eq!(apps[0]["PackageId"], "%{SOURCERPM}");
        let missing = root("rpm").join("no-such-rpm");
        assert_eq!(rpm_query(missing.to_str().unwrap()), Ok(None));
    }

    /// Every package dpkg-query calls installed, with its version, when this machine has dpkg.
    #[test]
    fn this_machine_lists_what_dpkg_query_lists() {
        let Ok(out) = std::process::Command::new("dpkg-query")
            .args(["-W", "-f", "${db:Status-Status} ${Package} ${Version}\n"])
            .output()
        else {
            return;
        };
        let apps = gather(&host(Path::new("/"))).unwrap();
        let ours: std::collections::BTreeSet<(String, String)> = apps
            .iter()
            .map(|e| (e["Name"].clone(), e["Version"].clone()))
            .collect();
        let text = String::from_utf8(out.stdout).unwrap();
        let dpkg: std::collections::BTreeSet<(String, String)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("installed "))
            .filter_map(|l| l.split_once(' '))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert!(
            !dpkg.is_empty(),
            "dpkg-query listed no installed package: {text}"
        );
        let missing: Vec<_> = dpkg.difference(&ours).collect();
        assert!(missing.is_empty(), "missing from ours: {missing:?}");
        let extra: Vec<_> = ours.difference(&dpkg).collect();
        assert!(extra.is_empty(), "not dpkg's: {extra:?}");
    }

    /// Every attribute as upstream's dpkg-query format would give it, package by package.
    #[test]
    fn this_machine_attributes_match_dpkg_querys_fields() {
        let format = "${db:Status-Status}\x1f${Package}\x1f${Maintainer}\x1f${Version}\x1f\
                      ${Section}\x1f${Architecture}\x1f${Homepage}\x1f${Description}\x1e";
        let Ok(out) = std::process::Command::new("dpkg-query")
            .args(["-W", "-f", format])
            .output()
        else {
            return;
        };
        let text = String::from_utf8(out.stdout).unwrap();
        let mut want: Vec<Entry> = Vec::new();
        for record in text.split('\x1e') {
            let f: Vec<&str> = record.split('\x1f').collect();
            let ["installed", name, maint, version, section, arch, home, desc] = f.as_slice()
            else {
                continue;
            };
            let mut e = entry(name, maint, version, arch);
            put(&mut e, "ApplicationType", section);
            put(&mut e, "URL", home);
            put(&mut e, "Summary", desc);
            put(&mut e, "PackageId", &format!("{name}_{version}_{arch}.deb"));
            want.push(e);
        }
        assert!(!want.is_empty(), "dpkg-query listed no installed package");
        let mut got = gather(&host(Path::new("/"))).unwrap();
        got.sort();
        want.sort();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w);
        }
    }
}
