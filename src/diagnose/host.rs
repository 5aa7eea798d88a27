//! The checks of this host: IMDS (upstream `metadata_check.go`), the hybrid registration
//! (`onprem_check.go`), the identity's credentials (`credentials_check.go`, without its STS
//! call), the state directory, the configuration's unused keys, the version (`version_check.go`,
//! without its query of the latest upstream release, which ssm-lite does not follow).

use super::{Context, Outcome, Status};
use crate::aws::imds::{ImdsClient, ImdsError};
use crate::config::{COMPATIBLE_AGENT_VERSION, CONFIG_SEARCH_PATH, Config};
use crate::identity::IdentityKind;
use crate::onprem::store::RegistrationStore;
use crate::sys::statvfs::{FsSpace, fs_space};
use crate::timefmt;
use std::io::{Read, Write};
use std::time::{Duration, UNIX_EPOCH};

/// IMDS answers within this, once (upstream: 2 s per request).
const IMDS_TIMEOUT: Duration = Duration::from_secs(2);
/// Below this much free space the state directory fails: command output alone may take
/// `Ssm.RunCommandLogsMaxTotalMiB` (200 MiB by default), but 64 MiB keeps commands running.
const MIN_FREE_MIB: u64 = 64;
/// Below this many free inodes it fails: every command takes a handful of files.
const MIN_FREE_INODES: u64 = 1000;
/// The most unused configuration keys named in the note.
const KEYS_SHOWN: usize = 20;
/// A configuration file larger than this is not read for its keys.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// "EC2 IMDS": the instance id and region, over IMDSv2. Not applicable (Skipped) on a hybrid
/// node, when disabled, or when another identity than EC2 is in use.
pub(super) fn imds(ctx: &Context) -> Outcome {
    if let Ok(Some(_)) = RegistrationStore::new(&ctx.state_dir).load() {
        return (Status::Skipped, "Instance has hybrid registration".into());
    }
    let Ok(http) = &ctx.http else {
        return (
            Status::Skipped,
            "no HTTP client (see Proxy configuration)".into(),
        );
    };
    let imds = ImdsClient::new(http.clone(), &ctx.env).with_limits(IMDS_TIMEOUT, 1);
    let found = imds
        .instance_id()
        .and_then(|id| Ok((id, imds.identity_document()?.region)));
    match found {
        Ok((id, region)) => (
            Status::Success,
            format!("IMDS is accessible and has instance id {id} in region {region}"),
        ),
        Err(e @ ImdsError::Disabled) => (Status::Skipped, e.to_string()),
        Err(e) => match &ctx.identity {
            Ok(identity) if identity.kind != IdentityKind::Ec2 => (
                Status::Skipped,
                format!(
                    "not needed by the {} identity in use: Failed to query IMDS: {e}",
                    kind_name(identity.kind)
                ),
            ),
            _ => (Status::Failed, format!("Failed to query IMDS: {e}")),
        },
    }
}

/// "Hybrid instance registration": the registration under the state dir, key included.
pub(super) fn registration(ctx: &Context) -> Outcome {
    match RegistrationStore::new(&ctx.state_dir).load() {
        Ok(None) => (
            Status::Skipped,
            "Instance does not have hybrid registration".into(),
        ),
        Ok(Some(r)) => (
            Status::Success,
            format!(
                "Instance has hybrid registration with instance id {} in region {}; its private \
                 key is readable (created {})",
                r.instance_id,
                r.region,
                timefmt::iso8601_ms(UNIX_EPOCH + Duration::from_secs(r.key_created))
            ),
        ),
        Err(e) => (
            Status::Failed,
            format!(
                "the registration under {} cannot be read: {e}; restore it from a backup, or \
                 clear it (`ssm-lite register --clear`) and register again",
                ctx.state_dir.display()
            ),
        ),
    }
}

/// The name `Identity.ConsumptionOrder` gives the identity.
fn kind_name(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::OnPrem => "OnPrem",
        IdentityKind::Ec2 => "EC2",
        IdentityKind::Custom => "CustomIdentity",
    }
}

/// "AWS Credentials": which identity the chain chose and whether it hands out credentials.
pub(super) fn credentials(ctx: &Context) -> Outcome {
    let identity = match &ctx.identity {
        Ok(identity) => identity,
        Err(e) => return (Status::Failed, e.clone()),
    };
    let who = format!(
        "the {} identity {} in region {}",
        kind_name(identity.kind),
        identity.instance_id,
        identity.region
    );
    match identity.credentials.credentials() {
        Ok(c) => {
            let expiry = c.expires_at.map_or("do not expire".into(), |t| {
                format!("will expire at {}", timefmt::iso8601_ms(t))
            });
            (
                Status::Success,
                format!("Credentials are for {who} and {expiry}"),
            )
        }
        Err(e) => (Status::Failed, format!("No credentials for {who}: {e}")),
    }
}

/// "State directory": there, writable, with room left (space and inodes).
pub(super) fn state_dir(ctx: &Context) -> Outcome {
    let dir = &ctx.state_dir;
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return (
                Status::Failed,
                format!("{shown} is not a directory; remove it or pass another --state-dir"),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let why = format!("{shown} does not exist yet; the agent creates it when it starts");
            return (Status::Skipped, why);
        }
        Err(e) => return (Status::Failed, format!("cannot read {shown}: {e}")),
    }
    let probe = dir.join(format!(".diagnose-{}", std::process::id()));
    let written = std::fs::File::create_new(&probe).and_then(|mut f| f.write_all(b"ssm-lite"));
    let _ = std::fs::remove_file(&probe);
    if let Err(e) = written {
        let why = format!(
            "cannot write in {shown}: {e}; run diagnose as the agent's user (root), or give \
             that user the directory"
        );
        return (Status::Failed, why);
    }
    let space = match fs_space(dir) {
        Ok(space) => space,
        Err(e) => return (Status::Failed, e.to_string()),
    };
    let (left, short) = room(&space);
    if short {
        let why = format!(
            "{shown} is writable but only {left}; the agent needs at least {MIN_FREE_MIB} MiB \
             and {MIN_FREE_INODES} inodes: free some space (old command output goes first once \
             Ssm.RunCommandLogsRetentionDurationHours passes)"
        );
        return (Status::Failed, why);
    }
    (Status::Success, format!("{shown} is writable; {left}"))
}

/// What is left, and whether it is below [`MIN_FREE_MIB`] or [`MIN_FREE_INODES`].
fn room(space: &FsSpace) -> (String, bool) {
    let (mib, inodes) = (space.free_bytes >> 20, space.free_inodes);
    if space.total_inodes == 0 {
        let left = format!("{mib} MiB free (the file system has no inode limit)");
        return (left, mib < MIN_FREE_MIB);
    }
    let left = format!("{mib} MiB and {inodes} inodes free");
    (left, mib < MIN_FREE_MIB || inodes < MIN_FREE_INODES)
}

/// "Configuration": which file the agent reads, whether it loads, and the keys in it that
/// change nothing in ssm-lite.
pub(super) fn configuration(ctx: &Context) -> Outcome {
    if let Some(e) = &ctx.config_error {
        let why = format!(
            "{e}; the agent does not start with this file: fix it (the other checks used the \
             built-in defaults)"
        );
        return (Status::Failed, why);
    }
    let Some(path) = &ctx.config_file else {
        let why = format!(
            "No configuration file (none of {} exists): the built-in defaults apply",
            CONFIG_SEARCH_PATH.join(", ")
        );
        return (Status::Skipped, why);
    };
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_CONFIG_BYTES).read_to_string(&mut text));
    if let Err(e) = read {
        return (
            Status::Failed,
            format!("cannot read {}: {e}", path.display()),
        );
    }
    let unused = Config::keys_without_effect(&text);
    let shown = path.display();
    if unused.is_empty() {
        return (
            Status::Success,
            format!("{shown} is used; ssm-lite uses every key in it"),
        );
    }
    let mut listed = unused[..unused.len().min(KEYS_SHOWN)].join(", ");
    if unused.len() > KEYS_SHOWN {
        listed.push_str(&format!(" and {} more", unused.len() - KEYS_SHOWN));
    }
    (
        Status::Success,
        format!(
            "{shown} is used; ssm-lite ignores {} of its keys (upstream settings it has no use \
             for, or misspelled): {listed}",
            unused.len()
        ),
    )
}

/// "SSM Agent version": ssm-lite's own, and the amazon-ssm-agent version it reports.
pub(super) fn version(ctx: &Context) -> Outcome {
    (
        Status::Success,
        format!(
            "ssm-lite {} reports itself to the service as amazon-ssm-agent {} (protocol-compatible \
             with {COMPATIBLE_AGENT_VERSION})",
            env!("CARGO_PKG_VERSION"),
            ctx.config.agent.version
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::credentials::Env;
    use std::path::{Path, PathBuf};

    fn context(state_dir: &Path, config_file: Option<PathBuf>) -> Context {
        Context {
            config: Config::default(),
            config_file,
            config_error: None,
            state_dir: state_dir.to_owned(),
            env: Env::from_pairs(&[]),
            http: Err("none in this test".into()),
            identity: Err("none in this test".into()),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ssm-lite-diag-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn too_little_space_or_too_few_inodes_fail() {
        let space = |mib: u64, free_inodes, total_inodes| FsSpace {
            free_bytes: mib << 20,
            free_inodes,
            total_inodes,
        };
        assert_eq!(
            room(&space(64, 1000, 5000)),
            ("64 MiB and 1000 inodes free".into(), false)
        );
        assert!(room(&space(63, 1000, 5000)).1);
        assert!(room(&space(1 << 10, 999, 5000)).1);
        let (left, short) = room(&space(100, 0, 0));
        assert!(!short && left.contains("no inode limit"), "{left}");
    }

    #[test]
    fn the_state_dir_is_checked_where_it_is() {
        let dir = temp_dir("state");
        let (status, note) = state_dir(&context(&dir, None));
        assert_eq!(status, Status::Success, "{note}");
        assert!(
            note.starts_with(&format!("{} is writable; ", dir.display())),
            "{note}"
        );
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "the probe file is gone"
        );
        let (status, note) = state_dir(&context(&dir.join("new"), None));
        assert_eq!(status, Status::Skipped, "{note}");
        assert!(
            note.contains("the agent creates it when it starts"),
            "{note}"
        );
        std::fs::write(dir.join("file"), "x").unwrap();
        let (status, note) = state_dir(&context(&dir.join("file"), None));
        assert_eq!(status, Status::Failed, "{note}");
        assert!(note.contains("is not a directory"), "{note}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_configuration_check_names_the_file_and_its_unused_keys() {
        let dir = temp_dir("config");
        let file = dir.join("amazon-ssm-agent.json");
        std::fs::write(&file, r#"{"Mds":{"CommandWorkersLimit":2}}"#).unwrap();
        let (status, note) = configuration(&context(&dir, Some(file.clone())));
        assert_eq!(status, Status::Success, "{note}");
        assert!(note.ends_with("ssm-lite uses every key in it"), "{note}");
        std::fs::write(
            &file,
            r#"{"Agent":{"ContainerMode":true},"Mgs":{"StopTimeoutMillis":1}}"#,
        )
        .unwrap();
        let (status, note) = configuration(&context(&dir, Some(file.clone())));
        assert_eq!(status, Status::Success, "{note}");
        assert!(
            note.ends_with("ignores 2 of its keys (upstream settings it has no use for, or misspelled): Agent.ContainerMode, Mgs.StopTimeoutMillis"),
            "{note}"
        );
        let mut broken = context(&dir, Some(file));
        broken.config_error = Some("config file x is not valid JSON".into());
        let (status, note) = configuration(&broken);
        assert_eq!(status, Status::Failed, "{note}");
        assert!(
            note.contains("the agent does not start with this file"),
            "{note}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
