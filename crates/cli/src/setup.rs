//! First-boot setup (`tandemctl setup`); the console's login is [`crate::console`].
//!
//! Owns: the node's identity files on the data partition (`/data/tandem/node.env`: node
//! name; `network.env`: management, LAN and sync addresses and the optional management
//! gateway; `admin.argon2`: the admin
//! password as an Argon2id PHC hash, there is no default password; `recovery.argon2`: the
//! hash of the recovery code printed at setup, which resets a lost password file), applying
//! the addresses and the default route via the management gateway (`setup --apply-network`,
//! run at boot by tandem-network.service; a re-run of setup removes the addresses it
//! replaces, and only those: the VIPs on the same interfaces are the VRRP daemon's), starting
//! the node after setup, and the password and file helpers the console shares.
//! Must not: store a password or a recovery code in clear, or start a shell.

use std::io::{BufRead as _, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use clap::Args;

/// Where the node's identity lives.
pub const DIR: &str = "/data/tandem";
/// The console recovery code's Argon2id hash, under [`DIR`] (the console checks it).
pub const RECOVERY_FILE: &str = "recovery.argon2";

/// `tandemctl setup`: each value missing from the flags is asked for.
#[derive(Debug, Clone, Default, Args)]
pub struct SetupArgs {
    /// This node's name in the pair: lb1 or lb2.
    #[arg(long)]
    pub node: Option<String>,
    /// Management address with prefix, e.g. 198.19.0.11/24.
    #[arg(long)]
    pub mgmt: Option<String>,
    /// LAN address with prefix (the node's own, besides the VIPs), e.g. 198.18.0.11/24.
    #[arg(long)]
    pub lan: Option<String>,
    /// Sync link address with prefix, e.g. 198.18.1.1/24.
    #[arg(long)]
    pub sync: Option<String>,
    /// Management gateway (default route), e.g. 198.19.0.1; `none` for none. Asked only
    /// when setup asks for another value too, so scripts that give every address keep
    /// working without it.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Read the admin password from the first line of standard input (scripts, tests).
    #[arg(long)]
    pub password_stdin: bool,
    /// Only apply the saved addresses to the interfaces (tandem-network.service).
    #[arg(long, hide = true)]
    pub apply_network: bool,
    /// Write the files but do not start the node (tests).
    #[arg(long, hide = true)]
    pub no_start: bool,
    /// The data directory (tests).
    #[arg(long, hide = true, default_value = DIR)]
    pub dir: PathBuf,
}

/// Whether this node has been set up.
pub fn is_set_up(dir: &Path) -> bool {
    dir.join("node.env").exists() && dir.join("admin.argon2").exists()
}

/// Runs the setup (or `--apply-network`).
pub fn run(args: &SetupArgs, out: &mut dyn Write) -> anyhow::Result<i32> {
    let dir = &args.dir;
    if args.apply_network {
        return apply_network(dir, out);
    }
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    writeln!(out, "Tandem first-boot setup")?;
    let node = ask(&mut input, out, "node name (lb1 or lb2)", &args.node, |v| {
        ensure!(
            v == "lb1" || v == "lb2",
            "the node name is lb1 or lb2, not `{v}`"
        );
        Ok(())
    })?;
    let mgmt = ask(
        &mut input,
        out,
        "management address (e.g. 198.19.0.11/24)",
        &args.mgmt,
        check_prefix,
    )?;
    let scripted = [&args.node, &args.mgmt, &args.lan, &args.sync]
        .iter()
        .all(|v| v.is_some());
    let gateway = match &args.gateway {
        Some(g) => {
            check_gateway(&mgmt, g)?;
            g.clone()
        }
        None if scripted => String::new(),
        None => ask(
            &mut input,
            out,
            "management gateway (e.g. 198.19.0.1, empty for none)",
            &None,
            |v| check_gateway(&mgmt, v),
        )?,
    };
    let gateway = if gateway == "none" {
        String::new()
    } else {
        gateway
    };
    let lan = ask(
        &mut input,
        out,
        "LAN address (e.g. 198.18.0.11/24)",
        &args.lan,
        check_prefix,
    )?;
    let sync = ask(
        &mut input,
        out,
        "sync link address (e.g. 198.18.1.1/24)",
        &args.sync,
        check_prefix,
    )?;
    let password = if args.password_stdin {
        let mut line = String::new();
        input.read_line(&mut line).context("reading the password")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        loop {
            let a = read_secret("admin password (at least 8 characters)", &mut input, out)?;
            let b = read_secret("again", &mut input, out)?;
            if a != b {
                writeln!(out, "  the two passwords differ")?;
            } else if a.chars().count() < 8 {
                writeln!(out, "  too short")?;
            } else {
                break a;
            }
        }
    };
    ensure!(
        password.chars().count() >= 8,
        "the admin password must have at least 8 characters"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(
        &dir.join("admin.argon2"),
        &format!("{}\n", hash_password(&password)?),
        0o600,
    )?;
    new_recovery_code(dir, out)?;
    // What the previous setup applied, to remove what this one replaces.
    let previous = std::fs::read_to_string(dir.join("network.env")).ok();
    let mut env = format!("MGMT_ADDRESS={mgmt}\nLAN_ADDRESS={lan}\nSYNC_ADDRESS={sync}\n");
    if !gateway.is_empty() {
        env.push_str(&format!("MGMT_GATEWAY={gateway}\n"));
    }
    write_file(&dir.join("network.env"), &env, 0o644)?;
    // Last: node.env is what marks the node as set up (the supervisor's condition).
    write_file(
        &dir.join("node.env"),
        &format!("TANDEM_NODE={node}\n"),
        0o644,
    )?;
    let via = if gateway.is_empty() {
        String::new()
    } else {
        format!(" via {gateway}")
    };
    writeln!(
        out,
        "saved: node {node}, management {mgmt}{via}, LAN {lan}, sync {sync}"
    )?;
    if args.no_start {
        return Ok(0);
    }
    apply_network_from(dir, previous.as_deref(), out)?;
    let _ = Command::new("hostname").arg(&node).status();
    let status = Command::new("systemctl")
        .args(["start", "--no-block", "tandem-appliance.target"])
        .status()
        .context("running systemctl start")?;
    ensure!(
        status.success(),
        "systemctl start tandem-appliance.target failed"
    );
    writeln!(
        out,
        "setup done: the supervisor starts now; commit a configuration with `config edit`, \
         then `pair` to pair with the peer"
    )?;
    Ok(0)
}

/// `given` when present (checked), else asks until `check` accepts the answer.
fn ask(
    input: &mut dyn std::io::BufRead,
    out: &mut dyn Write,
    question: &str,
    given: &Option<String>,
    check: impl Fn(&str) -> anyhow::Result<()>,
) -> anyhow::Result<String> {
    if let Some(v) = given {
        check(v)?;
        return Ok(v.clone());
    }
    loop {
        write!(out, "{question}: ")?;
        out.flush()?;
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            bail!("setup: end of input before {question}");
        }
        let v = line.trim().to_owned();
        match check(&v) {
            Ok(()) => return Ok(v),
            Err(e) => writeln!(out, "  {e}")?,
        }
    }
}

fn check_prefix(v: &str) -> anyhow::Result<()> {
    let (ip, prefix) = v
        .split_once('/')
        .with_context(|| format!("`{v}` needs a prefix length, e.g. {v}/24"))?;
    ip.parse::<std::net::IpAddr>()
        .with_context(|| format!("`{ip}` is not an IP address"))?;
    let p: u8 = prefix
        .parse()
        .with_context(|| format!("`{prefix}` is not a prefix length"))?;
    ensure!(p <= 128, "prefix length {p} is too long");
    Ok(())
}

/// An empty answer or `none` (no gateway), or an address of the family of `mgmt` on its
/// subnet and not `mgmt` itself.
fn check_gateway(mgmt: &str, v: &str) -> anyhow::Result<()> {
    if v.is_empty() || v == "none" {
        return Ok(());
    }
    let gw: std::net::IpAddr = v
        .parse()
        .with_context(|| format!("`{v}` is not an IP address"))?;
    let subnet: tandem_config::Cidr = mgmt.parse().context("management address")?;
    let addr = subnet.addr();
    ensure!(
        subnet.contains(gw),
        "the gateway {gw} is not on the management subnet {mgmt}"
    );
    ensure!(
        gw != addr,
        "the gateway {gw} is the management address itself"
    );
    Ok(())
}

/// Writes `path` atomically (temporary file, fsync, rename, fsync of the directory) with
/// exactly `mode`.
pub(crate) fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    tandem_fsutil::write_atomic_with_mode(path, text.as_bytes(), mode)
        .with_context(|| format!("writing {}", path.display()))
}

/// The recovery code's alphabet: no 0/O, 1/I (read aloud or from paper).
const CODE_ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/// Makes a new recovery code (16 symbols, 80 bits), stores its hash in
/// `DIR/recovery.argon2` and prints it once.
pub(crate) fn new_recovery_code(dir: &Path, out: &mut dyn Write) -> anyhow::Result<String> {
    let mut raw = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut raw))
        .context("reading /dev/urandom")?;
    let code: String = raw
        .iter()
        .map(|b| CODE_ALPHABET[usize::from(b % 32)] as char)
        .collect();
    write_file(
        &dir.join(RECOVERY_FILE),
        &format!("{}\n", hash_password(&code)?),
        0o600,
    )?;
    let shown: Vec<&str> = (0..4).map(|i| &code[i * 4..i * 4 + 4]).collect();
    writeln!(
        out,
        "recovery code: {}\n  write it down and keep it apart from the box: it sets a new admin password if the password file is ever lost (shown only now)",
        shown.join("-")
    )?;
    Ok(code)
}

/// Argon2id (the crate's default parameters) with a random salt, as a PHC string.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut salt))
        .context("reading /dev/urandom")?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?
        .to_string())
}

/// Whether `password` matches the PHC `hash`.
pub fn check_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash.trim()).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Reads a line with the terminal's echo off (when stdin is a terminal). Echo goes off
/// before the prompt is shown, so an answer typed as soon as the prompt appears is never
/// echoed.
pub(crate) fn read_secret(
    question: &str,
    input: &mut dyn std::io::BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    write!(out, "{question}: ")?;
    out.flush()?;
    let mut line = String::new();
    let read = input.read_line(&mut line);
    if let Some(t) = &saved {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    writeln!(out)?;
    if read.context("reading the password")? == 0 {
        bail!("end of input");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Applies `network.env`: the management, LAN and sync addresses on their interfaces, and
/// the default route via the management gateway.
fn apply_network(dir: &Path, out: &mut dyn Write) -> anyhow::Result<i32> {
    apply_network_from(dir, None, out)
}

/// [`apply_network`], removing first what `previous` (the `network.env` before this setup)
/// set and the new one replaces.
fn apply_network_from(
    dir: &Path,
    previous: Option<&str>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let path = dir.join("network.env");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    for (what, args) in network_commands(previous, &text) {
        let status = Command::new("ip").args(&args).status();
        match status {
            Ok(s) if s.success() => writeln!(out, "{what}")?,
            _ => writeln!(out, "could not {what} (ip {})", args.join(" "))?,
        }
    }
    Ok(0)
}

/// The value of `key` in an env file.
fn env_value<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .filter(|v| !v.is_empty())
}

/// The `ip` commands (with what each does, for the console) that apply `next` (a
/// `network.env`) after `previous`: old addresses that changed are removed (only those: the
/// VIPs on the same interfaces belong to the VRRP daemon), links set up, addresses set, and
/// the default route set via the management gateway, or the old one removed.
fn network_commands(previous: Option<&str>, next: &str) -> Vec<(String, Vec<String>)> {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut cmds = Vec::new();
    for (key, dev) in [
        ("MGMT_ADDRESS", "mgmt"),
        ("LAN_ADDRESS", "lan"),
        ("SYNC_ADDRESS", "sync"),
    ] {
        let new = env_value(next, key);
        if let Some(old) = previous.and_then(|p| env_value(p, key))
            && Some(old) != new
        {
            cmds.push((
                format!("{dev}: removed {old}"),
                args(&["addr", "del", old, "dev", dev]),
            ));
        }
        let Some(addr) = new else { continue };
        cmds.push((format!("{dev}: up"), args(&["link", "set", dev, "up"])));
        cmds.push((
            format!("{dev}: {addr}"),
            args(&["addr", "replace", addr, "dev", dev]),
        ));
    }
    let old_gw = previous.and_then(|p| env_value(p, "MGMT_GATEWAY"));
    match env_value(next, "MGMT_GATEWAY") {
        Some(gw) => cmds.push((
            format!("default route via {gw}"),
            args(&["route", "replace", "default", "via", gw, "dev", "mgmt"]),
        )),
        None => {
            if let Some(old) = old_gw {
                cmds.push((
                    format!("default route via {old} removed"),
                    args(&["route", "del", "default", "via", old, "dev", "mgmt"]),
                ));
            }
        }
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip() {
        let h = hash_password("correct horse").expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(check_password(&h, "correct horse"));
        assert!(!check_password(&h, "wrong horse"));
    }

    #[test]
    fn setup_with_flags_writes_the_node_files() {
        let dir = std::env::temp_dir().join(format!("tandem-setup-{}", std::process::id()));
        let args = SetupArgs {
            node: Some("lb1".into()),
            mgmt: Some("198.19.0.11/24".into()),
            lan: Some("198.18.0.11/24".into()),
            sync: Some("198.18.1.1/24".into()),
            no_start: true,
            dir: dir.clone(),
            ..Default::default()
        };
        // --password-stdin is not testable without a pipe; ask for it through a prompt-less
        // path: write the hash directly as setup would and check the flags' validation.
        assert!(check_prefix("198.19.0.11").is_err());
        assert!(check_prefix("198.19.0.11/24").is_ok());
        let mut bad = args.clone();
        bad.node = Some("lb3".into());
        assert!(run(&bad, &mut Vec::new()).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_gateway_must_be_on_the_management_subnet() {
        assert!(check_gateway("198.19.0.11/24", "").is_ok());
        assert!(check_gateway("198.19.0.11/24", "none").is_ok());
        assert!(check_gateway("198.19.0.11/24", "198.19.0.1").is_ok());
        assert!(check_gateway("198.19.0.11/24", "198.19.1.1").is_err());
        assert!(check_gateway("198.19.0.11/24", "198.19.0.11").is_err());
        assert!(check_gateway("198.19.0.11/24", "2001:2::1").is_err());
        assert!(check_gateway("198.19.0.11/24", "gw").is_err());
        assert!(check_gateway("2001:2::11/64", "2001:2::1").is_ok());
    }

    fn texts(cmds: &[(String, Vec<String>)]) -> Vec<String> {
        cmds.iter().map(|(_, a)| a.join(" ")).collect()
    }

    #[test]
    fn a_rerun_removes_the_addresses_it_replaces_and_sets_the_gateway() {
        let old = "MGMT_ADDRESS=198.19.0.11/24\nLAN_ADDRESS=198.18.0.11/24\nSYNC_ADDRESS=198.18.1.1/24\nMGMT_GATEWAY=198.19.0.1\n";
        let new = "MGMT_ADDRESS=198.19.0.12/24\nLAN_ADDRESS=198.18.0.11/24\nSYNC_ADDRESS=198.18.1.1/24\nMGMT_GATEWAY=198.19.0.254\n";
        assert_eq!(
            texts(&network_commands(Some(old), new)),
            [
                "addr del 198.19.0.11/24 dev mgmt",
                "link set mgmt up",
                "addr replace 198.19.0.12/24 dev mgmt",
                "link set lan up",
                "addr replace 198.18.0.11/24 dev lan",
                "link set sync up",
                "addr replace 198.18.1.1/24 dev sync",
                "route replace default via 198.19.0.254 dev mgmt",
            ]
        );
        let without = "MGMT_ADDRESS=198.19.0.12/24\n";
        assert_eq!(
            texts(&network_commands(Some(new), without)),
            [
                "link set mgmt up",
                "addr replace 198.19.0.12/24 dev mgmt",
                "addr del 198.18.0.11/24 dev lan",
                "addr del 198.18.1.1/24 dev sync",
                "route del default via 198.19.0.254 dev mgmt",
            ]
        );
        // At boot (no previous file) nothing is removed.
        assert_eq!(texts(&network_commands(None, without)).len(), 2);
    }
}
