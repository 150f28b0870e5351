//! A server's HTTP/1.1 response head: parsed, its body's framing decided (RFC 9112
//! section 6.3), and rewritten into the head the client gets.
//!
//! Owns: [`parse_response`], [`Framing`], [`ResponseHead`], and the response header limit.
//! Does not own: reading the head (`super::head`), relaying the body (`super::relay`).
//! Sans-IO.

use hyper::StatusCode;

use super::head::{connection_tokens, hop_by_hop, is, named_by_connection};
use crate::http::nominated_framing;

/// Most response headers accepted from a server.
pub(super) const MAX_RESPONSE_HEADERS: usize = 128;

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the response head said.
pub(super) struct ResponseHead {
    pub(super) status: u16,
    pub(super) framing: Framing,
    /// The server will close the connection after this response.
    pub(super) server_close: bool,
    /// The head the client gets (without the final CRLF).
    pub(super) out: Vec<u8>,
}

/// Parses a complete response head and rewrites it for the client.
pub(super) fn parse_response(head: &[u8], head_method: bool) -> Result<ResponseHead, &'static str> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete response head"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many response headers"),
        Err(_) => return Err("malformed response head"),
    }
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err("malformed response head");
    };
    let headers: &[httparse::Header<'_>] = resp.headers;
    let mut length: Option<u64> = None;
    let mut te_last_chunked: Option<bool> = None;
    let mut keep_alive_token = false;
    let mut close_token = false;
    let mut named = false;
    if nominated_framing(connection_tokens(headers)).is_some() {
        return Err("connection header names a framing header");
    }
    for t in connection_tokens(headers) {
        if t.eq_ignore_ascii_case(b"close") {
            close_token = true;
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            keep_alive_token = true;
        } else {
            named = true;
        }
    }
    for h in headers {
        if is(h.name, "content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or("invalid content-length")?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting content-length");
            }
            length = Some(n);
        } else if is(h.name, "transfer-encoding") {
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .map(<[u8]>::trim_ascii)
                .unwrap_or_default();
            te_last_chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        }
    }
    if te_last_chunked.is_some() && length.is_some() {
        return Err("both content-length and transfer-encoding");
    }
    let framing = if head_method || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::None
    } else {
        match (te_last_chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let server_close = close_token || (minor == 0 && !keep_alive_token);
    let mut out = Vec::with_capacity(head.len() + 96);
    out.extend_from_slice(b"HTTP/1.1 ");
    if !(100..1000).contains(&status) {
        return Err("invalid status code");
    }
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    match resp.reason {
        Some(r) if !r.is_empty() => out.extend_from_slice(r.as_bytes()),
        _ => out.extend_from_slice(
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("")
                .as_bytes(),
        ),
    }
    out.extend_from_slice(b"\r\n");
    for h in headers {
        // The response's own framing is relayed as is: Transfer-Encoding stays.
        let drop =
            (hop_by_hop(h.name) && !is(h.name, "transfer-encoding") && !is(h.name, "trailer"))
                || (named && named_by_connection(headers, h.name));
        if drop {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    Ok(ResponseHead {
        status,
        framing,
        server_close,
        out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_framing_follows_rfc_9112() {
        let f = |head: &str, head_method: bool| {
            parse_response(head.as_bytes(), head_method).map(|r| (r.framing, r.server_close))
        };
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
            Ok((Framing::Length(5), false))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true),
            Ok((Framing::None, false))
        );
        assert_eq!(
            f(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, false))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false),
            Ok((Framing::UntilClose, true))
        );
        assert_eq!(
            f("HTTP/1.0 204 No Content\r\n\r\n", false),
            Ok((Framing::None, true))
        );
        assert_eq!(
            f(
                "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
                false
            ),
            Ok((Framing::Length(0), false))
        );
        assert!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(
            f(
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            )
            .is_err()
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Priv\r\nX-Priv: 1\r\nKeep-Alive: t=5\r\nX-Ok: 2\r\n\r\n",
            false,
        )
        .expect("valid");
        assert_eq!(
            String::from_utf8(r.out).expect("utf-8"),
            "HTTP/1.1 200 OK\r\nX-Ok: 2\r\n"
        );
    }
}
