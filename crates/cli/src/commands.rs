//! The command grammar of `tandemctl` (clap) and what each command asks the supervisor.
//!
//! Owns: parsing (`config commit confirmed 30s "comment"`, durations, `server NAME weight N`),
//! building requests, choosing the renderer, `config edit` (the editor round trip), and the exit
//! code (0 done, 1 refused by the supervisor, 2 could not ask).
//! Must not format tables itself (`render`) nor speak the socket (`client`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tandem_control::supervisor::{Envelope, Request};

use crate::client::Client;
use crate::render;

/// Default control socket of the supervisor.
pub const DEFAULT_SOCKET: &str = "/run/tandem/supervisor.sock";

/// tandemctl: operate a Tandem load-balancer node. Without a command: an interactive prompt.
#[derive(Debug, Parser)]
#[command(name = "tandemctl", version, about)]
pub struct Cli {
    /// Options for every command.
    #[command(flatten)]
    pub global: Global,
    /// The command; none starts the interactive prompt.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Options for every command.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The supervisor's control socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print the supervisor's JSON reply instead of tables (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node, configuration generation, role per VIP, peer, sync, services, alarms.
    Status,
    /// Show part of the node's configuration or state.
    Show {
        /// What to show.
        what: ShowWhat,
        /// For `config`: the generation (default: current).
        #[arg(long)]
        generation: Option<u64>,
        /// For `history`: how many generations.
        #[arg(long, default_value_t = 20)]
        limit: u64,
        /// For `traffic`: the target, `--last`, `--csv` (`traffic.rs`).
        #[command(flatten)]
        traffic: crate::traffic::TrafficArgs,
    },
    /// Change a server at run time: `server web1 drain`, `server shop/web1 weight 50`.
    Server {
        /// `SERVER` or `BACKEND/SERVER` when the name is not unique.
        name: String,
        /// drain, ready, maint or weight.
        action: ServerAction,
        /// The weight, for `weight`.
        value: Option<u32>,
    },
    /// The configuration: candidate, validation, diff, commit, confirm, rollback.
    Config {
        /// The configuration command.
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Planned switchover: hand the VIPs this node holds to the peer. Where this node has the
    /// higher priority and `preempt` is on, it takes them back once the hold ends (about a
    /// minute); `maintenance on` keeps them on the peer until `maintenance off`.
    Failover {
        /// Only this VRRP instance.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Maintenance mode: `on` makes the node hold VRRP backup (its VIPs go to the peer) and
    /// stay out of the pair, also across restarts and reboots; `off` ends it.
    Maintenance {
        /// on or off.
        state: OnOff,
    },
    /// Pair this node with its peer for config sync: shows this node's certificate
    /// fingerprint; asks for the peer's (as `pair` shows it on the peer's console) and pins it
    /// after confirmation. `--peer-fingerprint HEX` pins without asking (scripts, tests).
    Pair {
        /// The peer's certificate fingerprint (SHA-256, hex, colons optional).
        #[arg(long)]
        peer_fingerprint: Option<String>,
        /// The peer's node name (with --peer-address and --local-address: for a node with no
        /// configuration yet, which then receives the peer's).
        #[arg(long, requires_all = ["peer_address", "local_address"])]
        peer_name: Option<String>,
        /// The peer's sync link address, IP or IP:PORT (port 7400 by default).
        #[arg(long, requires_all = ["peer_name", "local_address"])]
        peer_address: Option<String>,
        /// This node's sync link address, IP or IP:PORT (port 7400 by default).
        #[arg(long, requires_all = ["peer_name", "peer_address"])]
        local_address: Option<String>,
    },
    /// Config sync with the peer: `sync resolve use-local|use-peer` ends a divergence.
    Sync {
        /// The sync command.
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Recent log lines of a service (proxy, vrrp, supervisor), or of all.
    Logs {
        /// The service; all when omitted.
        service: Option<String>,
        /// How many lines.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: u64,
    },
    /// Firmware: install a signed bundle into the other slot, roll back, slot status.
    Firmware {
        /// The firmware command.
        #[command(subcommand)]
        command: crate::firmware::FirmwareCommand,
    },
    /// First-boot setup: node name, management, LAN and sync addresses, admin password.
    Setup(crate::setup::SetupArgs),
    /// The serial console's login program: setup or password, then the prompt.
    #[command(hide = true)]
    Console(crate::console::ConsoleArgs),
    /// Show or set how long the console waits at a prompt before it logs out (this node;
    /// default 15m, 1s to 24h): `idle-timeout 30m`.
    IdleTimeout {
        /// The new timeout, e.g. 30m; shows the current one when omitted.
        duration: Option<String>,
    },
    /// Reboot the node.
    Reboot,
    /// Power the node off.
    Poweroff,
}

/// `show` targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShowWhat {
    /// Frontends: binds, TLS, backends.
    Frontends,
    /// Backends: balance, servers, persistence, checks.
    Backends,
    /// Servers of every backend, live from the proxy: state, health, weight, sessions, responses.
    Servers,
    /// Traffic statistics per frontend and backend, live from the proxy.
    Stats,
    /// Recorded traffic history as sparklines: `show traffic [NAME] [--last 1h|7d|1y] [--csv]`.
    Traffic,
    /// VRRP instances and this node's role in each.
    Vrrp,
    /// Config sync with the peer.
    Sync,
    /// Committed generations.
    History,
    /// The configuration text.
    Config,
    /// The firmware image: version, slot, build, Debian packages (the manifest).
    Version,
    /// Boot time (systemd-analyze) and when the node became healthy.
    Boot,
}

/// `sync` commands.
#[derive(Debug, Clone, Subcommand)]
pub enum SyncCommand {
    /// End a divergence: keep this node's configuration (`use-local`) or take the peer's
    /// (`use-peer`); the choice is committed as a new generation on both nodes.
    Resolve {
        /// use-local or use-peer.
        side: Side,
    },
}

/// Which side wins a divergence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Side {
    /// This node's configuration.
    UseLocal,
    /// The peer's configuration.
    UsePeer,
}

/// `server` actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServerAction {
    /// Finish current sessions, take no new ones.
    Drain,
    /// Back in service.
    Ready,
    /// Out of service at once.
    Maint,
    /// Set the weight.
    Weight,
}

/// on / off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// `config` commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Edit the candidate in $EDITOR (starting from the running configuration).
    Edit,
    /// Replace the candidate with FILE.
    Load {
        /// The YAML file.
        file: PathBuf,
    },
    /// Check the candidate (every error with line and column).
    Validate,
    /// Changes from the running configuration (or `--generation N`) to the candidate.
    Diff {
        /// Compare with this generation instead of the running one.
        #[arg(long)]
        generation: Option<u64>,
    },
    /// Commit the candidate: `config commit [confirmed DURATION] [COMMENT...]`.
    Commit {
        /// `confirmed 30s` then an optional comment.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Confirm a `commit confirmed` before it reverts.
    Confirm,
    /// Restore generation N (committed again as a new generation).
    Rollback {
        /// The generation (`show history`).
        generation: u64,
        /// Optional comment.
        #[arg(trailing_var_arg = true)]
        comment: Vec<String>,
    },
    /// Throw the candidate away.
    Discard,
}

/// Parses `30s`, `5m`, `1h`, `500ms`, `1m30s`.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        bail!("empty duration; give one like 30s or 5m");
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            bail!("`{text}` is not a duration; give one like 30s, 5m or 1h");
        }
        let n: u64 = rest[..digits]
            .parse()
            .context("duration number too large")?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "" => bail!("`{text}` has no unit; write e.g. {n}s or {n}m"),
            u => bail!("unknown unit `{u}` in `{text}`; use ms, s, m or h"),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `[confirmed D] [comment...]` → (confirm window, comment).
pub fn parse_commit_words(words: &[String]) -> anyhow::Result<(Option<Duration>, String)> {
    match words.first().map(String::as_str) {
        Some("confirmed") => {
            let d = words.get(1).ok_or_else(|| {
                anyhow!("`commit confirmed` needs a duration, e.g. `config commit confirmed 5m`")
            })?;
            Ok((Some(parse_duration(d)?), words[2..].join(" ")))
        }
        _ => Ok((None, words.join(" "))),
    }
}

/// The login name recorded as a commit's author when the supervisor lets us say it
/// (it trusts SO_PEERCRED; only root may name someone else).
fn author() -> Option<String> {
    std::env::var("SUDO_USER")
        .ok()
        .or_else(|| std::env::var("LOGNAME").ok())
}

/// Runs one command; writes its output to `out`; returns the exit code.
pub fn run(global: &Global, command: Command, out: &mut dyn Write) -> anyhow::Result<i32> {
    // Local commands (firmware, setup, console): they work without the supervisor.
    match &command {
        Command::Firmware { command } => {
            return crate::firmware::run(command, &global.socket, out);
        }
        Command::Show {
            what: ShowWhat::Version,
            ..
        } => return crate::firmware::show_version(out),
        Command::Show {
            what: ShowWhat::Boot,
            ..
        } => return crate::firmware::show_boot(out),
        Command::Show {
            what: ShowWhat::Traffic,
            traffic,
            ..
        } => return crate::traffic::run(&global.socket, global.json, traffic, out),
        Command::Setup(args) => return crate::setup::run(args, out),
        Command::Console(args) => return crate::console::run(args, global),
        Command::IdleTimeout { duration } => {
            return crate::console::idle_timeout_command(
                Path::new(crate::setup::DIR),
                duration.as_deref(),
                out,
            );
        }
        Command::Reboot | Command::Poweroff => {
            let verb = if matches!(command, Command::Reboot) {
                "reboot"
            } else {
                "poweroff"
            };
            let ok = std::process::Command::new("systemctl")
                .arg(verb)
                .status()?
                .success();
            return Ok(if ok { 0 } else { 1 });
        }
        _ => {}
    }
    let mut client = Client::connect(&global.socket)?;
    if let Command::Pair {
        peer_fingerprint: None,
        peer_name,
        peer_address,
        local_address,
    } = &command
        && !global.json
    {
        let first = Request::SyncPair {
            peer_fingerprint: None,
            peer_name: peer_name.clone(),
            peer_address: peer_address.clone(),
            local_address: local_address.clone(),
        };
        return pair_interactive(&mut client, &first, out);
    }
    let (request, view) = request(&command, &mut client)?;
    let Some(request) = request else {
        return Ok(0);
    };
    let reply = client.call(&request)?;
    let ok = reply.get("ok") == Some(&Value::Bool(true));
    if global.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&reply)?)?;
    } else if !ok {
        write!(out, "{}", render::error(&reply))?;
    } else {
        write!(out, "{}", view(&reply))?;
    }
    // A saved but invalid candidate is not a success for scripts either.
    let invalid = reply.get("valid") == Some(&Value::Bool(false));
    Ok(if ok && !invalid { 0 } else { 1 })
}

type View = fn(&Value) -> String;

/// The request for `command` and how to render its reply; `None` when the command already
/// did everything (an unchanged `config edit`).
fn request(command: &Command, client: &mut Client) -> anyhow::Result<(Option<Envelope>, View)> {
    Ok(match command {
        Command::Status => (Some(Request::Status.into()), render::status),
        Command::Firmware { .. }
        | Command::Setup(_)
        | Command::Console(_)
        | Command::IdleTimeout { .. }
        | Command::Reboot
        | Command::Poweroff => (None, |_| String::new()),
        Command::Show {
            what,
            generation,
            limit,
            ..
        } => match what {
            ShowWhat::Frontends => (
                Some(Request::ShowConfig { generation: None }.into()),
                render::frontends,
            ),
            ShowWhat::Backends => (
                Some(Request::ShowConfig { generation: None }.into()),
                render::backends,
            ),
            ShowWhat::Servers => (
                Some(Request::ShowServers { backend: None }.into()),
                render::servers,
            ),
            ShowWhat::Config => (
                Some(
                    Request::ShowConfig {
                        generation: *generation,
                    }
                    .into(),
                ),
                |v| {
                    v.get("text")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned()
                },
            ),
            ShowWhat::History => (
                Some(
                    Request::History {
                        limit: Some(*limit),
                    }
                    .into(),
                ),
                render::history,
            ),
            ShowWhat::Vrrp => (Some(Request::Status.into()), |v| {
                render::vrrp(v.get("vrrp").unwrap_or(&Value::Null))
            }),
            ShowWhat::Sync => (Some(Request::SyncStatus.into()), render::sync),
            ShowWhat::Version | ShowWhat::Boot | ShowWhat::Traffic => (None, |_| String::new()),
            ShowWhat::Stats => (Some(Request::ShowStats.into()), render::stats),
        },
        Command::Server {
            name,
            action,
            value,
        } => {
            let (backend, server) = resolve_server(client, name)?;
            let (action, weight) = match action {
                ServerAction::Weight => {
                    let w = value.ok_or_else(|| {
                        anyhow!(
                            "`server {name} weight` needs a number, e.g. `server {name} weight 50`"
                        )
                    })?;
                    if w > 256 {
                        bail!("weight {w} is out of range; use 0 to 256");
                    }
                    ("weight".to_owned(), Some(Value::from(w)))
                }
                other => (format!("{other:?}").to_lowercase(), None),
            };
            let req = Request::Server {
                backend: Some(backend),
                server: Some(server),
                action: Some(action),
                weight,
            };
            (Some(req.into()), |v| {
                format!("done: {}\n", v.get("proxy").unwrap_or(&Value::Null))
            })
        }
        Command::Failover { instance } => (
            Some(
                Request::Failover {
                    instance: instance.clone(),
                }
                .into(),
            ),
            |v| {
                format!(
                    "switchover started: {}\n",
                    v.get("vrrp").unwrap_or(&Value::Null)
                )
            },
        ),
        Command::Maintenance { state } => (
            Some(
                Request::Maintenance {
                    on: Some(*state == OnOff::On),
                }
                .into(),
            ),
            |v| {
                if v.get("maintenance") == Some(&Value::Bool(true)) {
                    "maintenance on: this node holds VRRP backup (its VIPs go to the peer) and stays out of the pair, also across restarts and reboots; `maintenance off` ends it\n".into()
                } else {
                    "maintenance off\n".into()
                }
            },
        ),
        Command::Pair {
            peer_fingerprint,
            peer_name,
            peer_address,
            local_address,
        } => (
            Some(
                Request::SyncPair {
                    peer_fingerprint: peer_fingerprint.clone(),
                    peer_name: peer_name.clone(),
                    peer_address: peer_address.clone(),
                    local_address: local_address.clone(),
                }
                .into(),
            ),
            render::pair,
        ),
        Command::Sync {
            command: SyncCommand::Resolve { side },
        } => (
            Some(
                Request::SyncResolve {
                    side: Some(
                        match side {
                            Side::UseLocal => "use-local",
                            Side::UsePeer => "use-peer",
                        }
                        .to_owned(),
                    ),
                }
                .into(),
            ),
            |v| {
                format!(
                    "{}\ngeneration {} runs here and is pushed to the peer\n",
                    render::s(render::get(v, "comment")),
                    render::s(render::get(v, "generation"))
                )
            },
        ),
        Command::Logs { service, lines } => (
            Some(
                Request::Logs {
                    service: service.clone(),
                    lines: Some(*lines),
                }
                .into(),
            ),
            |v| {
                let mut out = String::new();
                for l in v
                    .get("lines")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice)
                {
                    out.push_str(l.as_str().unwrap_or(""));
                    out.push('\n');
                }
                out
            },
        ),
        Command::Config { command } => match command {
            ConfigCommand::Edit => (edit(client)?, render::candidate_saved),
            ConfigCommand::Load { file } => {
                let text = read_file(file)?;
                (
                    Some(Request::CandidateSet { text: Some(text) }.into()),
                    render::candidate_saved,
                )
            }
            ConfigCommand::Validate => (Some(Request::Validate { text: None }.into()), |v| {
                let mut out = String::from(
                    "candidate is valid; `config diff` to review, `config commit` to apply\n",
                );
                for w in v
                    .get("warnings")
                    .and_then(Value::as_array)
                    .map_or(&[][..], Vec::as_slice)
                {
                    out.push_str(&format!("  {}\n", w.as_str().unwrap_or("")));
                }
                out
            }),
            ConfigCommand::Diff { generation } => (
                Some(
                    Request::Diff {
                        text: None,
                        generation: *generation,
                    }
                    .into(),
                ),
                render::diff,
            ),
            ConfigCommand::Commit { words } => {
                let (confirm, comment) = parse_commit_words(words)?;
                let req = Envelope::from(Request::Commit {
                    text: None,
                    confirm_ms: confirm.map(|d| d.as_millis() as u64),
                })
                .with(Some(comment), author());
                (Some(req), render::commit)
            }
            ConfigCommand::Confirm => (Some(Request::Confirm.into()), |v| {
                format!(
                    "generation {} confirmed\n",
                    v.get("confirmed").unwrap_or(&Value::Null)
                )
            }),
            ConfigCommand::Rollback {
                generation,
                comment,
            } => (
                Some(
                    Envelope::from(Request::Rollback {
                        generation: Some(*generation),
                    })
                    .with(Some(comment.join(" ")), author()),
                ),
                render::commit,
            ),
            ConfigCommand::Discard => (Some(Request::CandidateClear.into()), |_| {
                "candidate discarded\n".into()
            }),
        },
    })
}

/// `pair` on a console: show our fingerprint, ask for the peer's, confirm, pin.
fn pair_interactive(
    client: &mut Client,
    first: &Request,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let reply = client.call(first)?;
    if reply.get("ok") != Some(&Value::Bool(true)) {
        write!(out, "{}", render::error(&reply))?;
        return Ok(1);
    }
    write!(out, "{}", render::pair(&reply))?;
    writeln!(
        out,
        "enter the fingerprint `pair` shows on the peer's console (empty to leave pairing unchanged):"
    )?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let fp = line.trim();
    if fp.is_empty() {
        writeln!(out, "pairing unchanged")?;
        return Ok(0);
    }
    write!(out, "pin {fp} as the peer's certificate? [y/N] ")?;
    out.flush()?;
    let mut yes = String::new();
    std::io::stdin().read_line(&mut yes)?;
    if !matches!(yes.trim(), "y" | "Y" | "yes") {
        writeln!(out, "pairing unchanged")?;
        return Ok(1);
    }
    let reply = client.call(&Request::SyncPair {
        peer_fingerprint: Some(fp.to_owned()),
        peer_name: None,
        peer_address: None,
        local_address: None,
    })?;
    if reply.get("ok") != Some(&Value::Bool(true)) {
        write!(out, "{}", render::error(&reply))?;
        return Ok(1);
    }
    write!(out, "{}", render::pair(&reply))?;
    Ok(0)
}

fn read_file(path: &Path) -> anyhow::Result<String> {
    // `config load http://...`: the serial console has no other way in (system tests).
    if let Some(url) = path.to_str().filter(|p| p.starts_with("http://")) {
        let body = crate::http::get_bytes(url, crate::http::CONFIG)?;
        return String::from_utf8(body).with_context(|| format!("{url} is not UTF-8"));
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `BACKEND/SERVER` as given, or the backend holding the only server named `name`.
fn resolve_server(client: &mut Client, name: &str) -> anyhow::Result<(String, String)> {
    if let Some((b, s)) = name.split_once('/') {
        return Ok((b.to_owned(), s.to_owned()));
    }
    let reply = client.call(&Request::ShowConfig { generation: None })?;
    let backends = reply
        .pointer("/config/backends")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let holders: Vec<String> = backends
        .iter()
        .filter(|b| {
            b.get("servers")
                .and_then(Value::as_array)
                .is_some_and(|ss| {
                    ss.iter()
                        .any(|s| s.get("name").and_then(Value::as_str) == Some(name))
                })
        })
        .filter_map(|b| b.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    match holders.as_slice() {
        [one] => Ok((one.clone(), name.to_owned())),
        [] => bail!("no server named `{name}`; `show servers` lists them"),
        many => bail!(
            "server `{name}` is in several backends ({}); say which, e.g. `server {}/{name} ...`",
            many.join(", "),
            many[0]
        ),
    }
}

/// `config edit`: fetch the candidate (or the running text), open $EDITOR, save it back.
fn edit(client: &mut Client) -> anyhow::Result<Option<Envelope>> {
    let reply = client.call(&Request::CandidateGet)?;
    if reply.get("ok") != Some(&Value::Bool(true)) {
        bail!("{}", render::error(&reply).trim_end());
    }
    let before = reply
        .get("text")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let dir = std::env::temp_dir();
    let path = dir.join(format!("tandemctl-candidate-{}.yaml", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(before.as_bytes())?;
    }
    let editor = std::env::var("VISUAL")
        .or_else(|_| std::env::var("EDITOR"))
        .unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .with_context(|| format!("cannot run the editor `{editor}` (set EDITOR)"));
    let after = std::fs::read_to_string(&path);
    let _ = std::fs::remove_file(&path);
    let status = status?;
    if !status.success() {
        bail!("the editor `{editor}` failed ({status}); the candidate was not changed");
    }
    let after = after.context("cannot read back the edited candidate")?;
    if after == before {
        println!("no changes made; the candidate is unchanged");
        return Ok(None);
    }
    Ok(Some(Request::CandidateSet { text: Some(after) }.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse_duration("5").unwrap_err().to_string().contains("5s"));
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn commit_words() {
        let w = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            parse_commit_words(&w("confirmed 2m raise web1 weight")).unwrap(),
            (Some(Duration::from_secs(120)), "raise web1 weight".into())
        );
        assert_eq!(
            parse_commit_words(&w("just a comment")).unwrap(),
            (None, "just a comment".into())
        );
        assert!(parse_commit_words(&w("confirmed")).is_err());
    }

    #[test]
    fn grammar_parses_the_documented_commands() {
        for line in [
            "status",
            "show servers",
            "show history --limit 5",
            "show config --generation 3",
            "server web1 drain",
            "server shop/web1 weight 50",
            "config commit confirmed 30s change weights",
            "config rollback 4",
            "config load /tmp/x.yaml",
            "firmware install http://198.19.0.1:8080/t.upgrade --allow-downgrade --reboot",
            "maintenance on",
            "logs proxy -n 10",
            "idle-timeout 30m",
            "idle-timeout",
            "--json status",
        ] {
            let args = std::iter::once("tandemctl").chain(line.split_whitespace());
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("`{line}` does not parse: {e}");
            }
        }
    }
}
