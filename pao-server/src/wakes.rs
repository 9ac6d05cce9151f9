//! Wake-ups of the WebSocket streams that follow one request: a stream waits on its request's
//! own channel, so an event wakes only the streams of its request (a thousand streams of other
//! requests do not read the store), whether this process appended it or another replica did
//! (the store's `LISTEN`/`NOTIFY` announcements, [`pao_core::store::Store::event_wakeups`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// Streams waiting, by request id.
#[derive(Default)]
pub struct Wakes {
    by_request: Mutex<HashMap<String, watch::Sender<u64>>>,
}

/// A stream's wait on its request; leaves the registry when dropped.
pub struct Wake {
    wakes: Arc<Wakes>,
    id: String,
    rx: watch::Receiver<u64>,
}

impl Wakes {
    /// Starts waiting on `id`'s events.
    pub fn watch(self: &Arc<Wakes>, id: &str) -> Wake {
        let mut map = self.by_request.lock().unwrap_or_else(|e| e.into_inner());
        let rx = map
            .entry(id.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe();
        Wake {
            wakes: self.clone(),
            id: id.to_string(),
            rx,
        }
    }

    /// Wakes the streams of request `id`; an empty id wakes every stream.
    pub fn wake(&self, id: &str) {
        let map = self.by_request.lock().unwrap_or_else(|e| e.into_inner());
        if id.is_empty() {
            map.values().for_each(|tx| tx.send_modify(|n| *n += 1));
        } else if let Some(tx) = map.get(id) {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Streams waiting, over all requests.
    pub fn waiting(&self) -> usize {
        let map = self.by_request.lock().unwrap_or_else(|e| e.into_inner());
        map.values().map(|tx| tx.receiver_count()).sum()
    }
}

impl Wake {
    /// Returns when the request had events since the last return (at once when it had some
    /// since [`Wakes::watch`] and none were waited for yet).
    pub async fn changed(&mut self) {
        // The sender lives as long as a receiver does: `changed` fails only if it was
        // removed, which `Drop` does for the last receiver only.
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for Wake {
    fn drop(&mut self) {
        let mut map = self
            .wakes
            .by_request
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // This receiver still counts until it is dropped, after this.
        if map.get(&self.id).is_some_and(|tx| tx.receiver_count() <= 1) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Whether `wake` fires within a short while.
    async fn woken(wake: &mut Wake) -> bool {
        tokio::time::timeout(Duration::from_millis(50), wake.changed())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn an_event_wakes_only_the_streams_of_its_request() {
        let wakes = Arc::new(Wakes::default());
        let (mut a1, mut a2, mut b) = (wakes.watch("a"), wakes.watch("a"), wakes.watch("b"));
        assert_eq!(wakes.waiting(), 3);
        wakes.wake("a");
        assert!(woken(&mut a1).await && woken(&mut a2).await);
        assert!(!woken(&mut b).await, "b had no event");
        // A wake between two waits is not lost.
        wakes.wake("b");
        assert!(woken(&mut b).await);
        assert!(!woken(&mut b).await, "one wake, one return");
        // An empty id wakes everyone (announcements may have been missed).
        wakes.wake("");
        assert!(woken(&mut a1).await && woken(&mut b).await);
        // Streams leave the registry with their last watcher.
        drop(a1);
        assert_eq!(wakes.waiting(), 2);
        drop(a2);
        drop(b);
        assert_eq!(wakes.waiting(), 0);
        assert!(wakes.by_request.lock().unwrap().is_empty());
        wakes.wake("a");
    }
}
