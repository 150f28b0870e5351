//! Criterion-free micro benchmark of `Backend::pick`: nanoseconds per pick for each algorithm
//! over 16 weighted servers. Run with `cargo bench -p tandem-balance`.
//!
//! Owns nothing but this measurement. It reads the wall clock to time loops, which the library
//! itself never does; it makes no assertion, so it cannot fail on a slow or busy machine.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use tandem_balance::{Backend, BackendSpec, Balance, Live, Pick, Request, ServerSpec};

const SERVERS: usize = 16;
const PICKS: u32 = 200_000;

fn main() {
    let algorithms = [
        Balance::RoundRobin,
        Balance::LeastConn,
        Balance::Source,
        Balance::Uri,
        Balance::Header("x-user".into()),
        Balance::First,
        Balance::Random,
    ];
    let mut live = vec![Live::READY; SERVERS];
    for (i, server) in live.iter_mut().enumerate() {
        server.active = (i as u32 * 7) % 11;
    }
    for balance in algorithms {
        let spec = BackendSpec {
            name: "bench".into(),
            balance: balance.clone(),
            servers: (0..SERVERS)
                .map(|i| {
                    let addr = SocketAddr::from(([192, 0, 2, i as u8], 80));
                    ServerSpec::new(format!("s{i}"), addr).weight(1 + (i as u32 * 13) % 100)
                })
                .collect(),
            all_backups: false,
        };
        let backend = Backend::new(spec, 1).expect("benchmark spec is valid");
        let now = Instant::now();
        let start = Instant::now();
        let mut picked = 0u32;
        for n in 0..PICKS {
            let ip = IpAddr::V4(Ipv4Addr::from(n));
            let value = n.to_le_bytes();
            let req = Request::new(ip).path("/static/app.js").header(&value);
            if let Pick::Picked(c) = backend.pick(now, black_box(&req), &live, &[]) {
                picked = picked.wrapping_add(c.index as u32);
            }
        }
        let elapsed = start.elapsed();
        black_box(picked);
        println!(
            "{:<24} {:>8.1} ns/pick",
            format!("{balance:?}"),
            elapsed.as_nanos() as f64 / f64::from(PICKS)
        );
    }
}
