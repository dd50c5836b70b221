//! Spare I/O buffers of a runtime thread. A slow client's session drops its buffers a second
//! after each transaction and needs them again at its next; taken from the allocator each time,
//! that churn (jemalloc refilling and purging its thread cache) cost such a transaction more
//! instructions than relaying it. A few buffers kept here serve most of those sessions: the
//! relays' `BytesMut`s, and the MySQL relay's `Vec`s (its reply and rewrite buffers).

use std::cell::RefCell;
use std::thread::LocalKey;

use bytes::BytesMut;

/// What a buffer starts with: most requests and answers fit, and it is a small allocation.
pub const FIRST: usize = 4 << 10;
/// At most this many per thread (128 KiB): what a burst of sessions shrinking at once leaves
/// here, which 5,000 idle clients would share as 0.03 KiB each.
const KEEP: usize = 32;
const MIN_ROOM: usize = 1 << 10;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static SPARE_VEC: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// How much room to ask of `buf` for its next read: a spare buffer for one given back, the
/// room it has when that is at least 1 KiB (no growth: a spare buffer is not grown to `chunk`
/// for every read), else `chunk`.
pub fn read_room(buf: &mut BytesMut, chunk: usize) -> usize {
    ensure(buf);
    let room = buf.capacity() - buf.len();
    if room >= MIN_ROOM { room } else { chunk }
}

/// An empty buffer of at least `FIRST` bytes.
pub fn take() -> BytesMut {
    SPARE
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| BytesMut::with_capacity(FIRST))
}

/// `buf`, given a spare buffer first if it has none (dropped by a shrink).
pub fn ensure(buf: &mut BytesMut) {
    ensure_all([buf]);
}

/// Gives `buf` back for another session, if it is of the first size and its own (a buffer
/// grown for a large message goes back to the allocator, so none is kept large).
pub fn give(mut buf: BytesMut) {
    give_all([&mut buf]);
}

/// `give` for a session's buffers at once: one visit to the thread's list, since a session
/// between messages gives them all back every transaction. Empty ones (capacity 0) are skipped.
pub fn give_all<const N: usize>(bufs: [&mut BytesMut; N]) {
    SPARE.with_borrow_mut(|spare| {
        for buf in bufs {
            if buf.capacity() == 0 {
                continue;
            }
            if let Some(buf) = reusable(std::mem::take(buf))
                && spare.len() < KEEP
            {
                spare.push(buf);
            }
        }
    });
}

/// `ensure` for a session's buffers at once (one visit to the thread's list).
pub fn ensure_all<const N: usize>(bufs: [&mut BytesMut; N]) {
    if bufs.iter().all(|buf| buf.capacity() > 0) {
        return;
    }
    SPARE.with_borrow_mut(|spare| {
        for buf in bufs {
            if buf.capacity() == 0 {
                *buf = spare
                    .pop()
                    .unwrap_or_else(|| BytesMut::with_capacity(FIRST));
            }
        }
    });
}

/// How many spare buffers this thread holds (for tests of who gives them back, and when).
#[cfg(test)]
pub fn kept() -> usize {
    SPARE.with_borrow(Vec::len)
}

/// `kept` for the `Vec` list.
#[cfg(test)]
pub fn kept_vecs() -> usize {
    SPARE_VEC.with_borrow(Vec::len)
}

/// `buf` emptied, if it is of the first size and its own.
/// Reclaimed first: a buffer a message was split off (the MySQL relay's read buffer) has lost
/// that part's room until then, and would go to the allocator at every command.
fn reusable(mut buf: BytesMut) -> Option<BytesMut> {
    buf.clear();
    (buf.try_reclaim(FIRST) && buf.capacity() <= 2 * FIRST).then_some(buf)
}

/// Keeps `buf` in the thread's list `spare` unless it holds `KEEP` already.
fn keep<T: 'static>(spare: &'static LocalKey<RefCell<Vec<T>>>, buf: T) {
    spare.with_borrow_mut(|spare| {
        if spare.len() < KEEP {
            spare.push(buf);
        }
    });
}

/// `take` for a `Vec` (the MySQL relay's reply and rewrite buffers).
pub fn take_vec() -> Vec<u8> {
    SPARE_VEC
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(FIRST))
}

/// `give` for a `Vec`: kept only at the first size, so none is kept large.
pub fn give_vec(mut buf: Vec<u8>) {
    if !(FIRST..=2 * FIRST).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    keep(&SPARE_VEC, buf);
}

/// `buf`, given a spare `Vec` first if it has none (dropped by a shrink).
pub fn ensure_vec(buf: &mut Vec<u8>) {
    if buf.capacity() == 0 {
        *buf = take_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_again_and_a_large_one_is_not_kept() {
        let mut buf = take();
        assert!(buf.capacity() >= FIRST);
        buf.extend_from_slice(b"select 1");
        let at = buf.as_ptr();
        give(buf);
        let again = take();
        assert_eq!(again.as_ptr(), at, "the given buffer is reused");
        assert!(again.is_empty());
        let mut large = BytesMut::with_capacity(16 << 10);
        large.extend_from_slice(&[0; 100]);
        give(large);
        // (Not a pointer compare: the allocator may hand the freed memory out again.)
        assert_eq!(SPARE.with_borrow(Vec::len), 0, "a large buffer is not kept");
        assert!(take().capacity() <= 2 * FIRST);
    }

    #[test]
    fn a_given_vec_is_taken_again_and_a_large_one_is_not_kept() {
        let mut buf = Vec::new();
        ensure_vec(&mut buf);
        assert!(buf.capacity() >= FIRST);
        buf.extend_from_slice(b"select 1");
        let at = buf.as_ptr();
        give_vec(buf);
        let mut again = Vec::new();
        ensure_vec(&mut again);
        assert_eq!(again.as_ptr(), at, "the given vec is reused");
        assert!(again.is_empty());
        let large = Vec::<u8>::with_capacity(16 << 10);
        give_vec(large);
        assert_eq!(
            SPARE_VEC.with_borrow(Vec::len),
            0,
            "a large vec is not kept"
        );
        assert!(take_vec().capacity() <= 2 * FIRST);
        for _ in 0..KEEP + 8 {
            give_vec(Vec::with_capacity(FIRST));
        }
        assert_eq!(SPARE_VEC.with_borrow(Vec::len), KEEP);
        SPARE_VEC.with_borrow_mut(Vec::clear);
    }

    #[test]
    fn a_buffer_a_message_was_split_off_is_kept_whole_and_a_shared_one_is_not() {
        SPARE.with_borrow_mut(Vec::clear);
        let mut cin = take();
        cin.extend_from_slice(&[7; 100]);
        let packet = cin.split_to(60);
        give_all([&mut cin]);
        assert_eq!(SPARE.with_borrow(Vec::len), 0, "its start is still in use");
        drop(packet);
        let mut cin = take();
        cin.extend_from_slice(&[7; 100]);
        drop(cin.split_to(60));
        assert!(cin.capacity() < FIRST);
        give_all([&mut cin]);
        assert_eq!(cin.capacity(), 0, "given away");
        assert_eq!(SPARE.with_borrow(Vec::len), 1, "kept");
        let again = take();
        assert!(again.capacity() >= FIRST && again.is_empty());
    }

    #[test]
    fn at_most_keep_buffers_are_kept() {
        for _ in 0..KEEP + 8 {
            give(BytesMut::with_capacity(FIRST));
        }
        assert_eq!(SPARE.with_borrow(Vec::len), KEEP);
        SPARE.with_borrow_mut(Vec::clear);
    }
}
