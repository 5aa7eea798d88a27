//! The .deb packages of `make release`: lintian, contents and metadata, reproducibility, the dpkg
//! lifecycle inside a Debian root, the SysV init script running the real agent against the
//! emulator, and `systemd-analyze verify` of the unit.
//!
//! They need dist/ (`make release`) and root (chroot, mount, dpkg), so they are ignored by a plain
//! `cargo test`; `make test` runs them with `cargo test --test package -- --ignored`. The one
//! exception, run by a plain `cargo test`, checks that packaging/debian/copyright is current.
//!
//! The Debian root (bookworm minbase + systemd) is made once by debootstrap and cached in
//! target/debian-root/. Each test that installs the package works on its own copy of it
//! (`cp -a`, ~240 MB, well under a second), so those tests run in parallel.

mod common;

use common::{TempDir, dist, emulator, plugin, release_artifact, release_binary, restamped};
use serde_json::{Value, json};
use ssm_emulator::{Emulator, aws_run_shell_script_payload};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The dist binary's architecture name and the matching Debian architecture.
const ARCHES: [(&str, &str); 4] = [
    ("x86_64", "amd64"),
    ("aarch64", "arm64"),
    ("armhf", "armhf"),
    ("i686", "i386"),
];

/// Every regular file of the package, with its mode.
const FILES: [(&str, u32); 10] = [
    ("etc/default/ssm-lite", 0o644),
    ("etc/init.d/ssm-lite", 0o755),
    ("etc/logrotate.d/ssm-lite", 0o644),
    ("etc/ssm-lite/amazon-ssm-agent.json.template", 0o644),
    ("lib/systemd/system/ssm-lite.service", 0o644),
    ("usr/bin/ssm-lite", 0o755),
    ("usr/share/doc/ssm-lite/changelog.Debian.gz", 0o644),
    ("usr/share/doc/ssm-lite/copyright", 0o644),
    ("usr/share/lintian/overrides/ssm-lite", 0o644),
    ("usr/share/man/man8/ssm-lite.8.gz", 0o644),
];

const CONFFILES: [&str; 4] = [
    "/etc/default/ssm-lite",
    "/etc/init.d/ssm-lite",
    "/etc/logrotate.d/ssm-lite",
    "/etc/ssm-lite/amazon-ssm-agent.json.template",
];

const WANTS_LINK: &str = "/etc/systemd/system/multi-user.target.wants/ssm-lite.service";
const PIDFILE: &str = "/run/ssm-lite.pid";
const LOGFILE: &str = "/var/log/ssm-lite.log";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Debian version, from the newest entry of packaging/debian/changelog as build-deb.sh reads it.
fn deb_version() -> String {
    let text = fs::read_to_string(manifest_dir().join("packaging/debian/changelog")).unwrap();
    let first = text.lines().next().unwrap_or_default();
    first
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(v, _)| v.to_owned())
        .unwrap_or_else(|| panic!("no version in the changelog's first line: {first:?}"))
}

fn deb(debarch: &str) -> PathBuf {
    release_artifact(&format!("ssm-lite_{}_{debarch}.deb", deb_version()))
}

/// Runs `cmd` to its end: (exit code, stdout and stderr together).
fn run(cmd: &mut Command) -> (i32, String) {
    let out: Output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs `cmd`, asserts that it succeeded, returns its output.
fn ok(cmd: &mut Command) -> String {
    let (code, text) = run(cmd);
    assert_eq!(code, 0, "{cmd:?} failed:\n{text}");
    text
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// `rm -rf` that stays on one file system: a mount left inside (a /proc, or a /dev that
/// debootstrap bound) is never descended into.
fn remove_tree(p: &Path) {
    ok(Command::new("rm")
        .arg("-rf")
        .arg("--one-file-system")
        .arg(p));
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{tag}-{}-{nanos}", std::process::id())
}

/// An exclusive flock(2), released on drop: one test process at a time builds the Debian root.
struct FileLock {
    _held: fs::File,
}

impl FileLock {
    fn new(path: &Path) -> FileLock {
        use std::os::fd::AsRawFd;
        let file = fs::File::create(path).unwrap();
        // SAFETY: flock on a descriptor this struct owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {}", path.display());
        FileLock { _held: file }
    }
}

/// The cached Debian root: bookworm minbase, plus systemd for its units (`systemd-analyze
/// --root` needs them) and systemctl (postinst enables the unit offline with it). debootstrap
/// builds it under a temporary name that is renamed when complete, so a half-made root is never
/// used; the lock keeps other test processes from building it at the same time.
fn debian_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = manifest_dir().join("target/debian-root");
        fs::create_dir_all(&dir).unwrap();
        let root = dir.join("bookworm");
        let _lock = FileLock::new(&dir.join("lock"));
        if root.is_dir() {
            return root;
        }
        for entry in fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("partial-")
            {
                remove_tree(&p);
            }
        }
        let partial = dir.join(unique("partial"));
        let mirror = std::env::var("SSM_LITE_DEBIAN_MIRROR")
            .unwrap_or_else(|_| "http://deb.debian.org/debian".into());
        let log = dir.join("debootstrap.log");
        let started = Instant::now();
        let log_file = fs::File::create(&log).unwrap();
        let status = Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd", "bookworm"])
            .arg(&partial)
            .arg(&mirror)
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .status()
            .expect("running debootstrap (apt-get install debootstrap)");
        assert!(
            status.success(),
            "debootstrap from {mirror} failed ({status}); see {}",
            log.display()
        );
        fs::rename(&partial, &root).unwrap();
        eprintln!("made {} in {:?}", root.display(), started.elapsed());
        root
    })
}

/// A private copy of the Debian root for one test. On drop: every agent running from it is
/// killed, its /proc unmounted, the copy deleted.
struct Chroot {
    dir: PathBuf,
    root: PathBuf,
    proc_mounted: bool,
}

impl Chroot {
    fn new(tag: &str) -> Chroot {
        let base = debian_root();
        let dir = std::env::temp_dir().join(unique(&format!("ssm-lite-pkg-{tag}")));
        fs::create_dir_all(&dir).unwrap();
        let root = dir.join("root");
        ok(Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(base)
            .arg(&root));
        fs::copy(deb("amd64"), root.join("tmp/ssm-lite.deb")).unwrap();
        Chroot {
            dir,
            root,
            proc_mounted: false,
        }
    }

    /// `p` (absolute inside the root) as a path outside.
    fn path(&self, p: &str) -> PathBuf {
        self.root.join(p.trim_start_matches('/'))
    }

    /// A command run inside the root with a clean environment, as an administrator would.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("chroot");
        c.arg(&self.root)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C");
        c
    }

    fn dpkg(&self, args: &[&str]) -> String {
        let mut all = vec!["dpkg"];
        all.extend_from_slice(args);
        ok(&mut self.cmd(&all))
    }

    fn install(&self) -> String {
        self.dpkg(&["-i", "/tmp/ssm-lite.deb"])
    }

    /// The init script and the agent read /proc.
    fn mount_proc(&mut self) {
        ok(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(self.path("/proc")));
        self.proc_mounted = true;
    }

    /// Pids of the processes running this root's /usr/bin/ssm-lite.
    fn agents(&self) -> Vec<u32> {
        let exe = self.path("/usr/bin/ssm-lite");
        let deleted = format!("{} (deleted)", exe.display());
        fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|p| p == exe || p.to_string_lossy() == deleted)
            })
            .collect()
    }

    fn append(&self, file: &str, text: &str) {
        let p = self.path(file);
        let mut s = fs::read_to_string(&p).unwrap_or_default();
        s.push_str(text);
        fs::write(&p, s).unwrap();
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for pid in self.agents() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        // A dying process may still hold the root's /proc; SIGKILL takes effect promptly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.agents().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let proc_gone = !self.proc_mounted
            || Command::new("umount")
                .arg(self.path("/proc"))
                .status()
                .is_ok_and(|s| s.success());
        // No panic here (it may run while a test panics); what is left is said.
        let removed = proc_gone
            && Command::new("rm")
                .args(["-rf", "--one-file-system"])
                .arg(&self.dir)
                .status()
                .is_ok_and(|s| s.success());
        if !removed {
            eprintln!(
                "could not clean up {}; remove it by hand",
                self.dir.display()
            );
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
    !matches!(state, Some(Some('Z')) | None)
}

fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- the copyright file ----

/// What packaging/gen-copyright.sh reads the crates from: ssm-lite's normal dependencies without
/// proc macros (which run in the compiler), for each release target.
const RELEASE_TARGETS: [&str; 4] = [
    "x86_64-unknown-linux-musl",
    "aarch64-unknown-linux-musl",
    "arm-unknown-linux-musleabihf",
    "i686-unknown-linux-musl",
];

/// "NAME-VERSION" of every crates.io crate linked into a release binary, the union over the
/// release targets (path crates, ssm-lite itself, left out).
fn bundled_crates() -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut crates = BTreeSet::new();
    for target in RELEASE_TARGETS {
        let mut cmd = Command::new(&cargo);
        cmd.current_dir(manifest_dir())
            .args(["tree", "--locked", "--offline", "-p", "ssm-lite"])
            .args(["-e", "normal,no-proc-macro", "--target", target])
            .args(["--prefix", "none", "--format", "{p}"]);
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} failed (missing crate sources? run `cargo fetch --locked`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let mut words = line.split_whitespace();
            let (Some(name), Some(version)) = (words.next(), words.next()) else {
                panic!("unexpected line of cargo tree: {line:?}");
            };
            if !words.next().is_some_and(|w| w.starts_with("(/")) {
                crates.insert(format!("{name}-{}", version.trim_start_matches('v')));
            }
        }
    }
    crates
}

#[test]
fn debian_copyright_lists_every_bundled_crate_and_toolchain() {
    let copyright = fs::read_to_string(manifest_dir().join("packaging/debian/copyright")).unwrap();
    let files: BTreeSet<&str> = copyright
        .lines()
        .filter_map(|l| l.strip_prefix("Files: vendor/"))
        .collect();
    // A crate's paragraph is `Files: vendor/NAME-VERSION/*`; the toolchain's lie deeper.
    let listed: BTreeSet<String> = files
        .iter()
        .filter_map(|f| f.strip_suffix("/*").filter(|c| !c.contains('/')))
        .map(str::to_owned)
        .collect();
    let bundled = bundled_crates();
    assert!(
        bundled.len() > 30,
        "too few crates, cargo tree changed? {bundled:?}"
    );
    let missing: Vec<&String> = bundled.difference(&listed).collect();
    let gone: Vec<&String> = listed.difference(&bundled).collect();
    let pins = fs::read_to_string(manifest_dir().join("cross/versions.env")).unwrap();
    let pin = |key: &str| {
        pins.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key} in cross/versions.env"))
            .to_owned()
    };
    let toolchain = [
        format!("rust-{}/library/*", pin("RUST_VERSION")),
        format!("zig-{}/lib/libc/musl/*", pin("ZIGLANG_VERSION")),
    ];
    let stale_toolchain: Vec<&String> = toolchain
        .iter()
        .filter(|t| !files.contains(t.as_str()))
        .collect();
    assert!(
        missing.is_empty() && gone.is_empty() && stale_toolchain.is_empty(),
        "packaging/debian/copyright is stale: run packaging/gen-copyright.sh and commit it.\n\
         crates missing: {missing:?}\ncrates no longer bundled: {gone:?}\n\
         toolchain paragraphs missing (cross/versions.env changed): {stale_toolchain:?}"
    );
}

// ---- a. lintian ----

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn lintian_finds_no_error_and_every_warning_is_justified() {
    let debs: Vec<PathBuf> = ARCHES.iter().map(|(_, d)| deb(d)).collect();
    // Every .deb in dist/, and at least the four of the release.
    let mut all: Vec<PathBuf> = fs::read_dir(dist())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb") && !debs.contains(p))
        .collect();
    all.extend(debs);
    // --fail-on none: with --show-overrides lintian also fails on overridden errors; the
    // output is judged below instead. Exit 1 would still mean that lintian itself failed.
    let (code, out) = run(Command::new("lintian")
        .args(["--show-overrides", "--fail-on", "none"])
        .args(&all));
    assert_eq!(code, 0, "lintian failed:\n{out}");
    let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));

    let justified =
        fs::read_to_string(manifest_dir().join("packaging/lintian-warnings.md")).unwrap();
    let overrides =
        fs::read_to_string(manifest_dir().join("packaging/debian/lintian-overrides")).unwrap();
    let overridden = overrides
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap());
    let reported = out
        .lines()
        .filter(|l| l.starts_with("W:") || l.starts_with("O:"))
        .map(|l| l.split_whitespace().nth(2).unwrap_or(l));
    let unexplained: BTreeSet<&str> = overridden
        .chain(reported)
        .filter(|tag| !justified.contains(&format!("`{tag}`")))
        .collect();
    assert!(
        unexplained.is_empty(),
        "lintian tags not justified in packaging/lintian-warnings.md: {unexplained:?}\n{out}"
    );
    assert!(
        out.contains("O: ssm-lite: statically-linked-binary"),
        "{out}"
    );
}

// ---- b. contents and metadata ----

fn control_fields(deb: &Path) -> BTreeMap<String, String> {
    let text = ok(Command::new("dpkg-deb").arg("-f").arg(deb));
    let mut fields = BTreeMap::new();
    let mut last = String::new();
    for line in text.lines() {
        if let Some(cont) = line.strip_prefix(' ') {
            let v: &mut String = fields.get_mut(&last).unwrap();
            v.push('\n');
            v.push_str(cont);
        } else if let Some((k, v)) = line.split_once(": ") {
            last = k.to_owned();
            fields.insert(last.clone(), v.to_owned());
        }
    }
    fields
}

/// "-rwxr-xr-x" → 0o755.
fn parse_mode(s: &str) -> u32 {
    s[1..]
        .chars()
        .fold(0, |m, c| (m << 1) | u32::from(c != '-'))
}

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn each_deb_holds_its_architectures_binary_and_the_expected_files() {
    for (arch, debarch) in ARCHES {
        let deb = deb(debarch);
        let f = control_fields(&deb);
        assert_eq!(f["Package"], "ssm-lite");
        assert_eq!(f["Version"], deb_version());
        assert_eq!(f["Architecture"], debarch, "{}", deb.display());
        assert_eq!(f["Section"], "admin");
        assert_eq!(f["Priority"], "optional");
        assert!(f["Maintainer"].contains('@'), "{f:?}");
        assert!(!f.contains_key("Depends") && !f.contains_key("Pre-Depends"));
        assert!(
            f["Description"].lines().count() > 3,
            "short and long description: {f:?}"
        );
        let binary = fs::read(release_binary(arch)).unwrap();
        let size: usize = f["Installed-Size"].parse().unwrap();
        // The binary, the notices of what it bundles, and a few KiB of other text.
        let notices = fs::metadata(manifest_dir().join("packaging/debian/copyright"))
            .unwrap()
            .len() as usize
            / 1024;
        assert!(
            (binary.len() / 1024..binary.len() / 1024 + notices + 64).contains(&size),
            "Installed-Size {size} KiB for a {} byte binary",
            binary.len()
        );

        let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
        let mut files = BTreeMap::new();
        for line in listing.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(cols[1], "root/root", "{line}");
            let path = cols[5].trim_start_matches("./").to_owned();
            match cols[0].chars().next() {
                Some('d') => assert_eq!(parse_mode(cols[0]), 0o755, "{line}"),
                Some('-') => {
                    files.insert(path, parse_mode(cols[0]));
                }
                _ => panic!("unexpected entry: {line}"),
            }
        }
        let expected: BTreeMap<String, u32> =
            FILES.iter().map(|(p, m)| (p.to_string(), *m)).collect();
        assert_eq!(files, expected, "{}", deb.display());

        let conffiles = ok(Command::new("dpkg-deb")
            .arg("--info")
            .arg(&deb)
            .arg("conffiles"));
        assert_eq!(conffiles.lines().collect::<Vec<_>>(), CONFFILES);

        let x = TempDir::new("deb-x");
        ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()));
        assert!(
            fs::read(x.path().join("usr/bin/ssm-lite")).unwrap() == binary,
            "{}: /usr/bin/ssm-lite is not {}",
            deb.display(),
            release_binary(arch).display()
        );
        let template =
            fs::read(x.path().join("etc/ssm-lite/amazon-ssm-agent.json.template")).unwrap();
        let template: Value = serde_json::from_slice(&template).expect("template is JSON");
        assert!(template["Identity"]["ConsumptionOrder"].is_array());
    }
}

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn building_again_gives_the_released_bytes() {
    let released = fs::read(deb("amd64")).unwrap();
    let binary = release_binary("x86_64");
    for n in 0..2 {
        let out = TempDir::new("deb-again");
        let tmp = TempDir::new("deb-tmp");
        // A different scratch directory each time: nothing of the build's location may leak.
        let build = Command::new(manifest_dir().join("packaging/build-deb.sh"))
            .arg("amd64")
            .arg(&binary)
            .arg(out.path())
            .env("TMPDIR", tmp.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&build.stdout);
        assert!(
            build.status.success(),
            "build-deb.sh: {}{stdout}",
            String::from_utf8_lossy(&build.stderr)
        );
        let built = PathBuf::from(stdout.trim());
        assert_eq!(built, out.path().join(deb("amd64").file_name().unwrap()));
        assert!(
            fs::read(&built).unwrap() == released,
            "build {n} differs from {}: not reproducible, or dist/ is older than packaging/ \
             (run `make release` again)",
            deb("amd64").display()
        );
    }
}

// ---- c. the dpkg lifecycle ----

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn install_upgrade_remove_and_purge_in_a_debian_root() {
    let c = Chroot::new("lifecycle");

    // A first installation on a machine without identity: enabled, not started, told what to do.
    let out = c.install();
    assert!(out.contains("installed but not started"), "{out}");
    assert!(
        out.contains("sudo ssm-lite register --code CODE --id ID --region REGION"),
        "{out}"
    );
    assert!(!out.contains("amazon-ssm-agent is also"), "{out}");
    // This root has no init (no /sbin/init, systemd not running): the hint is the init script.
    assert!(out.contains("sudo /etc/init.d/ssm-lite start"), "{out}");
    assert!(c.agents().is_empty(), "the agent was started");
    assert!(!c.path(PIDFILE).exists() && !c.path(LOGFILE).exists());
    for (file, m) in FILES {
        assert_eq!(mode(&c.path(file)), m, "{file}");
    }
    let state = c.path("/var/lib/ssm-lite");
    assert_eq!(mode(&state), 0o700);
    assert_eq!(fs::metadata(&state).unwrap().uid(), 0);
    assert!(
        c.path("/etc/rc2.d/S01ssm-lite").exists(),
        "update-rc.d defaults"
    );
    assert!(
        fs::symlink_metadata(c.path(WANTS_LINK)).is_ok(),
        "systemctl enable, offline"
    );
    let version = ok(&mut c.cmd(&["ssm-lite", "--version"]));
    assert!(
        version.starts_with(&format!("ssm-lite {} ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );

    // The operator's files and changes, and another agent on the machine.
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(state.join("marker"), "state").unwrap();
    let config = c.path("/etc/ssm-lite/amazon-ssm-agent.json");
    fs::write(&config, r#"{"Agent":{"Region":"eu-west-1"}}"#).unwrap();
    c.append(
        "/etc/default/ssm-lite",
        "STOP_TIMEOUT=7\nSSM_LITE_START_ON_INSTALL=yes\n",
    );
    fs::write(c.path("/usr/bin/amazon-ssm-agent"), "").unwrap();

    // The same package again: the upgrade path. With an identity but no init to start it,
    // postinst says how to run it.
    let out = c.install();
    assert!(out.contains("amazon-ssm-agent is also installed"), "{out}");
    assert!(out.contains("no init system runs here"), "{out}");
    assert_eq!(mode(&state), 0o700, "postinst fixes the state dir's mode");
    assert!(
        fs::read_to_string(c.path("/etc/default/ssm-lite"))
            .unwrap()
            .ends_with("STOP_TIMEOUT=7\nSSM_LITE_START_ON_INSTALL=yes\n"),
        "a changed conffile survives"
    );
    assert!(c.agents().is_empty());

    // Remove: the program goes, configuration and state stay.
    c.dpkg(&["-r", "ssm-lite"]);
    assert!(!c.path("/usr/bin/ssm-lite").exists());
    assert!(!c.path("/lib/systemd/system/ssm-lite.service").exists());
    for f in CONFFILES {
        assert!(c.path(f).exists(), "{f} removed by dpkg -r");
    }
    assert!(config.exists() && state.join("marker").exists());

    // Reinstall after remove (the kept /etc/default/ssm-lite still asks for a start).
    let out = c.install();
    assert!(out.contains("no init system runs here"), "{out}");
    assert!(c.path("/usr/bin/ssm-lite").exists());

    // Purge: everything the package or the agent made.
    fs::write(c.path(LOGFILE), "log").unwrap();
    fs::write(c.path("/var/log/ssm-lite.log.1.gz"), "old log").unwrap();
    fs::write(c.path(PIDFILE), "1").unwrap();
    c.dpkg(&["-P", "ssm-lite"]);
    for gone in [
        "/usr/bin/ssm-lite",
        "/etc/ssm-lite",
        "/etc/default/ssm-lite",
        "/etc/init.d/ssm-lite",
        "/etc/logrotate.d/ssm-lite",
        "/var/lib/ssm-lite",
        LOGFILE,
        "/var/log/ssm-lite.log.1.gz",
        PIDFILE,
        "/etc/rc2.d/S01ssm-lite",
        "/etc/rc0.d/K01ssm-lite",
        WANTS_LINK,
    ] {
        assert!(
            fs::symlink_metadata(c.path(gone)).is_err(),
            "{gone} survived dpkg -P"
        );
    }
    let (code, _) = run(&mut c.cmd(&["dpkg", "-s", "ssm-lite"]));
    assert_ne!(code, 0, "dpkg still knows ssm-lite after the purge");
}

/// Installs with a recording `systemctl` under a "running" systemd; returns (dpkg's output,
/// the systemctl calls).
fn install_recording_systemctl(c: &Chroot) -> (String, Vec<String>) {
    let calls = c.path("/tmp/systemctl.calls");
    let _ = fs::remove_file(&calls);
    let out = c.install();
    let calls = fs::read_to_string(&calls).unwrap_or_default();
    (out, calls.lines().map(str::to_owned).collect())
}

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn under_systemd_postinst_enables_once_and_starts_only_with_an_identity() {
    let c = Chroot::new("systemd");
    // What sd_booted(3) looks at, and a systemctl earlier on PATH that only records its arguments.
    fs::create_dir_all(c.path("/run/systemd/system")).unwrap();
    let fake = c.path("/usr/local/bin/systemctl");
    fs::write(&fake, "#!/bin/sh\necho \"$*\" >>/tmp/systemctl.calls\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let start = "start ssm-lite.service".to_owned();
    let restart = "restart ssm-lite.service".to_owned();
    let enable = "enable ssm-lite.service".to_owned();
    let reload = "daemon-reload".to_owned();

    let (out, calls) = install_recording_systemctl(&c);
    assert!(
        calls.contains(&reload) && calls.contains(&enable),
        "{calls:?}"
    );
    assert!(
        !calls.contains(&start),
        "started without an identity: {calls:?}"
    );
    assert!(out.contains("sudo systemctl start ssm-lite"), "{out}");

    // Each identity the package knows makes the upgrade restart the agent (after prerm stopped it).
    let dmi = c.path("/sys/devices/virtual/dmi/id");
    fs::create_dir_all(&dmi).unwrap();
    fs::create_dir_all(c.path("/sys/hypervisor")).unwrap();
    // (file, what is appended to it, what it stands for); a file ending in / is a directory.
    let identities: [(&str, &str, &str); 5] = [
        ("/var/lib/ssm-lite/registration/", "", "hybrid registration"),
        (
            "/sys/devices/virtual/dmi/id/sys_vendor",
            "Amazon EC2\n",
            "EC2 (Nitro)",
        ),
        (
            "/sys/devices/virtual/dmi/id/board_asset_tag",
            "i-0123456789abcdef0\n",
            "EC2 asset tag",
        ),
        (
            "/sys/hypervisor/uuid",
            "ec2e1916-9099-7caf-fd21-012345abcdef\n",
            "EC2 (Xen)",
        ),
        (
            "/etc/default/ssm-lite",
            "SSM_LITE_START_ON_INSTALL=yes\n",
            "operator's choice",
        ),
    ];
    for (file, content, what) in identities {
        let original = fs::read(c.path(file)).ok();
        if file.ends_with('/') {
            fs::create_dir_all(c.path(file)).unwrap();
        } else {
            fs::create_dir_all(c.path(file).parent().unwrap()).unwrap();
            c.append(file, content);
        }
        let (_, calls) = install_recording_systemctl(&c);
        let stop = calls.iter().position(|l| l == "stop ssm-lite.service");
        let restarted = calls.iter().position(|l| *l == restart);
        assert!(
            stop.is_some() && restarted > stop,
            "{what}: prerm stops, postinst restarts: {calls:?}"
        );
        assert!(
            !calls.contains(&enable),
            "{what}: enable is for the first installation only: {calls:?}"
        );
        match original {
            _ if file.ends_with('/') => fs::remove_dir(c.path(file)).unwrap(),
            Some(bytes) => fs::write(c.path(file), bytes).unwrap(),
            None => fs::remove_file(c.path(file)).unwrap(),
        }
    }
    let (_, calls) = install_recording_systemctl(&c);
    assert!(!calls.contains(&restart), "no identity left: {calls:?}");

    // A first installation on a registered machine starts the agent.
    c.dpkg(&["-P", "ssm-lite"]);
    fs::create_dir_all(c.path("/var/lib/ssm-lite/registration")).unwrap();
    let (_, calls) = install_recording_systemctl(&c);
    let at = |call: &String| calls.iter().position(|l| l == call);
    assert!(
        at(&enable).is_some() && at(&reload) < at(&start),
        "reload, enable, start: {calls:?}"
    );

    let _ = fs::remove_file(c.path("/tmp/systemctl.calls"));
    c.dpkg(&["-r", "ssm-lite"]);
    let calls = fs::read_to_string(c.path("/tmp/systemctl.calls")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        ["stop ssm-lite.service", "daemon-reload"],
        "dpkg -r"
    );
    fs::remove_file(&fake).unwrap();
}

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn under_a_sysv_init_the_scripts_use_update_rc_d_and_invoke_rc_d() {
    let c = Chroot::new("sysv-branch");
    // An installed init that is not a running systemd, and an invoke-rc.d earlier on PATH that
    // only records its arguments (the real one consults runlevels a chroot does not have).
    let init = c.path("/sbin/init");
    fs::write(&init, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).unwrap();
    let fake = c.path("/usr/local/sbin/invoke-rc.d");
    fs::write(&fake, "#!/bin/sh\necho \"$*\" >>/tmp/invoke-rc.d.calls\n").unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    let calls = || {
        let p = c.path("/tmp/invoke-rc.d.calls");
        let text = fs::read_to_string(&p).unwrap_or_default();
        let _ = fs::remove_file(&p);
        text.lines().map(str::to_owned).collect::<Vec<_>>()
    };

    let out = c.install();
    assert!(out.contains("sudo service ssm-lite start"), "{out}");
    assert!(
        c.path("/etc/rc2.d/S01ssm-lite").exists(),
        "update-rc.d defaults"
    );
    assert_eq!(calls(), Vec::<String>::new(), "started without an identity");

    fs::create_dir_all(c.path("/var/lib/ssm-lite/registration")).unwrap();
    c.install();
    assert_eq!(calls(), ["ssm-lite stop", "ssm-lite restart"], "upgrade");
    c.dpkg(&["-r", "ssm-lite"]);
    assert_eq!(calls(), ["ssm-lite stop"], "dpkg -r");
    assert!(c.agents().is_empty());
}

// ---- d. the SysV init script, running the real agent ----

/// `/etc/init.d/ssm-lite ACTION` inside the root: (exit code, output).
fn init_script(c: &Chroot, action: &str) -> (i32, String) {
    run(&mut c.cmd(&["/etc/init.d/ssm-lite", action]))
}

fn pidfile_pid(c: &Chroot) -> u32 {
    let text = fs::read_to_string(c.path(PIDFILE)).expect("pidfile");
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("pidfile: {text:?}"))
}

/// A process that is not the agent, killed on drop.
struct Stranger(std::process::Child);

impl Drop for Stranger {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Configures the installed agent for `emu`, an EC2 instance there, with a 10 s stop timeout
/// in the init script. The proxy is a closed port: a call meant for anything but the emulator
/// fails, and never reaches AWS (the agent reads /etc/ssm-lite/amazon-ssm-agent.json, or it
/// cannot work).
fn point_at(c: &Chroot, emu: &Emulator) {
    let url = emu.url();
    let config = json!({
        "Mds": { "Endpoint": url }, "Ssm": { "Endpoint": url }, "Mgs": { "Endpoint": url },
        "Kms": { "Endpoint": url }, "Identity": { "ConsumptionOrder": ["EC2"] }
    });
    fs::write(
        c.path("/etc/ssm-lite/amazon-ssm-agent.json"),
        config.to_string(),
    )
    .unwrap();
    c.append(
        "/etc/default/ssm-lite",
        &format!(
            "STOP_TIMEOUT=10\nexport AWS_EC2_METADATA_SERVICE_ENDPOINT={url}\n\
             export HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 NO_PROXY=127.0.0.1\n"
        ),
    );
}

/// Sends `commands` through the emulator; asserts that the command ends Success within `limit`
/// and returns its final reply.
fn run_command_succeeds(
    emu: &Emulator,
    c: &Chroot,
    id: &str,
    commands: &[&str],
    limit: Duration,
) -> Value {
    let msg = emu.send_command(&aws_run_shell_script_payload(id, commands, 600));
    let reply = emu.wait_final(&msg, limit);
    let log = fs::read_to_string(c.path(LOGFILE)).unwrap_or_default();
    let reply = reply.unwrap_or_else(|| panic!("no final reply for {msg}; agent log:\n{log}"));
    assert_eq!(
        reply.payload["documentStatus"], "Success",
        "{}",
        reply.payload
    );
    reply.payload
}

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn sysv_init_script_starts_stops_and_reports_the_real_agent() {
    let emu = emulator();
    let mut c = Chroot::new("sysv");
    c.install();
    c.mount_proc();
    point_at(&c, &emu);

    let (code, out) = init_script(&c, "start");
    assert_eq!(code, 0, "start: {out}");
    let pid = pidfile_pid(&c);
    assert_eq!(c.agents(), [pid], "the pidfile names the agent");
    assert_eq!(init_script(&c, "status").0, 0);
    let id = "7a000000-0000-4000-8000-000000000001";
    run_command_succeeds(&emu, &c, id, &["echo first"], Duration::from_secs(30));

    let (code, out) = init_script(&c, "start");
    assert_eq!((code, pidfile_pid(&c)), (0, pid), "start again: {out}");
    assert!(out.contains("already running"), "{out}");

    let started = Instant::now();
    let (code, out) = init_script(&c, "stop");
    assert_eq!(code, 0, "stop: {out}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(!alive(pid), "the agent survived stop");
    assert!(!c.path(PIDFILE).exists());
    assert_eq!(init_script(&c, "status").0, 3);

    assert_eq!(init_script(&c, "start").0, 0);
    let before = pidfile_pid(&c);
    let (code, out) = init_script(&c, "restart");
    assert_eq!(code, 0, "restart: {out}");
    let after = pidfile_pid(&c);
    assert_ne!(before, after, "restart kept the old agent");
    assert!(!alive(before));
    assert_eq!(c.agents(), [after]);
    let id = "7a000000-0000-4000-8000-000000000002";
    run_command_succeeds(&emu, &c, id, &["echo again"], Duration::from_secs(30));

    // A crash: the pidfile stays behind.
    ok(Command::new("kill").args(["-KILL", &after.to_string()]));
    wait_until(Duration::from_secs(10), "status 1 after kill -9", || {
        init_script(&c, "status").0 == 1
    });

    // A stale pidfile whose number now belongs to another process: not the agent.
    let mut other = Stranger(Command::new("sleep").arg("60").spawn().unwrap());
    fs::write(c.path(PIDFILE), format!("{}\n", other.0.id())).unwrap();
    assert_eq!(init_script(&c, "status").0, 1);
    assert_eq!(init_script(&c, "stop").0, 0);
    assert!(
        other.0.try_wait().unwrap().is_none(),
        "stop killed a stranger"
    );
    drop(other);

    fs::write(c.path(PIDFILE), "999999999\n").unwrap();
    let (code, out) = init_script(&c, "start");
    assert_eq!(code, 0, "start over a stale pidfile: {out}");
    assert_eq!(c.agents(), [pidfile_pid(&c)]);
    assert_eq!(init_script(&c, "stop").0, 0);
    assert!(c.agents().is_empty());

    let log = fs::read_to_string(c.path(LOGFILE)).unwrap();
    let start_line = format!("ssm-lite {} starting", env!("CARGO_PKG_VERSION"));
    assert!(log.matches(&start_line).count() >= 4, "{log}");
    assert_eq!(mode(&c.path(LOGFILE)), 0o640);
}

// ---- e. an upgrade run as a command ----

/// The amd64 .deb of `make release` made again as `version`: its binary restamped (it says it
/// is `version`), its control file's Version and its md5sums changed to match. Returns its
/// path inside the root.
fn newer_deb(c: &Chroot, version: &str) -> &'static str {
    let work = c.dir.join("newer");
    ok(Command::new("dpkg-deb")
        .arg("-R")
        .arg(deb("amd64"))
        .arg(&work));
    let bin = work.join("usr/bin/ssm-lite");
    fs::write(&bin, restamped(&bin, version)).unwrap();
    let control = work.join("DEBIAN/control");
    let text = fs::read_to_string(&control).unwrap();
    let from = format!("\nVersion: {}\n", deb_version());
    assert!(text.contains(&from), "{text}");
    fs::write(
        &control,
        text.replace(&from, &format!("\nVersion: {version}-1\n")),
    )
    .unwrap();
    let sum = ok(Command::new("md5sum")
        .arg("usr/bin/ssm-lite")
        .current_dir(&work));
    let md5sums = work.join("DEBIAN/md5sums");
    let kept: String = (fs::read_to_string(&md5sums).unwrap().lines())
        .filter(|l| !l.ends_with(" usr/bin/ssm-lite"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&md5sums, kept + &sum).unwrap();
    let inside = "/tmp/ssm-lite-newer.deb";
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-b"])
        .arg(&work)
        .arg(c.path(inside)));
    inside
}

/// An operator upgrades the agent with a Run Command: `dpkg -i` of a newer .deb stops the
/// agent running it (prerm) and starts the new one (postinst). The script goes on under its
/// supervisor, and the new agent reports the command's real result.
#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn an_upgrade_by_dpkg_in_a_command_ends_with_its_result_reported_by_the_new_agent() {
    let emu = emulator();
    let mut c = Chroot::new("upgrade");
    // A SysV-init system: an init is installed, and invoke-rc.d runs the init script (the real
    // one looks up a runlevel, which a chroot does not have).
    for (file, text) in [
        ("/sbin/init", "#!/bin/sh\n"),
        (
            "/usr/local/sbin/invoke-rc.d",
            "#!/bin/sh\nexec /etc/init.d/\"$1\" \"$2\"\n",
        ),
    ] {
        fs::write(c.path(file), text).unwrap();
        fs::set_permissions(c.path(file), fs::Permissions::from_mode(0o755)).unwrap();
    }
    c.install();
    c.mount_proc();
    point_at(&c, &emu);
    // No registration, not EC2 by DMI: the package starts the agent only when told to.
    c.append("/etc/default/ssm-lite", "SSM_LITE_START_ON_INSTALL=yes\n");
    let (code, out) = init_script(&c, "start");
    assert_eq!(code, 0, "start: {out}");
    let old = pidfile_pid(&c);
    let newer = newer_deb(&c, "0.1.1");

    let reply = run_command_succeeds(
        &emu,
        &c,
        "7a000000-0000-4000-8000-0000000000f1",
        &[&format!("dpkg -i {newer}"), "ssm-lite --version"],
        Duration::from_secs(120),
    );
    let log = fs::read_to_string(c.path(LOGFILE)).unwrap();
    let stdout = plugin(&reply)["standardOutput"]
        .as_str()
        .unwrap_or_default();
    let unpacking = format!("Unpacking ssm-lite (0.1.1-1) over ({})", deb_version());
    assert!(stdout.contains(&unpacking), "{stdout}");
    assert!(stdout.contains("\nssm-lite 0.1.1 ("), "{stdout}");
    // The old agent left the script at its stop; the new one followed it and replied.
    let new = pidfile_pid(&c);
    assert_ne!(new, old);
    assert!(!alive(old), "the old agent still runs");
    assert_eq!(c.agents(), [new]);
    let (before, after) = log
        .split_once("ssm-lite 0.1.1 starting")
        .unwrap_or_else(|| panic!("the new version never started:\n{log}"));
    assert!(before.contains("leaving the script of command"), "{log}");
    assert!(after.contains("under its supervisor"), "{log}");
    assert_eq!(init_script(&c, "stop").0, 0);
}

// ---- f. the systemd unit ----

#[test]
#[ignore = "needs `make release` (dist/) and root; run by `make test`"]
fn systemd_analyze_verify_passes_on_the_installed_unit() {
    let c = Chroot::new("verify");
    c.install();
    // --root: the unit, its ExecStart and the targets it names are looked up in the Debian root;
    // MANPATH lets the host's `man` find the page that Documentation= names in that root.
    let verify = || {
        let out = Command::new("systemd-analyze")
            .arg(format!("--root={}", c.root.display()))
            .args(["verify", "ssm-lite.service"])
            .env("MANPATH", c.path("/usr/share/man"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(verify(), (Some(0), String::new()));
    // The check has teeth: without the program it fails.
    fs::remove_file(c.path("/usr/bin/ssm-lite")).unwrap();
    let (code, stderr) = verify();
    assert_ne!(code, Some(0));
    assert!(stderr.contains("/usr/bin/ssm-lite"), "{stderr}");
}
