//! The proxy's local sockets as the supervisor sees them: where they are on this node, and
//! whether they work.
//!
//! Owns: the effective `runtime.socket` ([`runtime_socket`]: a path under `/run/tandem`, the
//! default, is placed in the node's run directory when that differs, e.g. a lab stack under
//! `target/run`), rendering `running.yaml` with it ([`render_running`]; on the appliance the
//! committed text is written unchanged), and the check after a proxy start or reload that
//! raises or clears the alarms `proxy-runtime-api` and `proxy-handover`
//! (`Services::check_proxy_sockets` in `services.rs`), naming the socket and the cause.
//! Must not: change the committed text in the store (history keeps what the operator wrote),
//! nor speak to the handover socket (a connection there starts a handover).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tandem_store::{Generation, Store};

use crate::DEFAULT_RUN_DIR;

/// Alarm raised while the proxy's runtime API does not answer on its socket.
pub const ALARM_RUNTIME_API: &str = "proxy-runtime-api";
/// Alarm raised while the proxy's handover socket is missing.
pub const ALARM_HANDOVER: &str = "proxy-handover";
/// How long after a start or reload the runtime API gets to answer (it binds right after
/// the proxy logs `proxy started`).
pub const PROBE_WINDOW: Duration = Duration::from_secs(2);

/// Where the proxy serves its runtime API on this node: `configured` as it is, except that a
/// path under `/run/tandem` is placed in `run_dir` when the node's run directory is another
/// one (`/run/tandem/proxy.sock` → `RUN_DIR/proxy.sock`).
pub fn runtime_socket(configured: &Path, run_dir: &Path) -> PathBuf {
    let default = Path::new(DEFAULT_RUN_DIR);
    if run_dir == default {
        return configured.to_owned();
    }
    match configured.strip_prefix(default) {
        Ok(rest) => run_dir.join(rest),
        Err(_) => configured.to_owned(),
    }
}

/// The handover socket of a proxy serving its runtime API on `runtime` (the proxy's default,
/// `<runtime.socket>.handover`; the supervisor passes no `--handover-socket`).
pub fn handover_socket(runtime: &Path) -> PathBuf {
    let mut p = runtime.as_os_str().to_owned();
    p.push(".handover");
    PathBuf::from(p)
}

/// The text of `running.yaml` for `generation`: the committed text, or, when its
/// `runtime.socket` must move to `socket` (see [`runtime_socket`]), the same configuration
/// with `runtime.socket: SOCKET`. The rendered text is validated and must differ from the
/// committed one in the `runtime` section only.
pub fn render_running(
    store: &Store,
    generation: &Generation,
    socket: &Path,
) -> Result<String, String> {
    if generation.config.runtime.socket == socket {
        return Ok(generation.text.clone());
    }
    let fail = |why: String| {
        format!(
            "cannot place runtime.socket at {} in the running configuration: {why}",
            socket.display()
        )
    };
    let mut doc: serde_norway::Value =
        serde_norway::from_str(&generation.text).map_err(|e| fail(e.to_string()))?;
    let root = doc
        .as_mapping_mut()
        .ok_or_else(|| fail("the configuration is not a mapping".into()))?;
    let runtime = root
        .entry("runtime".into())
        .or_insert_with(|| serde_norway::Value::Mapping(Default::default()));
    let runtime = runtime
        .as_mapping_mut()
        .ok_or_else(|| fail("`runtime` is not a mapping".into()))?;
    runtime.insert(
        "socket".into(),
        serde_norway::Value::String(socket.display().to_string()),
    );
    let text = serde_norway::to_string(&doc).map_err(|e| fail(e.to_string()))?;
    let text = format!(
        "# generation {}, rendered by the supervisor: runtime.socket is in the node's run directory\n{text}",
        generation.meta.number
    );
    let loaded = store
        .validate(&text)
        .map_err(|e| fail(format!("the rendered text does not validate: {e}")))?;
    if loaded.config.runtime.socket != socket {
        return Err(fail("the rendered text names another socket".into()));
    }
    let (before, after) = (
        tandem_config::fingerprints(&generation.config),
        tandem_config::fingerprints(&loaded.config),
    );
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|k| k.as_str() != "runtime" && before.get(*k) != after.get(*k))
        .collect();
    if !changed.is_empty() {
        return Err(fail(format!("rendering changed {changed:?}")));
    }
    Ok(text)
}

/// What the proxy said about its sockets since it last started (from its log).
#[derive(Debug, Default, Clone)]
pub struct LoggedCauses {
    /// `runtime api unavailable`: the cause.
    pub runtime_api: Option<String>,
    /// `handover socket unavailable`: the cause.
    pub handover: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_under_run_tandem_move_to_the_run_dir() {
        let s = |c: &str, r: &str| runtime_socket(Path::new(c), Path::new(r));
        assert_eq!(
            s("/run/tandem/proxy.sock", "/run/tandem"),
            Path::new("/run/tandem/proxy.sock")
        );
        assert_eq!(
            s("/run/tandem/proxy.sock", "/lab/tandem"),
            Path::new("/lab/tandem/proxy.sock")
        );
        assert_eq!(
            s("/run/tandem/x/api.sock", "/lab/tandem"),
            Path::new("/lab/tandem/x/api.sock")
        );
        // Elsewhere: as configured (and `/run/tandemx` is not under `/run/tandem`).
        assert_eq!(
            s("/tmp/t/proxy.sock", "/lab/tandem"),
            Path::new("/tmp/t/proxy.sock")
        );
        assert_eq!(
            s("/run/tandemx/p.sock", "/lab/tandem"),
            Path::new("/run/tandemx/p.sock")
        );
        assert_eq!(
            handover_socket(Path::new("/lab/tandem/proxy.sock")),
            Path::new("/lab/tandem/proxy.sock.handover")
        );
    }

    fn store(tag: &str) -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("tandem-sockets-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Store::open(&dir).expect("store"), dir)
    }

    fn commit(store: &Store, text: &str) -> Generation {
        store
            .commit(
                text,
                &tandem_store::CommitInfo {
                    author: "t".into(),
                    ..Default::default()
                },
            )
            .expect("commit")
    }

    #[test]
    fn running_text_gets_the_socket_and_nothing_else_changes() {
        let (s, dir) = store("render");
        let base = "# the lab\nversion: 1\nfrontends:\n  - name: web\n    bind: [\"127.0.0.1:8080\"]\n    default_backend: app\nbackends:\n  - name: app\n    servers:\n      - { name: app1, address: 127.0.0.1:9001 }\n";
        let socket = Path::new("/lab/tandem/proxy.sock");
        for text in [
            base.to_owned(),
            format!("{base}runtime: {{ socket: /run/tandem/proxy.sock }}\n"),
        ] {
            let g = commit(&s, &text);
            let running = render_running(&s, &g, socket).expect("rendered");
            let loaded = s.validate(&running).expect("valid");
            assert_eq!(loaded.config.runtime.socket, socket);
            let mut expected = g.config.clone();
            expected.runtime.socket = socket.to_owned();
            assert_eq!(loaded.config, expected, "{running}");
        }
        // Already where it belongs: the committed text, comments and all.
        let g = commit(
            &s,
            &format!("{base}runtime: {{ socket: /lab/tandem/proxy.sock }}\n"),
        );
        assert_eq!(render_running(&s, &g, socket).expect("same"), g.text);
        let _ = std::fs::remove_dir_all(dir);
    }
}
