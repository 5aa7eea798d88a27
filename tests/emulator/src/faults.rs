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
    /// Only `Logs_20140328.*` (CloudWatch Logs).
    Logs,
    /// Only this operation of ec2messages (e.g. `"SendReply"`), so the rest of it works.
    MdsOperation(&'static str),
}

/// The API family of a JSON 1.1 request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Mds,
    Ssm,
    Kms,
    Logs,
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
    /// Every signed call's connection is closed until then ([`FaultWindow::Reset`]).
    drop_until: Option<Instant>,
    /// Every signed call waits this long, until then ([`FaultWindow::Slow`]).
    slow_until: Option<(Instant, Duration)>,
    /// The emulator's clock runs ahead by this much, until then ([`FaultWindow::ClockJump`]).
    clock_until: Option<(Instant, Duration)>,
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
            drop_until: None,
            slow_until: None,
            clock_until: None,
        }
    }

    fn applies(&self, api: Api, op: &str) -> bool {
        match self.target {
            FaultTarget::Any => true,
            FaultTarget::Mds => api == Api::Mds,
            FaultTarget::Ssm => api == Api::Ssm,
            FaultTarget::Kms => api == Api::Kms,
            FaultTarget::Logs => api == Api::Logs,
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

    /// The delay to apply to this request: a slow window's, else one of `delay_next`.
    pub fn take_delay(&mut self, api: Api, op: &str) -> Option<Duration> {
        if !self.applies(api, op) {
            return None;
        }
        if let Some(d) = active(self.slow_until, Instant::now()) {
            return Some(d);
        }
        if self.delay_next == 0 {
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
        if self.drop_until.is_some_and(|until| now < until) {
            return Some(Fault::Drop);
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

    /// Switches on the signed-call side of `fault` until `until`; false for the kinds that act
    /// on the WebSockets instead (see `fault_windows.rs`).
    pub fn open_window(&mut self, fault: &FaultWindow, until: Instant) -> bool {
        match fault {
            FaultWindow::Fail { status, error_type } => {
                let fault = Fault::Fail {
                    status: *status,
                    error_type: error_type.clone(),
                };
                self.fail_until = Some((until, fault));
            }
            FaultWindow::Reset => self.drop_until = Some(until),
            FaultWindow::Slow(d) => self.slow_until = Some((until, *d)),
            FaultWindow::ClockJump(d) => self.clock_until = Some((until, *d)),
            FaultWindow::WebSocketDrops { .. } | FaultWindow::PausedPublication => return false,
        }
        true
    }

    /// How far ahead of the real clock the emulator's clock is at `now`.
    pub fn clock_offset(&self, now: Instant) -> Duration {
        active(self.clock_until, now).unwrap_or_default()
    }
}

/// The value of a window that is still open at `now`.
fn active(window: Option<(Instant, Duration)>, now: Instant) -> Option<Duration> {
    window.and_then(|(until, d)| (now < until).then_some(d))
}

/// A fault that [`crate::Emulator::fault_window`] switches on for a while, one kind at a time or
/// several at once (each kind has one window; opening it again moves its end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultWindow {
    /// Every signed JSON 1.1 call is answered `status` with `{"__type": error_type}`.
    Fail { status: u16, error_type: String },
    /// Every signed JSON 1.1 call has its connection closed without an answer.
    Reset,
    /// Every signed JSON 1.1 call is answered only after this long.
    Slow(Duration),
    /// The control channel and every live data channel are closed abruptly, again `every` while
    /// the window is open (the agent reconnects each time).
    WebSocketDrops { every: Duration },
    /// Every session with a live data channel gets `pause_publication` (sessions connecting
    /// during the window too); all of them get `start_publication` when it ends.
    PausedPublication,
    /// The emulator's clock (signature dates, credential expiry; MGS and JSON 1.1) runs ahead
    /// by this much: what the service sees of an agent whose clock jumped back.
    ClockJump(Duration),
}

impl FaultWindow {
    /// 503 ServiceUnavailable.
    pub fn server_error() -> FaultWindow {
        FaultWindow::fail(503, "ServiceUnavailable")
    }

    /// 400 ThrottlingException.
    pub fn throttling() -> FaultWindow {
        FaultWindow::fail(400, "ThrottlingException")
    }

    /// 400 ExpiredTokenException: a credential error, not retryable by the SDKs' rules.
    pub fn expired_token() -> FaultWindow {
        FaultWindow::fail(400, "ExpiredTokenException")
    }

    fn fail(status: u16, error_type: &str) -> FaultWindow {
        FaultWindow::Fail {
            status,
            error_type: error_type.into(),
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

    #[test]
    fn windows_open_and_close_each_kind() {
        let mut f = Faults::new(FaultTarget::Any);
        let now = Instant::now();
        let until = now + Duration::from_secs(60);
        assert!(f.open_window(&FaultWindow::Reset, until));
        assert!(f.open_window(&FaultWindow::Slow(Duration::from_millis(5)), until));
        assert!(f.open_window(&FaultWindow::ClockJump(Duration::from_secs(600)), until));
        assert!(!f.open_window(&FaultWindow::PausedPublication, until));
        assert_eq!(f.take(Api::Kms, "Decrypt", now), Some(Fault::Drop));
        assert_eq!(
            f.take(Api::Kms, "Decrypt", now),
            Some(Fault::Drop),
            "a window, not a count"
        );
        assert_eq!(
            f.take_delay(Api::Ssm, "UpdateInstanceInformation"),
            Some(Duration::from_millis(5))
        );
        assert_eq!(f.clock_offset(now), Duration::from_secs(600));
        let after = until + Duration::from_secs(1);
        assert_eq!(f.take(Api::Kms, "Decrypt", after), None);
        assert_eq!(f.clock_offset(after), Duration::ZERO);
    }
}
