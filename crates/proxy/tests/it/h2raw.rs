//! A raw HTTP/2 client for the smuggling corpus: writes frames by hand, so it can send what
//! a real client library refuses to (connection-specific fields, `te: gzip`, a
//! `content-length` the data contradicts, pseudo-header mistakes).
//!
//! Owns: frame and HPACK encoding (literal fields without indexing, no Huffman), and a reader
//! that reports how the server ended stream 1: a `:status` (static table or a literal, the
//! Huffman code of digits included), `RST_STREAM`, `GOAWAY` or a close. Nothing else of
//! HPACK is decoded: one request per connection, so the status is always the first field.
//! Must not touch anything but the stream it is given.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The client connection preface (RFC 9113 section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
const ACK: u8 = 0x1;

/// How the server ended the request on stream 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response head with this status.
    Status(u16),
    /// `RST_STREAM` with this error code (a stream error: malformed request).
    Reset(u32),
    /// `GOAWAY` with this error code before any answer.
    GoAway(u32),
    /// The connection closed (or nothing came in time) before any answer.
    Closed,
}

/// One frame: type, flags, stream, payload.
fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(ty);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 section 5.1); `first` holds the flags.
fn int(out: &mut Vec<u8>, n: u8, first: u8, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing and with literal names.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        int(&mut out, 7, 0, name.len());
        out.extend_from_slice(name.as_bytes());
        int(&mut out, 7, 0, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The request on stream 1: the preface, empty settings, `fields` as one HEADERS frame, then
/// one DATA frame per entry of `data` (the stream ends with the last frame), then
/// `trailers` as a second HEADERS frame when given.
pub fn request(
    fields: &[(&str, &str)],
    data: &[&[u8]],
    trailers: Option<&[(&str, &str)]>,
) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let headers_end = data.is_empty() && trailers.is_none();
    let flags = END_HEADERS | if headers_end { END_STREAM } else { 0 };
    out.extend(frame(HEADERS, flags, 1, &block(fields)));
    for (i, d) in data.iter().enumerate() {
        let last = i + 1 == data.len() && trailers.is_none();
        out.extend(frame(DATA, if last { END_STREAM } else { 0 }, 1, d));
    }
    if let Some(t) = trailers {
        out.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(t)));
    }
    out
}

/// Decodes a Huffman-coded string of digits (RFC 7541 appendix B); `None` for anything else.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    // '0'..'2' are 5 bits (0..=2), '3'..'9' are 6 bits (0x19..=0x1f).
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        loop {
            if bits >= 5 && (acc >> (bits - 5)) & 0x1f <= 2 {
                out.push(char::from(b'0' + ((acc >> (bits - 5)) & 0x1f) as u8));
                bits -= 5;
            } else if bits >= 6
                && ((acc >> (bits - 6)) & 0x3f) >= 0x19
                && ((acc >> (bits - 6)) & 0x3f) <= 0x1f
            {
                out.push(char::from(
                    b'3' + (((acc >> (bits - 6)) & 0x3f) - 0x19) as u8,
                ));
                bits -= 6;
            } else {
                break;
            }
            acc &= (1 << bits) - 1;
        }
    }
    // What is left is padding: at most 7 one bits.
    (bits < 8 && acc == (1 << bits) - 1).then_some(out)
}

/// The `:status` at the start of a response header block.
fn status_of(block: &[u8]) -> Option<u16> {
    let first = *block.first()?;
    if first & 0x80 != 0 {
        // Indexed field of the static table (RFC 7541 appendix A).
        return match first & 0x7f {
            8 => Some(200),
            9 => Some(204),
            10 => Some(206),
            11 => Some(304),
            12 => Some(400),
            13 => Some(404),
            14 => Some(500),
            _ => None,
        };
    }
    // A literal whose name is static index 8 (`:status`), with or without indexing.
    if !matches!(first, 0x48 | 0x08 | 0x18) {
        return None;
    }
    let len_byte = *block.get(1)?;
    let len = usize::from(len_byte & 0x7f);
    let raw = block.get(2..2 + len)?;
    let text = if len_byte & 0x80 != 0 {
        huffman_digits(raw)?
    } else {
        String::from_utf8(raw.to_vec()).ok()?
    };
    text.parse().ok()
}

/// Sends `bytes` (a [`request`]) and reads until the server answers stream 1, resets it,
/// goes away, or `limit` passes.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    limit: Duration,
) -> Outcome {
    if s.write_all(bytes).await.is_err() {
        return Outcome::Closed;
    }
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            while buf.len() >= 9 {
                let len =
                    usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
                if buf.len() < 9 + len {
                    break;
                }
                let (ty, flags) = (buf[3], buf[4]);
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let payload: Vec<u8> = buf[9..9 + len].to_vec();
                buf.drain(..9 + len);
                match ty {
                    SETTINGS if flags & ACK == 0 => {
                        let acked = s.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                        if acked.is_err() {
                            return Outcome::Closed;
                        }
                    }
                    HEADERS if stream == 1 => {
                        let mut p = &payload[..];
                        if flags & PADDED != 0 {
                            let pad = usize::from(*p.first().unwrap_or(&0));
                            p = p.get(1..p.len().saturating_sub(pad)).unwrap_or_default();
                        }
                        if flags & PRIORITY != 0 {
                            p = p.get(5..).unwrap_or_default();
                        }
                        return status_of(p).map_or(Outcome::Closed, Outcome::Status);
                    }
                    RST_STREAM if stream == 1 && payload.len() >= 4 => {
                        return Outcome::Reset(u32::from_be_bytes([
                            payload[0], payload[1], payload[2], payload[3],
                        ]));
                    }
                    GOAWAY if payload.len() >= 8 => {
                        return Outcome::GoAway(u32::from_be_bytes([
                            payload[4], payload[5], payload[6], payload[7],
                        ]));
                    }
                    _ => {}
                }
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return Outcome::Closed,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or(Outcome::Closed)
}

#[test]
fn statuses_decode_from_static_entries_and_huffman_literals() {
    assert_eq!(status_of(&[0x88]), Some(200));
    assert_eq!(status_of(&[0x8c]), Some(400));
    // "502" Huffman-coded: 011011 00000 00010 (16 bits, no padding); "200" padded with ones.
    assert_eq!(
        status_of(&[0x48, 0x82, 0b0110_1100, 0b0000_0010]),
        Some(502)
    );
    assert_eq!(
        status_of(&[0x48, 0x82, 0b0001_0000, 0b0000_0001]),
        Some(200)
    );
    assert_eq!(status_of(&[0x48, 0x03, b'4', b'2', b'9']), Some(429));
    assert_eq!(huffman_digits(&[0x0f]), Some("1".to_owned()));
    assert_eq!(
        huffman_digits(&[0xff]),
        None,
        "8 bits of padding is an error"
    );
}
