//! Round trip: a valid `Config` serialized with `Config::to_yaml` parses back to an equal
//! `Config`, for generated configs (proptest) and for the shipped examples.
//!
//! Generated configs are built from a proptest-chosen seed by a small deterministic builder
//! that only makes valid choices (unique names, existing references, matching modes), and
//! exercises every optional section and key.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use tandem_config::*;

/// The certificate files that exist for generated configs.
const CERT: &str = "certs/ok.pem";

fn certs() -> MemoryCertFiles {
    MemoryCertFiles::new([CERT])
}

/// splitmix64: enough randomness for choices, fully determined by the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn flip(&mut self) -> bool {
        self.below(2) == 0
    }
    fn maybe<T>(&mut self, f: impl FnOnce(&mut Rng) -> T) -> Option<T> {
        if self.flip() { Some(f(self)) } else { None }
    }
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
    fn duration(&mut self) -> Duration {
        // Mix of exact units and odd millisecond counts, to exercise canonical formatting.
        match self.below(3) {
            0 => Duration::from_millis(self.range(1, 100_000)),
            1 => Duration::from_secs(self.range(1, 7200)),
            _ => Duration::from_secs(60 * self.range(1, 600)),
        }
    }
    fn text(&mut self) -> String {
        let len = self.below(10);
        (0..len)
            .map(|_| self.pick(&[' ', 'a', 'Z', '1', ':', '#', '\'', '"', '-', '~', 'é']))
            .collect()
    }
}

fn name(s: &str) -> Name {
    s.parse().unwrap()
}

fn count(r: &mut Rng) -> Count {
    Count::new(r.range(1, u64::from(u32::MAX)) as u32).unwrap()
}

fn endpoint(ip: Ipv4Addr, port: u16) -> Endpoint {
    Endpoint::new(SocketAddr::new(IpAddr::V4(ip), port)).unwrap()
}

fn gen_config(seed: u64) -> Config {
    let mut r = Rng(seed);
    let r = &mut r;
    let node_count = r.below(3);
    let cluster = (node_count > 0).then(|| Cluster {
        name: name("c1"),
        nodes: (0..node_count)
            .map(|i| {
                let node = Node {
                    lan_address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 11 + i as u8)),
                    sync_address: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1 + i as u8)),
                    priority: Priority::new(200 - i as u8 * 50).unwrap(),
                    network: Default::default(),
                };
                (name(&format!("lb{i}")), node)
            })
            .collect(),
    });
    let ifaces: Vec<InterfaceName> = ["eth1", "eth2", "bond0.42"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let interfaces = r.maybe(|r| {
        ifaces
            .iter()
            .map(|i| {
                let role = r.maybe(|r| {
                    r.pick(&[
                        InterfaceRole::Lan,
                        InterfaceRole::Wan,
                        InterfaceRole::Sync,
                        InterfaceRole::Mgmt,
                    ])
                });
                (i.clone(), Interface { role })
            })
            .collect::<BTreeMap<_, _>>()
    });
    let mut vrrp = Vec::new();
    if cluster.is_some() {
        for i in 0..r.below(3) {
            let track = Track {
                proxy: r.maybe(|r| PriorityDelta::new(r.range(1, 254) as u8).unwrap()),
                interfaces: if r.flip() {
                    BTreeMap::from([(
                        r.pick(&ifaces),
                        PriorityDelta::new(r.range(1, 254) as u8).unwrap(),
                    )])
                } else {
                    BTreeMap::new()
                },
            };
            vrrp.push(VrrpInstance {
                name: name(&format!("v{i}")),
                interface: r.pick(&ifaces),
                vrid: Vrid::new(10 + i as u8).unwrap(),
                advert_interval: Duration::from_millis(10 * r.range(1, 4095)),
                preempt: r.flip(),
                preempt_delay: if r.flip() {
                    Duration::ZERO
                } else {
                    r.duration()
                },
                accept: r.flip(),
                unicast: node_count == 2 && r.flip(),
                addresses: (0..r.range(1, 3))
                    .map(|j| {
                        Cidr::new(
                            IpAddr::V4(Ipv4Addr::new(10, 0, 9, (i * 10 + j) as u8)),
                            r.range(8, 32) as u8,
                        )
                        .unwrap()
                    })
                    .collect(),
                track,
            });
        }
    }
    // SLA classes: distinct priorities, shares adding up to at most 100%.
    let mut share_left = 100u64;
    let classes: Vec<Class> = (0..r.below(4))
        .map(|i| {
            let share = r.range(0, share_left);
            share_left -= share;
            Class {
                name: name(&format!("c{i}")),
                priority: ClassPriority::new(i as i16 * 7 - 10).unwrap(),
                max_queue_time: r.maybe(|r| r.duration()),
                share: Share::new(share as u8).unwrap(),
            }
        })
        .collect();
    let class_names: Vec<Name> = classes.iter().map(|c| c.name.clone()).collect();
    let lowest = classes
        .iter()
        .max_by_key(|c| c.priority)
        .map(|c| c.name.clone());
    let modes = [Mode::Http, Mode::Tcp];
    let backends: Vec<Backend> = (0..r.range(1, 4))
        .map(|i| {
            let mode = r.pick(&modes);
            let http = mode == Mode::Http;
            let mut balances = vec![
                Balance::RoundRobin,
                Balance::LeastConn,
                Balance::Source,
                Balance::First,
                Balance::Random,
            ];
            if http {
                balances.push(Balance::Uri);
                balances.push("header(X-User)".parse().unwrap());
            }
            let persistence = r.maybe(|r| {
                if http && r.flip() {
                    Persistence::Cookie {
                        name: r.pick(&["SRV", "SERVERID", "lb_id"]).to_owned(),
                    }
                } else {
                    Persistence::Source {
                        expire: r.duration(),
                    }
                }
            });
            let health_check = r.maybe(|r| {
                let interval = r.duration();
                let timeout = Duration::from_millis(r.range(1, interval.as_millis()));
                HealthCheck {
                    kind: if r.flip() {
                        CheckKind::Tcp {}
                    } else {
                        CheckKind::Http(HttpCheck {
                            method: r.pick(&[
                                CheckMethod::Get,
                                CheckMethod::Head,
                                CheckMethod::Options,
                            ]),
                            path: format!("/{}", r.pick(&["", "health", "a b", "x?y=1"])),
                            host: r.maybe(|r| r.text()),
                            expect_status: r
                                .pick(&["200", "200-399", "204-204", "100-599"])
                                .parse()
                                .unwrap(),
                        })
                    },
                    interval,
                    timeout,
                    rise: CheckCount::new(r.range(1, 255) as u8).unwrap(),
                    fall: CheckCount::new(r.range(1, 255) as u8).unwrap(),
                    passive: r.maybe(|r| PassiveCheck {
                        consecutive_failures: Some(count(r)),
                        consecutive_5xx: if http { r.maybe(count) } else { None },
                    }),
                }
            });
            Backend {
                name: name(&format!("b{i}")),
                mode,
                balance: r.pick(&balances),
                persistence,
                health_check,
                queue_timeout: r.duration(),
                timeouts: BackendTimeouts {
                    connect: r.duration(),
                    server: r.duration(),
                },
                retries: r.below(256) as u8,
                slow_start: if r.flip() {
                    Duration::ZERO
                } else {
                    r.duration()
                },
                send_proxy: r.pick(&[SendProxy::None, SendProxy::V1, SendProxy::V2]),
                tls: r.maybe(|r| BackendTls {
                    verify: r.flip(),
                    sni: r.maybe(|r| format!("s{}.example", r.below(9))),
                    ca: r.maybe(|_| PathBuf::from(CERT)),
                }),
                servers: (0..r.range(1, 4))
                    .map(|j| Server {
                        name: name(&format!("s{j}")),
                        address: endpoint(
                            Ipv4Addr::new(10, 1, i as u8, j as u8),
                            r.range(1, 65535) as u16,
                        ),
                        weight: Weight::new(r.range(0, 256) as u16).unwrap(),
                        max_connections: r.maybe(count),
                        backup: r.flip(),
                        state: r.pick(&[
                            ServerState::Ready,
                            ServerState::Drain,
                            ServerState::Maint,
                        ]),
                    })
                    .collect(),
            }
        })
        .collect();
    let frontends: Vec<Frontend> = (0..r.range(1, 3))
        .map(|i| {
            let target = r.pick(&backends);
            let mode = target.mode;
            let http = mode == Mode::Http;
            let same_mode: Vec<Name> = backends
                .iter()
                .filter(|b| b.mode == mode)
                .map(|b| b.name.clone())
                .collect();
            let routes = if http {
                (0..r.below(3))
                    .map(|_| Route {
                        host: r.maybe(|r| format!("h{}.shop.example", r.below(9))),
                        path_prefix: Some(format!("/{}", r.pick(&["", "api/", "static"]))),
                        header: r.maybe(|r| HeaderMatch {
                            name: "X-Canary".parse().unwrap(),
                            value: r.maybe(|r| r.text()),
                        }),
                        backend: r.pick(&same_mode),
                        class: if class_names.is_empty() {
                            None
                        } else {
                            r.maybe(|r| r.pick(&class_names))
                        },
                    })
                    .collect()
            } else {
                Vec::new()
            };
            Frontend {
                name: name(&format!("f{i}")),
                mode,
                bind: (0..r.range(1, 3))
                    .map(|j| Bind {
                        address: endpoint(Ipv4Addr::new(127, 0, i as u8, 1), 8000 + j as u16),
                        proxy_protocol: r.flip(),
                    })
                    .collect(),
                tls: r.maybe(|r| FrontendTls {
                    certificates: vec![PathBuf::from(CERT)],
                    alpn: if r.flip() {
                        vec!["h2".into(), "http/1.1".into()]
                    } else {
                        Vec::new()
                    },
                }),
                max_connections: count(r),
                timeouts: FrontendTimeouts {
                    client_header: r.duration(),
                    client_idle: r.duration(),
                },
                protect: r.maybe(|r| Protect {
                    connection_rate_per_source: r.maybe(|r| Rate {
                        count: r.range(1, 1000) as u32,
                        per: r.duration(),
                    }),
                    request_rate_per_source: if http {
                        r.maybe(|r| Rate {
                            count: r.range(1, 1000) as u32,
                            per: r.duration(),
                        })
                    } else {
                        None
                    },
                    concurrent_connections_per_source: r.maybe(count),
                }),
                default_backend: if routes.is_empty() || r.flip() {
                    Some(target.name.clone())
                } else {
                    None
                },
                routes,
                limits: Limits {
                    max_header_size: count(r),
                    max_headers: count(r),
                },
                forwarded: r.pick(&[
                    ForwardedMode::XForwarded,
                    ForwardedMode::Forwarded,
                    ForwardedMode::None,
                ]),
                access_log: r.maybe(|r| AccessLog {
                    format: r.pick(&[LogFormat::Haproxy, LogFormat::Json]),
                }),
                // With classes, validation fills in the default: generate it explicitly.
                class: if class_names.is_empty() {
                    None
                } else if r.flip() {
                    Some(r.pick(&class_names))
                } else {
                    lowest.clone()
                },
                class_by: if class_names.is_empty() {
                    None
                } else {
                    r.maybe(|r| {
                        let mut sources = BTreeMap::new();
                        for j in 0..r.range(if http { 0 } else { 1 }, 3) {
                            let prefix = r.range(8, 32) as u8;
                            let bits =
                                (0x0a00_0000u32 + ((j as u32) << 16)) & (u32::MAX << (32 - prefix));
                            let net = Cidr::new(IpAddr::V4(Ipv4Addr::from(bits)), prefix).unwrap();
                            sources.insert(net, r.pick(&class_names));
                        }
                        if r.flip() {
                            let v6 = Cidr::new("2001:2::".parse().unwrap(), 48).unwrap();
                            sources.insert(v6, r.pick(&class_names));
                        }
                        ClassBy {
                            header: if http && (sources.is_empty() || r.flip()) {
                                Some("X-Class".parse().unwrap())
                            } else {
                                None
                            },
                            sources,
                        }
                    })
                },
            }
        })
        .collect();
    Config {
        version: SUPPORTED_VERSION,
        cluster,
        interfaces,
        vrrp,
        classes,
        frontends,
        backends,
        metrics: r.maybe(|r| Metrics {
            listen: endpoint(Ipv4Addr::new(127, 9, 0, 1), r.range(1, 65535) as u16),
            auth: r.maybe(|r| MetricsAuth {
                users: vec![MetricsUser {
                    name: format!("scraper{}", r.below(9)),
                    password_hash: "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA"
                        .to_owned(),
                }],
            }),
        }),
        sync: Sync {
            port: Port::new(r.range(1, 65535) as u16).unwrap(),
        },
        runtime: Runtime {
            socket: PathBuf::from(format!("/run/tandem/t{}.sock", r.below(9))),
        },
        network: Default::default(),
    }
}

fn reparse(config: &Config) -> Config {
    let yaml = config.to_yaml();
    match tandem_config::parse(&yaml, "roundtrip.yaml", &certs()) {
        Ok(loaded) => loaded.config,
        Err(report) => panic!("to_yaml output does not parse:\n{report}\n---\n{yaml}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_configs_round_trip_through_yaml(seed in any::<u64>()) {
        let config = gen_config(seed);
        prop_assert_eq!(reparse(&config), config);
    }
}

#[test]
fn examples_round_trip_through_yaml() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for file in ["pair.yaml", "lab.yaml"] {
        let loaded = tandem_config::load(&dir.join(file)).unwrap_or_else(|r| panic!("{r}"));
        let yaml = loaded.config.to_yaml();
        let again = tandem_config::parse(&yaml, file, &FsCertFiles { base: dir.clone() })
            .unwrap_or_else(|r| panic!("{r}\n{yaml}"));
        assert_eq!(again.config, loaded.config, "{file}");
    }
}

#[test]
fn serde_norway_reads_the_examples_like_our_reader() {
    // The raw structs are plain serde types: a standard YAML reader must agree with ours,
    // which guards against our deserializer drifting from YAML semantics.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for file in ["pair.yaml", "lab.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let raw: RawConfig =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let ours = tandem_config::load(&dir.join(file)).unwrap().config;
        let theirs_yaml = serde_norway::to_string(&raw).unwrap();
        let theirs = tandem_config::parse(&theirs_yaml, file, &FsCertFiles { base: dir.clone() })
            .unwrap_or_else(|r| panic!("{r}"))
            .config;
        assert_eq!(theirs, ours, "{file}");
    }
}
