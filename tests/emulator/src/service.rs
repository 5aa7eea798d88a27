//! Routes every request (IMDS, control interface, JSON 1.1 APIs), verifies signatures, applies
//! injected faults and writes the request log.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::faults::{Api, Fault};
use crate::http::{Outcome, Request, Response};
use crate::state::{HealthPing, RequestRecord, Shared, SigCheck};
use crate::util::http_date;
use crate::{
    associations, control, distributor, documents, imds, inventory, kms, logs, mds, mgs, onprem,
    parameters, s3, sigv4, sts,
};

const SSM_PREFIX: &str = "AmazonSSM";

/// What one request led to, for the log.
struct Handled {
    outcome: Outcome,
    target: String,
    signature: SigCheck,
    fault: Option<String>,
}

impl Handled {
    fn plain(target: &str, resp: Response) -> Handled {
        Handled {
            outcome: Outcome::Respond(resp),
            target: target.into(),
            signature: SigCheck::NotChecked,
            fault: None,
        }
    }
}

/// The server's request handler.
pub(crate) fn handle(shared: &Arc<Shared>, req: &Request) -> Outcome {
    let mut handled = route(shared, req);
    // Every answer is dated, as the real services' are: the agent corrects its clock from it.
    let date = http_date(shared.read(|st| st.now()));
    if let Outcome::Respond(r) | Outcome::Upgrade(r, _) = &mut handled.outcome {
        r.headers.push(("Date".into(), date));
    }
    let status = match &handled.outcome {
        Outcome::Respond(r) => r.status,
        Outcome::Close => 0,
        Outcome::Upgrade(r, _) => r.status,
    };
    let record = RequestRecord {
        at: Instant::now(),
        method: req.method.clone(),
        path: req.path.clone(),
        target: handled.target,
        status,
        signature: handled.signature,
        fault: handled.fault,
    };
    shared.update(|st| st.log.push(record));
    handled.outcome
}

fn route(shared: &Arc<Shared>, req: &Request) -> Handled {
    if s3::is_s3(req) {
        let (resp, signature) = shared.update(|st| s3::handle(st, req));
        let target = format!("s3 {} {}", req.method, req.path);
        Handled {
            signature,
            ..Handled::plain(&target, resp)
        }
    } else if let Some((outcome, signature)) = mgs::route(shared, req) {
        let target = format!("{} {}", req.method, req.path);
        Handled {
            outcome,
            target,
            signature,
            fault: None,
        }
    } else if req.path.starts_with("/latest/") {
        Handled::plain(&req.path, imds::handle(shared, req))
    } else if req.path.starts_with("/_emulator/") {
        Handled::plain(&req.path, control::handle(shared, req))
    } else if sts::is_query(req) {
        let (resp, signature) = shared.update(|st| sts::handle(st, req));
        Handled {
            signature,
            ..Handled::plain(sts::TARGET, resp)
        }
    } else if req.method == "POST" && req.path == "/" {
        json11(shared, req)
    } else {
        Handled::plain(
            &req.path,
            Response::text(404, format!("nothing at {}\n", req.path)),
        )
    }
}

/// How a JSON 1.1 operation is authenticated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// SigV4 with HMAC credentials the emulator issued.
    Hmac,
    /// SigV4 with a managed instance's RSA key (docs/protocol.md §5.5).
    Rsa,
    /// Anonymous (`RegisterManagedInstance`); an `Authorization` header is ignored.
    Unsigned,
    /// EC2 Default Host Management: HMAC with the instance identity credentials plus the
    /// instance's RSA signature of the `Authorization` value (docs/protocol.md §5.5).
    Dhmc,
}

/// The API family, operation, SigV4 service name and authentication of a known `X-Amz-Target`.
fn classify(target: &str) -> Option<(Api, &str, &'static str, Auth)> {
    let (prefix, op) = target.split_once('.')?;
    match prefix {
        mds::TARGET_PREFIX if mds::OPERATIONS.contains(&op) => {
            Some((Api::Mds, op, "ec2messages", Auth::Hmac))
        }
        SSM_PREFIX
            if matches!(
                op,
                "UpdateInstanceInformation"
                    | "GetParameters"
                    | "GetDocument"
                    | "DescribeDocument"
                    | "GetManifest"
                    | "PutConfigurePackageResult"
                    | "ListInstanceAssociations"
                    | "UpdateInstanceAssociationStatus"
                    | "PutComplianceItems"
                    | "PutInventory"
            ) =>
        {
            Some((Api::Ssm, op, "ssm", Auth::Hmac))
        }
        SSM_PREFIX if op == onprem::REGISTER => Some((Api::Ssm, op, "ssm", Auth::Unsigned)),
        SSM_PREFIX if onprem::RSA_SIGNED.contains(&op) => Some((Api::Ssm, op, "ssm", Auth::Rsa)),
        kms::TARGET_PREFIX if op == "Decrypt" => Some((Api::Kms, op, kms::SERVICE, Auth::Hmac)),
        logs::TARGET_PREFIX if logs::OPERATIONS.contains(&op) => {
            Some((Api::Logs, op, logs::SERVICE, Auth::Hmac))
        }
        _ => None,
    }
}

/// A JSON 1.1 call: signature, then faults, then the operation.
fn json11(shared: &Shared, req: &Request) -> Handled {
    let target = req.header("X-Amz-Target").unwrap_or_default();
    let Some((api, op, service, auth)) = classify(target) else {
        let msg = format!("X-Amz-Target {target:?} is not an operation this emulator knows");
        let resp = Response::aws_error(400, "UnknownOperationException", &msg);
        return Handled::plain(target, resp);
    };
    let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
    let auth = match auth {
        Auth::Unsigned if onprem::is_signed_registration(&body) => Auth::Hmac,
        Auth::Rsa if req.header(onprem::ASYMMETRIC_HEADER).is_some() => Auth::Dhmc,
        other => other,
    };
    let mut handled = Handled::plain(target, Response::text(500, ""));
    let now = shared.read(|st| st.now());
    let verified = match auth {
        Auth::Hmac => shared
            .read(|st| sigv4::verify(req, &st.options.region, service, now, |ak| st.key_info(ak))),
        Auth::Rsa => onprem::verify(shared, req, op, now),
        Auth::Dhmc => shared
            .read(|st| sigv4::verify(req, &st.options.region, service, now, |ak| st.key_info(ak)))
            .and_then(|_| onprem::verify_asymmetric(shared, req, op)),
        Auth::Unsigned => Ok(String::new()),
    };
    match verified {
        Err(e) => {
            handled.outcome = Outcome::Respond(Response::aws_error(e.status, e.code, &e.message));
            handled.signature = SigCheck::Failed(e.message);
        }
        Ok(caller) => {
            if auth != Auth::Unsigned {
                handled.signature = SigCheck::Ok;
            }
            handled.outcome =
                apply_faults(shared, api, op, &mut handled.fault).unwrap_or_else(|| {
                    Outcome::Respond(operation(shared, api, op, &caller, &req.body))
                });
        }
    }
    if op == onprem::ROLE_TOKEN {
        onprem::note_role_token(shared, req, &handled.signature, &handled.outcome);
    }
    handled
}

/// Sleeps for an injected delay, then returns the injected failure or drop, if any.
fn apply_faults(
    shared: &Shared,
    api: Api,
    op: &str,
    noted: &mut Option<String>,
) -> Option<Outcome> {
    if let Some(d) = shared.update(|st| st.faults.take_delay(api, op)) {
        *noted = Some(format!("injected delay {d:?}"));
        shared.sleep(d);
    }
    let fault = shared.update(|st| st.faults.take(api, op, Instant::now()))?;
    let desc = fault.describe();
    *noted = Some(
        noted
            .take()
            .map_or(desc.clone(), |d| format!("{d}; {desc}")),
    );
    Some(match fault {
        Fault::Drop => Outcome::Close,
        Fault::Fail { status, error_type } => Outcome::Respond(Response::aws_error(
            status,
            &error_type,
            "injected by the emulator",
        )),
    })
}

/// Runs an authenticated operation; `caller` is the managed instance of an RSA-signed call.
fn operation(shared: &Shared, api: Api, op: &str, caller: &str, body: &[u8]) -> Response {
    let body: Value = match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            let msg = "request body must be a JSON object";
            return Response::aws_error(400, "SerializationException", msg);
        }
    };
    match api {
        Api::Mds => mds::handle(shared, op, &body),
        Api::Ssm if op == "UpdateInstanceInformation" => update_instance_information(shared, body),
        Api::Ssm if op == "GetParameters" => {
            shared.update(|st| parameters::get_parameters(st, &body))
        }
        Api::Ssm if op == "GetDocument" => shared.update(|st| match st.distributor.has(&body) {
            true => distributor::get_document(st, &body),
            false => documents::get_document(st, &body),
        }),
        Api::Ssm if op == "DescribeDocument" => {
            shared.update(|st| distributor::describe_document(st, &body))
        }
        Api::Ssm if op == "GetManifest" => distributor::get_manifest(&body),
        Api::Ssm if op == "PutConfigurePackageResult" => {
            shared.update(|st| distributor::put_result(st, &body))
        }
        Api::Ssm if op == "ListInstanceAssociations" => {
            shared.update(|st| associations::list(st, &body))
        }
        Api::Ssm if op == "UpdateInstanceAssociationStatus" => {
            shared.update(|st| associations::update_status(st, &body))
        }
        Api::Ssm if op == "PutComplianceItems" => {
            shared.update(|st| associations::put_compliance_items(st, &body))
        }
        Api::Ssm if op == "PutInventory" => shared.update(|st| inventory::put_inventory(st, &body)),
        Api::Ssm => onprem::handle(shared, op, caller, &body),
        Api::Kms => shared.update(|st| kms::decrypt(st, &body)),
        Api::Logs => shared.update(|st| st.logs.handle(op, &body)),
    }
}

fn update_instance_information(shared: &Shared, body: Value) -> Response {
    if let Err(resp) = required(&body, "InstanceId", 10) {
        return resp;
    }
    let ping = HealthPing {
        arrived: Instant::now(),
        request: body,
    };
    shared.update(|st| st.health.push(ping));
    Response::json(200, &json!({}))
}

pub(crate) fn validation(field: &str, min: usize) -> Response {
    Response::aws_error(
        400,
        "ValidationException",
        &format!(
            "1 validation error detected: Value at '{field}' failed to satisfy constraint: \
             Member must be a string of length greater than or equal to {min}"
        ),
    )
}

/// The string field `field` of `body`, at least `min` characters long.
pub(crate) fn required<'a>(body: &'a Value, field: &str, min: usize) -> Result<&'a str, Response> {
    body[field]
        .as_str()
        .filter(|s| s.chars().count() >= min)
        .ok_or_else(|| validation(field, min))
}
