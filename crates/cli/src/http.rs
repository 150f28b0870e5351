//! Fetching a firmware bundle or a configuration over plain HTTP (`firmware install
//! http://...`, `config load http://...`), bounded: a size cap, one deadline for the whole
//! transfer (connect, head and body), and exactly status 200.
//!
//! Owns the HTTP/1.0 client (one GET, `Connection: close`, no redirects, no chunked bodies)
//! and its limits ([`BUNDLE`], [`CONFIG`]). Must not trust what it fetches: a bundle is
//! verified by its signature afterwards and a configuration by the supervisor.

use std::io::{Read as _, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs as _};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

/// The bounds of one transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_bytes: u64,
    /// The whole transfer (connect, request, head, body) must end within this.
    pub deadline: Duration,
}

/// Firmware bundles: an image bundle is about 150 MiB, so 512 MiB leaves room for growth;
/// 10 minutes is 512 MiB at 7 Mbit/s, the slowest management link worth supporting.
pub const BUNDLE: Limits = Limits {
    max_bytes: 512 << 20,
    deadline: Duration::from_secs(600),
};

/// Configurations: the supervisor accepts at most 1 MiB of text; 4 MiB lets it say so
/// instead of the download failing; 30 s is plenty for that on any link.
pub const CONFIG: Limits = Limits {
    max_bytes: 4 << 20,
    deadline: Duration::from_secs(30),
};

/// Largest response head accepted, in bytes.
const MAX_HEAD: usize = 64 << 10;

/// `http://HOST[:PORT]/PATH` split into the address to connect to, the `Host` header and
/// the path (with its leading `/`).
fn split_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("`{url}` is not an http:// URL"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        bail!("`{url}` has no host");
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let has_port = match host.rfind(']') {
        Some(close) => host[close..].contains(':'),
        None => host.contains(':'),
    };
    let addr = if has_port {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    Ok((addr, host.to_owned(), path.to_owned()))
}

/// Time left before `deadline`, or the error saying it passed.
fn left(deadline: Instant, url: &str, limits: &Limits, what: &str) -> anyhow::Result<Duration> {
    let now = Instant::now();
    if now >= deadline {
        bail!(
            "{url}: {what} did not finish within the {} s deadline",
            limits.deadline.as_secs_f64()
        );
    }
    Ok(deadline - now)
}

/// GETs `url` and writes its body to `sink`; returns the body's length. Fails, naming the
/// URL, on any status but 200, a body over `limits.max_bytes` (refused from
/// `Content-Length` before the body when it says so), a transfer longer than
/// `limits.deadline`, or a body shorter than its `Content-Length`.
pub fn get(url: &str, limits: Limits, sink: &mut dyn Write) -> anyhow::Result<u64> {
    let deadline = Instant::now() + limits.deadline;
    let (addr, host, path) = split_url(url)?;
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("{url}: cannot resolve {addr}"))?
        .collect();
    let mut last_err = None;
    let mut stream = None;
    for a in &addrs {
        let wait = left(deadline, url, &limits, "connecting")?;
        match TcpStream::connect_timeout(a, wait) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_err = Some(e),
        }
    }
    let mut stream = stream.ok_or_else(|| match last_err {
        Some(e) => anyhow!("{url}: cannot connect to {addr}: {e}"),
        None => anyhow!("{url}: {addr} resolves to no address"),
    })?;
    stream.set_write_timeout(Some(left(deadline, url, &limits, "sending the request")?))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: tandemctl/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    )
    .with_context(|| format!("{url}: sending the request"))?;

    let read = |stream: &mut TcpStream, buf: &mut [u8], what: &str| {
        read_before(stream, buf, deadline, url, &limits, what)
    };

    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let split = loop {
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if head.len() > MAX_HEAD {
            bail!("{url}: the response head is longer than {MAX_HEAD} bytes");
        }
        let n = read(&mut stream, &mut buf, "the response head")?;
        if n == 0 {
            bail!("{url}: the server closed the connection before a complete response head");
        }
        head.extend_from_slice(&buf[..n]);
    };
    let body_start = head.split_off(split + 4);
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let (proto, code) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !proto.starts_with("HTTP/1.") {
        bail!("{url}: not an HTTP response: `{status_line}`");
    }
    let mut length = None;
    let mut location = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length =
                    Some(value.parse::<u64>().map_err(|_| {
                        anyhow!("{url}: the Content-Length `{value}` is not a number")
                    })?);
            }
            "transfer-encoding" => {
                bail!(
                    "{url}: the server sent a `Transfer-Encoding: {value}` body to an HTTP/1.0 request; serve the file with a Content-Length"
                )
            }
            "location" => location = Some(value.to_owned()),
            _ => {}
        }
    }
    if code != "200" {
        let redirect = location
            .map(|l| format!("; redirects are not followed, use the target URL ({l})"))
            .unwrap_or_default();
        bail!("{url}: the server answered `{status_line}`; only 200 is accepted{redirect}");
    }
    if let Some(n) = length
        && n > limits.max_bytes
    {
        bail!(
            "{url}: the body is {n} bytes, more than the {} byte limit",
            limits.max_bytes
        );
    }
    let mut total = 0u64;
    // Stores `data` (cut at the announced length); true once the body is complete.
    let mut store = |data: &[u8], total: &mut u64| -> anyhow::Result<bool> {
        let take = match length {
            Some(n) => data
                .len()
                .min(usize::try_from(n - *total).unwrap_or(usize::MAX)),
            None => data.len(),
        };
        *total += take as u64;
        if *total > limits.max_bytes {
            bail!(
                "{url}: the body is more than the {} byte limit",
                limits.max_bytes
            );
        }
        sink.write_all(&data[..take])
            .with_context(|| format!("{url}: storing the body"))?;
        Ok(length.is_some_and(|n| *total >= n))
    };
    let mut done = store(&body_start, &mut total)?;
    while !done {
        let n = read(&mut stream, &mut buf, "the body")?;
        if n == 0 {
            if let Some(want) = length {
                bail!("{url}: the server closed the connection after {total} of {want} bytes");
            }
            break;
        }
        done = store(&buf[..n], &mut total)?;
    }
    sink.flush()
        .with_context(|| format!("{url}: storing the body"))?;
    Ok(total)
}

/// One read of `stream` that gives up at `deadline`; `Ok(0)` at the end of the stream.
fn read_before(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
    url: &str,
    limits: &Limits,
    what: &str,
) -> anyhow::Result<usize> {
    stream.set_read_timeout(Some(left(deadline, url, limits, what)?))?;
    match stream.read(buf) {
        Ok(n) => Ok(n),
        Err(e) => {
            // A read that timed out at the deadline says so; other errors as they are.
            left(deadline, url, limits, what)?;
            Err(anyhow!("{url}: reading {what}: {e}"))
        }
    }
}

/// [`get`] into memory.
pub fn get_bytes(url: &str, limits: Limits) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    get(url, limits, &mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    //! Against servers on 127.0.0.1 that misbehave: too big, slow drip, wrong status.

    use super::*;
    use std::net::TcpListener;

    /// A server answering every connection with `respond` (after reading the request head);
    /// returns the URL of `/file`.
    fn server(respond: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> String {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let respond = std::sync::Arc::new(respond);
        std::thread::spawn(move || {
            for mut s in l.incoming().map_while(Result::ok) {
                let respond = respond.clone();
                std::thread::spawn(move || {
                    let mut seen = Vec::new();
                    let mut b = [0u8; 1024];
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut b) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&b[..n]),
                        }
                    }
                    respond(&mut s);
                });
            }
        });
        format!("http://{addr}/file")
    }

    const SMALL: Limits = Limits {
        max_bytes: 1000,
        deadline: Duration::from_secs(2),
    };

    #[test]
    fn a_200_with_a_body_is_fetched() {
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        });
        assert_eq!(get_bytes(&url, SMALL).expect("fetched"), b"hello");
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil close");
        });
        assert_eq!(get_bytes(&url, SMALL).expect("fetched"), b"until close");
    }

    #[test]
    fn every_status_but_200_is_an_error_naming_the_status_and_the_url() {
        for status in [
            "204 No Content",
            "206 Partial Content",
            "301 Moved Permanently",
            "404 Not Found",
        ] {
            let url = server(move |s| {
                let _ = write!(
                    s,
                    "HTTP/1.0 {status}\r\nLocation: http://elsewhere/\r\nContent-Length: 2\r\n\r\nno"
                );
            });
            let e = get_bytes(&url, SMALL).expect_err(status).to_string();
            assert!(e.starts_with(&url), "{e}");
            assert!(
                e.contains(&format!(
                    "answered `HTTP/1.0 {status}`; only 200 is accepted"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn a_body_over_the_cap_is_refused_with_or_without_a_content_length() {
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 1001\r\n\r\n");
            let _ = s.write_all(&[b'x'; 1001]);
        });
        let e = get_bytes(&url, SMALL).expect_err("too big").to_string();
        assert!(
            e.contains("the body is 1001 bytes, more than the 1000 byte limit"),
            "{e}"
        );
        // No length announced: the stream is cut at the cap, never stored whole.
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\n");
            for _ in 0..100 {
                if s.write_all(&[b'x'; 1000]).is_err() {
                    return;
                }
            }
        });
        let mut sink = Vec::new();
        let e = get(&url, SMALL, &mut sink)
            .expect_err("too big")
            .to_string();
        assert!(e.contains("more than the 1000 byte limit"), "{e}");
        assert!(sink.len() <= 1000, "stored {} bytes", sink.len());
    }

    #[test]
    fn a_slow_drip_ends_at_the_overall_deadline() {
        // One byte every 100 ms: no single read ever times out.
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 900\r\n\r\n");
            for _ in 0..900 {
                if s.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let limits = Limits {
            max_bytes: 1000,
            deadline: Duration::from_millis(800),
        };
        let started = Instant::now();
        let e = get_bytes(&url, limits).expect_err("too slow").to_string();
        assert!(
            e.contains("the body did not finish within the 0.8 s deadline"),
            "{e}"
        );
        // Bounded well before the 90 s the drip would take (liveness, not a benchmark).
        assert!(started.elapsed() < Duration::from_secs(10));
        // A server that accepts and never answers: the head is what times out.
        let url = server(|_| std::thread::sleep(Duration::from_secs(5)));
        let e = get_bytes(&url, limits).expect_err("silent").to_string();
        assert!(e.contains("the response head did not finish"), "{e}");
    }

    #[test]
    fn a_truncated_body_and_chunked_bodies_are_errors() {
        let url = server(|s| {
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        });
        let e = get_bytes(&url, SMALL).expect_err("short").to_string();
        assert!(e.contains("after 3 of 10 bytes"), "{e}");
        let url = server(|s| {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            );
        });
        let e = get_bytes(&url, SMALL).expect_err("chunked").to_string();
        assert!(e.contains("Transfer-Encoding: chunked"), "{e}");
    }

    #[test]
    fn urls_are_split_into_address_host_and_path() {
        let s = |u: &str| split_url(u).expect("url");
        assert_eq!(
            s("http://198.19.0.1:8080/a/b.upgrade"),
            (
                "198.19.0.1:8080".into(),
                "198.19.0.1:8080".into(),
                "/a/b.upgrade".into()
            )
        );
        assert_eq!(
            s("http://host"),
            ("host:80".into(), "host".into(), "/".into())
        );
        assert_eq!(s("http://[::1]/x").0, "[::1]:80");
        assert_eq!(s("http://[::1]:81/x").0, "[::1]:81");
        assert!(split_url("https://x/").is_err());
        assert!(split_url("http:///x").is_err());
    }
}
