//! Output to S3 (docs/protocol.md §3.10): a command with `OutputS3BucketName` has each run's full
//! `stdout` and `stderr` uploaded, once the run ended and before its reply is made, to
//! `<OutputS3KeyPrefix>/<CommandId>/<InstanceId>/<plugin dir>/<run name>/stdout|stderr`, as
//! upstream's `iomodule/fileS3.go` does (an empty file is not uploaded), and the reply names the
//! bucket, `<…>/<plugin dir>` and the run name (`runpluginutil.go`).

use super::output::{Destination, Destinations, OutputLocation, RunFiles, Upload};
use super::payload::SendCommand;
use crate::aws::s3::S3Client;
use std::path::Path;
use std::sync::Arc;

/// The S3 destination of every command that names a bucket.
pub struct S3Destinations {
    client: Arc<S3Client>,
    instance_id: String,
}

impl S3Destinations {
    pub fn new(client: Arc<S3Client>, instance_id: &str) -> S3Destinations {
        S3Destinations {
            client,
            instance_id: instance_id.to_owned(),
        }
    }
}

impl Destinations for S3Destinations {
    fn for_command(&self, command: &SendCommand) -> Vec<Box<dyn Destination>> {
        if command.output_s3_bucket_name.is_empty() {
            return Vec::new();
        }
        // Upstream `parseSendCommandMessage`: path.Join(prefix, CommandId, destination); an
        // association's `InitializeDocumentState`: path.Join(prefix, instance, association, run).
        let prefix = match &command.association {
            None => s3_join(&[
                &command.output_s3_key_prefix,
                &command.command_id,
                &self.instance_id,
            ]),
            Some(association) => s3_join(&[
                &command.output_s3_key_prefix,
                &self.instance_id,
                &association.id,
                &association.run_id,
            ]),
        };
        vec![Box::new(S3Destination {
            client: self.client.clone(),
            bucket: command.output_s3_bucket_name.clone(),
            prefix,
        })]
    }
}

struct S3Destination {
    client: Arc<S3Client>,
    bucket: String,
    /// `<prefix>/<CommandId>/<InstanceId>`.
    prefix: String,
}

impl Destination for S3Destination {
    fn takes_whole_files(&self) -> bool {
        true
    }

    fn start(&self, run: &RunFiles<'_>) -> Box<dyn Upload + '_> {
        Box::new(S3Upload {
            to: self,
            keys: [&run.stdout, &run.stderr].map(|file| {
                let name = file.file_name().unwrap_or_default().to_string_lossy();
                let key = s3_join(&[&self.prefix, run.run_path, &name]);
                (file.to_path_buf(), key)
            }),
        })
    }

    fn location(&self, run: &RunFiles<'_>) -> Option<OutputLocation> {
        let (plugin_dir, step_name) = run.run_path.split_once('/').unwrap_or((run.run_path, ""));
        Some(OutputLocation {
            bucket: self.bucket.clone(),
            key_prefix: s3_join(&[&self.prefix, plugin_dir]),
            step_name: step_name.to_owned(),
        })
    }
}

struct S3Upload<'a> {
    to: &'a S3Destination,
    /// `stdout` and `stderr`, each with its key.
    keys: [(std::path::PathBuf, String); 2],
}

impl Upload for S3Upload<'_> {
    fn finish(self: Box<Self>) -> Result<(), String> {
        let failures: Vec<String> = self
            .keys
            .iter()
            .filter(|(path, _)| !is_empty(path))
            .filter_map(|(path, key)| {
                let bucket = &self.to.bucket;
                log::info!("Uploading {} to s3://{bucket}/{key}", path.display());
                let e = self.to.client.put_file(bucket, key, path).err()?;
                // Upstream logs these words; ssm-lite also puts them into the step's stderr.
                Some(format!("Failed to upload the output to s3: {e}"))
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("\n"))
        }
    }
}

/// Upstream uploads only a file with bytes in it (`fi.Size() > 0`).
fn is_empty(path: &Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.len() == 0)
}

/// Go's `path.Join` as upstream's `fileutil.BuildS3Path` uses it: the non-empty parts joined by
/// `/`, then cleaned (no `//`, `.` or `..` segments, no trailing `/`; a leading `/` stays).
fn s3_join(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    if joined.is_empty() {
        return joined;
    }
    let rooted = joined.starts_with('/');
    let mut segments: Vec<&str> = Vec::new();
    for segment in joined.split('/') {
        match segment {
            "" | "." => {}
            ".." if segments.last().is_some_and(|s| *s != "..") => {
                segments.pop();
            }
            ".." if rooted => {}
            s => segments.push(s),
        }
    }
    let body = segments.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_owned(),
        (false, false) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runcommand::payload::AssociationRun;

    #[test]
    fn keys_join_as_gos_path_join() {
        let id = ["cmd-1", "i-0abc"];
        assert_eq!(s3_join(&["", id[0], id[1]]), "cmd-1/i-0abc");
        assert_eq!(s3_join(&["logs", id[0], id[1]]), "logs/cmd-1/i-0abc");
        assert_eq!(s3_join(&["logs/", id[0], id[1]]), "logs/cmd-1/i-0abc");
        assert_eq!(s3_join(&["/logs//x/", id[0]]), "/logs/x/cmd-1");
        assert_eq!(s3_join(&["a/./b/../c", "d"]), "a/c/d");
        assert_eq!(s3_join(&["../a", "b"]), "../a/b");
        assert_eq!(s3_join(&["", ""]), "");
    }

    #[test]
    fn the_location_splits_the_run_path_as_upstream_names_it() {
        let http = Arc::new(
            crate::aws::http::HttpClient::new(&crate::aws::http::HttpConfig {
                user_agent: "t".into(),
                extra_ca_files: Vec::new(),
            })
            .unwrap(),
        );
        let credentials = Arc::new(crate::aws::credentials::StaticCredentials(
            crate::aws::credentials::Credentials {
                access_key_id: "AK".into(),
                secret_access_key: "SK".into(),
                session_token: None,
                expires_at: None,
            },
        ));
        let settings = crate::aws::s3::S3Settings {
            endpoint: String::new(),
            service_domain: String::new(),
            region: "us-east-1".into(),
        };
        let client = Arc::new(S3Client::new(http, credentials, settings));
        let destinations = S3Destinations::new(client, "i-0abc");
        let mut command = SendCommand {
            command_id: "cmd-1".into(),
            document_name: "AWS-RunShellScript".into(),
            document_content: serde_json::json!({}),
            parameters: serde_json::Map::new(),
            output_s3_bucket_name: String::new(),
            output_s3_key_prefix: "out".into(),
            cloudwatch_log_group: None,
            association: None,
        };
        assert!(destinations.for_command(&command).is_empty(), "no bucket");
        command.output_s3_bucket_name = "bkt".into();
        let all = destinations.for_command(&command);
        let [destination] = &all[..] else {
            panic!("one destination")
        };
        let dir = Path::new("/x/awsrunShellScript/0.awsrunShellScript");
        let (stdout, stderr) = (dir.join("stdout"), dir.join("stderr"));
        let run = RunFiles {
            plugin: "aws:runShellScript",
            step_id: "0.awsrunShellScript",
            run_path: "awsrunShellScript/0.awsrunShellScript",
            stdout: &stdout,
            stderr: &stderr,
        };
        assert_eq!(
            destination.location(&run),
            Some(OutputLocation {
                bucket: "bkt".into(),
                key_prefix: "out/cmd-1/i-0abc/awsrunShellScript".into(),
                step_name: "0.awsrunShellScript".into(),
            })
        );
        // An association run: upstream's `<prefix>/<InstanceId>/<AssociationId>/<RunId>`.
        command.association = Some(AssociationRun {
            id: "a-1".into(),
            run_id: "2026-12-03T12-00-00-000Z".into(),
            inventory_associations: Vec::new(),
        });
        let all = destinations.for_command(&command);
        assert_eq!(
            all[0].location(&run).unwrap().key_prefix,
            "out/i-0abc/a-1/2026-12-03T12-00-00-000Z/awsrunShellScript"
        );
    }
}
