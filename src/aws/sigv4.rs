//! AWS Signature Version 4 (HMAC-SHA256), as the service verifies it.
//! STUB: interface fixed; implementation in progress.

use super::credentials::Credentials;
use std::time::SystemTime;

/// Signs a request: appends `X-Amz-Date`, `X-Amz-Security-Token` (when the credentials carry
/// one) and `Authorization` to `headers`. `headers` must already hold `Host` and every other
/// header that will be sent; `path_and_query` is the request target as sent (`/` or `/p?a=b`).
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    path_and_query: &str,
    headers: &mut Vec<(String, String)>,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    now: SystemTime,
) {
    let _ = (method, path_and_query, headers, body, credentials, region, service, now);
    todo!("sigv4::sign")
}
