//! Where a step's output goes besides its local files: an S3 bucket (`OutputS3BucketName`) and
//! CloudWatch Logs (`CloudWatchOutputConfig`). The engine asks each [`Destinations`] once per
//! command which ones the command wants; each run of a plugin then gets one [`Upload`] per destination,
//! started before its script and finished once the script's files are complete, before the step
//! reply is made.

use super::payload::SendCommand;
use crate::document::Step;
use std::path::Path;

/// One run of a plugin over one property set, as a destination sees it.
pub struct RunFiles<'a> {
    /// The plugin's name, e.g. `aws:runShellScript`.
    pub plugin: &'a str,
    /// The step's id: a 2.x step's `name`, a 1.x plugin's name (CloudWatch names streams so).
    pub step_id: &'a str,
    /// The run's directory under the command's: `awsrunShellScript/0.awsrunShellScript`
    /// (colons removed, as upstream names its S3 keys).
    pub run_path: &'a str,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
}

impl<'a> RunFiles<'a> {
    /// The files of a run of `step` in `run_path`.
    pub fn of(step: &'a Step, run_path: &'a str, stdout: &'a Path, stderr: &'a Path) -> Self {
        RunFiles {
            plugin: &step.plugin,
            step_id: &step.id,
            run_path,
            stdout,
            stderr,
        }
    }
}

/// Where one command's output goes.
pub trait Destination: Send + Sync {
    /// Called before the run's script starts (its files may not exist yet).
    fn start(&self, run: &RunFiles<'_>) -> Box<dyn Upload + '_>;

    /// Where the reply says the run's output is, for a destination the reply names (S3).
    fn location(&self, _run: &RunFiles<'_>) -> Option<OutputLocation> {
        None
    }

    /// A destination that takes the files whole (S3, as upstream uploads every byte): the
    /// run's files are then capped by `Ssm.RunCommandLogsMaxTotalMiB`, the disk budget of all
    /// output, rather than by the per-step `RunCommandLogsMaxStepOutputMiB`.
    fn takes_whole_files(&self) -> bool {
        false
    }
}

/// The reply's `outputS3BucketName`, `outputS3KeyPrefix` and `stepName` of a step.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct OutputLocation {
    pub bucket: String,
    /// `<prefix>/<CommandId>/<InstanceId>/<plugin dir>`.
    pub key_prefix: String,
    /// The run's name under it, e.g. `0.awsrunShellScript`.
    pub step_name: String,
}

/// One run's output on its way to a destination.
pub trait Upload {
    /// Called once the run ended and its files are complete. `Err` is a line for the step's
    /// stderr: a failed upload is never silent.
    fn finish(self: Box<Self>) -> Result<(), String>;
}

/// `Ssm.PluginLocalOutputCleanup`: when a run's `stdout`/`stderr` files are removed, once its
/// result is made (upstream `iomodule/fileS3.go` `cleanUp`; never after exit 194, whose files a
/// reboot leaves incomplete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputCleanup {
    /// `default`: kept until the retention prunes them.
    Keep,
    /// `after-execution`: always.
    AfterExecution,
    /// `after-upload`: when a destination took them (none: kept).
    AfterUpload,
}

impl OutputCleanup {
    pub fn from_setting(value: &str) -> OutputCleanup {
        match value {
            "after-execution" => OutputCleanup::AfterExecution,
            "after-upload" => OutputCleanup::AfterUpload,
            _ => OutputCleanup::Keep,
        }
    }

    /// Whether a run's files go, `uploaded` meaning a destination finished with them.
    pub fn removes(self, uploaded: bool) -> bool {
        match self {
            OutputCleanup::Keep => false,
            OutputCleanup::AfterExecution => true,
            OutputCleanup::AfterUpload => uploaded,
        }
    }
}

/// Builds the destinations of one kind a command asks for (none, when it asks for none).
pub trait Destinations: Send + Sync {
    fn for_command(&self, command: &SendCommand) -> Vec<Box<dyn Destination>>;
}

#[cfg(test)]
mod tests {
    use super::OutputCleanup;

    #[test]
    fn after_upload_removes_only_what_a_destination_took() {
        let removes =
            |setting: &str, uploaded| OutputCleanup::from_setting(setting).removes(uploaded);
        assert!(!removes("default", true));
        assert!(removes("after-execution", false));
        assert!(removes("after-upload", true));
        assert!(!removes("after-upload", false), "nothing uploaded: kept");
        assert!(
            !removes("bogus", true),
            "config.rs maps unknown values to default"
        );
    }
}
