//! Carrying out a plan on the host: each [`Op`] as iproute2 `ip` commands, files written
//! whole and atomically, and the steps already done undone when one fails.
//!
//! Owns the translation of operations to `ip` argument lists ([`commands`]), the
//! [`System`] seam (the real one, [`IpSystem`], spawns `ip` and writes files; tests can
//! record), and the rollback of a half-applied plan.
//! iproute2 rather than rtnetlink: the image ships `ip` anyway, the commands are the ones an
//! operator would type (logged as such), and it keeps this crate free of an async runtime
//! and netlink message crates; a plan is a handful of commands at boot or commit, not a hot
//! path. Runs synchronously: call it from a blocking thread.
//! Does not decide what to change (the plan does) and never touches interface addresses.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use tandem_config::StaticRoute;

use crate::plan::{ConfigFile, Op, Plan};

/// Where the files of [`ConfigFile`] live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The resolver configuration.
    pub resolv_conf: PathBuf,
    /// chrony's sources file (chrony reads the `*.sources` files of a `sourcedir`, and
    /// rereads them on `chronyc reload sources`).
    pub chrony_sources: PathBuf,
}

impl Files {
    /// The appliance's paths, on tmpfs since the root file system is read-only (and rewritten
    /// at every boot from the configuration): `/run/tandem/resolv.conf`, which the image's
    /// `/etc/resolv.conf` must link to, and `/run/tandem/chrony/tandem.sources`, for a
    /// `sourcedir /run/tandem/chrony` line in the image's chrony.conf.
    pub fn appliance() -> Files {
        Files {
            resolv_conf: "/run/tandem/resolv.conf".into(),
            chrony_sources: "/run/tandem/chrony/tandem.sources".into(),
        }
    }

    /// Both files in directory `dir` (tests, labs).
    pub fn in_dir(dir: &Path) -> Files {
        Files {
            resolv_conf: dir.join("resolv.conf"),
            chrony_sources: dir.join("tandem.sources"),
        }
    }

    fn path(&self, file: ConfigFile) -> &Path {
        match file {
            ConfigFile::ResolvConf => &self.resolv_conf,
            ConfigFile::ChronySources => &self.chrony_sources,
        }
    }
}

/// What applying needs of the host.
pub trait System {
    /// Runs `ip` with `args`; the error is what `ip` said.
    fn ip(&mut self, args: &[String]) -> Result<(), String>;
    /// Replaces `file` with `content`.
    fn write(&mut self, file: ConfigFile, content: &str) -> Result<(), String>;
}

/// The real host: `ip` from `PATH`, in the network namespace of the calling thread.
#[derive(Debug, Clone)]
pub struct IpSystem {
    /// Where the files go.
    pub files: Files,
}

impl System for IpSystem {
    fn ip(&mut self, args: &[String]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    fn write(&mut self, file: ConfigFile, content: &str) -> Result<(), String> {
        write_atomic(self.files.path(file), content)
            .map_err(|e| format!("cannot write {}: {e}", self.files.path(file).display()))
    }
}

/// Writes `content` to `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, content: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tandem-tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Why a plan could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("network step {step} ({op}) failed: {reason}{}", rollback_text(.rollback))]
pub struct ApplyError {
    /// Index of the failed operation in the plan.
    pub step: usize,
    /// The failed operation, as text.
    pub op: String,
    /// What `ip` or the file system said.
    pub reason: String,
    /// Steps of the rollback that failed too (empty when the host is back as it was).
    pub rollback: Vec<String>,
}

fn rollback_text(failed: &[String]) -> String {
    if failed.is_empty() {
        "; the steps before were undone".to_owned()
    } else {
        format!(
            "; undoing the steps before also failed: {}",
            failed.join("; ")
        )
    }
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn route_args(verb: &str, r: &StaticRoute) -> Vec<String> {
    let family = if r.to.addr().is_ipv4() { "-4" } else { "-6" };
    let to = if r.to.prefix() == 0 {
        s("default")
    } else {
        s(r.to)
    };
    let mut args = vec![s(family), s("route"), s(verb), to, s("via"), s(r.via)];
    if let Some(dev) = &r.dev {
        args.extend([s("dev"), s(dev)]);
    }
    args
}

/// The `ip` argument lists that carry out `op` (none for a file).
pub fn commands(op: &Op) -> Vec<Vec<String>> {
    let link = |args: &[&str]| args.iter().map(s).collect::<Vec<_>>();
    match op {
        Op::CreateBond { name, mode } => vec![
            link(&[
                "link",
                "add",
                name.as_str(),
                "type",
                "bond",
                "mode",
                mode.kernel_name(),
                "miimon",
                "100",
            ]),
            link(&["link", "set", name.as_str(), "up"]),
        ],
        Op::DeleteBond { name, .. } | Op::DeleteVlan { name, .. } => {
            vec![link(&["link", "del", name.as_str()])]
        }
        // A port must be down to be enslaved.
        Op::Enslave { port, bond } => vec![
            link(&["link", "set", port.as_str(), "down"]),
            link(&["link", "set", port.as_str(), "master", bond.as_str()]),
            link(&["link", "set", port.as_str(), "up"]),
        ],
        Op::Release { port, .. } => vec![
            link(&["link", "set", port.as_str(), "nomaster"]),
            link(&["link", "set", port.as_str(), "up"]),
        ],
        Op::CreateVlan {
            name,
            link: parent,
            id,
        } => vec![
            link(&[
                "link",
                "add",
                "link",
                parent.as_str(),
                "name",
                name.as_str(),
                "type",
                "vlan",
                "id",
                &id.to_string(),
            ]),
            link(&["link", "set", name.as_str(), "up"]),
        ],
        Op::SetMtu { dev, mtu, .. } => {
            vec![link(&[
                "link",
                "set",
                dev.as_str(),
                "mtu",
                &mtu.to_string(),
            ])]
        }
        // `replace`: a route the host already has to that destination (a restart without a
        // reboot) is taken over rather than failing the plan.
        Op::AddRoute(r) => vec![route_args("replace", r)],
        Op::DelRoute(r) => vec![route_args("del", r)],
        Op::ReplaceRoute { to, .. } => vec![route_args("replace", to)],
        Op::WriteFile { .. } => Vec::new(),
    }
}

fn run(op: &Op, sys: &mut dyn System) -> Result<(), String> {
    if let Op::WriteFile { file, content, .. } = op {
        return sys.write(*file, content);
    }
    for args in commands(op) {
        sys.ip(&args)
            .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    }
    Ok(())
}

/// Applies `plan` in order. When a step fails, the steps before it are undone (their
/// inverses, in reverse order) and the error says what failed, and what of the undoing did.
pub fn apply(plan: &Plan, sys: &mut dyn System) -> Result<(), ApplyError> {
    for (step, op) in plan.ops.iter().enumerate() {
        tracing::info!(step, op = %op, "network change");
        if let Err(reason) = run(op, sys) {
            tracing::warn!(step, op = %op, %reason, "network change failed, undoing");
            let undo = Plan {
                ops: plan.ops[..step].to_vec(),
            }
            .inverse();
            let rollback = undo
                .ops
                .iter()
                .filter_map(|u| run(u, sys).err().map(|e| format!("{u}: {e}")))
                .collect();
            return Err(ApplyError {
                step,
                op: op.to_string(),
                reason,
                rollback,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::plan;
    use tandem_config::Network;

    /// Records commands; fails the `fail_at`-th `ip` call.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<String>,
        fail_at: Option<usize>,
    }

    impl System for Recorder {
        fn ip(&mut self, args: &[String]) -> Result<(), String> {
            let n = self.calls.len();
            self.calls.push(args.join(" "));
            if self.fail_at == Some(n) {
                return Err("RTNETLINK answers: File exists".to_owned());
            }
            Ok(())
        }
        fn write(&mut self, file: ConfigFile, content: &str) -> Result<(), String> {
            self.calls
                .push(format!("write {file:?} {} lines", content.lines().count()));
            Ok(())
        }
    }

    fn net(section: &str) -> Network {
        let text = format!(
            "version: 1\nnetwork:\n{section}\nfrontends:\n  - {{ name: w, bind: [\"127.0.0.1:8080\"], default_backend: b }}\nbackends:\n  - {{ name: b, servers: [{{ name: s, address: 127.0.0.1:9001 }}] }}\n"
        );
        tandem_config::parse(
            &text,
            "t.yaml",
            &tandem_config::MemoryCertFiles::new(Vec::<String>::new()),
        )
        .unwrap_or_else(|r| panic!("{r:?}"))
        .config
        .network
    }

    #[test]
    fn operations_become_ip_commands() {
        let next = net(concat!(
            "  gateway: { ipv6: \"2001:2::1\" }\n",
            "  routes: [{ to: 198.19.0.0/24, via: 198.18.0.254, dev: lan.120 }]\n",
            "  dns: [198.18.0.53]\n",
            "  interfaces: { bond0: { mtu: 9000 } }\n",
            "  vlans: { lan.120: {} }\n",
            "  bonds: { bond0: { mode: 802.3ad, ports: [eth1] } }",
        ));
        let mut rec = Recorder::default();
        apply(&plan(&Network::default(), &next), &mut rec).unwrap();
        assert_eq!(
            rec.calls,
            [
                "link add bond0 type bond mode 802.3ad miimon 100",
                "link set bond0 up",
                "link set eth1 down",
                "link set eth1 master bond0",
                "link set eth1 up",
                "link add link lan name lan.120 type vlan id 120",
                "link set lan.120 up",
                "link set bond0 mtu 9000",
                "-4 route replace 198.19.0.0/24 via 198.18.0.254 dev lan.120",
                "-6 route replace default via 2001:2::1",
                "write ResolvConf 2 lines",
            ]
        );
    }

    #[test]
    fn a_failed_step_undoes_the_steps_before() {
        let next = net(concat!(
            "  gateway: { ipv4: 198.18.0.1 }\n",
            "  routes: [{ to: 198.19.0.0/24, via: 198.18.0.254 }]",
        ));
        let mut rec = Recorder {
            fail_at: Some(1),
            ..Recorder::default()
        };
        let err = apply(&plan(&Network::default(), &next), &mut rec).unwrap_err();
        assert_eq!(err.step, 1);
        assert!(err.rollback.is_empty());
        assert_eq!(
            rec.calls,
            [
                "-4 route replace 198.19.0.0/24 via 198.18.0.254",
                "-4 route replace default via 198.18.0.1",
                "-4 route del 198.19.0.0/24 via 198.18.0.254",
            ]
        );
        assert!(err.to_string().contains("File exists"), "{err}");
    }

    #[test]
    fn files_are_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("tandem-netcfg-{}", std::process::id()));
        let mut sys = IpSystem {
            files: Files::in_dir(&dir),
        };
        sys.write(ConfigFile::ChronySources, "server a iburst\n")
            .unwrap();
        sys.write(ConfigFile::ChronySources, "server b iburst\n")
            .unwrap();
        let text = std::fs::read_to_string(dir.join("tandem.sources")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(text, "server b iburst\n");
    }
}
