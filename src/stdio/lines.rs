//! Lines in, lines out: the edge between the byte streams and the node.
//!
//! [`LineReader`] splits input into lines without ever holding more than `max` bytes of one
//! line: a longer line is skipped to its end and reported as [`Frame::TooLong`] with its first
//! bytes, so the node can still answer it. It tells a clean end of input (end of file after a
//! newline) from a cut-off last line ([`Frame::Cut`]).

use std::io::{self, BufRead, BufReader, Read};

use crate::protocol::{self, ErrorCode, Incoming};

/// How many bytes of an over-long line are kept to find its `src` and `msg_id`.
const HEAD_BYTES: usize = 4096;

/// One unit of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A whole line, without its newline.
    Line(Vec<u8>),
    /// A line longer than the limit: its first bytes and its full length.
    TooLong { head: Vec<u8>, len: usize },
    /// Input ended in the middle of a line: what there was of it.
    Cut(Vec<u8>),
}

pub struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
}

impl<R: Read> LineReader<R> {
    /// `max`: the longest line accepted, in bytes, without its newline.
    pub fn new(inner: R, max: usize) -> Self {
        Self::with_capacity(1 << 16, inner, max)
    }

    /// Like `new`, reading `capacity` bytes at a time.
    pub fn with_capacity(capacity: usize, inner: R, max: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(capacity, inner),
            max,
        }
    }

    /// Whether input is already buffered: the next frame can be (at least partly) read without
    /// waiting.
    pub fn has_buffered(&self) -> bool {
        !self.inner.buffer().is_empty()
    }

    /// The next frame; `None` at a clean end of input.
    pub fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut line = Vec::new();
        let mut len = 0usize;
        loop {
            let buf = match self.inner.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(match len {
                    0 => None,
                    _ if len > self.max => {
                        line.truncate(HEAD_BYTES);
                        Some(Frame::TooLong { head: line, len })
                    }
                    _ => Some(Frame::Cut(line)),
                });
            }
            let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            len += chunk.len();
            if len <= self.max {
                line.extend_from_slice(chunk);
            } else if line.len() < HEAD_BYTES {
                let room = HEAD_BYTES - line.len();
                line.extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
            self.inner.consume(used);
            if done {
                return Ok(Some(if len > self.max {
                    line.truncate(HEAD_BYTES);
                    Frame::TooLong { head: line, len }
                } else {
                    Frame::Line(line)
                }));
            }
        }
    }
}

/// What the node makes of an over-long line: a protocol error 12 if its head names a `src` and a
/// `msg_id`, else a line that cannot be answered.
pub fn too_long(head: &[u8], len: usize, max: usize) -> Incoming {
    let text = format!("the line is {len} bytes long; the limit is {max} bytes");
    protocol::identify(head, ErrorCode::MalformedRequest, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn frames(input: &[u8], max: usize) -> Vec<Frame> {
        // A tiny buffer, so that lines straddle many reads.
        let mut r = LineReader::with_capacity(3, input, max);
        std::iter::from_fn(|| r.next_frame().unwrap()).collect()
    }

    #[test]
    fn splits_lines_and_sees_a_clean_end() {
        assert_eq!(
            frames(b"ab\n\ncd\n", 10),
            vec![
                Frame::Line(b"ab".to_vec()),
                Frame::Line(vec![]),
                Frame::Line(b"cd".to_vec())
            ]
        );
    }

    #[test]
    fn reports_a_cut_off_last_line() {
        assert_eq!(
            frames(b"ab\ncd", 10),
            vec![Frame::Line(b"ab".to_vec()), Frame::Cut(b"cd".to_vec())]
        );
    }

    #[test]
    fn skips_over_long_lines_and_goes_on() {
        let f = frames(b"0123456789AB\nok\n", 10);
        assert_eq!(
            f[0],
            Frame::TooLong {
                head: b"0123456789AB".to_vec(),
                len: 12
            }
        );
        assert_eq!(f[1], Frame::Line(b"ok".to_vec()));
        assert_eq!(
            frames(b"0123456789AB", 10)[0],
            Frame::TooLong {
                head: b"0123456789AB".to_vec(),
                len: 12
            }
        );
    }

    #[test]
    fn an_over_long_line_keeps_only_its_head_even_at_the_end_of_input() {
        for input in [
            vec![b'x'; 5000],
            [vec![b'x'; 5000], b"\n".to_vec()].concat(),
        ] {
            match &frames(&input, 4500)[0] {
                Frame::TooLong { head, len } => {
                    assert_eq!((head.len(), *len), (HEAD_BYTES, 5000));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn answers_an_over_long_request_when_its_head_names_it() {
        let head = br#"{"src":"c1","dest":"n1","body":{"msg_id":7,"type":"command","command":{"payload":{"name":"xxxxx"#;
        match too_long(head, 5_000_000, 1024) {
            Incoming::Request(r) => {
                assert_eq!(r.src, "c1");
                assert_eq!(r.msg_id, Some(Value::from(7)));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            too_long(b"xxxx", 10, 5),
            Incoming::Unanswerable(_)
        ));
    }
}
