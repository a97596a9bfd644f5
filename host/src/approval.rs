//! The approval broker: statements held for a human's approval, and the
//! answers that release them.
//!
//! When the policy chain says a statement needs approval, the session opens
//! a ticket here, the approval plugins tell the approvers (through the
//! host's Slack capability), and the session waits — the statement not
//! forwarded, nothing behind it forwarded either — until an answer, the
//! ticket's expiry or shutdown. Answers arrive as interactions (a Slack
//! callback, already authenticated by whoever received it) that an approval
//! plugin reads, and the broker enforces what the plugin cannot: a ticket is
//! answered once, before it expires, and never by the person who asked.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::plugin::bindings::approval::exports::sluice::gateway::approval::{Ticket, Verdict};
use crate::plugin::{Fault, PluginSet};

/// How a held statement's ticket ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Approved { approver: String },
    Denied { approver: String },
}

/// Why an answer was not applied.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no pending ticket {0:?} (answered, expired or never issued)")]
    UnknownTicket(String),
    #[error("{approver} asked for ticket {ticket} and may not approve it")]
    OwnRequest { approver: String, ticket: String },
    #[error("ticket {0} has expired")]
    Expired(String),
    #[error("no approval plugin understood the interaction")]
    NotUnderstood,
    #[error(transparent)]
    Plugin(#[from] Fault),
}

struct Pending {
    ticket: Ticket,
    respond: oneshot::Sender<Resolution>,
}

/// The tickets of this gateway's held statements.
#[derive(Default)]
pub struct Approvals {
    pending: Mutex<HashMap<String, Pending>>,
}

impl Approvals {
    /// A fresh, unguessable ticket id.
    pub fn new_ticket_id() -> String {
        let bytes: [u8; 16] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Registers a held statement's ticket; the receiver gets its answer.
    pub fn open(&self, ticket: Ticket) -> oneshot::Receiver<Resolution> {
        let (respond, answer) = oneshot::channel();
        self.lock()
            .insert(ticket.id.clone(), Pending { ticket, respond });
        answer
    }

    /// Forgets a ticket (its session stopped waiting).
    pub fn close(&self, id: &str) {
        self.lock().remove(id);
    }

    /// The tickets waiting for an answer.
    pub fn pending(&self) -> Vec<Ticket> {
        self.lock().values().map(|p| p.ticket.clone()).collect()
    }

    /// Applies an approver's verdict to a ticket.
    pub fn answer(&self, ticket_id: &str, verdict: Verdict) -> Result<Resolution, AnswerError> {
        let mut pending = self.lock();
        let ticket = &pending
            .get(ticket_id)
            .ok_or_else(|| AnswerError::UnknownTicket(ticket_id.to_owned()))?
            .ticket;
        let approver = match &verdict {
            Verdict::Approve(approver) | Verdict::Deny(approver) => approver.clone(),
        };
        if approver == ticket.requester.id {
            return Err(AnswerError::OwnRequest {
                approver,
                ticket: ticket_id.to_owned(),
            });
        }
        if now_ms() >= ticket.expires_at {
            return Err(AnswerError::Expired(ticket_id.to_owned()));
        }
        let entry = pending
            .remove(ticket_id)
            .expect("the ticket was found above, under the same lock");
        let resolution = match verdict {
            Verdict::Approve(approver) => Resolution::Approved { approver },
            Verdict::Deny(approver) => Resolution::Denied { approver },
        };
        tracing::info!(ticket = ticket_id, ?resolution, "approval answered");
        // The session may have stopped waiting a moment ago: then the
        // answer has no statement left to release.
        let _ = entry.respond.send(resolution.clone());
        Ok(resolution)
    }

    /// Hands an interaction (already authenticated by its receiver) to the
    /// approval plugins and applies the answer the first one reads in it.
    pub async fn interaction(
        &self,
        plugins: &PluginSet,
        payload: &str,
    ) -> Result<Resolution, AnswerError> {
        let answer = plugins
            .on_interaction(payload)
            .await?
            .ok_or(AnswerError::NotUnderstood)?;
        self.answer(&answer.ticket_id, answer.verdict)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::bindings::types::Principal;

    fn ticket(id: &str, expires_at: u64) -> Ticket {
        Ticket {
            id: id.to_owned(),
            requester: Principal {
                id: "agent".into(),
                groups: vec![],
                attributes: vec![],
            },
            statement_text: "DELETE FROM orders WHERE id = 1".into(),
            parameters: Vec::new(),
            tables: vec![],
            reason: "writes".into(),
            approver_group: "dba".into(),
            expires_at,
        }
    }

    #[tokio::test]
    async fn a_ticket_is_answered_once_by_someone_else_before_it_expires() {
        let approvals = Approvals::default();
        let far = now_ms() + 60_000;
        let answer = approvals.open(ticket("t1", far));
        assert!(matches!(
            approvals.answer("t1", Verdict::Approve("agent".into())),
            Err(AnswerError::OwnRequest { .. })
        ));
        assert_eq!(
            approvals
                .answer("t1", Verdict::Approve("alice".into()))
                .unwrap(),
            Resolution::Approved {
                approver: "alice".into()
            }
        );
        assert_eq!(
            answer.await.unwrap(),
            Resolution::Approved {
                approver: "alice".into()
            }
        );
        assert!(matches!(
            approvals.answer("t1", Verdict::Deny("bob".into())),
            Err(AnswerError::UnknownTicket(_))
        ));

        let _late = approvals.open(ticket("t2", now_ms() - 1));
        assert!(matches!(
            approvals.answer("t2", Verdict::Approve("alice".into())),
            Err(AnswerError::Expired(_))
        ));
        assert_eq!(approvals.pending().len(), 1);
        approvals.close("t2");
        assert!(approvals.pending().is_empty());
        assert_ne!(Approvals::new_ticket_id(), Approvals::new_ticket_id());
        assert_eq!(Approvals::new_ticket_id().len(), 32);
    }
}
