//! The MGS control channel (docs/protocol.md §4.2, §4.5): one thread keeps one websocket open to
//! `/v1/control-channel/<instance id>`, reconnecting with jittered back-off, pinging every 54 s,
//! and hands every incoming AgentMessage to a [`ControlHandler`]. Other threads send through a
//! [`ControlSender`], which queues frames and wakes the channel's `poll`.

use super::message::AgentMessage;
use super::rest::{self, MgsError};
use super::websocket::{Connection, Frame};
use crate::aws::credentials::CredentialsProvider;
use crate::aws::endpoint::Endpoint;
use crate::aws::http::HttpClient;
use crate::health::{Channel, ChannelHandle};
use crate::shutdown::Shutdown;
use crate::sync::lock;
use crate::sys::poll::{PollFd, Waker, poll};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PING_EVERY: Duration = Duration::from_secs(54);
/// No pong for this long after the last one (or the open) ends the connection (§4.2).
const PONG_DEADLINE: Duration = Duration::from_secs(114);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Reconnect back-off: upstream starts at 5–10 s and doubles to 40 min; ssm-lite caps at 5 min,
/// since an agent that cannot reach its control channel is one nobody can log in to.
const RETRY_FIRST: (u64, u64) = (5000, 9999);
const RETRY_CAP: Duration = Duration::from_secs(300);

/// Reacts to the control channel. Called on the control thread: keep each call short.
pub trait ControlHandler: Send + Sync {
    fn connected(&self, sender: &ControlSender);
    fn message(&self, message: AgentMessage, sender: &ControlSender);
    /// Something the handler wants done at `deadline` (e.g. re-sending unacknowledged replies).
    fn next_deadline(&self) -> Option<Instant> {
        None
    }
    fn tick(&self, _sender: &ControlSender) {}
}

/// Queues frames for the control channel from any thread.
#[derive(Clone)]
pub struct ControlSender {
    queue: Arc<Mutex<VecDeque<Vec<u8>>>>,
    waker: Waker,
}

impl ControlSender {
    pub fn new() -> std::io::Result<ControlSender> {
        Ok(ControlSender {
            queue: Arc::default(),
            waker: Waker::new()?,
        })
    }

    /// Queues `message`; it goes out on the current connection or the next one.
    pub fn send(&self, message: &AgentMessage) {
        lock(&self.queue).push_back(message.encode());
        self.waker.wake();
    }

    fn take(&self) -> Vec<Vec<u8>> {
        lock(&self.queue).drain(..).collect()
    }
}

pub struct ControlChannel {
    pub http: Arc<HttpClient>,
    pub endpoint: Endpoint,
    pub credentials: Arc<dyn CredentialsProvider>,
    pub instance_id: String,
    pub agent_version: String,
    pub channel: ChannelHandle,
    pub sender: ControlSender,
    pub shutdown: Shutdown,
}

/// Why a connection ended.
enum End {
    Shutdown,
    Lost(String),
}

impl ControlChannel {
    /// Connects and serves until shutdown, reconnecting whenever the channel is lost.
    pub fn run(&self, handler: &dyn ControlHandler) {
        self.shutdown.wake_on_trigger(self.sender.waker.clone());
        let mut failures: u32 = 0;
        while !self.shutdown.is_triggered() {
            match self.connect() {
                Ok(mut conn) => {
                    if failures > 0 {
                        log::info!(
                            "control channel: connected again after {failures} failed attempt(s)"
                        );
                    } else {
                        log::info!("control channel: connected");
                    }
                    failures = 0;
                    self.channel.set(Channel::SsmMessages);
                    handler.connected(&self.sender);
                    match self.serve(&mut conn, handler) {
                        End::Shutdown => return,
                        End::Lost(why) => {
                            log::warn!("control channel: connection lost: {why}; reconnecting")
                        }
                    }
                    // A short random pause before reconnecting, so a fleet does not stampede.
                    if self
                        .shutdown
                        .wait_timeout(Duration::from_millis(crate::random::between(0, 2500)))
                    {
                        return;
                    }
                }
                Err(e) => {
                    failures += 1;
                    if let MgsError::Refused {
                        access_denied: true,
                        ..
                    } = e
                    {
                        // §0: only an explicit AccessDenied switches Run Command back to ec2messages.
                        self.channel.set(Channel::Ec2Messages);
                    }
                    let delay = retry_delay(failures);
                    log::warn!(
                        "control channel: cannot connect ({e}); next attempt in {} s",
                        delay.as_secs()
                    );
                    if self.shutdown.wait_timeout(delay) {
                        return;
                    }
                }
            }
        }
    }

    fn connect(&self) -> Result<Connection, MgsError> {
        let id = &self.instance_id;
        let token = rest::create_control_channel(
            &self.http,
            &self.endpoint,
            self.credentials.as_ref(),
            id,
        )?;
        let url = rest::websocket_url(
            &self.endpoint,
            &format!("/v1/control-channel/{id}?role=subscribe&stream=input"),
        );
        let credentials = self.credentials.as_ref();
        let mut conn = rest::open_websocket(
            &self.http,
            &self.endpoint,
            credentials,
            &url,
            CONNECT_TIMEOUT,
        )?;
        let open = serde_json::json!({
            "Cookie": null,
            "MessageSchemaVersion": "1.0",
            "RequestId": crate::random::uuid_v4(),
            "TokenValue": token,
            "AgentVersion": self.agent_version,
            "PlatformType": "linux",
        });
        conn.send_text(open.to_string())
            .map_err(|e| MgsError::Transport(e.to_string()))?;
        Ok(conn)
    }

    /// One connection's life: wait on the socket and the waker, read, write, ping.
    fn serve(&self, conn: &mut Connection, handler: &dyn ControlHandler) -> End {
        let mut next_ping = Instant::now() + PING_EVERY;
        loop {
            if self.shutdown.is_triggered() {
                return End::Shutdown;
            }
            for frame in self.sender.take() {
                if let Err(e) = conn.send_binary(frame) {
                    return End::Lost(e.to_string());
                }
            }
            let now = Instant::now();
            if now >= next_ping {
                if let Err(e) = conn.send_ping(b"keepalive") {
                    return End::Lost(e.to_string());
                }
                next_ping = now + PING_EVERY;
            }
            if now.saturating_duration_since(conn.last_pong()) > PONG_DEADLINE {
                return End::Lost("no pong from the service within 114 s".into());
            }
            if handler.next_deadline().is_some_and(|d| d <= now) {
                handler.tick(&self.sender);
            }
            loop {
                match conn.read() {
                    Ok(Some(Frame::Binary(bytes))) => self.dispatch(&bytes, handler),
                    Ok(Some(Frame::Text(text))) => self.dispatch(text.as_bytes(), handler),
                    Ok(Some(Frame::Closed)) => return End::Lost("closed by the service".into()),
                    Ok(None) => break,
                    Err(e) => return End::Lost(e.to_string()),
                }
            }
            let deadline = [Some(next_ping), handler.next_deadline()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(next_ping);
            let mut fds = [
                PollFd::new(conn.fd(), true, conn.wants_write()),
                PollFd::new(self.sender.waker.fd(), true, false),
            ];
            match poll(
                &mut fds,
                Some(deadline.saturating_duration_since(Instant::now())),
            ) {
                Ok(_) => {}
                Err(e) => return End::Lost(format!("poll failed: {e}")),
            }
            if fds[1].readable {
                self.sender.waker.reset();
            }
            if fds[0].writable
                && let Err(e) = conn.flush()
            {
                return End::Lost(e.to_string());
            }
        }
    }

    fn dispatch(&self, bytes: &[u8], handler: &dyn ControlHandler) {
        match AgentMessage::decode(bytes) {
            Ok(message) => handler.message(message, &self.sender),
            Err(e) => log::warn!(
                "control channel: dropping a malformed frame of {} bytes: {e}",
                bytes.len()
            ),
        }
    }
}

/// 5–10 s, doubling, with up to +50 % jitter, capped (§4.2).
fn retry_delay(failures: u32) -> Duration {
    let first = crate::random::between(RETRY_FIRST.0, RETRY_FIRST.1);
    crate::random::backoff(first, failures, RETRY_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_starts_at_five_seconds_and_caps() {
        let d = retry_delay(1);
        assert!(
            d >= Duration::from_secs(5) && d <= Duration::from_secs(15),
            "{d:?}"
        );
        assert_eq!(retry_delay(40), RETRY_CAP);
    }
}
