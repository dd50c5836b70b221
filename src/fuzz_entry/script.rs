//! What the relay fuzz targets share: the input read as a script of small numbers and byte
//! strings, a paused single-thread runtime to play it on, and the markers that tell whose
//! bytes are whose.

use std::future::Future;

use tokio::time::Duration;

use crate::pool::scripted::Peer;

/// The input, consumed front to back; once it is used up every read is `None` and the script
/// ends.
#[derive(Debug)]
pub struct Script<'a> {
    rest: &'a [u8],
}

impl<'a> Script<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(b)
    }

    /// A length byte, then up to that many bytes.
    pub fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::from(self.byte()?).min(self.rest.len());
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Some(taken)
    }

    /// A pause the script asks for: short ones let tasks settle, long ones fire the relay's
    /// timers (idle shrink, reset, borrow and query timeouts).
    pub fn pause(&mut self) -> Option<Duration> {
        const PAUSES: [u64; 6] = [10, 300, 1_100, 3_000, 6_000, 70_000];
        let at = usize::from(self.byte()?) % PAUSES.len();
        Some(Duration::from_millis(PAUSES[at]))
    }
}

/// Runs `play` on a single-thread runtime whose clock is paused: time moves only when every
/// task waits, straight to the next timer, so a script's 70 s pass in microseconds and each
/// input plays the same way every time.
pub fn play<F: Future<Output = ()>>(play: F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap_or_else(|e| panic!("a runtime: {e}"));
    rt.block_on(play);
}

/// Lets every task run until all of them wait, then lets `d` of virtual time pass.
pub async fn settle(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The text session `s` puts in each of its requests, and a server echoes in its rows.
pub fn marker(s: usize) -> String {
    format!("~s{s}~")
}

/// The sessions whose markers appear in `bytes`, in order. A plain scan: a `memcmp` per
/// window would be traced by libFuzzer and cost a run most of its time.
pub fn markers_in(bytes: &[u8], sessions: usize) -> impl Iterator<Item = usize> + '_ {
    bytes.windows(4).filter_map(move |w| match w {
        [b'~', b's', d, b'~'] if d.is_ascii_digit() && usize::from(d - b'0') < sessions => {
            Some(usize::from(d - b'0'))
        }
        _ => None,
    })
}

/// Bytes the fuzzer makes up, with no marker in them: a made-up message may be anything but
/// another session's data.
pub fn unmarked(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .map(|&b| if b == b'~' { b'.' } else { b })
        .collect()
}

/// Whether `SLUICE_FUZZ_TRACE` is set: the relay targets then print each step and message, to
/// read a finding (`SLUICE_FUZZ_TRACE=1 cargo fuzz run -s none <target> <crash file>`).
pub fn tracing() -> bool {
    std::env::var_os("SLUICE_FUZZ_TRACE").is_some()
}

/// Reads what waits on `peer`: `false` once the other end closed.
pub fn drain(peer: &mut Peer) -> bool {
    loop {
        match peer.sock.read_some(&mut peer.buf, 1 << 16) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}
