//! `aws:configurePackage` (AWS-ConfigureAWSPackage; upstream `agent/plugins/configurepackage/`):
//! installs or uninstalls a Distributor package. The manifest comes from the package document or
//! the birdwatcher archive ([`service`]), the file for this host's platform and architecture
//! ([`manifest`]) is downloaded, its SHA-256 checked and its zip unpacked ([`zip`]) into the
//! installed-packages repository ([`repo`]); `install.sh`, `uninstall.sh`, `update.sh` and
//! `validate.sh` then run as upstream runs them: as an `aws:runShellScript` step (`echo Running sh
//! install.sh`, `sh install.sh`) in the package's directory, with upstream's `BWS_*` environment
//! and the `additionalArguments`, through the same script runner as any shell step (timeouts,
//! cancel, output caps). The result goes to `ssm:PutConfigurePackageResult`.
//!
//! Upstream reports through a tracer: sections that open and close, each with its own output
//! lines and error; the step's stdout and stderr are every closed section's, in the order they
//! closed, and the sections are the `Steps` of the result. [`Tracer`] keeps that shape, so the
//! texts come out in upstream's order.

mod manifest;
mod repo;
mod service;
mod zip;

use super::reply::{Head, PluginResult, Status};
use super::steps::{Run, SHELL_PLUGIN, StepEnv, run_path, run_step};
use crate::aws::http::HttpClient;
use crate::aws::jsonrpc::JsonClient;
use crate::document::{Step, Verdict, field, go_kind};
use crate::sys::Pid;
use manifest::Host;
use repo::{Repository, State, normalize};
use serde_json::{Map, Value, json};
use service::Resolved;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const PLUGIN: &str = "aws:configurePackage";

const INSTALL: &str = "Install";
const UNINSTALL: &str = "Uninstall";
const IN_PLACE: &str = "In-place update";
const MISSING_UPDATE: &str = "missing update script required for in-place update\nPlease create a \
    Distributor package with update script and retry the install with 'In-place update' \
    installation type, or choose 'Uninstall and reinstall' installation type";
/// What one package archive may unpack to.
const UNPACK_LIMITS: zip::Limits = zip::Limits {
    entries: 10_000,
    entry_bytes: 1 << 30,
    total_bytes: 2 << 30,
};

/// What the EC2 side of upstream's `envdetect` reports (empty off EC2).
#[derive(Debug, Clone, Default)]
pub struct Ec2Facts {
    pub instance_id: String,
    pub instance_type: String,
    pub region: String,
    pub availability_zone: String,
}

/// The agent's Distributor: the ssm client, the HTTPS client for the package files, the
/// repository of installed packages and what this host is.
pub struct Distributor {
    client: JsonClient,
    http: Arc<HttpClient>,
    repo: Repository,
    host: Host,
    ec2: Ec2Facts,
    /// Package → the action running on it (upstream `mapPackageAction`).
    busy: Mutex<BTreeMap<String, String>>,
}

impl Distributor {
    /// Packages are kept under `state_dir` (the instance's state directory).
    pub fn new(
        client: JsonClient,
        http: Arc<HttpClient>,
        state_dir: &Path,
        ec2: Ec2Facts,
    ) -> Distributor {
        let os_release = crate::health::OS_RELEASE_PATHS
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default();
        let (platform, platform_version, platform_family) = manifest::platform(&os_release);
        let host = Host {
            platform,
            platform_version,
            platform_family,
            architecture: manifest::architecture(std::env::consts::ARCH).to_owned(),
        };
        Distributor {
            client,
            http,
            repo: Repository::new(state_dir),
            host,
            ec2,
            busy: Mutex::default(),
        }
    }

    /// Upstream `lockPackage`: one action per package at a time.
    fn lock(&self, arn: &str, action: &str) -> Result<PackageLock<'_>, String> {
        let mut busy = crate::sync::lock(&self.busy);
        if let Some(other) = busy.get(arn) {
            return Err(format!(
                "Package \"{arn}\" is already in the process of action \"{other}\""
            ));
        }
        busy.insert(arn.to_owned(), action.to_owned());
        Ok(PackageLock {
            d: self,
            arn: arn.to_owned(),
        })
    }

    /// Upstream `getEnvVars`: what every package script is told.
    fn script_env(&self, action: &str, additional: &[(String, String)]) -> Map<String, Value> {
        let init = std::fs::read_to_string("/proc/1/comm")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| s.to_lowercase().contains("systemd"))
            .unwrap_or_default();
        let manager = match self.host.platform_family.as_str() {
            "debian" => "apt",
            "alpine" => "alpine",
            "arch" => "pacman",
            "suse" => "zypper",
            "gentoo" => "emerge",
            "fedora" => "dnf",
            "rhel" => "yum",
            _ => "",
        };
        let proxy = |k: &str| std::env::var(k).unwrap_or_default();
        let h = &self.host;
        let pairs = [
            ("BWS_ACTION_NAME", action.to_owned()),
            ("https_proxy", proxy("https_proxy")),
            ("http_proxy", proxy("http_proxy")),
            ("no_proxy", proxy("no_proxy")),
            ("BWS_PLATFORM_NAME", h.platform.clone()),
            ("BWS_PLATFORM_VERSION", h.platform_version.clone()),
            ("BWS_PLATFORM_FAMILY", h.platform_family.clone()),
            ("BWS_ARCHITECTURE", h.architecture.clone()),
            ("BWS_INIT_SYSTEM", init),
            ("BWS_PACKAGE_MANAGER", manager.to_owned()),
            ("BWS_INSTANCE_ID", self.ec2.instance_id.clone()),
            ("BWS_INSTANCE_TYPE", self.ec2.instance_type.clone()),
            ("BWS_REGION", self.ec2.region.clone()),
            ("BWS_ACCOUNT_ID", String::new()),
            ("BWS_AVAILABILITY_ZONE", self.ec2.availability_zone.clone()),
        ];
        let mut env: Map<String, Value> = pairs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v)))
            .collect();
        for (k, v) in additional {
            env.insert(k.clone(), Value::String(v.clone()));
        }
        env
    }

    /// `Attributes` of PutConfigurePackageResult.
    fn attributes(&self) -> Value {
        json!({
            "platformName": self.host.platform,
            "platformVersion": self.host.platform_version,
            "architecture": self.host.architecture,
            "instanceID": self.ec2.instance_id,
            "instanceType": self.ec2.instance_type,
            "region": self.ec2.region,
            "availabilityZone": self.ec2.availability_zone,
        })
    }
}

struct PackageLock<'a> {
    d: &'a Distributor,
    arn: String,
}

impl Drop for PackageLock<'_> {
    fn drop(&mut self) {
        crate::sync::lock(&self.d.busy).remove(&self.arn);
    }
}

/// Runs one property set of an `aws:configurePackage` step.
pub(super) fn run(
    step: &Step,
    index: usize,
    inputs: &Value,
    env: &StepEnv<'_>,
    on_start: &mut dyn FnMut(Pid),
) -> Run {
    let Some(d) = env.sources.packages.as_deref() else {
        return Run::failed(
            "this agent has no usable ssm endpoint to fetch Distributor packages from".into(),
        );
    };
    let mut p = Plugin {
        d,
        env,
        on_start,
        t: Tracer::new(),
        run_dir: env.command_dir.join(run_path(step, index, "")),
        additional: Vec::new(),
        resolved: None,
        status: None,
        code: 0,
    };
    p.execute(inputs);
    Run {
        status: p.status.unwrap_or(Status::Success),
        code: p.code,
        stdout: Head::whole(p.t.stdout().as_bytes()),
        stderr: Head::whole(p.t.stderr().as_bytes()),
        s3: None,
    }
}

/// Upstream `ConfigurePackagePluginInput`, validated.
#[derive(Debug, PartialEq)]
struct Input {
    name: String,
    version: String,
    action: String,
    installation_type: String,
    /// `SSM_*` name → value.
    additional: Vec<(String, String)>,
}

/// Upstream `parseAndValidateInput` and `validateInput`.
fn parse_input(inputs: &Value) -> Result<Input, String> {
    let empty = Map::new();
    let map = inputs.as_object().unwrap_or(&empty);
    let text = |key: &str| match field(map, key) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        // Run Command sends a StringMap as a string; an object here is an empty one.
        Some(Value::Object(_)) if key == "additionalArguments" => Ok(String::new()),
        Some(v) => Err(format!(
            "invalid format in plugin properties {inputs}; \nerror json: cannot unmarshal {} into Go struct field ConfigurePackagePluginInput.{key} of type string",
            go_kind(v)
        )),
    };
    let invalid = |why: &str| format!("invalid input: {why}");
    if !text("source")?.is_empty() {
        return Err(invalid("source parameter is not supported in this version"));
    }
    let name = text("name")?;
    if name.is_empty() {
        return Err(invalid("empty name field"));
    }
    let arguments = text("additionalArguments")?;
    let mut additional = Vec::new();
    if !arguments.is_empty() {
        let parsed: BTreeMap<String, String> = serde_json::from_str(&arguments).map_err(|e| {
            invalid(&format!(
                "unable to unmarshal additional arguments from input; error {e}"
            ))
        })?;
        if parsed.contains_key("") {
            return Err(invalid(
                "empty key is not allowed in additional arguments from input",
            ));
        }
        if parsed.keys().any(|k| !k.starts_with("SSM_")) {
            return Err(invalid(
                "keys need to start with \"SSM_\" prefix in additional arguments from input",
            ));
        }
        additional = parsed.into_iter().collect();
    }
    Ok(Input {
        name,
        version: text("version")?,
        action: text("action")?,
        installation_type: text("installationType")?,
        additional,
    })
}

/// One version of a package with its scripts (upstream `installer.Installer`).
#[derive(Debug, Clone)]
struct Inst {
    name: String,
    version: String,
}

/// What `prepareConfigurePackage` decided.
struct Prepared {
    inst: Option<Inst>,
    uninst: Option<Inst>,
    in_place: bool,
    state: State,
    installed: String,
}

/// A script action's result.
struct ActionResult {
    status: Status,
    code: i32,
    missing_update: bool,
}

struct Plugin<'a, 'e> {
    d: &'a Distributor,
    env: &'a StepEnv<'e>,
    on_start: &'a mut dyn FnMut(Pid),
    t: Tracer,
    /// The step's run directory: each version's actions run under `<version>/<action>/`.
    run_dir: PathBuf,
    additional: Vec<(String, String)>,
    resolved: Option<Resolved>,
    /// Upstream's `PluginOutputTrace` status (none until decided) and exit code.
    status: Option<Status>,
    code: i32,
}

impl Plugin<'_, '_> {
    fn mark_failed(&mut self) {
        if self.code == 0 {
            self.code = 1;
        }
        self.status = Some(Status::Failed);
    }

    fn mark(&mut self, status: Status) {
        self.code = 0;
        self.status = Some(status);
    }

    fn decided(&self) -> bool {
        matches!(self.status, Some(Status::Failed | Status::Success))
    }

    /// Upstream `Plugin.execute`.
    fn execute(&mut self, inputs: &Value) {
        self.t.begin("configurePackage");
        let input = match parse_input(inputs) {
            Ok(input) => input,
            Err(e) => return self.fail_root(&e),
        };
        self.additional = input.additional.clone();
        let download = self.t.begin("download manifest");
        let manifest = self.download_manifest(&input);
        self.t.end(download);
        let (arn, version, same_as_cache) = match manifest {
            Ok(found) => found,
            Err(e) => return self.fail_root(&e),
        };
        let _lock = match self.d.lock(&arn, &input.action) {
            Ok(lock) => lock,
            Err(e) => return self.fail_root(&e),
        };
        let Some(mut p) = self.prepare(&input, &arn, &version, same_as_cache) else {
            return self.report(&input, &version, "");
        };
        if !self.decided() {
            let already = self.check_already_installed(&p);
            if p.installed.is_empty() || p.state == State::None {
                p.in_place = false;
            }
            if !already || !same_as_cache {
                self.execute_configure(&p);
            }
        }
        self.report(&input, &version, &p.installed);
    }

    /// `tracer.CurrentTrace().WithError(err).End()` on the root section, and Failed.
    fn fail_root(&mut self, e: &str) {
        self.t.fail(e);
        self.t.end(0);
        self.mark_failed();
    }

    /// Upstream `DownloadManifest`: the package's name, the manifest's version, and whether the
    /// manifest is the one cached from before.
    fn download_manifest(&mut self, input: &Input) -> Result<(String, String, bool), String> {
        let r = service::resolve(&self.d.client, &input.name, &input.version)?;
        let repo = &self.d.repo;
        let cached = repo.read_manifest(&r.arn, &r.manifest.version);
        let same = cached.and_then(|c| manifest::parse(&c).ok()) == Some(r.manifest.clone());
        repo.write_manifest(&r.arn, &r.manifest.version, &r.text)?;
        let found = (r.arn.clone(), r.manifest.version.clone(), same);
        self.resolved = Some(r);
        Ok(found)
    }

    /// Upstream `prepareConfigurePackage`; `None` when the outcome is already decided and
    /// nothing was found installed.
    fn prepare(&mut self, input: &Input, arn: &str, version: &str, same: bool) -> Option<Prepared> {
        let prepare = self.t.begin(&format!("prepare {}", input.action));
        let prepared = match input.action.as_str() {
            INSTALL => self.prepare_install(input, arn, version, same),
            UNINSTALL => self.prepare_uninstall(input, arn, version, same),
            other => {
                self.t.error_line(&format!("unsupported action: {other}"));
                self.mark_failed();
                None
            }
        };
        self.t.end(prepare);
        prepared
    }

    fn prepare_install(
        &mut self,
        input: &Input,
        arn: &str,
        version: &str,
        same: bool,
    ) -> Option<Prepared> {
        let s = self.t.begin("determine update type");
        let in_place = input.installation_type == IN_PLACE;
        self.t.end(s);
        let s = self.t.begin("determine version to install");
        let repo = &self.d.repo;
        let mut installed = repo.installed_version(arn);
        let (state, current) = repo.install_state(arn);
        if state == State::Failed {
            installed = current;
        }
        self.t.end(s);
        let s = self.t.begin("ensure package is locally available");
        let inst = match self.ensure_package(arn, version, same) {
            Ok(inst) => inst,
            Err(e) => {
                self.t.fail(&e);
                self.t.end(s);
                self.mark_failed();
                let (inst, uninst) = (None, None);
                return Some(Prepared {
                    inst,
                    uninst,
                    in_place,
                    state,
                    installed,
                });
            }
        };
        self.t.end(s);
        let s = self.t.begin("ensure old package is locally available");
        let mut uninst = None;
        if !(installed.is_empty() || state == State::None) && (installed != version || !same) {
            match self.ensure_package(arn, &installed, same) {
                Ok(old) => uninst = Some(old),
                Err(e) => self.t.fail(&e),
            }
        }
        self.t.end(s);
        Some(Prepared {
            inst: Some(inst),
            uninst,
            in_place,
            state,
            installed,
        })
    }

    fn prepare_uninstall(
        &mut self,
        input: &Input,
        arn: &str,
        version: &str,
        same: bool,
    ) -> Option<Prepared> {
        let s = self.t.begin("determine version to uninstall");
        let installed = self.d.repo.installed_version(arn);
        let state = match installed.is_empty() {
            true => State::None,
            false => self.d.repo.install_state(arn).0,
        };
        let version = match service::is_latest(&input.version) {
            true => installed.as_str(),
            false => version,
        };
        if installed.is_empty()
            || version != installed
            || matches!(state, State::None | State::Uninstalled)
        {
            self.t.info(&format!("version: {version} is not installed"));
            self.mark(Status::Success);
            self.t.exit(1);
            self.t.end(s);
            return Some(Prepared {
                inst: None,
                uninst: None,
                in_place: false,
                state: State::None,
                installed,
            });
        }
        self.t.begin("ensure package is locally available");
        let uninst = match self.ensure_package(arn, &installed, same) {
            Ok(uninst) => Some(uninst),
            Err(e) => {
                self.t.fail(&e);
                self.mark_failed();
                None
            }
        };
        self.t.end(s);
        Some(Prepared {
            inst: None,
            uninst,
            in_place: false,
            state,
            installed,
        })
    }

    /// Upstream `ensurePackage`: the version's files, downloaded again when they are missing,
    /// the last attempt failed or the manifest changed.
    fn ensure_package(&mut self, arn: &str, version: &str, same: bool) -> Result<Inst, String> {
        let s = self.t.begin("ensure package is available locally");
        let repo = &self.d.repo;
        let (state, current) = repo.install_state(arn);
        let stale = current == version && (state == State::Failed || !same);
        if repo.validate(arn, version).is_err() || stale {
            let d = self.d;
            let refreshed = d
                .repo
                .add(arn, version, |dir| self.download_into(dir))
                .and_then(|()| d.repo.validate(arn, version));
            if let Err(e) = refreshed {
                self.t.fail(&e);
                self.t.end(s);
                return Err(e);
            }
        }
        self.t.end(s);
        Ok(Inst {
            name: arn.to_owned(),
            version: version.to_owned(),
        })
    }

    /// Upstream `buildDownloadDelegate`: the archive, unpacked into `dir`, then deleted.
    fn download_into(&mut self, dir: &Path) -> Result<(), String> {
        let s = self.t.begin("download artifact");
        let result = self.download_artifact().and_then(|archive| {
            zip::extract(&archive, dir, &UNPACK_LIMITS).map_err(|e| {
                format!(
                    "failed to extract package installer package {} from {}, {e}",
                    archive.display(),
                    dir.display()
                )
            })?;
            std::fs::remove_file(&archive).map_err(|e| {
                format!(
                    "failed to delete compressed package {}, {e}",
                    archive.display()
                )
            })
        });
        if let Err(e) = &result {
            self.t.fail(e);
        }
        self.t.end(s);
        result
    }

    /// Upstream `DownloadArtifact`: this host's file from the manifest, checked against its
    /// SHA-256. A failed download is tried once more with the manifest fetched again (a
    /// presigned URL may have expired).
    fn download_artifact(&mut self) -> Result<PathBuf, String> {
        let s = self.t.begin("download artifact");
        let mut result = self.fetch_file();
        if let Err(Fetch::Download(first)) = &result {
            log::info!(
                "{first}; there was an error downloading the installation reliably; fetching the manifest again and retrying"
            );
            let r = self
                .resolved
                .as_ref()
                .map(|r| (r.arn.clone(), r.manifest.version.clone()));
            if let Some((name, version)) = r
                && let Ok(again) = service::resolve(&self.d.client, &name, &version)
            {
                self.resolved = Some(again);
            }
            result = self.fetch_file();
        }
        if let Err(Fetch::Manifest(e)) = &result {
            self.t.fail(e);
        }
        self.t.end(s);
        result.map_err(|e| match e {
            Fetch::Manifest(e) | Fetch::Download(e) => e,
        })
    }

    fn fetch_file(&mut self) -> Result<PathBuf, Fetch> {
        let r = self
            .resolved
            .as_ref()
            .ok_or_else(|| Fetch::Manifest("failed to download the manifest".into()))?;
        let (file, info) = r.manifest.file_for(&self.d.host).map_err(Fetch::Manifest)?;
        let url = r.url_of(&file, &info).map_err(Fetch::Download)?;
        let sha256 = info
            .sha256
            .map(|s| s.to_ascii_lowercase())
            .ok_or_else(|| {
                Fetch::Download(format!(
                    "the manifest names no sha256 checksum for {file}; ssm-lite installs only files it can check"
                ))
            })?;
        let dest = self.run_dir.join("download").join(normalize(&file));
        super::download::fetch_verified(&self.d.http, &url, &dest, &sha256).map_err(|e| {
            Fetch::Download(format!(
                "failed to download installation package reliably, {url}, {e}"
            ))
        })?;
        Ok(dest)
    }

    /// Upstream `checkAlreadyInstalled`.
    fn check_already_installed(&mut self, p: &Prepared) -> bool {
        let check = self.t.begin("check if already installed");
        if let Some(inst) = &p.inst {
            let target = &inst.version;
            let mut to_check = None;
            if p.uninst.is_some() && p.state == State::RollbackInstall {
                to_check = p.uninst.clone();
            }
            let same_installed =
                *target == p.installed && matches!(p.state, State::Installed | State::Unknown);
            if same_installed || matches!(p.state, State::Installing | State::Updating) {
                to_check = Some(inst.clone());
            }
            if let Some(c) = to_check {
                let v = self
                    .t
                    .begin(&format!("run validate for {}/{}", c.name, c.version));
                let r = self.action(&c, "validate");
                self.t.exit(r.code);
                if r.status == Status::Success {
                    match (p.state, &p.uninst) {
                        (State::Installing | State::Updating, uninst) => {
                            self.t
                                .info(&format!("Successfully installed {} {target}", inst.name));
                            if let Some(u) = uninst {
                                self.cleanup(u);
                            }
                            self.mark(Status::Success);
                        }
                        (State::RollbackInstall, Some(u)) => {
                            self.t.info(&format!(
                                "Failed to install {} {}, successfully rolled back to {} {}",
                                u.name, u.version, inst.name, inst.version
                            ));
                            self.cleanup(inst);
                            self.mark_failed();
                        }
                        (State::Unknown, _) => {
                            self.t.info("The package install state is Unknown. Continue to check if there are package files already downloaded.");
                            if self.d.repo.validate(&inst.name, target).is_err() {
                                self.t.info("There are no package files downloaded.");
                                self.t.end(v);
                                self.t.exit(1);
                                self.t.end(check);
                                return false;
                            }
                            self.t.info("There are package files already downloaded. Considering the package has already been installed.");
                        }
                        _ => {
                            self.t
                                .info(&format!("{} {target} is already installed", inst.name));
                            self.mark(Status::Success);
                        }
                    }
                    if !matches!(p.state, State::Installed | State::Unknown) {
                        self.set_state(&c, State::Installed);
                    }
                    self.t.end(check);
                    return true;
                }
                self.t.end(v);
            }
        }
        self.t.exit(1);
        self.t.end(check);
        false
    }

    /// Upstream `executeConfigurePackage`.
    fn execute_configure(&mut self, p: &Prepared) {
        let s = self
            .t
            .begin(&format!("execute configure - state: {:?}", p.state));
        let (inst, uninst) = (p.inst.clone(), p.uninst.clone());
        match (p.state, inst, uninst) {
            (State::Installing | State::Updating, Some(i), u) => {
                self.execute_install(&i, u.as_ref(), p.in_place, false);
            }
            (State::RollbackInstall, i, Some(u)) => {
                self.execute_install(&u, i.as_ref(), p.in_place, true);
            }
            (State::RollbackUninstall, i, Some(u)) if i.is_some() => {
                self.execute_uninstall(i.as_ref(), &u, p.in_place, true);
            }
            (_, i, Some(u)) if !p.in_place => self.execute_uninstall(i.as_ref(), &u, false, false),
            (_, Some(i), u) => self.execute_install(&i, u.as_ref(), p.in_place, false),
            _ => self.mark_failed(),
        }
        self.t.end(s);
    }

    /// Upstream `executeInstall`: install (or update in place), validate, roll back on failure.
    fn execute_install(
        &mut self,
        inst: &Inst,
        uninst: Option<&Inst>,
        in_place: bool,
        rollback: bool,
    ) {
        let s = self.t.begin(&format!(
            "install {}/{}. rollback: {rollback}; in-place update: {in_place}",
            inst.name, inst.version
        ));
        let (state, action) = match (rollback, in_place) {
            (true, _) => (State::RollbackInstall, "install"),
            (false, true) => (State::Updating, "update"),
            (false, false) => (State::Installing, "install"),
        };
        self.set_state(inst, state);
        let mut r = self.action(inst, action);
        self.t.exit(r.code);
        if r.status == Status::Success {
            // Upstream never ends this section: it closes with the install's.
            self.t.begin(&format!(
                "validate {}/{} - rollback: {rollback}",
                inst.name, inst.version
            ));
            r = self.action(inst, "validate");
            self.t.exit(r.code);
        }
        if is_reboot(r.status) {
            self.t.begin(&format!(
                "Rebooting to finish installation of {} {} - rollback: {rollback}",
                inst.name, inst.version
            ));
            self.mark(Status::SuccessAndReboot);
            return self.t.end(s);
        }
        if !is_success(r.status) {
            if in_place && r.missing_update {
                self.set_state(inst, State::Failed);
                self.mark_failed();
                return self.t.end(s);
            }
            self.t.error_line(&format!(
                "Failed to install package; install status {}",
                r.status.as_str()
            ));
            match uninst {
                Some(u) if !rollback => self.execute_uninstall(Some(u), inst, in_place, true),
                _ => {
                    self.mark_failed();
                    self.set_state(inst, State::Failed);
                }
            }
            return self.t.end(s);
        }
        if let Some(u) = uninst {
            self.cleanup(u);
        }
        match uninst {
            Some(u) if rollback => {
                self.t.info(&format!(
                    "Failed to install {} {}, successfully rolled back to {} {}",
                    u.name, u.version, inst.name, inst.version
                ));
                self.set_state(inst, State::Installed);
                self.mark_failed();
            }
            _ => {
                self.t.info(&format!(
                    "Successfully installed {} {}",
                    inst.name, inst.version
                ));
                self.set_state(inst, State::Installed);
                self.mark(Status::Success);
            }
        }
        self.t.end(s);
    }

    /// Upstream `executeUninstall`: uninstall `uninst`, then install `inst` when there is one
    /// (an upgrade, or a rollback).
    fn execute_uninstall(
        &mut self,
        inst: Option<&Inst>,
        uninst: &Inst,
        in_place: bool,
        rollback: bool,
    ) {
        let s = self.t.begin(&format!(
            "uninstall {}/{} - rollback: {rollback}",
            uninst.name, uninst.version
        ));
        let state = match (rollback, inst.is_some()) {
            (true, _) => State::RollbackUninstall,
            (false, true) => State::Upgrading,
            (false, false) => State::Uninstalling,
        };
        self.set_state(uninst, state);
        let r = self.action(uninst, "uninstall");
        self.t.exit(r.code);
        if !is_success(r.status) {
            self.t.error_line(&format!(
                "Failed to uninstall version {} of package; uninstall status {}",
                uninst.version,
                r.status.as_str()
            ));
            match inst {
                Some(i) => self.execute_install(i, Some(uninst), in_place, rollback),
                None => {
                    self.set_state(uninst, State::Failed);
                    self.mark_failed();
                }
            }
            return self.t.end(s);
        }
        if is_reboot(r.status) {
            self.t.begin(&format!(
                "Rebooting to finish uninstall of {} {} - rollback: {rollback}",
                uninst.name, uninst.version
            ));
            self.mark(Status::SuccessAndReboot);
            return self.t.end(s);
        }
        self.t.info(&format!(
            "Successfully uninstalled {} {}",
            uninst.name, uninst.version
        ));
        match inst {
            Some(i) => self.execute_install(i, Some(uninst), in_place, rollback),
            None => {
                self.cleanup(uninst);
                self.set_state(uninst, State::None);
                self.mark(Status::Success);
            }
        }
        self.t.end(s);
    }

    /// Upstream `cleanupAfterUninstall`: the version's files go.
    fn cleanup(&mut self, u: &Inst) {
        let s = self.t.begin(&format!("cleanup {}/{}", u.name, u.version));
        if let Err(e) = self.d.repo.remove(&u.name, &u.version) {
            self.t.fail(&e);
        }
        self.t.end(s);
    }

    fn set_state(&mut self, inst: &Inst, state: State) {
        let s = self.t.begin(&format!(
            "set install state install {}/{} - state: {state:?}",
            inst.name, inst.version
        ));
        if let Err(e) = self.d.repo.set_state(&inst.name, &inst.version, state) {
            self.t.fail(&e);
        }
        self.t.end(s);
    }

    /// Upstream `ssminstaller.executeAction`: `<action>.sh` when the package has one.
    fn action(&mut self, inst: &Inst, action: &str) -> ActionResult {
        let s = self.t.begin(&format!("execute action: {action}"));
        let dir = self.d.repo.version_dir(&inst.name, &inst.version);
        let mut result = ActionResult {
            status: Status::Success,
            code: 0,
            missing_update: false,
        };
        if dir.join(format!("{action}.sh")).is_file() {
            self.t.info(&format!(
                "Initiating {} {} {action}",
                inst.name, inst.version
            ));
            let r = self.run_script(inst, action, &dir);
            self.t.exit(r.code);
            self.t.info(&format!(
                "Plugin {} ResultStatus {}",
                r.plugin_name,
                r.status.as_str()
            ));
            if !r.standard_output.is_empty() {
                self.t
                    .info(&format!("{action} output: {}", r.standard_output));
            }
            if !r.standard_error.is_empty() {
                self.t
                    .error_line(&format!("{action} errors: {}", r.standard_error));
            }
            result.status = result.status.merge(r.status);
            result.code = r.code;
        } else if action == "update" {
            self.t.fail(MISSING_UPDATE);
            result.status = Status::Failed;
            result.missing_update = true;
        }
        self.t.end(s);
        result
    }

    /// Upstream `readShAction` + `ExecuteDocument`: the script as an `aws:runShellScript` step
    /// whose id is the version, under `<run dir>/<version>/<action>/`.
    fn run_script(&mut self, inst: &Inst, action: &str, dir: &Path) -> PluginResult {
        let step = Step {
            id: inst.version.clone(),
            plugin: SHELL_PLUGIN.into(),
            inputs: vec![json!({
                "runCommand": [format!("echo Running sh {action}.sh"), format!("sh {action}.sh")],
                "workingDirectory": dir,
                "environment": self.d.script_env(action, &self.additional),
            })],
            verdict: Verdict::Run,
            on_failure: None,
            on_success: None,
            finally_step: false,
        };
        let command_dir = self.run_dir.join(normalize(&inst.version)).join(action);
        let env = StepEnv {
            command_dir: &command_dir,
            env: self.env.env,
            stop: self.env.stop,
            max_output_bytes: self.env.max_output_bytes,
            cleanup: self.env.cleanup,
            outputs: &[],
            sources: self.env.sources,
            association: self.env.association,
        };
        run_step(&step, &env, &mut *self.on_start)
    }

    /// Upstream's `ReportResult` after the action (not after a reboot, which upstream reports
    /// from the run that follows it).
    fn report(&mut self, input: &Input, version: &str, installed: &str) {
        if self.status.is_some_and(is_reboot) {
            return;
        }
        let Some(resolved) = &self.resolved else {
            return;
        };
        let report = service::Report {
            package_name: &input.name,
            version,
            previous_version: installed,
            operation: &input.action,
            overall_ms: self.t.elapsed_ms(),
            exit_code: i64::from(self.code),
            attributes: self.d.attributes(),
            steps: self.t.steps(),
        };
        if let Err(e) = service::report(&self.d.client, &report) {
            match resolved.is_document {
                true => log::warn!("Error reporting results for Document archive: {e}"),
                false => log::error!("Error reporting results: {e}"),
            }
        }
    }
}

enum Fetch {
    /// The manifest has no file for this host (upstream sets it on the section too).
    Manifest(String),
    Download(String),
}

/// Go `ResultStatus.IsReboot`.
fn is_reboot(s: Status) -> bool {
    matches!(s, Status::SuccessAndReboot | Status::PassedAndReboot)
}

/// Go `ResultStatus.IsSuccess`.
fn is_success(s: Status) -> bool {
    matches!(
        s,
        Status::Success | Status::SuccessAndReboot | Status::PassedAndReboot
    )
}

/// One section of upstream's tracer.
struct Section {
    operation: String,
    exitcode: i64,
    error: String,
    start: u128,
    stop: u128,
    info: String,
    errors: String,
}

/// Upstream `trace.Tracer`: open sections on a stack, closed ones in the order they closed.
struct Tracer {
    epoch: Instant,
    open: Vec<Section>,
    closed: Vec<Section>,
}

impl Tracer {
    fn new() -> Tracer {
        Tracer {
            epoch: Instant::now(),
            open: Vec::new(),
            closed: Vec::new(),
        }
    }

    fn now(&self) -> u128 {
        self.epoch.elapsed().as_nanos()
    }

    /// Opens a section; its depth, for [`Tracer::end`].
    fn begin(&mut self, operation: &str) -> usize {
        let start = self.now();
        self.open.push(Section {
            operation: operation.to_owned(),
            exitcode: 0,
            error: String::new(),
            start,
            stop: 0,
            info: String::new(),
            errors: String::new(),
        });
        self.open.len() - 1
    }

    /// Closes the section at `depth`, and first every one opened after it (upstream closes
    /// skipped sections the same way).
    fn end(&mut self, depth: usize) {
        while self.open.len() > depth {
            let Some(mut s) = self.open.pop() else { break };
            s.stop = self.now();
            self.closed.push(s);
        }
    }

    fn current(&mut self) -> Option<&mut Section> {
        self.open.last_mut()
    }

    fn info(&mut self, line: &str) {
        log::info!("{line}");
        if let Some(s) = self.current() {
            s.info.push_str(line);
            s.info.push('\n');
        }
    }

    fn error_line(&mut self, line: &str) {
        log::error!("{line}");
        if let Some(s) = self.current() {
            s.errors.push_str(line);
            s.errors.push('\n');
        }
    }

    fn fail(&mut self, error: &str) {
        log::error!("{error}");
        if let Some(s) = self.current() {
            s.error = error.to_owned();
        }
    }

    fn exit(&mut self, code: i32) {
        if let Some(s) = self.current() {
            s.exitcode = i64::from(code);
        }
    }

    fn stdout(&self) -> String {
        self.closed.iter().map(|s| s.info.as_str()).collect()
    }

    fn stderr(&self) -> String {
        let mut out = String::new();
        for s in &self.closed {
            out.push_str(&s.errors);
            if !s.error.is_empty() {
                out.push_str(&s.error);
                out.push('\n');
            }
        }
        out
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Upstream `ConvertToPackageServiceTrace`: `> op` at each closed section's start and
    /// `< op` at its end (with `` (err `…`)``), sorted by time, in milliseconds from the first.
    fn steps(&self) -> Vec<Value> {
        let first = self.closed.iter().map(|s| s.start).min().unwrap_or(0);
        let mut steps: Vec<(u128, Value)> = Vec::new();
        for s in &self.closed {
            let code = if s.exitcode == 0 && !s.error.is_empty() {
                1
            } else {
                s.exitcode
            };
            let end = match s.error.is_empty() {
                true => format!("< {}", s.operation),
                false => format!("< {} (err `{}`)", s.operation, s.error),
            };
            let ms = |t: u128| i64::try_from((t - first) / 1_000_000).unwrap_or(i64::MAX);
            let step =
                |action: String, t| json!({"Action": action, "Result": code, "Timing": ms(t)});
            steps.push((s.start, step(format!("> {}", s.operation), s.start)));
            steps.push((s.stop, step(end, s.stop)));
        }
        steps.sort_by_key(|(t, _)| *t);
        steps.into_iter().map(|(_, v)| v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_validated_with_upstreams_texts() {
        let ok = parse_input(&json!({
            "name": "Pkg", "version": "1.0", "action": "Install",
            "installationType": "Uninstall and reinstall",
            "additionalArguments": "{\"SSM_COLOR\": \"blue\"}"
        }))
        .unwrap();
        assert_eq!(ok.additional, [("SSM_COLOR".to_owned(), "blue".to_owned())]);
        assert_eq!(ok.installation_type, "Uninstall and reinstall");
        let err = |inputs: Value| parse_input(&inputs).unwrap_err();
        assert_eq!(
            err(json!({"action": "Install"})),
            "invalid input: empty name field"
        );
        assert_eq!(
            err(json!({"name": "P", "additionalArguments": "{\"COLOR\": \"blue\"}"})),
            "invalid input: keys need to start with \"SSM_\" prefix in additional arguments from input"
        );
        assert_eq!(
            err(json!({"name": "P", "source": "s3://x"})),
            "invalid input: source parameter is not supported in this version"
        );
        assert!(
            err(json!({"name": "P", "additionalArguments": "[1]"})).starts_with(
                "invalid input: unable to unmarshal additional arguments from input; error "
            )
        );
        // A StringMap that arrives as an object is an empty one, as upstream reads it.
        let object = parse_input(&json!({"name": "P", "additionalArguments": {"SSM_X": "1"}}));
        assert_eq!(object.unwrap().additional, []);
    }

    #[test]
    fn the_tracer_keeps_closing_order_and_reports_steps() {
        let mut t = Tracer::new();
        t.begin("root");
        let outer = t.begin("outer");
        t.info("from outer");
        let inner = t.begin("inner");
        t.info("from inner");
        t.fail("broke");
        t.end(inner);
        t.begin("skipped");
        t.end(outer);
        assert_eq!(t.stdout(), "from inner\nfrom outer\n");
        assert_eq!(t.stderr(), "broke\n");
        let steps = t.steps();
        let actions: Vec<&str> = steps
            .iter()
            .map(|s| s["Action"].as_str().unwrap())
            .collect();
        assert_eq!(actions[0], "> outer");
        assert!(actions.contains(&"< inner (err `broke`)"));
        assert_eq!(*actions.last().unwrap(), "< outer");
        assert_eq!(
            steps.iter().find(|s| s["Action"] == "> inner").unwrap()["Result"],
            1
        );
    }
}
