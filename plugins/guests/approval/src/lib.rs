//! Test plugin (approval): accepts every request for approval (logging
//! it), except one whose reason mentions `unreachable`, which it says it
//! cannot deliver; reads answers from plain-text interactions:
//!
//! ```text
//! approve <ticket-id> <approver>
//! deny <ticket-id> <approver>
//! ```

use sluice_plugin::approval::{Answer, Approval, Ticket, Verdict};
use sluice_plugin::log;

struct PlainText;

impl Approval for PlainText {
    fn request(ticket: &Ticket) -> Result<(), String> {
        if ticket.reason.contains("unreachable") {
            return Err("the approvers cannot be reached".to_owned());
        }
        log::info(format!(
            "ticket {} for {}: {}",
            ticket.id, ticket.approver_group, ticket.statement_text
        ));
        Ok(())
    }

    fn on_interaction(payload: &str) -> Option<Answer> {
        parse(payload)
    }
}

sluice_plugin::register_approval!(PlainText);

fn parse(payload: &str) -> Option<Answer> {
    let mut words = payload.split_whitespace();
    let (action, ticket, approver) = (words.next()?, words.next()?, words.next()?);
    if words.next().is_some() {
        return None;
    }
    let verdict = match action {
        "approve" => Verdict::Approve(approver.to_owned()),
        "deny" => Verdict::Deny(approver.to_owned()),
        _ => return None,
    };
    Some(Answer {
        ticket_id: ticket.to_owned(),
        verdict,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_text_answers() {
        let answer = parse("approve t1 alice").unwrap();
        assert_eq!(answer.ticket_id, "t1");
        assert_eq!(answer.verdict, Verdict::Approve("alice".into()));
        assert_eq!(
            parse("deny t1 bob").unwrap().verdict,
            Verdict::Deny("bob".into())
        );
        assert!(parse("approve t1").is_none());
        assert!(parse("maybe t1 alice").is_none());
        assert!(parse("approve t1 alice extra").is_none());
    }
}
