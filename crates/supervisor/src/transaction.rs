//! The configuration transactions: commit, automatic restore, `commit confirmed` with its
//! timer, confirm, rollback, finishing an interrupted commit, and the apply they share.
//!
//! Owns the transaction: validate → diff → commit a generation → render `running.yaml` →
//! apply to each service and check ([`Children::apply`](crate::services::Children)) → on
//! failure, commit a generation restoring the previous one and apply that; `commit confirmed`
//! arms a timer whose deadline is persisted in the store, so it survives a supervisor restart.
//! Transactions are serialized by the core's one async mutex (`Core::txn`). Must not start
//! processes (the services do) nor shape replies for requests that change nothing (`query`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tandem_store::{Generation, PendingConfirm, Store, StoreError};
use tracing::{error, warn};

use crate::core::Core;
use tandem_control::supervisor as wire;

use crate::reply::{Failure, Reply, data, store_failure, wire_changes, wire_pending};
use crate::state::{Severity, lock, now_ms};

#[cfg(test)]
mod tests;

/// Longest `commit confirmed` window accepted.
pub const MAX_CONFIRM_WINDOW: Duration = Duration::from_secs(24 * 3600);

impl Core {
    /// Start-up after a supervisor stopped in the middle of a transaction: `current` was
    /// committed but never applied and checked. Finishes the transaction as the commit would
    /// have: apply and check it, and when that fails restore the last generation that was
    /// applied and checked (as a new generation). Raises alarm `interrupted-commit` either way,
    /// so it does not pass silently.
    pub(crate) async fn finish_interrupted(
        &self,
        current: &Generation,
        i: tandem_store::Interrupted,
    ) {
        let n = current.meta.number;
        let who = &current.meta.author;
        warn!(
            generation = n,
            last_applied = i.last_applied,
            "the previous supervisor stopped before generation {n} was applied and checked; finishing the transaction"
        );
        self.event(&format!(
            "generation {n} (committed by {who}) was never applied and checked: the supervisor stopped during the transaction; applying and checking it now"
        ));
        let prev = match self.store(|s| s.generation(i.last_applied)) {
            Ok(g) => Some(g),
            Err(e) => {
                warn!(generation = i.last_applied, cause = %e, "the last applied generation cannot be read; trying the parent");
                current
                    .meta
                    .parent
                    .and_then(|p| self.store(|s| s.generation(p)).ok())
            }
        };
        let outcome = match self.apply(current, None).await {
            Ok(()) => "it was applied and checked at start and runs now".to_owned(),
            Err(cause) => {
                let f = self
                    .restore_after_failure(current, prev.as_ref(), &cause)
                    .await;
                let _ = self.store(Store::clear_pending_confirm);
                f.error
            }
        };
        self.shared.raise(
            "interrupted-commit",
            Severity::Warning,
            format!(
                "the supervisor stopped during the commit of generation {n} (by {who}), before it was checked; {outcome}; `show history` shows the generations"
            ),
        );
    }

    /// Renders `next` and applies it to every service, then checks (see `apply`).
    pub(crate) async fn apply(
        &self,
        next: &Generation,
        prev: Option<&Generation>,
    ) -> Result<(), String> {
        let socket = self.runtime_socket(&next.config);
        let text = self.store(|s| crate::sockets::render_running(s, next, &socket))?;
        self.store(|s| s.write_running(&text))
            .map_err(|e| format!("cannot render the running configuration: {e}"))?;
        self.apply_firewall(Some(&next.config))?;
        self.services.apply(next, prev).await?;
        // The transaction is finished: a restart from here on runs this generation as
        // checked (`Core::boot`).
        if let Err(e) = self.store(|s| s.mark_applied(next.meta.number)) {
            warn!(generation = next.meta.number, cause = %e, "cannot record the generation as applied");
        }
        self.event(&format!(
            "generation {} applied and checked",
            next.meta.number
        ));
        Ok(())
    }

    /// Commits `text` (or the candidate), applies it, restores the previous generation if
    /// applying fails; with `confirm_ms`, arms the automatic rollback. Then pushes the new
    /// generation to the peer and says whether it runs there (`nodes`, `peer`, `message`).
    pub async fn commit(
        self: &Arc<Self>,
        text: Option<String>,
        author: &str,
        comment: &str,
        confirm_ms: Option<u64>,
    ) -> Reply {
        data(self.commit_reply(text, author, comment, confirm_ms).await?)
    }

    async fn commit_reply(
        self: &Arc<Self>,
        text: Option<String>,
        author: &str,
        comment: &str,
        confirm_ms: Option<u64>,
    ) -> Result<wire::CommitReply, Failure> {
        let mut reply = self.commit_local(text, author, comment, confirm_ms).await?;
        // The transaction lock is released: the peer may push to us meanwhile.
        if reply.committed == Some(true) {
            self.sync_after_commit(&mut reply).await;
        }
        Ok(reply)
    }

    async fn commit_local(
        self: &Arc<Self>,
        text: Option<String>,
        author: &str,
        comment: &str,
        confirm_ms: Option<u64>,
    ) -> Result<wire::CommitReply, Failure> {
        if let Some(ms) = confirm_ms
            && (ms == 0 || ms > MAX_CONFIRM_WINDOW.as_millis() as u64)
        {
            return Err(Failure::new(
                format!("commit confirmed window of {ms} ms is out of range"),
                "use a duration from 1s to 24h, e.g. `config commit confirmed 5m`",
            ));
        }
        let _guard = self.txn.lock().await;
        let text = match text {
            Some(t) => t,
            None => self
                .store(Store::candidate)
                .map_err(store_failure)?
                .ok_or_else(|| {
                    Failure::new(
                        "there is no candidate to commit",
                        "start one with `config edit` or `config load FILE`",
                    )
                })?,
        };
        let loaded = self.store(|s| s.validate(&text)).map_err(store_failure)?;
        let prev = match self.store(Store::load_current) {
            Ok(g) => Some(g),
            Err(StoreError::Empty(_)) => None,
            Err(e) => return Err(store_failure(e)),
        };
        let changes = prev
            .as_ref()
            .map(|p| tandem_config::diff(&p.config, &loaded.config))
            .unwrap_or_default();
        if prev.is_some() && changes.is_empty() {
            // Nothing to change; a plain commit still confirms a pending one (like Junos).
            let confirmed = self.take_pending();
            let _ = self.store(Store::clear_candidate);
            return Ok(wire::CommitReply {
                committed: Some(false),
                message: Some("no changes; nothing committed".to_owned()),
                confirmed,
                generation: prev.as_ref().map(|p| p.meta.number),
                ..wire::CommitReply::default()
            });
        }
        let confirmed = self.take_pending();
        let info = self.info(author, comment);
        let next = self
            .store(|s| s.commit(&text, &info))
            .map_err(store_failure)?;
        self.event(&format!(
            "{author} committed generation {} ({} change{})",
            next.meta.number,
            changes.len(),
            if changes.len() == 1 { "" } else { "s" }
        ));
        // Recorded before applying, so a `commit confirmed` interrupted by a crash is still
        // reverted unless confirmed (`Core::boot` finishes the transaction and re-arms it).
        let pending = confirm_ms.zip(prev.as_ref()).map(|(ms, p)| PendingConfirm {
            generation: next.meta.number,
            restore: p.meta.number,
            deadline_ms: now_ms() + ms,
            author: author.to_owned(),
        });
        if let Some(p) = &pending {
            self.store(|s| s.set_pending_confirm(p))
                .map_err(store_failure)?;
        }
        crate::crash_point("after-commit");
        if let Err(cause) = self.apply(&next, prev.as_ref()).await {
            if pending.is_some() {
                let _ = self.store(Store::clear_pending_confirm);
            }
            // Keep the candidate: the operator fixes it and commits again.
            let _ = self.store(|s| s.set_candidate(&text));
            return Err(self
                .restore_after_failure(&next, prev.as_ref(), &cause)
                .await);
        }
        self.shared.clear("apply-failed");
        self.shared.clear("unconfigured");
        self.shared.clear("confirm-expired");
        self.shared.clear("interrupted-commit");
        self.shared.clear("store-repaired");
        let _ = self.store(Store::clear_candidate);
        let mut reply = wire::CommitReply {
            committed: Some(true),
            generation: Some(next.meta.number),
            fingerprint: Some(next.meta.fingerprint.clone()),
            changes: Some(wire_changes(&changes)),
            applied: Some(true),
            confirmed,
            nodes: Some(vec![self.node_label()]),
            warnings: Some(loaded.warnings.iter().map(ToString::to_string).collect()),
            ..wire::CommitReply::default()
        };
        if let (Some(ms), Some(mut pending)) = (confirm_ms, pending) {
            // The window counts from the end of the check, as the operator sees it.
            pending.deadline_ms = now_ms() + ms;
            self.store(|s| s.set_pending_confirm(&pending))
                .map_err(store_failure)?;
            self.arm_confirm(pending.clone());
            reply.pending_confirm = Some(wire_pending(pending));
        }
        Ok(reply)
    }

    /// After `failed` did not apply: commit the previous generation again and apply it.
    pub(crate) async fn restore_after_failure(
        &self,
        failed: &Generation,
        prev: Option<&Generation>,
        cause: &str,
    ) -> Failure {
        let n = failed.meta.number;
        error!(
            generation = n,
            cause, "apply failed, restoring the previous generation"
        );
        let Some(prev) = prev else {
            self.shared.raise(
                "apply-failed",
                Severity::Critical,
                format!("generation {n} failed to apply and there is no previous one: {cause}"),
            );
            return Failure::new(
                format!("generation {n} failed to apply: {cause}; there is no previous generation to restore"),
                "fix the configuration and commit again; `logs proxy` shows the services' view",
            )
            .with("generation", json!(n));
        };
        let comment = format!("automatic rollback: generation {n} failed to apply: {cause}");
        let restored = match self
            .store(|s| s.rollback(prev.meta.number, &self.info("auto-rollback", &comment)))
        {
            Ok(g) => g,
            Err(e) => {
                self.shared.raise(
                    "apply-failed",
                    Severity::Critical,
                    format!(
                        "generation {n} failed to apply and restoring generation {} failed: {e}",
                        prev.meta.number
                    ),
                );
                return store_failure(e);
            }
        };
        let reapply = self.apply(&restored, Some(failed)).await;
        let (severity, state) = match &reapply {
            Ok(()) => (Severity::Warning, "restored".to_owned()),
            Err(e) => (Severity::Critical, format!("restore also failed: {e}")),
        };
        self.shared.raise(
            "apply-failed",
            severity,
            format!(
                "generation {n} failed to apply ({cause}); generation {} was {state} as generation {}",
                prev.meta.number, restored.meta.number
            ),
        );
        self.event(&format!(
            "generation {n} failed to apply; restored generation {} as {}",
            prev.meta.number, restored.meta.number
        ));
        Failure::new(
            format!(
                "generation {n} failed to apply: {cause}; the previous configuration (generation {}) was restored as generation {}",
                prev.meta.number, restored.meta.number
            ),
            "nothing changed on the running system; fix the candidate (`config edit`) and commit again",
        )
        .with("generation", json!(n))
        .with("restored", json!(restored.meta.number))
        .with("restored_from", json!(prev.meta.number))
    }

    /// Clears a pending confirm (confirmed by an operator action) and disarms its timer.
    fn take_pending(&self) -> Option<u64> {
        if let Some(t) = lock(&self.confirm_timer).take() {
            t.abort();
        }
        let pending = self.store(Store::pending_confirm).ok().flatten();
        if pending.is_some() {
            let _ = self.store(Store::clear_pending_confirm);
        }
        pending.map(|p| p.generation)
    }

    pub(crate) fn arm_confirm(self: &Arc<Self>, pending: PendingConfirm) {
        let core = Arc::downgrade(self);
        let wait = Duration::from_millis(pending.deadline_ms.saturating_sub(now_ms()));
        let task = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(core) = core.upgrade() {
                core.confirm_expired(pending.generation).await;
            }
        });
        if let Some(old) = lock(&self.confirm_timer).replace(task) {
            old.abort();
        }
    }

    async fn confirm_expired(&self, generation: u64) {
        let _guard = self.txn.lock().await;
        let Ok(Some(p)) = self.store(Store::pending_confirm) else {
            return;
        };
        let current = self.store(Store::load_current).ok();
        if p.generation != generation || current.as_ref().map(|g| g.meta.number) != Some(generation)
        {
            let _ = self.store(Store::clear_pending_confirm);
            return;
        }
        let comment = format!(
            "automatic rollback: commit confirmed of generation {generation} was not confirmed in time"
        );
        let restored = match self
            .store(|s| s.rollback(p.restore, &self.info("auto-rollback", &comment)))
        {
            Ok(g) => g,
            Err(e) => {
                self.shared.raise(
                    "confirm-expired",
                    Severity::Critical,
                    format!("generation {generation} was not confirmed and restoring generation {} failed: {e}", p.restore),
                );
                return;
            }
        };
        let _ = self.store(Store::clear_pending_confirm);
        *lock(&self.confirm_timer) = None;
        let result = self.apply(&restored, current.as_ref()).await;
        self.shared.raise(
            "confirm-expired",
            if result.is_ok() { Severity::Warning } else { Severity::Critical },
            format!(
                "generation {generation} was not confirmed in time; generation {} was restored as generation {}{}",
                p.restore,
                restored.meta.number,
                result.err().map(|e| format!(" but did not apply: {e}")).unwrap_or_default()
            ),
        );
        self.event(&comment);
    }

    /// Confirms the pending `commit confirmed`.
    pub async fn confirm(&self) -> Reply {
        let _guard = self.txn.lock().await;
        match self.take_pending() {
            Some(g) => {
                self.event(&format!("generation {g} confirmed"));
                data(wire::Confirmed { confirmed: Some(g) })
            }
            None => Err(Failure::new(
                "there is no commit waiting for confirmation",
                "`config commit confirmed 5m` starts one; `status` shows pending confirms",
            )),
        }
    }

    /// Commits generation `n`'s text again and applies it (restoring on failure).
    pub async fn rollback(self: &Arc<Self>, n: u64, author: &str, comment: &str) -> Reply {
        let text = self.store(|s| s.generation(n)).map_err(store_failure)?.text;
        let comment = if comment.is_empty() {
            format!("rollback to generation {n}")
        } else {
            format!("rollback to generation {n}: {comment}")
        };
        let mut reply = self
            .commit_reply(Some(text), author, &comment, None)
            .await?;
        reply.restores = Some(n);
        data(reply)
    }
}
