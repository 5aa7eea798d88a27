//! Injected faults for the signed JSON 1.1 APIs (ec2messages, ssm and kms).

use std::time::{Duration, Instant};

/// Which APIs faults apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultTarget {
    #[default]
    Any,
    /// Only `EC2WindowsMessageDeliveryService.*` (ec2messages).
    Mds,
    /// Only `AmazonSSM.*`.
    Ssm,
    /// Only `TrentService.*` (kms).
    Kms,
    /// Only this operation of ec2messages (e.g. `"SendReply"`), so the rest of it works.
    MdsOperation(&'static str),
}

/// The API family of a JSON 1.1 request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Mds,
    Ssm,
    Kms,
}

/// What to do instead of (or before) answering normally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Fail { status: u16, error_type: String },
    Drop,
}

impl Fault {
    pub fn describe(&self) -> String {
        match self {
            Fault::Fail { status, error_type } => format!("injected {status} {error_type}"),
            Fault::Drop => "injected connection drop".into(),
        }
    }
}

pub(crate) struct Faults {
    pub target: FaultTarget,
    fail_next: Vec<Fault>,
    fail_until: Option<(Instant, Fault)>,
    drop_next: u32,
    delay_next: u32,
    delay: Duration,
}

impl Faults {
    pub fn new(target: FaultTarget) -> Faults {
        Faults {
            target,
            fail_next: Vec::new(),
            fail_until: None,
            drop_next: 0,
            delay_next: 0,
            delay: Duration::ZERO,
        }
    }

    fn applies(&self, api: Api, op: &str) -> bool {
        match self.target {
            FaultTarget::Any => true,
            FaultTarget::Mds => api == Api::Mds,
            FaultTarget::Ssm => api == Api::Ssm,
            FaultTarget::Kms => api == Api::Kms,
            FaultTarget::MdsOperation(name) => api == Api::Mds && op == name,
        }
    }

    pub fn fail_next(&mut self, n: u32, status: u16, error_type: &str) {
        let fault = Fault::Fail {
            status,
            error_type: error_type.into(),
        };
        self.fail_next
            .extend(std::iter::repeat_n(fault, n as usize));
    }

    pub fn fail_for(&mut self, d: Duration, status: u16, error_type: &str) {
        let fault = Fault::Fail {
            status,
            error_type: error_type.into(),
        };
        self.fail_until = Some((Instant::now() + d, fault));
    }

    pub fn drop_next(&mut self, n: u32) {
        self.drop_next += n;
    }

    pub fn delay_next(&mut self, n: u32, d: Duration) {
        self.delay_next = n;
        self.delay = d;
    }

    /// The delay to apply to this request, consuming one of `delay_next`.
    pub fn take_delay(&mut self, api: Api, op: &str) -> Option<Duration> {
        if !self.applies(api, op) || self.delay_next == 0 {
            return None;
        }
        self.delay_next -= 1;
        Some(self.delay)
    }

    /// The fault to apply to this request: drops first, then counted failures, then the window.
    pub fn take(&mut self, api: Api, op: &str, now: Instant) -> Option<Fault> {
        if !self.applies(api, op) {
            return None;
        }
        if self.drop_next > 0 {
            self.drop_next -= 1;
            return Some(Fault::Drop);
        }
        if !self.fail_next.is_empty() {
            return Some(self.fail_next.remove(0));
        }
        match &self.fail_until {
            Some((until, fault)) if now < *until => Some(fault.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_scope_and_window() {
        let mut f = Faults::new(FaultTarget::Mds);
        f.fail_next(1, 503, "ServiceUnavailable");
        f.drop_next(1);
        let now = Instant::now();
        assert_eq!(
            f.take(Api::Ssm, "x", now),
            None,
            "restricted to ec2messages"
        );
        assert_eq!(f.take(Api::Mds, "x", now), Some(Fault::Drop));
        assert!(matches!(
            f.take(Api::Mds, "x", now),
            Some(Fault::Fail { status: 503, .. })
        ));
        assert_eq!(f.take(Api::Mds, "x", now), None);
        f.fail_for(Duration::from_secs(60), 400, "ThrottlingException");
        assert!(f.take(Api::Mds, "x", now).is_some());
        assert_eq!(f.take(Api::Mds, "x", now + Duration::from_secs(61)), None);
        f.target = FaultTarget::MdsOperation("SendReply");
        f.fail_next(1, 407, "ProxyAuthenticationRequired");
        assert_eq!(
            f.take(Api::Mds, "GetMessages", now),
            None,
            "other operations work"
        );
        assert!(f.take(Api::Mds, "SendReply", now).is_some());
    }
}
