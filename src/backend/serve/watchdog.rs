//! Backend layer (1): the deadline of one kura serve request. A pipe to
//! `ssh` has no read timeout, so a thread watches the request in flight
//! and kills the `ssh` child once the deadline passes; the blocked read or
//! write then ends (end of stream, broken pipe) and the request fails as
//! transient, to be retried on a new connection. Owns the invariant that
//! no request waits on a silent server longer than its timeout.

use std::process::Child;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The `ssh` process of a connection, shared with the watchdog.
pub type SharedChild = Arc<Mutex<Child>>;

/// Kills the process of a request that takes longer than its timeout.
pub struct Watchdog {
    shared: Arc<Shared>,
    timeout: Duration,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    deadline: Option<Instant>,
    child: Option<SharedChild>,
    fired: bool,
    stop: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Watchdog {
    /// A watchdog (and its thread) for requests of at most `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let watched = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("kura-serve-watchdog".into())
            .spawn(move || watch(&watched))
            .expect("starting the kura serve watchdog thread");
        Self { shared, timeout }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Starts the clock of a request on the connection of `child` (a
    /// connection without a process is never killed).
    pub fn arm(&self, child: Option<SharedChild>) {
        let mut state = self.shared.lock();
        state.deadline = Some(Instant::now() + self.timeout);
        state.child = child;
        state.fired = false;
        self.shared.wake.notify_all();
    }

    /// Stops the clock; whether the deadline passed and the process was
    /// killed.
    pub fn disarm(&self) -> bool {
        let mut state = self.shared.lock();
        state.deadline = None;
        state.child = None;
        state.fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
    }
}

fn watch(shared: &Shared) {
    let mut state = shared.lock();
    while !state.stop {
        let Some(deadline) = state.deadline else {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        let now = Instant::now();
        if now < deadline {
            state = shared
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            continue;
        }
        if let Some(child) = state.child.take() {
            let _ = child.lock().unwrap_or_else(PoisonError::into_inner).kill();
        }
        state.fired = true;
        state.deadline = None;
    }
}
