//! Chunked transfer coding (RFC 9112 section 7.1): where a chunked body ends in a byte
//! stream, without decoding it (the bytes are relayed untouched).
//!
//! Owns: [`Chunks`], the incremental scanner. Sans-IO.

/// Finds the end of a chunked body in a byte stream (lenient about extensions and
/// trailers, strict about sizes and the CRLF after data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunks {
    /// In a chunk-size line: the size so far, its digit count, and whether an extension (or
    /// the line end) began.
    Size { size: u64, digits: u8, ext: bool },
    /// In chunk data: bytes left.
    Data(u64),
    /// After chunk data: expecting CR (`false`) or LF (`true`).
    DataEnd(bool),
    /// In the trailer section: bytes on the current line.
    Trailer(u32),
    /// The body ended.
    Done,
}

impl Chunks {
    pub(super) const START: Self = Self::Size {
        size: 0,
        digits: 0,
        ext: false,
    };

    /// Feeds body bytes; `Ok(Some(n))` when the body ends after the first `n` of them.
    pub(super) fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut i = 0;
        while i < data.len() {
            match *self {
                Self::Done => return Ok(Some(i)),
                Self::Data(n) => {
                    let take = n.min((data.len() - i) as u64);
                    i += take as usize;
                    *self = if n == take {
                        Self::DataEnd(false)
                    } else {
                        Self::Data(n - take)
                    };
                }
                Self::DataEnd(lf) => {
                    let want = if lf { b'\n' } else { b'\r' };
                    if data[i] != want {
                        return Err("chunk data not followed by crlf");
                    }
                    i += 1;
                    *self = if lf { Self::START } else { Self::DataEnd(true) };
                }
                Self::Size { size, digits, ext } => {
                    let b = data[i];
                    i += 1;
                    match b {
                        b'\n' => {
                            if digits == 0 {
                                return Err("empty chunk size");
                            }
                            *self = if size == 0 {
                                Self::Trailer(0)
                            } else {
                                Self::Data(size)
                            };
                        }
                        _ if ext => {}
                        b'\r' | b';' | b' ' | b'\t' => {
                            *self = Self::Size {
                                size,
                                digits,
                                ext: true,
                            }
                        }
                        _ => {
                            let d = (b as char).to_digit(16).ok_or("invalid chunk size")?;
                            if digits >= 16 {
                                return Err("chunk size too large");
                            }
                            *self = Self::Size {
                                size: size << 4 | u64::from(d),
                                digits: digits + 1,
                                ext: false,
                            };
                        }
                    }
                }
                Self::Trailer(n) => {
                    let b = data[i];
                    i += 1;
                    *self = match b {
                        b'\n' if n == 0 => Self::Done,
                        b'\n' => Self::Trailer(0),
                        b'\r' => Self::Trailer(n),
                        _ => Self::Trailer(n.saturating_add(1)),
                    };
                }
            }
        }
        Ok((*self == Self::Done).then_some(data.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_end_is_found_across_splits() {
        let body = b"5;ext=1\r\nhello\r\n10\r\n0123456789abcdef\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let end = body.len() - 4;
        for split in 0..body.len() {
            let mut c = Chunks::START;
            let first = c.feed(&body[..split]).expect("valid");
            let got = match first {
                Some(n) => n,
                None => split + c.feed(&body[split..]).expect("valid").expect("ends"),
            };
            assert_eq!(got, end, "split at {split}");
        }
        let mut c = Chunks::START;
        assert_eq!(c.feed(b"0\r\n\r\n"), Ok(Some(5)));
        for bad in [
            &b"zz\r\n"[..],
            b"5\r\nhelloXX",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            let mut c = Chunks::START;
            assert!(c.feed(bad).is_err(), "{bad:?}");
        }
    }
}
