//! The in-memory adapter of the event port, for tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{EventSink, JobStateChange, PublishReport};

/// Events kept in memory, for pure unit tests of the code that publishes them.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<JobStateChange>>,
    failing: AtomicBool,
}

impl MemorySink {
    /// An empty sink that accepts everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event published so far, in order.
    pub fn events(&self) -> Vec<JobStateChange> {
        self.lock().clone()
    }

    /// While `failing`, publishing keeps nothing and reports every event failed, as a bus
    /// that is down would: tests prove a transition survives it.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    fn lock(&self) -> MutexGuard<'_, Vec<JobStateChange>> {
        // Nothing panics while holding the lock, so a poisoned list is still whole.
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EventSink for MemorySink {
    async fn publish(&self, events: &[JobStateChange]) -> PublishReport {
        if self.failing.load(Ordering::SeqCst) {
            return PublishReport { published: 0, failed: events.len() };
        }
        self.lock().extend_from_slice(events);
        PublishReport { published: events.len(), failed: 0 }
    }
}
