//! Faults switched on for a window of time ([`Emulator::fault_window`]), for soak tests: the
//! signed-call kinds live in `faults.rs`; the WebSocket kinds (drops, paused publication) are
//! driven here by a thread that ends with the window or when the emulator stops.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Emulator;
use crate::faults::FaultWindow;
use crate::session::SessionState;
use crate::state::{Shared, State};

/// How often the WebSocket driver looks for sessions that connected during its window.
const TICK: Duration = Duration::from_millis(50);

impl Emulator {
    /// Switches `fault` on for the next `d` (see [`FaultWindow`]); returns at once.
    pub fn fault_window(&self, fault: FaultWindow, d: Duration) {
        let until = Instant::now() + d;
        let on_calls = self
            .shared
            .update(|st| st.faults.open_window(&fault, until));
        if on_calls {
            return;
        }
        let shared = self.shared.clone();
        std::thread::Builder::new()
            .name("fault-window".into())
            .spawn(move || drive_websockets(&shared, &fault, until))
            .expect("cannot start the fault-window thread");
    }
}

/// Session ids whose data channel is up right now.
fn live_sessions(st: &State) -> Vec<String> {
    st.mgs
        .sessions
        .iter()
        .filter(|(_, s)| s.live())
        .map(|(id, _)| id.clone())
        .collect()
}

/// Drops the WebSockets every `every`, or pauses every live session's publication, until `until`.
fn drive_websockets(shared: &Arc<Shared>, fault: &FaultWindow, until: Instant) {
    let mut paused = HashSet::new();
    let mut next_drop = Instant::now();
    while Instant::now() < until && !shared.read(|st| st.stopping) {
        shared.update(|st| match fault {
            FaultWindow::WebSocketDrops { every } if Instant::now() >= next_drop => {
                next_drop = Instant::now() + *every;
                st.mgs.drop_control();
                each_session(st, &live_sessions(st), SessionState::request_drop);
            }
            FaultWindow::PausedPublication => {
                let new: Vec<String> = live_sessions(st)
                    .into_iter()
                    .filter(|id| paused.insert(id.clone()))
                    .collect();
                each_session(st, &new, |s| s.set_publication(false));
            }
            _ => {}
        });
        shared.sleep(TICK.min(until.saturating_duration_since(Instant::now())));
    }
    let paused: Vec<String> = paused.into_iter().collect();
    shared.update(|st| each_session(st, &paused, |s| s.set_publication(true)));
}

fn each_session(st: &mut State, ids: &[String], mut f: impl FnMut(&mut SessionState)) {
    for id in ids {
        if let Some(s) = st.mgs.sessions.get_mut(id) {
            f(s);
        }
    }
}
