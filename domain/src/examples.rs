//! The definitions DESIGN.md uses as examples, for tests, benchmarks and demos.

use uuid::Uuid;

/// The purchase-order definition of DESIGN §3, verbatim except that `USER-ID` (a placeholder
/// there) is replaced by `finance_user`: user ids in definitions are UUIDs.
pub fn purchase_order_json(finance_user: Uuid) -> String {
    PURCHASE_ORDER.replace("USER-ID", &finance_user.to_string())
}

const PURCHASE_ORDER: &str = r#"{
  "key": "purchase-order",
  "name": "Purchase order",
  "start": "review",
  "steps": {
    "review":   {"type": "task", "name": "Review request", "candidate_groups": ["clerks"], "due": "P2D",
                 "next": "route"},
    "route":    {"type": "decision", "rules": [{"when": "amount > 10000", "next": "board"}],
                 "default": "manager"},
    "manager":  {"type": "approval", "name": "Manager approval", "approvers": {"groups": ["managers"]},
                 "policy": "any", "approved": "checks", "rejected": "declined"},
    "board":    {"type": "approval", "name": "Board approval", "approvers": {"groups": ["board"]},
                 "policy": {"quorum": 2}, "approved": "checks", "rejected": "declined"},
    "checks":   {"type": "parallel", "branches": ["legal", "finance"], "join": "archive"},
    "legal":    {"type": "task", "name": "Legal check", "candidate_groups": ["legal"], "next": "archive"},
    "finance":  {"type": "task", "name": "Finance check", "assignee": "USER-ID", "next": "archive"},
    "archive":  {"type": "task", "name": "Archive", "candidate_groups": ["clerks"], "next": "done"},
    "done":     {"type": "end", "outcome": "approved"},
    "declined": {"type": "end", "outcome": "rejected"}
  }
}"#;
