//! The engine's Parameter Store: `ssm:GetParameters` through the agent's SSM client, retried on
//! throttling and transient failures as the AWS SDK upstream links does (docs/protocol.md §3.7).
//! Document references are read without decryption; `{{ssm-secure:…}}` references of
//! `aws:downloadContent` with it (docs/protocol.md §3.12).

use super::sources::SecretSource;
use crate::aws::jsonrpc::{AwsError, JsonClient};
use crate::document::parameter_store::{Found, Parameter, ParameterSource};
use serde_json::json;
use std::time::Duration;

/// Per attempt; a worker waits at most about four of these before the command fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub struct SsmParameterStore {
    client: JsonClient,
}

impl SsmParameterStore {
    pub fn new(client: JsonClient) -> SsmParameterStore {
        SsmParameterStore { client }
    }
}

impl SsmParameterStore {
    /// One `GetParameters` call of `names`, retried.
    fn get(&self, names: &[String], decrypt: bool) -> Result<Found, String> {
        let input = json!({"Names": names, "WithDecryption": decrypt});
        match self
            .client
            .call_retried("GetParameters", &input, CALL_TIMEOUT)
        {
            Ok(answer) => Found::from_answer(&answer).map_err(|e| refused(&AwsError::Decode(e))),
            Err(e) => Err(refused(&e)),
        }
    }
}

impl ParameterSource for SsmParameterStore {
    fn get_parameters(&self, names: &[String]) -> Result<Found, String> {
        // Upstream never asks for decryption here: a SecureString is refused, not read.
        self.get(names, false)
    }
}

impl SecretSource for SsmParameterStore {
    fn get_decrypted(&self, name: &str) -> Result<Parameter, String> {
        let found = self.get(&[name.to_owned()], true)?;
        // Upstream `ssmparameterresolver.getParameters`: invalid names fail the lookup.
        if !found.invalid.is_empty() {
            return Err(format!(
                "The following parameter(s) cannot be resolved: {}",
                found.invalid.join(",")
            ));
        }
        found
            .parameters
            .into_iter()
            .next()
            .ok_or_else(|| "Invalid number of tokens returned - 0".to_owned())
    }
}

/// Upstream's text for a failed call, with the service's `Code: message` where the SDK has one.
fn refused(e: &AwsError) -> String {
    let detail = match e {
        AwsError::Service { code, message, .. } => format!("{code}: {message}"),
        other => other.to_string(),
    };
    format!("Encountered error while calling GetParameters API. Error: {detail}")
}
