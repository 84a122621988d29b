//! The approval policies of DESIGN §3, as pure functions of the votes so far.

use event_schemas::{ApprovalDecision, ApprovalOutcome, ApprovalPolicy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One approver's place: the approver it was opened for, who holds the vote now (the same,
/// or a delegate) and the vote once cast.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    pub approver: Uuid,
    pub holder: Uuid,
    pub decision: Option<ApprovalDecision>,
}

fn count(slots: &[Slot], decision: ApprovalDecision) -> usize {
    slots
        .iter()
        .filter(|s| s.decision == Some(decision))
        .count()
}

/// The outcome the votes settle under `policy`, or `None` while it is still open.
///
/// - any: the first vote decides;
/// - all: one rejection rejects, all approvals approve;
/// - quorum N: N approvals approve; rejected once the approvals plus the votes still open are
///   fewer than N;
/// - sequential: one rejection rejects, all approvals approve (the order is enforced on who may
///   vote, see [`awaiting`]).
///
/// With no slots at all it rejects: an approval nobody can give is not given.
pub fn outcome(policy: ApprovalPolicy, slots: &[Slot]) -> Option<ApprovalOutcome> {
    let approvals = count(slots, ApprovalDecision::Approve);
    let rejections = count(slots, ApprovalDecision::Reject);
    let open = slots.len() - approvals - rejections;
    match policy {
        ApprovalPolicy::Any => {
            if slots.is_empty() || rejections > 0 {
                Some(ApprovalOutcome::Rejected)
            } else if approvals > 0 {
                Some(ApprovalOutcome::Approved)
            } else {
                None
            }
        }
        ApprovalPolicy::All | ApprovalPolicy::Sequential => {
            if slots.is_empty() || rejections > 0 {
                Some(ApprovalOutcome::Rejected)
            } else if open == 0 {
                Some(ApprovalOutcome::Approved)
            } else {
                None
            }
        }
        ApprovalPolicy::Quorum(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if approvals >= n && n > 0 {
                Some(ApprovalOutcome::Approved)
            } else if approvals + open < n || n == 0 {
                Some(ApprovalOutcome::Rejected)
            } else {
                None
            }
        }
    }
}

/// Who may vote now: every holder of an open vote, except under `sequential`, where only the
/// first open vote in the listed order may be cast.
pub fn awaiting(policy: ApprovalPolicy, slots: &[Slot]) -> Vec<Uuid> {
    if outcome(policy, slots).is_some() {
        return Vec::new();
    }
    let mut open = slots.iter().filter(|s| s.decision.is_none());
    match policy {
        ApprovalPolicy::Sequential => open.next().map(|s| s.holder).into_iter().collect(),
        _ => open.map(|s| s.holder).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ApprovalDecision::{Approve, Reject};
    use ApprovalOutcome::{Approved, Rejected};

    fn slots(votes: &[Option<ApprovalDecision>]) -> Vec<Slot> {
        votes
            .iter()
            .enumerate()
            .map(|(i, decision)| {
                let id = Uuid::from_u128(i as u128 + 1);
                Slot {
                    approver: id,
                    holder: id,
                    decision: *decision,
                }
            })
            .collect()
    }

    #[test]
    fn any_takes_the_first_vote() {
        assert_eq!(outcome(ApprovalPolicy::Any, &slots(&[None, None])), None);
        assert_eq!(
            outcome(ApprovalPolicy::Any, &slots(&[None, Some(Approve)])),
            Some(Approved)
        );
        assert_eq!(
            outcome(ApprovalPolicy::Any, &slots(&[Some(Reject), None])),
            Some(Rejected)
        );
    }

    #[test]
    fn all_needs_every_approval_and_one_rejection_rejects() {
        let p = ApprovalPolicy::All;
        assert_eq!(outcome(p, &slots(&[Some(Approve), None])), None);
        assert_eq!(
            outcome(p, &slots(&[Some(Approve), Some(Approve)])),
            Some(Approved)
        );
        assert_eq!(outcome(p, &slots(&[None, Some(Reject)])), Some(Rejected));
    }

    #[test]
    fn a_quorum_rejects_as_soon_as_it_cannot_be_reached() {
        let p = ApprovalPolicy::Quorum(2);
        assert_eq!(outcome(p, &slots(&[Some(Reject), None, None])), None);
        assert_eq!(
            outcome(p, &slots(&[Some(Reject), Some(Reject), None])),
            Some(Rejected)
        );
        assert_eq!(
            outcome(p, &slots(&[Some(Approve), Some(Reject), None])),
            None
        );
        assert_eq!(
            outcome(p, &slots(&[Some(Approve), Some(Reject), Some(Approve)])),
            Some(Approved)
        );
        assert_eq!(
            outcome(p, &slots(&[Some(Approve), Some(Approve), None])),
            Some(Approved)
        );
        assert_eq!(outcome(p, &slots(&[None])), Some(Rejected));
    }

    #[test]
    fn sequential_offers_the_vote_in_order() {
        let p = ApprovalPolicy::Sequential;
        let mut s = slots(&[None, None, None]);
        assert_eq!(awaiting(p, &s), vec![Uuid::from_u128(1)]);
        s[0].decision = Some(Approve);
        assert_eq!(awaiting(p, &s), vec![Uuid::from_u128(2)]);
        s[1].decision = Some(Reject);
        assert_eq!(outcome(p, &s), Some(Rejected));
        assert!(awaiting(p, &s).is_empty());
        assert_eq!(
            awaiting(ApprovalPolicy::All, &slots(&[None, Some(Approve), None])).len(),
            2
        );
    }

    #[test]
    fn nobody_to_ask_is_a_rejection_under_every_policy() {
        for p in [
            ApprovalPolicy::Any,
            ApprovalPolicy::All,
            ApprovalPolicy::Sequential,
            ApprovalPolicy::Quorum(1),
        ] {
            assert_eq!(outcome(p, &[]), Some(Rejected), "{p}");
        }
    }
}
