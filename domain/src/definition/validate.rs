//! Whole-graph checks: targets exist, every step is reachable and can reach an end, parallel
//! branches reach their join, and no loop spins without waiting.

use std::collections::{HashMap, HashSet, VecDeque};

use super::model::{Step, StepKind};
use crate::error::{Issue, IssueCode};

/// Adds the graph's problems to `issues`. `complete` is false when some step could not be
/// parsed at all: then only the per-reference checks run, as the graph is not known.
pub(super) fn graph(
    start: &str,
    steps: &[Step],
    declared: &HashSet<String>,
    complete: bool,
    issues: &mut Vec<Issue>,
) {
    let mut known = complete && !start.is_empty();
    if !start.is_empty() && !declared.contains(start) {
        issues.push(Issue::new(
            None,
            Some("start"),
            IssueCode::UnknownTarget,
            format!("start names no step: {start:?}"),
        ));
        known = false;
    }
    let mut joins: HashMap<&str, &str> = HashMap::new();
    for step in steps {
        for (field, target) in step.targets() {
            if target.is_empty() {
                // Already reported as missing or empty.
                known = false;
            } else if !declared.contains(target) {
                issues.push(Issue::new(
                    Some(&step.id),
                    Some(&field),
                    IssueCode::UnknownTarget,
                    format!("{field} names no step: {target:?}"),
                ));
                known = false;
            }
        }
        if let StepKind::Parallel(p) = &step.kind {
            let mut seen = HashSet::new();
            for (i, branch) in p.branches.iter().enumerate() {
                if !seen.insert(branch) {
                    issues.push(Issue::new(
                        Some(&step.id),
                        Some(&format!("branches[{i}]")),
                        IssueCode::DuplicateBranch,
                        format!("branch {branch:?} is listed twice"),
                    ));
                }
            }
            let problem = if p.join == step.id {
                Some("a parallel cannot join on itself".to_owned())
            } else if p.branches.contains(&p.join) {
                Some("the join cannot also be a branch".to_owned())
            } else {
                joins
                    .insert(&p.join, &step.id)
                    .map(|other| format!("{:?} is already the join of parallel {other:?}", p.join))
            };
            if let Some(message) = problem {
                issues.push(Issue::new(
                    Some(&step.id),
                    Some("join"),
                    IssueCode::InvalidJoin,
                    message,
                ));
            }
        }
    }
    if !known {
        return;
    }

    let successors: HashMap<&str, Vec<&str>> = steps
        .iter()
        .map(|step| (step.id.as_str(), step.successors()))
        .collect();
    let reachable = reach(&successors, [start]);
    for step in steps {
        if !reachable.contains(step.id.as_str()) {
            issues.push(Issue::new(
                Some(&step.id),
                None,
                IssueCode::UnreachableStep,
                "no path from start leads to this step",
            ));
        }
    }

    let ends: Vec<&str> = steps
        .iter()
        .filter(|step| matches!(step.kind, StepKind::End(_)))
        .map(|step| step.id.as_str())
        .collect();
    if ends.is_empty() {
        issues.push(Issue::new(
            None,
            Some("steps"),
            IssueCode::NoEndStep,
            "a definition needs an end step",
        ));
    } else {
        let mut predecessors: HashMap<&str, Vec<&str>> = HashMap::new();
        for (from, tos) in &successors {
            for to in tos {
                predecessors.entry(to).or_default().push(from);
            }
        }
        let finishing = reach(&predecessors, ends);
        for step in steps {
            if reachable.contains(step.id.as_str()) && !finishing.contains(step.id.as_str()) {
                issues.push(Issue::new(
                    Some(&step.id),
                    None,
                    IssueCode::NoPathToEnd,
                    "no path from this step leads to an end step",
                ));
            }
        }
    }

    for step in steps {
        if let StepKind::Parallel(p) = &step.kind {
            for (i, branch) in p.branches.iter().enumerate() {
                if !reach(&successors, [branch.as_str()]).contains(p.join.as_str()) {
                    issues.push(Issue::new(
                        Some(&step.id),
                        Some(&format!("branches[{i}]")),
                        IssueCode::BranchNeverJoins,
                        format!("branch {branch:?} never reaches the join {:?}", p.join),
                    ));
                }
            }
        }
    }

    // Decisions and parallels do not wait: a cycle made of them alone would spin forever.
    let passing: HashMap<&str, Vec<&str>> = steps
        .iter()
        .filter(|step| matches!(step.kind, StepKind::Decision(_) | StepKind::Parallel(_)))
        .map(|step| (step.id.as_str(), step.successors()))
        .collect();
    let passing: HashMap<&str, Vec<&str>> = passing
        .iter()
        .map(|(id, tos)| {
            let tos = tos
                .iter()
                .copied()
                .filter(|to| passing.contains_key(to))
                .collect();
            (*id, tos)
        })
        .collect();
    for step in steps {
        let Some(next) = passing.get(step.id.as_str()) else {
            continue;
        };
        if reach(&passing, next.iter().copied()).contains(step.id.as_str()) {
            issues.push(Issue::new(
                Some(&step.id),
                None,
                IssueCode::LoopWithoutWait,
                "this step is on a loop of decisions and parallels with no task, approval or timer: it would never stop",
            ));
        }
    }
}

fn reach<'a>(
    edges: &HashMap<&'a str, Vec<&'a str>>,
    from: impl IntoIterator<Item = &'a str>,
) -> HashSet<&'a str> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut queue: VecDeque<&str> = from.into_iter().collect();
    while let Some(id) = queue.pop_front() {
        if seen.insert(id)
            && let Some(next) = edges.get(id)
        {
            queue.extend(next.iter().copied().filter(|n| !seen.contains(n)));
        }
    }
    seen
}
