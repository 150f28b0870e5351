//! Fuzzing entry points of the proxy's parsers of untrusted bytes (`cargo xtask fuzz`, see
//! docs/testing.md): each takes arbitrary bytes, runs the parser the way the proxy does, and
//! asserts what must hold for any input, so a broken invariant is a fuzzer crash.
//!
//! Owns: [`proxy_protocol`], the re-exports of the raw HTTP/1.1 forwarder's entry points
//! ([`http1_request`], [`http1_response`]), and the tests replaying the checked-in corpora
//! (`fuzz/corpus/<target>/`) on every `cargo test`.
//! Must not change behaviour: nothing here is called by the proxy itself.

pub use crate::http::h1_fuzz::{http1_request, http1_response};
use crate::proxy_protocol::{Header, ParseError, Version, encode, parse};

/// Most bytes [`crate::proxy_protocol::read_header`] ever hands to `parse` (its buffer).
const MAX_READ: usize = 16 + crate::proxy_protocol::MAX_V2_PAYLOAD_BYTES;

/// Runs `data`, the first bytes of a connection on a bind that expects a PROXY header,
/// through the decoder as `read_header` does: over growing prefixes of what has arrived.
///
/// Invariants: nothing panics; as the input grows, the result stays `Incomplete` until it
/// becomes final and then never changes (so reading in any split consumes exactly the
/// header); a header ends within the input, at its CRLF (v1, at most 107 bytes) or after its
/// announced length (v2); the addresses of a decoded header encode, in either version, to a
/// header that decodes to the same addresses.
pub fn proxy_protocol(data: &[u8]) {
    let data = &data[..data.len().min(MAX_READ)];
    let whole = parse(data);
    if let Err(e) = &whole {
        assert!(!e.to_string().is_empty());
    }
    let mut lengths: Vec<usize> = (0..=data.len().min(300)).collect();
    lengths.extend((0..data.len()).step_by(97));
    lengths.push(data.len());
    if let Ok((_, n)) = whole {
        lengths.extend([n - 1, n]);
    }
    lengths.sort_unstable();
    lengths.dedup();
    // The first length at which the parse settled, and what it gave.
    type Parsed = Result<(Header, usize), ParseError>;
    let mut settled: Option<(usize, Parsed)> = None;
    for k in lengths {
        let got = parse(&data[..k]);
        match &settled {
            Some((at, first)) => assert_eq!(
                &got, first,
                "the result changed from {first:?} at {at} bytes to {got:?} at {k}"
            ),
            None if got != Err(ParseError::Incomplete) => settled = Some((k, got)),
            None => {}
        }
    }
    match &settled {
        Some((_, r)) => assert_eq!(r, &whole),
        None => assert_eq!(whole, Err(ParseError::Incomplete)),
    }
    let Ok((header, n)) = whole else {
        return;
    };
    assert!(
        n > 0 && n <= data.len(),
        "header length {n} of {}",
        data.len()
    );
    assert_eq!(settled.map(|(k, _)| k), Some(n), "decided before its end");
    if data.starts_with(b"PROXY ") {
        assert!(n <= crate::proxy_protocol::V1_MAX_BYTES);
        assert_eq!(&data[n - 2..n], b"\r\n");
    } else {
        assert_eq!(
            n,
            16 + usize::from(u16::from_be_bytes([data[14], data[15]]))
        );
    }
    if let Header::Proxied {
        source,
        destination,
    } = header
    {
        for version in [Version::V1, Version::V2] {
            let bytes = encode(version, source, destination);
            assert_eq!(
                parse(&bytes),
                Ok((header, bytes.len())),
                "{version:?} encoding of {source} -> {destination} does not decode back"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs `check` on every file of `fuzz/corpus/<target>/` (at least 10) and of
    /// `fuzz/regressions/<target>/` (the inputs of fixed crashes), naming the file that fails.
    fn replay(target: &str, check: fn(&[u8])) {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
        let files = |dir: &str| -> Vec<_> {
            let dir = fuzz.join(dir).join(target);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .map(|rd| rd.map(|e| e.expect("corpus entry").path()).collect())
                .unwrap_or_default();
            files.sort();
            files
        };
        let corpus = files("corpus");
        assert!(
            corpus.len() >= 10,
            "fuzz/corpus/{target}: {} files",
            corpus.len()
        );
        for file in corpus.iter().chain(&files("regressions")) {
            let data = std::fs::read(file).expect("corpus file");
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                panic!("{} breaks an invariant (message above)", file.display());
            }
        }
    }

    #[test]
    fn http1_request_corpus_replays() {
        replay("http1_request", super::http1_request);
    }

    #[test]
    fn http1_response_corpus_replays() {
        replay("http1_response", super::http1_response);
    }

    #[test]
    fn proxy_protocol_corpus_replays() {
        replay("proxy_protocol", super::proxy_protocol);
    }
}
