//! Where events go besides the store: WebSockets, logs, metrics. The store's event stream is
//! the durable record; an [`EventSink`] gets each event as it is appended, for live fan-out.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::store::EventKind;

/// An event as published live.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveEvent {
    /// The request.
    pub request_id: String,
    /// Its correlation id.
    pub correlation_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Receives every event the engine appends.
pub trait EventSink: Send + Sync {
    /// Called after the event is stored; must not block.
    fn publish(&self, event: LiveEvent);
}

/// Drops events.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopSink;

impl EventSink for NoopSink {
    fn publish(&self, _event: LiveEvent) {}
}

/// Fans events out to any number of subscribers (a slow subscriber misses events rather
/// than slowing the engine; it can catch up from the store by sequence number).
#[derive(Debug, Clone)]
pub struct BroadcastSink {
    tx: broadcast::Sender<LiveEvent>,
}

impl BroadcastSink {
    /// A sink keeping up to `capacity` events per slow subscriber.
    pub fn new(capacity: usize) -> BroadcastSink {
        BroadcastSink {
            tx: broadcast::channel(capacity.max(1)).0,
        }
    }

    /// A new subscriber.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }
}

impl EventSink for BroadcastSink {
    fn publish(&self, event: LiveEvent) {
        let _ = self.tx.send(event);
    }
}
