//! A timeout whose deadline moves on every request and almost never fires.
//!
//! Owns: [`Deadline`], the clock origin of the atomics that store instants ([`epoch`]), and
//! the wait for shutdown ([`stopped`]). Moving a registered tokio timer means taking the timer driver's lock
//! and re-inserting the entry in the wheel; a keep-alive connection would do that several
//! times per request (head wait, server wait, client inactivity). Here, moving the deadline
//! only records it: the timer keeps its earlier deadline, and when that fires it is moved to
//! the recorded one (or reports the expiry). So a timer is re-armed about once per timeout
//! period instead of once per request.
//! Does not own: which timeout applies (the callers). A leaf: imports nothing of the crate.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

/// See the module doc.
pub(crate) struct Deadline {
    timer: Pin<Box<Sleep>>,
    at: Instant,
}

impl Deadline {
    /// A deadline at `at`.
    pub(crate) fn new(at: Instant) -> Self {
        Self {
            timer: Box::pin(tokio::time::sleep_until(at)),
            at,
        }
    }

    /// Moves the deadline (cheap: no timer operation).
    pub(crate) fn set(&mut self, at: Instant) {
        self.at = at;
    }

    /// Ready once the current deadline has passed; registers the waker otherwise.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.deadline() > self.at {
                // Moved earlier: the timer must follow now.
                self.timer.as_mut().reset(self.at);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.timer.deadline() >= self.at => return Poll::Ready(()),
                // Fired at an older deadline: re-arm at the current one.
                Poll::Ready(()) => self.timer.as_mut().reset(self.at),
            }
        }
    }
}

/// Origin of the `up_since` encoding (nanoseconds after it, plus one; 0 means "none").
pub(crate) fn epoch() -> std::time::Instant {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // Set before any server exists (see `ServerState::new`), and a minute early where the
    // clock allows, so every `now` the request path passes is after it.
    *EPOCH.get_or_init(|| {
        let now = std::time::Instant::now();
        now.checked_sub(std::time::Duration::from_secs(60))
            .unwrap_or(now)
    })
}

/// Completes once `rx` says the proxy is shutting down.
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// Runs `fut` unless `timer` fires first (`None`).
pub(crate) async fn before<F: Future>(timer: &mut Deadline, fut: F) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        timer.poll_expired(cx).map(|()| None)
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn fires_at_the_latest_deadline_set_and_not_before() {
        let start = Instant::now();
        let mut d = Deadline::new(start + Duration::from_secs(1));
        // Moved later several times before the first deadline.
        for ms in [1500, 2000, 3000] {
            d.set(start + Duration::from_millis(ms));
        }
        std::future::poll_fn(|cx| d.poll_expired(cx)).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        // Moved earlier: fires then.
        let now = Instant::now();
        d.set(now + Duration::from_secs(10));
        let _ = std::future::poll_fn(|cx| Poll::Ready(d.poll_expired(cx))).await;
        d.set(now + Duration::from_secs(2));
        std::future::poll_fn(|cx| d.poll_expired(cx)).await;
        assert_eq!(Instant::now() - now, Duration::from_secs(2));
    }
}
