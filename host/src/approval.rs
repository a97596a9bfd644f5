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
//! answered once, before it expires, by an approver of the configured
//! directory (`[approvals.approvers]`) who approves for the ticket's group,
//! and never by the principal who asked. The plugin only reads the name
//! (a Slack user ID, say) off the answer; the directory says whom that name
//! is and what they approve for, so neither a plugin's slip nor anyone who
//! can click in the channel decides who may approve.

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
    #[error("{0:?} is not an approver ([approvals.approvers])")]
    NotAnApprover(String),
    #[error("{name:?} answers through approval plugin {expected}, not {via}")]
    WrongChannel {
        name: String,
        expected: String,
        via: String,
    },
    #[error("{approver} does not approve for {group}, whose approval ticket {ticket} asks")]
    NotInGroup {
        approver: String,
        group: String,
        ticket: String,
    },
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

/// Who may answer tickets: by the name an approval plugin reads from an
/// answer, the principal that is and the groups it approves for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Approvers {
    by_name: HashMap<String, Approver>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Approver {
    principal: String,
    groups: Vec<String>,
    /// The approval plugin whose answers under this name count; any when
    /// `None`.
    through: Option<String>,
}

impl Approvers {
    /// Adds (or replaces) the approver known to plugins as `name`, whose
    /// answers count when read by the approval plugin `through` (any when
    /// `None`).
    pub fn insert(
        &mut self,
        name: String,
        principal: String,
        groups: Vec<String>,
        through: Option<String>,
    ) {
        let approver = Approver {
            principal,
            groups,
            through,
        };
        self.by_name.insert(name, approver);
    }

    /// Whether nobody may answer a ticket.
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// The tickets of this gateway's held statements.
#[derive(Default)]
pub struct Approvals {
    pending: Mutex<HashMap<String, Pending>>,
    approvers: Approvers,
}

impl Approvals {
    /// A broker taking answers from `approvers` only.
    pub fn new(approvers: Approvers) -> Approvals {
        Approvals {
            pending: Mutex::default(),
            approvers,
        }
    }

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

    /// Applies an approver's verdict, read by the approval plugin `via`,
    /// to a ticket.
    pub fn answer(
        &self,
        via: &str,
        ticket_id: &str,
        verdict: Verdict,
    ) -> Result<Resolution, AnswerError> {
        let mut pending = self.lock();
        let ticket = &pending
            .get(ticket_id)
            .ok_or_else(|| AnswerError::UnknownTicket(ticket_id.to_owned()))?
            .ticket;
        let (Verdict::Approve(name) | Verdict::Deny(name)) = &verdict;
        let approver = self
            .approvers
            .by_name
            .get(name)
            .ok_or_else(|| AnswerError::NotAnApprover(name.clone()))?;
        if let Some(expected) = approver.through.as_ref().filter(|p| *p != via) {
            return Err(AnswerError::WrongChannel {
                name: name.clone(),
                expected: expected.clone(),
                via: via.to_owned(),
            });
        }
        // On the record as the principal, with the plugin's name for them
        // where that is another.
        let known_as = if *name == approver.principal {
            approver.principal.clone()
        } else {
            format!("{} ({name})", approver.principal)
        };
        if approver.principal == ticket.requester.id {
            return Err(AnswerError::OwnRequest {
                approver: known_as,
                ticket: ticket_id.to_owned(),
            });
        }
        if !approver.groups.contains(&ticket.approver_group) {
            return Err(AnswerError::NotInGroup {
                approver: known_as,
                group: ticket.approver_group.clone(),
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
            Verdict::Approve(_) => Resolution::Approved { approver: known_as },
            Verdict::Deny(_) => Resolution::Denied { approver: known_as },
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
        let (via, answer) = plugins
            .on_interaction(payload)
            .await?
            .ok_or(AnswerError::NotUnderstood)?;
        self.answer(&via, &answer.ticket_id, answer.verdict)
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
                expires_at: None,
            },
            statement_text: "DELETE FROM orders WHERE id = 1".into(),
            parameters: Vec::new(),
            tables: vec![],
            reason: "writes".into(),
            approver_group: "dba".into(),
            expires_at,
        }
    }

    fn directory() -> Approvers {
        let mut approvers = Approvers::default();
        for (name, principal, groups, through) in [
            ("alice", "alice", vec!["dba"], None),
            ("bob", "bob", vec!["security", "dba"], None),
            ("agent", "agent", vec!["dba"], None),
            ("U0AGENT", "agent", vec!["dba"], None),
            ("U0CAROL", "carol", vec!["security"], None),
            ("U0DAVE", "dave", vec!["dba"], Some("slack")),
        ] {
            let groups = groups.into_iter().map(str::to_owned).collect();
            let through = through.map(str::to_owned);
            approvers.insert(name.to_owned(), principal.to_owned(), groups, through);
        }
        approvers
    }

    /// Only the directory's approvers answer, each for their own groups,
    /// and never for a statement their principal sent, whatever name the
    /// plugin read off the answer.
    #[tokio::test]
    async fn only_an_approver_of_the_tickets_group_answers_it() {
        let approvals = Approvals::new(directory());
        let _answer = approvals.open(ticket("t1", now_ms() + 60_000));
        for (name, refused) in [
            ("mallory", "\"mallory\" is not an approver"),
            ("U0AGENT", "agent (U0AGENT) asked for ticket t1"),
            ("U0CAROL", "carol (U0CAROL) does not approve for dba"),
        ] {
            let error = approvals
                .answer("approvers", "t1", Verdict::Approve(name.into()))
                .unwrap_err();
            assert!(error.to_string().contains(refused), "{error}");
        }
        // A name of one channel, read by another plugin, is not that person.
        let error = approvals
            .answer("approvers", "t1", Verdict::Approve("U0DAVE".into()))
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"U0DAVE\" answers through approval plugin slack, not approvers"),
            "{error}"
        );
        assert_eq!(approvals.pending().len(), 1, "no refused answer closed it");
        assert_eq!(
            approvals
                .answer("approvers", "t1", Verdict::Deny("bob".into()))
                .unwrap(),
            Resolution::Denied {
                approver: "bob".into()
            }
        );

        let _answer = approvals.open(ticket("t3", now_ms() + 60_000));
        assert_eq!(
            approvals
                .answer("slack", "t3", Verdict::Approve("U0DAVE".into()))
                .unwrap(),
            Resolution::Approved {
                approver: "dave (U0DAVE)".into()
            }
        );

        // With no directory, nobody answers.
        let approvals = Approvals::default();
        let _answer = approvals.open(ticket("t2", now_ms() + 60_000));
        assert!(matches!(
            approvals.answer("approvers", "t2", Verdict::Approve("alice".into())),
            Err(AnswerError::NotAnApprover(_))
        ));
    }

    #[tokio::test]
    async fn a_ticket_is_answered_once_by_someone_else_before_it_expires() {
        let approvals = Approvals::new(directory());
        let far = now_ms() + 60_000;
        let answer = approvals.open(ticket("t1", far));
        assert!(matches!(
            approvals.answer("approvers", "t1", Verdict::Approve("agent".into())),
            Err(AnswerError::OwnRequest { .. })
        ));
        assert_eq!(
            approvals
                .answer("approvers", "t1", Verdict::Approve("alice".into()))
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
            approvals.answer("approvers", "t1", Verdict::Deny("bob".into())),
            Err(AnswerError::UnknownTicket(_))
        ));

        let _late = approvals.open(ticket("t2", now_ms() - 1));
        assert!(matches!(
            approvals.answer("approvers", "t2", Verdict::Approve("alice".into())),
            Err(AnswerError::Expired(_))
        ));
        assert_eq!(approvals.pending().len(), 1);
        approvals.close("t2");
        assert!(approvals.pending().is_empty());
        assert_ne!(Approvals::new_ticket_id(), Approvals::new_ticket_id());
        assert_eq!(Approvals::new_ticket_id().len(), 32);
    }
}
