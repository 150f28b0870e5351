//! Fuzzing entry points for the raw HTTP/1.1 forwarder (`cargo xtask fuzz`, docs/testing.md).
//!
//! Owns: [`http1_request`] (a client byte stream through the forwarder's head loop, checks and
//! rewriting, as [`super::serve`] runs them) and [`http1_response`] (a server byte stream
//! through response head parsing and body framing, as [`super::exchange`] runs them), with
//! the invariants that must hold for any input. The corpus replay tests (`crate::fuzz`) and
//! the fuzz targets (`fuzz/fuzz_targets/`) call them.
//! Must not do IO or reimplement the forwarder: it calls the forwarder's own functions and
//! only adds assertions, which panic (a fuzzer crash) when an invariant breaks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};

use super::chunked::Chunks;
use super::head::{MAX_RESPONSE_HEAD, crlf_lines, h2_preface, head_end};
use super::response::{Framing, parse_response};
use super::{Analyzed, Prepared, analyze};
use crate::guard::Scanner;
use crate::http::ConnCtx;
use crate::live::Registry;
use crate::plan::{
    Algorithm, Backend, Forwarded, Frontend, LogFormat, Mode, Persistence, Plan, Rate, Route,
    Server,
};

/// Largest body the checks feed through a [`Scanner`] byte by byte.
const MAX_SCANNED_BODY: u64 = 64 * 1024;
/// Longest input compared with the guard as a chunked body: the guard stops tracking a line
/// over 64 KiB (its `MAX_LINE_BYTES`), without refusing it.
const MAX_GUARD_COMPARED: usize = 60 * 1024;

/// The plan every request stream is run through: routes, persistence, hashing, X-Forwarded
/// and the access log on the first frontend; RFC 7239, small head limits, no routes and a
/// request rate of 2 per 10 s per source on the second.
fn plan() -> &'static Arc<Plan> {
    static PLAN: OnceLock<Arc<Plan>> = OnceLock::new();
    PLAN.get_or_init(|| {
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let backend = |name: &str, algorithm: Algorithm, persistence: Option<Persistence>| {
            let mut b = Backend::new(
                name,
                Mode::Http,
                vec![Server::new("s1", addr(9)), Server::new("s2", addr(9))],
            );
            b.algorithm = algorithm;
            b.persistence = persistence;
            b
        };
        let backends = vec![
            backend(
                "web",
                Algorithm::RoundRobin,
                Some(Persistence::Cookie { name: "SRV".into() }),
            ),
            backend("api", Algorithm::Header("x-user".into()), None),
            backend("static", Algorithm::Uri, None),
            backend("canary", Algorithm::RoundRobin, None),
        ];
        let mut routed = Frontend::new("routed", Mode::Http, addr(1), "web");
        routed.log_format = LogFormat::Text;
        routed.routes = vec![
            Route {
                host: Some("api.test".into()),
                path_prefix: None,
                header: None,
                backend: "api".into(),
            },
            Route {
                host: None,
                path_prefix: Some("/static/".into()),
                header: None,
                backend: "static".into(),
            },
            Route {
                host: None,
                path_prefix: None,
                header: Some((
                    HeaderName::from_static("x-canary"),
                    Some(HeaderValue::from_static("1")),
                )),
                backend: "canary".into(),
            },
        ];
        let mut small = Frontend::new("small", Mode::Http, addr(2), "web");
        small.forwarded = Forwarded::Rfc7239;
        small.max_headers = 8;
        small.max_header_bytes = 512;
        small.protect.request_rate = Some(Rate {
            count: 2,
            per: Duration::from_secs(10),
        });
        Arc::new(Plan::new(vec![routed, small], backends).expect("the fuzz plan is valid"))
    })
}

/// One client connection's context on each frontend, with live state of its own (so the
/// request rate counts this input's requests only).
fn contexts() -> Vec<ConnCtx> {
    let snap = Arc::new(Registry::default().bind(plan().clone(), 1));
    let peer = SocketAddr::from(([192, 0, 2, 7], 40_000));
    (0..snap.plan.frontends().len())
        .map(|frontend| ConnCtx {
            snap: snap.clone(),
            frontend,
            peer,
            local: SocketAddr::from(([127, 0, 0, 1], 80)),
            proto: HeaderValue::from_static("http"),
            peer_value: HeaderValue::from_static("192.0.2.7"),
            conflict: Arc::new(AtomicBool::new(false)),
            oversized: None,
            head_start: None,
            busy: Arc::new(AtomicU32::new(0)),
            refused: None,
            _source: None,
        })
        .collect()
}

/// Runs `data`, what a client sent on one connection, through the raw forwarder's request
/// path of each test frontend, then through the raw head guard alone.
///
/// Invariants: nothing panics; the end of a head is found wherever the reads were split;
/// a forwarded request's rewritten head parses back, carries exactly one Host, no hop-by-hop
/// field, and frames exactly the body the forwarder sends (one Content-Length equal to it, no
/// Transfer-Encoding), also for the strict guard; every request the forwarder forwards is
/// one the guard accepts, ending where the guard says it ends; a refusal that keeps the
/// connection open leaves no body unread; the guard's verdict does not depend on how reads
/// split the stream.
pub fn http1_request(data: &[u8]) {
    for ctx in &contexts() {
        raw_requests(ctx, data);
    }
    guard_split_invariance(data);
}

/// The head loop of [`super::serve`] over `data`, without IO: every complete head is
/// analyzed; forwarded requests consume their body, refusals that close end the stream.
fn raw_requests(ctx: &ConnCtx, data: &[u8]) {
    let fe = &ctx.snap.plan.frontends()[ctx.frontend];
    let mut buf = data;
    let mut first = true;
    // What the client sent for the requests the forwarder forwarded, as one stream.
    let mut forwarded = Vec::new();
    let mut complete = true;
    loop {
        let blank = buf
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        buf = &buf[blank..];
        if first && !buf.is_empty() && h2_preface(buf) {
            // Handed to hyper (HTTP/2 prior knowledge) once 4 bytes are in.
            break;
        }
        let Some(head_len) = head_end(buf, 0) else {
            // The forwarder checks line ends and waits for more: nothing is acted on.
            let _ = crlf_lines(buf);
            break;
        };
        for scanned in head_len.saturating_sub(4)..head_len {
            assert_eq!(
                head_end(buf, scanned),
                Some(head_len),
                "the head end depends on where the reads split"
            );
        }
        first = false;
        if head_len > fe.max_header_bytes {
            break;
        }
        let head = &buf[..head_len];
        match analyze(ctx, head, Instant::now()) {
            Analyzed::Fallback => break,
            Analyzed::Refuse { err, close, .. } => {
                let status = err.status();
                assert!(
                    status.is_client_error() || status.is_server_error(),
                    "refused with {status}"
                );
                if close {
                    break;
                }
                assert_eq!(
                    client_body(head),
                    0,
                    "a refusal keeps the connection open with a body unread, which would be read as a request"
                );
                buf = &buf[head_len..];
            }
            Analyzed::Forward(p) => {
                check_forwarded(ctx, head, &p);
                let rest = (buf.len() - head_len) as u64;
                let taken = p.body.min(rest) as usize;
                forwarded.extend_from_slice(&buf[..head_len + taken]);
                if p.body > rest {
                    // The rest of the body streams from the client; nothing follows in `data`.
                    complete = false;
                    break;
                }
                buf = &buf[head_len + taken..];
                if p.client_close {
                    break;
                }
            }
        }
    }
    let mut guard = Scanner::default();
    guard.feed(&forwarded);
    assert_eq!(
        guard.rejected, None,
        "the forwarder forwarded a request the raw head guard refuses"
    );
    if complete {
        assert!(
            guard.at_request_boundary(),
            "the forwarder and the guard disagree on where the forwarded requests end"
        );
    }
}

/// The Content-Length a client head declares (0 when absent or unreadable).
fn client_body(head: &[u8]) -> u64 {
    let mut slots = vec![httparse::EMPTY_HEADER; head.len() / 2 + 1];
    let mut req = httparse::Request::new(&mut slots);
    if req.parse(head).is_err() {
        return 0;
    }
    req.headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .find_map(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0)
}

/// What a server receives for a forwarded request must be one unambiguous request.
fn check_forwarded(ctx: &ConnCtx, client_head: &[u8], p: &Prepared) {
    let fe = &ctx.snap.plan.frontends()[ctx.frontend];
    let out = &p.head;
    let mut slots = vec![httparse::EMPTY_HEADER; out.len() / 2 + 1];
    let mut req = httparse::Request::new(&mut slots);
    let parsed = req.parse(out);
    assert_eq!(
        parsed,
        Ok(httparse::Status::Complete(out.len())),
        "the rewritten head does not parse: {:?}",
        String::from_utf8_lossy(out)
    );
    let mut client_slots = vec![httparse::EMPTY_HEADER; client_head.len() / 2 + 1];
    let mut client = httparse::Request::new(&mut client_slots);
    let _ = client.parse(client_head);
    assert_eq!(req.method, client.method, "the method changed");
    assert_eq!(req.version, Some(1), "not sent as HTTP/1.1");
    assert_eq!(p.head_method, req.method == Some("HEAD"));
    let count = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(
        count("host"),
        1,
        "the server gets {} host fields: {:?}",
        count("host"),
        String::from_utf8_lossy(out)
    );
    for hop in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        assert_eq!(count(hop), 0, "hop-by-hop {hop} forwarded");
    }
    let lengths: Vec<Option<u64>> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .collect();
    if p.body > 0 {
        assert_eq!(
            lengths,
            [Some(p.body)],
            "the server would not read the {}-byte body the forwarder sends: {:?}",
            p.body,
            String::from_utf8_lossy(out)
        );
    } else {
        assert!(
            lengths.is_empty() || lengths == [Some(0)],
            "a request without a body announces {lengths:?}"
        );
    }
    if fe.forwarded == Forwarded::XForwarded {
        assert_eq!(count("x-forwarded-proto"), 1);
        assert_eq!(count("x-forwarded-host"), 1);
    }
    // The server's own view, through the strictest parser we have.
    let mut server = Scanner::default();
    server.feed(out);
    assert_eq!(
        server.rejected, None,
        "the guard refuses the rewritten head"
    );
    assert_eq!(
        server.at_request_boundary(),
        p.body == 0,
        "the rewritten head frames a body of the wrong size"
    );
    if (1..=MAX_SCANNED_BODY).contains(&p.body) {
        server.feed(&vec![b'x'; p.body as usize]);
        assert!(
            server.at_request_boundary(),
            "the rewritten head frames a body of the wrong size"
        );
    }
}

/// The guard's verdict (refusal, size flag, position) is the same whichever way reads split.
fn guard_split_invariance(data: &[u8]) {
    let run = |step: usize| {
        let mut s = Scanner::with_max_head(512);
        for piece in data.chunks(step) {
            s.feed(piece);
        }
        (s.rejected, s.too_large, s.at_request_boundary())
    };
    let whole = run(data.len().max(1));
    let step = usize::from(data.first().copied().unwrap_or(0) % 7) + 1;
    for split in [1, step] {
        assert_eq!(
            run(split),
            whole,
            "the guard's verdict depends on reads of {split} bytes"
        );
    }
}

/// Runs `data`, what a server sent on one connection, through the forwarder's response path:
/// interim heads, the final head (as the answer to GET and to HEAD) and its body framing.
///
/// Invariants: nothing panics; the head relayed to the client parses back with the same
/// status and the same framing the forwarder relays the body with (a client and the proxy
/// never disagree on where a response ends); the chunked tracker ends the body at most at
/// the input's end, wherever the reads split, and where the strict request guard ends the
/// same chunked body.
pub fn http1_response(data: &[u8]) {
    for head_method in [false, true] {
        relay(data, head_method);
    }
    chunked(data);
}

fn relay(data: &[u8], head_method: bool) {
    let mut buf = data;
    loop {
        let Some(n) = head_end(buf, 0) else {
            return;
        };
        if n > MAX_RESPONSE_HEAD {
            return;
        }
        let Ok(head) = parse_response(&buf[..n], head_method) else {
            return;
        };
        // What the client gets: the rewritten head, `connection: close` when the body is
        // delimited by the close, the final CRLF.
        let mut client = head.out.clone();
        if head.framing == Framing::UntilClose {
            client.extend_from_slice(b"connection: close\r\n");
        }
        client.extend_from_slice(b"\r\n");
        let seen = parse_response(&client, head_method).unwrap_or_else(|e| {
            panic!(
                "the client cannot parse the head it gets ({e}): {:?}",
                String::from_utf8_lossy(&client)
            )
        });
        assert_eq!(seen.status, head.status, "the status changed");
        assert_eq!(
            seen.framing,
            head.framing,
            "the client frames the body differently from the proxy: {:?}",
            String::from_utf8_lossy(&client)
        );
        let mut slots = vec![httparse::EMPTY_HEADER; client.len() / 2 + 1];
        let mut resp = httparse::Response::new(&mut slots);
        assert_eq!(
            resp.parse(&client),
            Ok(httparse::Status::Complete(client.len()))
        );
        if head.status == 101 {
            return;
        }
        if (100..200).contains(&head.status) {
            buf = &buf[n..];
            continue;
        }
        let body = &buf[n..];
        if head.framing == Framing::Chunked {
            chunked(body);
        }
        return;
    }
}

/// The chunked tracker over `body`: bounded by its input, independent of read splits.
fn check_chunks(body: &[u8]) -> Result<Option<usize>, &'static str> {
    let mut c = Chunks::START;
    let whole = c.feed(body);
    if let Ok(Some(n)) = whole {
        assert!(n <= body.len(), "the chunked body ends past its input");
    }
    let splits: Vec<usize> = if body.len() <= 128 {
        (0..=body.len()).collect()
    } else {
        (0..=8).map(|i| body.len() * i / 8).collect()
    };
    for split in splits {
        let mut c = Chunks::START;
        let got = match c.feed(&body[..split]) {
            Ok(None) => c.feed(&body[split..]).map(|end| end.map(|n| split + n)),
            other => other,
        };
        assert_eq!(
            got.map(|end| end.is_some()),
            whole.map(|end| end.is_some()),
            "split at {split}"
        );
        if let (Ok(Some(a)), Ok(Some(b))) = (got, whole) {
            assert_eq!(a, b, "the chunked body's end depends on a split at {split}");
        }
    }
    whole
}

/// `data` as a chunked body: where the response tracker ends it agrees with the request
/// guard whenever the guard accepts it.
fn chunked(data: &[u8]) {
    let tracked = check_chunks(data);
    if data.len() > MAX_GUARD_COMPARED {
        return;
    }
    let mut guard = Scanner::default();
    guard.feed(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let mut guard_end = None;
    for (i, b) in data.iter().enumerate() {
        guard.feed(std::slice::from_ref(b));
        if guard.rejected.is_some() {
            return;
        }
        if guard.at_request_boundary() {
            guard_end = Some(i + 1);
            break;
        }
    }
    // The tracker may refuse a line before its end, the guard only at its end: compare
    // where the guard ended the body, or where the tracker did while the guard read on.
    match (tracked, guard_end) {
        (_, Some(end)) => assert_eq!(
            tracked,
            Ok(Some(end)),
            "the response chunk tracker and the request guard end this chunked body differently"
        ),
        (Ok(Some(end)), None) => {
            panic!("the response chunk tracker ends this chunked body at {end}, the guard reads on")
        }
        _ => {}
    }
}
