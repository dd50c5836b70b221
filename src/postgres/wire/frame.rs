//! Framing of tagged messages (1-byte type + big-endian i32 length that counts itself).

use thiserror::Error;

/// Tag byte plus length word.
pub const FRAME_HEADER_LEN: usize = 5;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("message length {len} is invalid")]
    BadLength { len: i64 },
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("malformed {what} message")]
    Malformed { what: &'static str },
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
}

/// A complete frame found at the start of a buffer: its tag and total length (header included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub len: usize,
}

impl Frame {
    /// The body of this frame within `buf`, which must start at the frame.
    pub fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[FRAME_HEADER_LEN..self.len]
    }
}

/// The whole length (header included) the frame starting `buf` declares, once its header is
/// there; 0 for a length word below 4 (which `next_frame` reports as an error).
pub fn declared_len(buf: &[u8]) -> usize {
    if buf.len() < FRAME_HEADER_LEN {
        return 0;
    }
    let word = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if word < 4 { 0 } else { word as usize + 1 }
}

/// Looks at the start of `buf`: `Ok(None)` until a whole frame is there.
pub fn next_frame(buf: &[u8], max_len: usize) -> Result<Option<Frame>, WireError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if declared < 4 {
        return Err(WireError::BadLength {
            len: declared.into(),
        });
    }
    let len = declared as usize + 1;
    if len > max_len {
        return Err(WireError::TooLarge { len, max: max_len });
    }
    if buf.len() < len {
        return Ok(None);
    }
    Ok(Some(Frame { tag: buf[0], len }))
}

/// Iterates over the complete frames at the start of a buffer, leaving a partial tail.
#[derive(Debug)]
pub struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    max_len: usize,
}

impl<'a> Frames<'a> {
    pub fn new(buf: &'a [u8], max_len: usize) -> Self {
        Self {
            buf,
            pos: 0,
            max_len,
        }
    }

    /// Bytes consumed by the frames returned so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Frames<'a> {
    /// The frame's offset in the buffer and the frame.
    type Item = Result<(usize, Frame), WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        match next_frame(&self.buf[self.pos..], self.max_len) {
            Ok(Some(frame)) => {
                let at = self.pos;
                self.pos += frame.len;
                Some(Ok((at, frame)))
            }
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_partial_frames() {
        let mut buf = vec![b'Z', 0, 0, 0, 5, b'I'];
        buf.extend_from_slice(&[b'D', 0, 0, 0, 10, 1]);
        let mut frames = Frames::new(&buf, 1024);
        let (at, f) = frames.next().unwrap().unwrap();
        assert_eq!((at, f.tag, f.len), (0, b'Z', 6));
        assert_eq!(f.body(&buf), b"I");
        assert!(frames.next().is_none());
        assert_eq!(frames.consumed(), 6);
    }

    #[test]
    fn declared_length_of_a_partial_frame() {
        assert_eq!(declared_len(&[b'D', 0, 1, 0, 0]), 65537);
        assert_eq!(declared_len(&[b'D', 0, 0]), 0, "no header yet");
        assert_eq!(declared_len(&[b'Q', 0xff, 0xff, 0xff, 0xff]), 0, "negative");
    }

    #[test]
    fn bad_and_oversized_lengths() {
        assert_eq!(
            next_frame(&[b'Q', 0, 0, 0, 3], 100),
            Err(WireError::BadLength { len: 3 })
        );
        assert_eq!(
            next_frame(&[b'Q', 0xff, 0xff, 0xff, 0xff], 100),
            Err(WireError::BadLength { len: -1 })
        );
        assert_eq!(
            next_frame(&[b'Q', 0, 0, 1, 0], 100),
            Err(WireError::TooLarge { len: 257, max: 100 })
        );
    }
}
