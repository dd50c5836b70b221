//! The session's last simple Query and Parse texts and what their pinning scans found
//! (`session::memo`): a text with a `$` may open a dollar quote, whose tag's digits matter, so
//! it is shared only with the very same text.

use crate::postgres::pinning::{Effects, effects};
use crate::session::memo::Memos;

/// What a busy session remembers of its last scans; dropped when it parks.
#[derive(Debug, Default)]
pub(super) struct Scans {
    pub(super) query: Memos<Effects>,
    pub(super) parse: Memos<Effects>,
}

/// `text`'s effects, from `memos` when a remembered text scans alike (the pinning scan was a
/// tenth of the relay's instructions for a short query: callgrind, pgbench `-S`).
pub(super) fn effects_of(memos: &mut Memos<Effects>, text: &[u8]) -> Effects {
    if let Some(found) = memos.recall(text, |_| true) {
        return found;
    }
    let found = effects(text);
    memos.keep(text, found, text.contains(&b'$'));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every text here, with its digits changed, must scan as it does: a pinned statement
    /// answered from a remembered unpinned one would lose its pin silently.
    #[test]
    fn a_text_with_other_digits_scans_alike_or_is_scanned() {
        let texts = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 12345;",
            "select pg_advisory_lock(1)",
            "select pg_try_advisory_lock_shared(42)",
            "create temp table t1 (a int)",
            "select * into temp t2 from x where id = 7",
            "select 1; listen c1",
            "select '1; listen c'",
            "select e'\\'1'; set x = 1",
            "select 1 -- 2\n; load 'x'",
            "select /* 1 */ 2; prepare p1 as select 1",
            "select $a1$ x $a1$; listen y",
            "select $1$ x $1$; listen y",
            "select $a1$ ; listen y $a2$",
            "declare c1 cursor with hold for select 1",
            "set search_path = s1",
            "select set_config('a.b', '1', false)",
            "update t set a = 1 where id = 2",
            "deallocate p1",
            "SELECT 1e5, x1y2 FROM t3",
        ];
        for text in texts {
            for other in crate::session::memo::renumberings(text.as_bytes()) {
                let mut memos = Memos::default();
                assert_eq!(
                    effects_of(&mut memos, text.as_bytes()),
                    effects(text.as_bytes())
                );
                let got = effects_of(&mut memos, &other);
                let shown = String::from_utf8_lossy(&other);
                assert_eq!(got, effects(&other), "{text} then {shown}");
                // Answered from the memo (no second text kept) unless a `$` forbids it.
                let hit = memos.remembered() == 1;
                assert_eq!(
                    hit,
                    !text.contains('$') || other == text.as_bytes(),
                    "{shown}"
                );
            }
        }
    }

    #[test]
    fn a_dollar_quoted_text_is_shared_only_exactly() {
        // `$a1$ ; listen y $a2$` is one unterminated quote; `$a1$ ; listen y $a1$` a closed one
        // around the LISTEN: equal but for a digit, yet they scan differently.
        let open = b"select $a1$ ; listen y $a2$; listen z";
        let closed = b"select $a1$ ; listen y $a1$; listen z";
        assert_ne!(effects(open), effects(closed));
        let mut memos = Memos::default();
        effects_of(&mut memos, closed);
        assert_eq!(effects_of(&mut memos, open), effects(open));
        assert_eq!(effects_of(&mut memos, closed), effects(closed));
    }
}
