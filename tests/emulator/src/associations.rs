//! State Manager's instance side (`AmazonSSM.ListInstanceAssociations`,
//! `UpdateInstanceAssociationStatus` and `PutComplianceItems`, JSON 1.1 signed for `ssm`), shaped
//! as amazon-ssm-agent's vendored SSM model has them (`InstanceAssociationSummary`,
//! `InstanceAssociationExecutionResult`). Tests add associations with
//! [`crate::Emulator::add_association`]; their documents come from the `GetDocument` store
//! ([`crate::Emulator::put_document`]), and an association's `Checksum` follows that document's
//! content unless the test sets one.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Map, Value, json};

use crate::http::Response;
use crate::service::{required, validation};
use crate::state::State;
use crate::util::{sha256_hex, uuid_v4};

/// Page length when `MaxResults` is absent (the agent always sends 20).
const DEFAULT_PAGE: usize = 50;
/// The service's limit on `ExecutionSummary`.
pub const MAX_EXECUTION_SUMMARY: usize = 512;

/// Where an association's command output goes (`OutputLocation.S3Location`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3OutputLocation {
    pub region: String,
    pub bucket: String,
    pub key_prefix: String,
}

/// One association as `ListInstanceAssociations` answers it; build with [`Association::new`]
/// and the setters. The fields are the model's; absent optional ones are left out of the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Association {
    pub association_id: String,
    /// `None` = whichever instance asks (hybrid instances get their `mi-` id at registration).
    pub instance_id: Option<String>,
    /// The document's name.
    pub name: String,
    pub document_version: String,
    /// `None` = the SHA-256 of the document's content as `GetDocument` would answer it.
    pub checksum: Option<String>,
    pub association_version: Option<String>,
    /// `rate(…)` or `cron(…)`; `None` runs once.
    pub schedule_expression: Option<String>,
    /// Epoch seconds, set by final statuses.
    pub last_execution_date: Option<f64>,
    /// The instance's status for the association, set by every status update.
    pub detailed_status: Option<String>,
    /// Name → values, always a list on the wire.
    pub parameters: BTreeMap<String, Vec<String>>,
    pub output_location: Option<S3OutputLocation>,
}

impl Association {
    /// An association of document `name` (`$DEFAULT` version) with a fresh id, for any
    /// instance, never run, with no schedule, parameters or output location.
    pub fn new(name: &str) -> Association {
        Association {
            association_id: uuid_v4(),
            instance_id: None,
            name: name.to_owned(),
            document_version: "$DEFAULT".to_owned(),
            checksum: None,
            association_version: None,
            schedule_expression: None,
            last_execution_date: None,
            detailed_status: None,
            parameters: BTreeMap::new(),
            output_location: None,
        }
    }

    pub fn id(mut self, id: &str) -> Association {
        self.association_id = id.to_owned();
        self
    }

    pub fn instance(mut self, instance_id: &str) -> Association {
        self.instance_id = Some(instance_id.to_owned());
        self
    }

    pub fn document_version(mut self, version: &str) -> Association {
        self.document_version = version.to_owned();
        self
    }

    pub fn checksum(mut self, checksum: &str) -> Association {
        self.checksum = Some(checksum.to_owned());
        self
    }

    pub fn association_version(mut self, version: &str) -> Association {
        self.association_version = Some(version.to_owned());
        self
    }

    pub fn schedule(mut self, expression: &str) -> Association {
        self.schedule_expression = Some(expression.to_owned());
        self
    }

    pub fn last_execution_date(mut self, epoch_secs: f64) -> Association {
        self.last_execution_date = Some(epoch_secs);
        self
    }

    pub fn detailed_status(mut self, status: &str) -> Association {
        self.detailed_status = Some(status.to_owned());
        self
    }

    pub fn parameter(mut self, name: &str, values: &[&str]) -> Association {
        let values = values.iter().map(|v| (*v).to_owned()).collect();
        self.parameters.insert(name.to_owned(), values);
        self
    }

    pub fn output_to_s3(mut self, region: &str, bucket: &str, key_prefix: &str) -> Association {
        self.output_location = Some(S3OutputLocation {
            region: region.to_owned(),
            bucket: bucket.to_owned(),
            key_prefix: key_prefix.to_owned(),
        });
        self
    }

    fn serves(&self, instance_id: &str) -> bool {
        self.instance_id.as_deref().is_none_or(|i| i == instance_id)
    }

    /// The `InstanceAssociationSummary` for `instance_id`, with `checksum` filled in.
    fn summary(&self, instance_id: &str, checksum: String) -> Value {
        let mut a = json!({
            "AssociationId": self.association_id,
            "InstanceId": instance_id,
            "Name": self.name,
            "DocumentVersion": self.document_version,
            "Checksum": checksum,
            "Parameters": self.parameters,
        });
        let optional = [
            (
                "AssociationVersion",
                self.association_version.clone().map(Value::from),
            ),
            (
                "ScheduleExpression",
                self.schedule_expression.clone().map(Value::from),
            ),
            (
                "LastExecutionDate",
                self.last_execution_date.map(Value::from),
            ),
            (
                "DetailedStatus",
                self.detailed_status.clone().map(Value::from),
            ),
            (
                "OutputLocation",
                self.output_location.as_ref().map(output_location),
            ),
        ];
        for (key, value) in optional {
            if let Some(v) = value {
                a[key] = v;
            }
        }
        a
    }
}

fn output_location(s3: &S3OutputLocation) -> Value {
    json!({"S3Location": {
        "OutputS3Region": s3.region,
        "OutputS3BucketName": s3.bucket,
        "OutputS3KeyPrefix": s3.key_prefix,
    }})
}

#[derive(Default)]
pub(crate) struct AssociationState {
    /// In the order added; listings keep it.
    associations: Vec<Association>,
    /// Caps every page below `MaxResults`, so tests can force paging.
    pub(crate) page_size: Option<usize>,
    list_calls: Vec<(Instant, Value)>,
    /// AssociationId → the `ExecutionResult`s accepted for it, in order.
    statuses: BTreeMap<String, Vec<Value>>,
    compliance: Vec<Value>,
}

impl AssociationState {
    /// Adds `a`, or replaces the association with its id.
    pub(crate) fn add(&mut self, a: Association) {
        match self
            .associations
            .iter_mut()
            .find(|x| x.association_id == a.association_id)
        {
            Some(old) => *old = a,
            None => self.associations.push(a),
        }
    }

    /// Removes association `id`; false when there was none.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let before = self.associations.len();
        self.associations.retain(|a| a.association_id != id);
        self.associations.len() != before
    }

    pub(crate) fn get(&self, id: &str) -> Option<&Association> {
        self.associations.iter().find(|a| a.association_id == id)
    }
}

impl State {
    /// `ListInstanceAssociations` bodies that reached the operation, with when they arrived.
    pub fn list_associations_calls(&self) -> &[(Instant, Value)] {
        &self.associations.list_calls
    }

    /// The `ExecutionResult`s accepted for association `id`, in order.
    pub fn association_statuses(&self, id: &str) -> &[Value] {
        self.associations
            .statuses
            .get(id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// `PutComplianceItems` bodies that were accepted, in order.
    pub fn compliance_puts(&self) -> &[Value] {
        &self.associations.compliance
    }
}

/// An error answer: 400 with the service's error type and message.
fn refuse(error_type: &str, message: &str) -> Response {
    Response::aws_error(400, error_type, message)
}

/// `AmazonSSM.ListInstanceAssociations`: the instance's associations, a page at a time.
pub(crate) fn list(st: &mut State, body: &Value) -> Response {
    st.associations
        .list_calls
        .push((Instant::now(), body.clone()));
    let instance_id = match required(body, "InstanceId", 10) {
        Ok(id) => id,
        Err(resp) => return resp,
    };
    let max = match body.get("MaxResults").map(Value::as_u64) {
        None => DEFAULT_PAGE,
        Some(Some(n)) if n >= 1 => usize::try_from(n).unwrap_or(usize::MAX),
        Some(_) => {
            let msg = "1 validation error detected: Value at 'maxResults' failed to satisfy \
                       constraint: Member must have value greater than or equal to 1";
            return refuse("ValidationException", msg);
        }
    };
    let page = st.associations.page_size.map_or(max, |cap| cap.min(max));
    let mine: Vec<&Association> = st
        .associations
        .associations
        .iter()
        .filter(|a| a.serves(instance_id))
        .collect();
    // The token is the offset of the page's first association, which only this emulator reads.
    let start = match body["NextToken"].as_str().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= mine.len() => n,
        Some(_) => return refuse("InvalidNextToken", "The specified token isn't valid."),
    };
    let end = start.saturating_add(page).min(mine.len());
    let summaries: Vec<Value> = mine[start..end]
        .iter()
        .map(|a| a.summary(instance_id, checksum(st, a)))
        .collect();
    let mut answer = json!({"Associations": summaries});
    if end < mine.len() {
        answer["NextToken"] = json!(end.to_string());
    }
    Response::json(200, &answer)
}

/// The association's checksum: set by the test, or the SHA-256 of its document's content
/// (empty when no such document is stored), so a new document version changes it.
fn checksum(st: &State, a: &Association) -> String {
    if let Some(c) = &a.checksum {
        return c.clone();
    }
    let asked = json!({"Name": a.name, "DocumentVersion": a.document_version});
    match st.documents.answer(&asked) {
        Ok(doc) => sha256_hex(doc["Content"].as_str().unwrap_or_default().as_bytes()),
        Err(_) => String::new(),
    }
}

/// Statuses after which the service counts the association as executed.
fn is_final(status: &str) -> bool {
    !matches!(status, "Pending" | "InProgress" | "Associated")
}

/// `AmazonSSM.UpdateInstanceAssociationStatus`: records the result, moves the association's
/// `DetailedStatus` and, for a final status, its `LastExecutionDate` to `ExecutionDate`.
pub(crate) fn update_status(st: &mut State, body: &Value) -> Response {
    let checked = required(body, "AssociationId", 1)
        .and_then(|id| required(body, "InstanceId", 10).map(|instance| (id, instance)));
    let (id, instance_id) = match checked {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    let result = &body["ExecutionResult"];
    let (status, date) = match execution_result(result) {
        Ok(found) => found,
        Err(resp) => return resp,
    };
    let Some(a) = st
        .associations
        .associations
        .iter_mut()
        .find(|a| a.association_id == id && a.serves(instance_id))
    else {
        return refuse(
            "AssociationDoesNotExist",
            "The specified association doesn't exist.",
        );
    };
    a.detailed_status = Some(status.to_owned());
    if is_final(status) {
        a.last_execution_date = Some(date);
    }
    let statuses = st.associations.statuses.entry(id.to_owned()).or_default();
    statuses.push(result.clone());
    Response::json(200, &json!({}))
}

/// `Status` and `ExecutionDate` (epoch seconds) of an `ExecutionResult`, checked as the service
/// checks it: both present, `ExecutionSummary` of 1 to 512 characters.
fn execution_result(result: &Value) -> Result<(&str, f64), Response> {
    if !result.is_object() {
        let msg = "1 validation error detected: Value null at 'executionResult' failed to \
                   satisfy constraint: Member must not be null";
        return Err(refuse("ValidationException", msg));
    }
    let status =
        required(result, "Status", 1).map_err(|_| validation("executionResult.status", 1))?;
    let summary = required(result, "ExecutionSummary", 1)
        .map_err(|_| validation("executionResult.executionSummary", 1))?;
    if summary.chars().count() > MAX_EXECUTION_SUMMARY {
        let msg = format!(
            "1 validation error detected: Value at 'executionResult.executionSummary' failed to \
             satisfy constraint: Member must have length less than or equal to \
             {MAX_EXECUTION_SUMMARY}"
        );
        return Err(refuse("ValidationException", &msg));
    }
    // JSON 1.1 timestamps are epoch seconds as a number.
    let Some(date) = result["ExecutionDate"].as_f64() else {
        let msg = format!(
            "ExecutionDate must be epoch seconds as a number, not {}",
            result["ExecutionDate"]
        );
        return Err(refuse("SerializationException", &msg));
    };
    Ok((status, date))
}

/// `AmazonSSM.PutComplianceItems`: checks the required members and records the body.
pub(crate) fn put_compliance_items(st: &mut State, body: &Value) -> Response {
    for field in ["ResourceId", "ResourceType", "ComplianceType"] {
        if let Err(resp) = required(body, field, 1) {
            return resp;
        }
    }
    let summary = body["ExecutionSummary"].as_object();
    if summary.and_then(|s| s.get("ExecutionTime")).is_none() {
        let msg = "1 validation error detected: Value null at 'executionSummary.executionTime' \
                   failed to satisfy constraint: Member must not be null";
        return refuse("ValidationException", msg);
    }
    if !body["Items"].is_array() {
        let msg = "1 validation error detected: Value null at 'items' failed to satisfy \
                   constraint: Member must not be null";
        return refuse("ValidationException", msg);
    }
    st.associations.compliance.push(body.clone());
    Response::json(200, &Value::Object(Map::new()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Emulator;
    use crate::tests::{call, role_credentials};

    const INSTANCE: &str = "i-0123456789abcdef0";
    const LIST: &str = "AmazonSSM.ListInstanceAssociations";
    const STATUS: &str = "AmazonSSM.UpdateInstanceAssociationStatus";

    fn result(status: &str, date: f64) -> Value {
        json!({"Status": status, "ErrorCode": "", "ExecutionDate": date,
               "ExecutionSummary": "Executing association"})
    }

    #[test]
    fn pages_follow_next_token_and_only_serve_the_instance() {
        let emu = Emulator::start(Default::default());
        let creds = role_credentials(&emu);
        emu.put_document("Doc", "JSON", "{\"schemaVersion\": \"2.2\"}");
        let ids: Vec<String> = (0..3)
            .map(|i| {
                let a = Association::new("Doc")
                    .id(&format!("assoc-{i}"))
                    .schedule("rate(30 minutes)")
                    .parameter("commands", &["echo a", "echo b"]);
                emu.add_association(a);
                format!("assoc-{i}")
            })
            .collect();
        emu.add_association(Association::new("Doc").instance("i-0fedcba9876543210"));
        emu.set_association_page_size(Some(2));
        let first = call(
            &emu,
            &creds,
            LIST,
            &json!({"InstanceId": INSTANCE, "MaxResults": 20}),
        );
        assert_eq!(first.status, 200);
        let first = first.json();
        let token = first["NextToken"]
            .as_str()
            .expect("a second page")
            .to_owned();
        let second = call(
            &emu,
            &creds,
            LIST,
            &json!({"InstanceId": INSTANCE, "MaxResults": 20, "NextToken": token}),
        )
        .json();
        assert!(second.get("NextToken").is_none(), "{second}");
        let listed: Vec<&Value> = first["Associations"]
            .as_array()
            .into_iter()
            .chain(second["Associations"].as_array())
            .flatten()
            .collect();
        let listed_ids: Vec<&str> = listed
            .iter()
            .filter_map(|a| a["AssociationId"].as_str())
            .collect();
        assert_eq!(listed_ids, ids);
        let a = listed[0];
        assert_eq!(a["InstanceId"], INSTANCE);
        assert_eq!(a["Parameters"], json!({"commands": ["echo a", "echo b"]}));
        assert_eq!(a["Checksum"], sha256_hex(b"{\"schemaVersion\": \"2.2\"}"));
        assert!(a.get("LastExecutionDate").is_none() && a.get("OutputLocation").is_none());
        assert_eq!(emu.list_associations_calls().len(), 2);

        let bad = call(
            &emu,
            &creds,
            LIST,
            &json!({"InstanceId": INSTANCE, "NextToken": "x"}),
        );
        assert_eq!(
            (bad.status, bad.error_type().as_str()),
            (400, "InvalidNextToken")
        );
        assert!(emu.signature_failures().is_empty());
    }

    #[test]
    fn checksum_follows_the_document_unless_set() {
        let emu = Emulator::start(Default::default());
        let creds = role_credentials(&emu);
        emu.add_association(
            Association::new("Doc")
                .id("latest")
                .document_version("$LATEST"),
        );
        emu.add_association(Association::new("Doc").id("fixed").checksum("abc"));
        let checksums = || {
            let answer = call(&emu, &creds, LIST, &json!({"InstanceId": INSTANCE})).json();
            let list = answer["Associations"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            list.iter()
                .map(|a| a["Checksum"].clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            checksums(),
            [json!(""), json!("abc")],
            "no document stored yet"
        );
        emu.put_document("Doc", "YAML", "v: 1");
        assert_eq!(checksums(), [json!(sha256_hex(b"v: 1")), json!("abc")]);
        emu.put_document("Doc", "YAML", "v: 2");
        assert_eq!(checksums(), [json!(sha256_hex(b"v: 2")), json!("abc")]);
    }

    #[test]
    fn final_status_sets_last_execution_date_and_statuses_keep_their_order() {
        let emu = Emulator::start(Default::default());
        let creds = role_credentials(&emu);
        let a = Association::new("Doc").output_to_s3("us-east-1", "bucket", "prefix");
        let id = a.association_id.clone();
        emu.add_association(a);
        let update = |r: Value| {
            let body = json!({"AssociationId": id, "InstanceId": INSTANCE, "ExecutionResult": r});
            call(&emu, &creds, STATUS, &body)
        };
        let listed = || {
            let body = json!({"InstanceId": INSTANCE});
            call(&emu, &creds, LIST, &body).json()["Associations"][0].clone()
        };
        assert_eq!(update(result("InProgress", 1_700_000_000.5)).status, 200);
        let during = listed();
        assert_eq!(during["DetailedStatus"], "InProgress");
        assert!(during.get("LastExecutionDate").is_none(), "{during}");
        assert_eq!(
            during["OutputLocation"]["S3Location"]["OutputS3BucketName"],
            "bucket"
        );
        assert_eq!(update(result("Success", 1_700_000_042.25)).status, 200);
        let after = listed();
        assert_eq!(after["DetailedStatus"], "Success");
        assert_eq!(after["LastExecutionDate"], 1_700_000_042.25);
        let statuses: Vec<Value> = emu
            .association_statuses(&id)
            .iter()
            .map(|r| r["Status"].clone())
            .collect();
        assert_eq!(statuses, [json!("InProgress"), json!("Success")]);
        assert!(emu.wait_until(Duration::ZERO, |st| st.association_statuses(&id).len() == 2));

        let long = json!({"Status": "Failed", "ExecutionDate": 1.0,
                          "ExecutionSummary": "x".repeat(MAX_EXECUTION_SUMMARY + 1)});
        assert_eq!(update(long).error_type(), "ValidationException");
        let text_date = json!({"Status": "Failed", "ExecutionDate": "yesterday",
                               "ExecutionSummary": "s"});
        assert_eq!(update(text_date).error_type(), "SerializationException");
        assert_eq!(
            emu.association_statuses(&id).len(),
            2,
            "refused updates are not kept"
        );
    }

    #[test]
    fn unknown_or_removed_association_does_not_exist() {
        let emu = Emulator::start(Default::default());
        let creds = role_credentials(&emu);
        let a = Association::new("Doc");
        let id = a.association_id.clone();
        emu.add_association(a);
        assert!(emu.remove_association(&id));
        assert!(!emu.remove_association(&id));
        let body = json!({"AssociationId": id, "InstanceId": INSTANCE,
                          "ExecutionResult": result("Success", 1.0)});
        let resp = call(&emu, &creds, STATUS, &body);
        assert_eq!(resp.status, 400);
        assert_eq!(resp.error_type(), "AssociationDoesNotExist");
        assert_eq!(
            resp.json()["message"],
            "The specified association doesn't exist."
        );
        assert!(emu.association_statuses(&id).is_empty());
    }

    #[test]
    fn compliance_puts_are_recorded_and_faults_apply() {
        let emu = Emulator::start(Default::default());
        let creds = role_credentials(&emu);
        let body = json!({
            "ResourceId": INSTANCE, "ResourceType": "ManagedInstance",
            "ComplianceType": "Association",
            "ExecutionSummary": {"ExecutionTime": 1_700_000_000.0},
            "Items": [{"Id": "assoc-1", "Severity": "UNSPECIFIED", "Status": "COMPLIANT"}],
            "UploadType": "COMPLETE",
        });
        let target = "AmazonSSM.PutComplianceItems";
        emu.fail_next(1, 500, "InternalServerError");
        assert_eq!(call(&emu, &creds, target, &body).status, 500);
        assert!(
            emu.compliance_puts().is_empty(),
            "a faulted call never reached the operation"
        );
        assert_eq!(call(&emu, &creds, target, &body).status, 200);
        assert_eq!(emu.compliance_puts(), std::slice::from_ref(&body));
        let mut no_summary = body;
        no_summary
            .as_object_mut()
            .unwrap()
            .remove("ExecutionSummary");
        assert_eq!(
            call(&emu, &creds, target, &no_summary).error_type(),
            "ValidationException"
        );
        assert_eq!(emu.compliance_puts().len(), 1);
    }
}
