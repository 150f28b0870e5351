//! `tandem`: the multi-call binary of the appliance.
//!
//! Owns the command line: `tandem check FILE` (validate a configuration, like `haproxy -c`)
//! and `tandem schema` (JSON Schema of the file for editors).
//! and `tandem forecast` (the capacity forecast on a CSV utilisation series, `tandem-forecast`).
//! and `tandem proxy` (the data plane, `tandem-proxy`)
//! and `tandem vrrp` (the failover daemon, `tandem-vrrpd`, plus its hidden `vrrp-guardian`),
//! and `tandem supervisor` (the node supervisor, `tandem-supervisor`, which also runs config
//! sync with the peer, `tandem-sync`: there is no separate `sync` daemon).
//! All configuration logic lives in `tandem-config`; this file only formats its results.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tandem_config::{Config, Persistence};

/// Tandem load-balancer appliance.
#[derive(Debug, Parser)]
#[command(name = "tandem", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands: two tools (`check`, `schema`) and the daemons the supervisor runs.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file: print a summary and warnings and exit 0, or print every
    /// problem and exit 1. Certificate paths are relative to the file's directory.
    Check {
        /// The YAML configuration file.
        file: PathBuf,
    },
    /// Print the JSON Schema of the configuration file (for editor completion and checks).
    Schema,
    /// Forecast a utilisation series offline, for planning: read `TIMESTAMP,UTILISATION`
    /// lines (RFC 3339, a fraction from 0 to 1), print when the daily peak is expected to
    /// cross the threshold (`crossing: YYYY-MM-DD` and its band on the next line, or
    /// `crossing: none within 1 year`) and the next seasonal peak (`peak: YYYY-MM-DD VALUE`).
    /// The forecast starts the day after the last sample. Exit 1 on a bad line (every bad
    /// line is listed with its number).
    Forecast {
        /// The CSV file.
        #[arg(long, value_name = "FILE.csv")]
        input: PathBuf,
        /// Utilisation the peak should stay under (`capacity.threshold`).
        #[arg(long, default_value_t = tandem_forecast::DEFAULT_THRESHOLD)]
        threshold: f64,
        /// Servers in the backend now: also print how many like them keep the peak under
        /// the threshold.
        #[arg(long)]
        servers: Option<u32>,
    },
    /// Run the data plane: the frontends and backends of the configuration.
    /// SIGHUP reloads the file (an invalid file is refused and the old one keeps serving);
    /// SIGTERM and SIGINT stop accepting and drain in-flight requests.
    /// Binary upgrade: start the new binary with `--takeover` on the running one's handover
    /// socket; it takes the listening sockets over, then the old one drains and exits
    /// (docs/upgrade.md).
    Proxy {
        /// The YAML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// This node's name in `cluster.nodes` (omit on a single-node configuration).
        #[arg(long)]
        node: Option<String>,
        /// Worker threads; 1 runs the proxy on a single-threaded runtime.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Take the listening sockets over from the proxy serving this handover socket.
        #[arg(long, value_name = "SOCKET")]
        takeover: Option<PathBuf>,
        /// Where to hand the listening sockets to a successor (default:
        /// `<runtime.socket>.handover` when the runtime API is configured).
        #[arg(long, value_name = "SOCKET")]
        handover_socket: Option<PathBuf>,
    },
    /// Run the VRRP daemon: elect a master with the peer and hold the VIPs while master.
    /// SIGTERM and SIGINT resign (priority-0 advert), remove the VIPs and exit 0.
    Vrrp {
        /// The YAML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// This node's name in `cluster.nodes`.
        #[arg(long)]
        node: String,
        /// Control socket (line-delimited JSON: status, switchover, watch).
        #[arg(long, default_value = tandem_vrrpd::DEFAULT_CONTROL_SOCKET)]
        control_socket: PathBuf,
        /// Health-probe the local proxy by connecting to this address (for `track.proxy`)
        /// instead of asking its runtime API on the config's `runtime.socket` (the default).
        #[arg(long)]
        proxy_probe_tcp: Option<std::net::SocketAddr>,
        /// Run without the VIP guardian process (VIPs then outlive a crash until their lifetime ends).
        #[arg(long)]
        no_guardian: bool,
    },
    /// Internal: the VIP guardian started by `tandem vrrp` (reads its protocol on stdin).
    #[command(hide = true)]
    VrrpGuardian {
        /// Socket where a restarted daemon adopts the VIPs this guardian holds.
        #[arg(long)]
        listen: Option<PathBuf>,
    },
    /// Run the node supervisor: keeps the configuration store in DIR/config, starts and
    /// restarts the proxy and the VRRP daemon, runs config transactions for `tandemctl`
    /// (control socket), reports readiness to systemd. SIGTERM/SIGINT stop the services.
    Supervisor {
        /// Data directory (`/data` on the appliance).
        #[arg(long)]
        data_dir: PathBuf,
        /// This node's name in `cluster.nodes` (needed for VRRP).
        #[arg(long)]
        node: Option<String>,
        /// The node's run directory: its sockets live here; `runtime.socket` under /run/tandem
        /// is placed in it. Off the appliance (a lab stack), a directory named `tandem` or
        /// `tandem-*`, as the `runtime.socket` rule of `tandem check` asks.
        #[arg(long, default_value = tandem_supervisor::DEFAULT_RUN_DIR)]
        run_dir: PathBuf,
        /// Control socket for `tandemctl` (default: RUN_DIR/supervisor.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// The VRRP daemon's control socket (default: RUN_DIR/vrrp.sock).
        #[arg(long)]
        vrrp_socket: Option<PathBuf>,
        /// The group of full access to the control socket (besides root).
        #[arg(long, hide = true, default_value = tandem_supervisor::access::ADMIN_GROUP)]
        admin_group: String,
        /// The group of read-only access to the control socket.
        #[arg(long, hide = true, default_value = tandem_supervisor::access::MONITOR_GROUP)]
        monitor_group: String,
        /// Run the proxy and the VRRP daemon as this user (a name, or UID:GID) with only
        /// the capabilities each needs. Only when the supervisor is root and the user
        /// exists; otherwise they run as the supervisor's own user (with a warning).
        #[arg(long, value_name = "USER")]
        service_user: Option<String>,
        /// Generate the host firewall (nftables table `inet tandem`) from the configuration
        /// and load it at every apply. Changes this host's netfilter rules: the appliance's
        /// unit sets it; tests only inside network namespaces.
        #[arg(long)]
        firewall: bool,
        /// How often the traffic history samples the proxy, seconds (tests use 1).
        #[arg(long, value_name = "SECONDS", default_value_t = 10,
              value_parser = clap::value_parser!(u64).range(1..=3600))]
        history_interval: u64,
    },
}

fn main() -> ExitCode {
    use std::io::Write as _;
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            // Not eprintln!: it panics when stderr is a broken pipe.
            let _ = writeln!(std::io::stderr(), "tandem: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { file } => Ok(check(&file)),
        Command::Schema => {
            let text = serde_json::to_string_pretty(&tandem_config::json_schema())
                .context("failed to render the JSON schema")?;
            println!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Forecast {
            input,
            threshold,
            servers,
        } => forecast(&input, threshold, servers),
        Command::Proxy {
            config,
            node,
            threads,
            takeover,
            handover_socket,
        } => {
            init_tracing();
            let runtime = runtime(threads)?;
            runtime
                .block_on(tandem_proxy::run_with(
                    tandem_proxy::ConfigFile { path: config, node },
                    shutdown_signal(),
                    tandem_proxy::handover::Options {
                        serve: handover_socket,
                        take_over: takeover,
                    },
                ))
                .context("proxy stopped")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Vrrp {
            config,
            node,
            control_socket,
            proxy_probe_tcp,
            no_guardian,
        } => {
            init_tracing();
            let loaded = tandem_config::load(&config).map_err(|report| {
                anyhow::anyhow!("{}: configuration is invalid\n{report}", config.display())
            })?;
            let guardian = if no_guardian {
                None
            } else {
                Some(tandem_vrrpd::GuardianCommand {
                    program: std::env::current_exe()
                        .context("failed to find this executable for the vip guardian")?,
                    args: vec!["vrrp-guardian".into()],
                    listen: Some(tandem_vrrpd::guardian_socket(&control_socket)),
                })
            };
            let options = tandem_vrrpd::Options {
                control_socket: Some(control_socket),
                guardian,
                proxy_probe: proxy_probe_tcp.map(|addr| {
                    std::sync::Arc::new(tandem_vrrpd::TcpConnectProbe { addr })
                        as std::sync::Arc<dyn tandem_vrrpd::ProxyProbe>
                }),
            };
            runtime(1)?
                .block_on(tandem_vrrpd::run(
                    &loaded.config,
                    &node,
                    options,
                    shutdown_signal(),
                ))
                .context("vrrp daemon failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Supervisor {
            data_dir,
            node,
            run_dir,
            socket,
            vrrp_socket,
            admin_group,
            monitor_group,
            service_user,
            firewall,
            history_interval,
        } => {
            init_tracing();
            let service_user = service_user.and_then(|name| {
                tandem_supervisor::child::ServiceUser::resolve(&name)
                    .inspect_err(
                        |e| tracing::warn!(cause = %e, "the services run as the supervisor's user"),
                    )
                    .ok()
            });
            let options = tandem_supervisor::Options {
                data_dir,
                node,
                program: std::env::current_exe().context("cannot find the tandem binary")?,
                control_socket: socket
                    .unwrap_or_else(|| run_dir.join(tandem_supervisor::CONTROL_SOCKET_NAME)),
                vrrp_socket: vrrp_socket
                    .unwrap_or_else(|| run_dir.join(tandem_supervisor::VRRP_SOCKET_NAME)),
                run_dir,
                access_groups: tandem_supervisor::access::Groups {
                    admin: admin_group,
                    monitor: monitor_group,
                },
                service_user,
                firewall,
                history_interval: std::time::Duration::from_secs(history_interval),
            };
            runtime(2)?
                .block_on(tandem_supervisor::run(options, shutdown_signal()))
                .context("supervisor failed")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::VrrpGuardian { listen } => {
            init_tracing();
            tandem_vrrpd::guardian_main(listen.as_deref()).context("vip guardian failed")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Logs go to stderr; `RUST_LOG` filters them (default `info`), `TANDEM_LOG=json`
/// switches to one JSON object per line for log collectors.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A log line that cannot be written is dropped, never reported on stderr: under the
    // supervisor, stderr is a pipe that breaks when the supervisor dies, and reporting the
    // failure there panics (in the VRRP daemon's shutdown, or in its guardian, that panic
    // left the VIPs in place until their lifetime ran out).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    if std::env::var("TANDEM_LOG").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A tokio runtime with `threads` workers; one thread means the current-thread scheduler.
fn runtime(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .context("failed to start the async runtime")
}

/// Resolves on the first SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install SIGTERM/SIGINT handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
    }
}

/// `tandem check`: exit 0 with a summary when valid, 1 with every diagnostic when not.
fn check(file: &std::path::Path) -> ExitCode {
    match tandem_config::load(file) {
        Ok(loaded) => {
            print!("{}", summary(&loaded.config));
            for w in &loaded.warnings {
                println!("{w}");
            }
            println!(
                "{}: configuration is valid ({} warning{})",
                file.display(),
                loaded.warnings.len(),
                if loaded.warnings.len() == 1 { "" } else { "s" }
            );
            ExitCode::SUCCESS
        }
        Err(report) => {
            println!("{report}");
            println!("{}: configuration is invalid", file.display());
            ExitCode::FAILURE
        }
    }
}

/// `tandem forecast`: exit 0 with the forecast (or the plain statement that the history is
/// too short), 1 with every bad line of the file.
fn forecast(
    input: &std::path::Path,
    threshold: f64,
    servers: Option<u32>,
) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    if !(threshold > 0.0 && threshold <= 1.0) {
        anyhow::bail!(
            "--threshold {threshold} is not a fraction above 0 and at most 1 (0.7 for 70%)"
        );
    }
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("failed to read {}", input.display()))?;
    let samples = match tandem_forecast::csv::parse(&text) {
        Ok(s) => s,
        Err(errors) => {
            let mut err = std::io::stderr().lock();
            const SHOWN: usize = 20;
            for e in errors.iter().take(SHOWN) {
                let _ = writeln!(err, "{}:{}: {}", input.display(), e.line, e.message);
            }
            if errors.len() > SHOWN {
                let _ = writeln!(err, "... and {} more", errors.len() - SHOWN);
            }
            let _ = writeln!(
                err,
                "{}: {} bad line{}, nothing forecast",
                input.display(),
                errors.len(),
                if errors.len() == 1 { "" } else { "s" }
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    // The forecast starts the day after the last sample (parse returned at least one).
    let last = samples.iter().map(|s| s.0).max().unwrap_or(0);
    let now = tandem_forecast::Day::of(last).plus(1).start();
    let params = tandem_forecast::Params {
        threshold,
        ..tandem_forecast::Params::default()
    };
    let outcome = tandem_forecast::forecast(&samples, &params, now);
    print!("{}", outcome.render());
    if let (Some(n), Some(f)) = (servers, outcome.forecast()) {
        let (expected, upper) = f.servers_needed(n);
        println!(
            "servers: {expected} keep the peak under {:.0}% ({upper} at the band's upper edge; {n} now)",
            threshold * 100.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One screen describing what the configuration does.
fn summary(c: &Config) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored on purpose.
    if let Some(cl) = &c.cluster {
        let nodes: Vec<String> = cl
            .nodes
            .iter()
            .map(|(n, node)| format!("{n} ({}, priority {})", node.lan_address, node.priority))
            .collect();
        let _ = writeln!(out, "cluster {}: {}", cl.name, nodes.join(", "));
    } else {
        let _ = writeln!(out, "single node (no cluster)");
    }
    for v in &c.vrrp {
        let vips: Vec<String> = v.addresses.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "vrrp {}: {} vrid {}, VIPs {}{}",
            v.name,
            v.interface,
            v.vrid,
            vips.join(", "),
            if v.unicast { ", unicast" } else { "" }
        );
    }
    for f in &c.frontends {
        let binds: Vec<String> = f.bind.iter().map(|b| b.address.to_string()).collect();
        let mut targets: Vec<String> = f.routes.iter().map(|r| r.backend.to_string()).collect();
        if let Some(d) = &f.default_backend {
            targets.push(format!("{d} (default)"));
        }
        let _ = writeln!(
            out,
            "frontend {} ({}{}): {} -> {}",
            f.name,
            mode(f.mode),
            if f.tls.is_some() { ", tls" } else { "" },
            binds.join(", "),
            targets.join(", ")
        );
    }
    for b in &c.backends {
        let persistence = match &b.persistence {
            Some(Persistence::Cookie { name }) => format!(", cookie {name}"),
            Some(Persistence::Source { .. }) => ", source persistence".to_owned(),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "backend {} ({}, {}{}): {} server{}",
            b.name,
            mode(b.mode),
            b.balance,
            persistence,
            b.servers.len(),
            if b.servers.len() == 1 { "" } else { "s" }
        );
        for s in &b.servers {
            let mut flags = format!("weight {}", s.weight);
            if let Some(m) = s.max_connections {
                let _ = write!(flags, ", max_connections {m}");
            }
            if s.backup {
                flags.push_str(", backup");
            }
            if s.state != tandem_config::ServerState::Ready {
                let _ = write!(flags, ", {:?}", s.state);
            }
            let _ = writeln!(
                out,
                "  server {} {} ({})",
                s.name,
                s.address,
                flags.to_lowercase()
            );
        }
    }
    out
}

fn mode(m: tandem_config::Mode) -> &'static str {
    match m {
        tandem_config::Mode::Http => "http",
        tandem_config::Mode::Tcp => "tcp",
    }
}
