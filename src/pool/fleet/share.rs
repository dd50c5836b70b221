//! How a fleet divides its budget: the same pure function in every process, over the
//! advertisements all of them read from the database, so they agree without talking.
//!
//! Targets are max-min fair over what each member wants: every member first gets one pool
//! connection (so an idle one can serve its next client at once), then the rest is filled
//! level by level, a member that wants less leaving its part to the others. What nobody wants
//! stays unassigned, so an idle process holds little and a busy one grows as soon as it asks.
//!
//! Growth is two-phase: a member first advertises its larger claim, and only at its next read,
//! when every claim it sees leaves room, opens up to it. Of two members growing at once, the
//! later reader sees the earlier one's claim (each announces before it reads), so the claims
//! never add up past the budget; shrinking is immediate.

use super::ad::Ad;

/// Pool-connection targets for `members`, in their order: the fair division of what the
/// budget leaves after every member's overhead. Deterministic in the set of members.
pub fn targets(budget: usize, members: &[Ad]) -> Vec<usize> {
    let mut free = budget.saturating_sub(members.iter().map(|m| m.overhead).sum());
    let mut order: Vec<usize> = (0..members.len()).collect();
    order.sort_by_key(|&i| members[i].id);
    let mut t = vec![0; members.len()];
    for &i in &order {
        if free == 0 {
            break;
        }
        if members[i].want > 0 {
            t[i] = 1;
            free -= 1;
        }
    }
    loop {
        let mut hungry: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| t[i] < members[i].want)
            .collect();
        if hungry.is_empty() || free == 0 {
            break;
        }
        let each = free / hungry.len();
        if each == 0 {
            // Fewer connections than hungry members: the least served first, then by id.
            hungry.sort_by_key(|&i| (t[i], members[i].id));
            for &i in hungry.iter().take(free) {
                t[i] += 1;
            }
            break;
        }
        for &i in &hungry {
            let give = each.min(members[i].want - t[i]);
            t[i] += give;
            free -= give;
        }
    }
    t
}

/// This member's pool cap after a read: its target if that is lower than `cap` (at once),
/// else as far toward it as its own advertised claim and everyone else's leave room for.
/// `grow` is false when the read may have missed a claim (then the cap only shrinks).
pub fn next_cap(budget: usize, members: &[Ad], me: usize, cap: usize, grow: bool) -> usize {
    let target = targets(budget, members)[me];
    if target <= cap {
        return target;
    }
    if !grow {
        return cap;
    }
    let others: usize = members
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != me)
        .map(|(_, m)| m.overhead + m.claim.max(m.held))
        .sum();
    let room = budget.saturating_sub(others + members[me].overhead);
    target.min(members[me].claim).min(room).max(cap)
}
