//! Snapshot tests (expect-test) of what `tandemctl` prints for the main commands: status,
//! show servers, show stats, show history, config diff, a commit, and an invalid commit's error.
//! The inputs are supervisor replies as documented in `docs/control-api.md`.
//! Must not need a supervisor; `UPDATE_EXPECT=1 cargo test -p tandem-cli` refreshes them.

use expect_test::{Expect, expect};
use serde_json::{Value, json};
use tandem_cli::render;

fn check(rendered: String, expected: Expect) {
    expected.assert_eq(&rendered);
}

const T0: u64 = 1_732_262_400_000; // 2024-11-22 08:00:00Z

fn status_reply() -> Value {
    json!({
        "ok": true, "node": "lb1", "version": "0.1.0", "uptime_s": 3720, "now_ms": T0 + 600_000,
        "generation": {"number": 42, "fingerprint": "ab", "author": "alice", "time_ms": T0, "comment": "raise web1 weight"},
        "pending_confirm": {"generation": 42, "restore": 41, "deadline_ms": T0 + 900_000, "author": "alice"},
        "maintenance": false,
        "services": [
            {"name": "proxy", "state": "running", "pid": 812, "restarts": 1, "since_ms": T0 + 540_000, "last_exit": "signal 9 (SIGKILL)", "healthy": true, "flapping": false},
            {"name": "vrrp", "state": "running", "pid": 815, "restarts": 0, "since_ms": T0 - 3_000_000, "last_exit": null, "healthy": null, "flapping": false}
        ],
        "vrrp": {"available": true, "instances": [
            {"name": "www", "vrid": 51, "state": "master", "vips": ["198.18.0.100/24"], "master": "198.18.0.11"}
        ]},
        "peer": {"state": "unknown", "detail": "config sync is not available yet"},
        "sync": {"state": "not available yet"},
        "alarms": [
            {"id": "apply-failed", "severity": "warning", "since_ms": T0 - 60_000, "message": "generation 40 failed to apply (the proxy refused the reload: failed to bind 198.18.0.100:443: address in use); generation 39 was restored as generation 41"}
        ]
    })
}

fn servers_reply() -> Value {
    let srv = |backend: &str,
               name: &str,
               address: &str,
               state: &str,
               health: &str,
               w: [u64; 2],
               sessions: [u64; 2],
               r: [u64; 3]| {
        json!({"backend": backend, "name": name, "id": "54d8501ec308aa74", "address": address,
            "backup": name.starts_with("dr"), "state": state, "health": health, "status": "UP", "check_streak": 0,
            "weight": w[0], "config_weight": w[0], "effective_weight": w[1], "max_connections": 200,
            "sessions_current": sessions[0], "sessions_total": sessions[1], "queue": 0,
            "bytes_in": 10240, "bytes_out": 5_242_880,
            "responses": {"1xx": 0, "2xx": r[0], "3xx": 10, "4xx": r[1], "5xx": r[2], "other": 0},
            "connect_failures": 0, "transitions": 2})
    };
    json!({"ok": true, "servers": [
        srv("shop", "web1", "198.18.0.21:8080", "ready", "up", [50, 50], [3, 1520], [1500, 8, 2]),
        srv("shop", "web2", "198.18.0.22:8080", "drain", "up", [100, 0], [1, 12004], [11990, 10, 4]),
        srv("shop", "dr1", "198.18.2.21:8080", "ready", "down", [100, 0], [0, 0], [0, 0, 0]),
        srv("canary", "canary1", "198.18.0.41:8080", "maint", "up", [100, 0], [0, 7], [7, 0, 0]),
    ]})
}

#[test]
fn status() {
    check(
        render::status(&status_reply()),
        expect![[r#"
            node     lb1  firmware 0.1.0  up 1h2m
            config   generation 42 by alice at 2024-11-22 08:00:00Z (10m0s ago): raise web1 weight
            confirm  generation 42 reverts to 41 in 5m0s unless confirmed (`config confirm`)
            peer     unknown (config sync is not available yet)
            sync     not available yet

            SERVICE  STATE    PID  UP    RESTARTS  HEALTH  LAST EXIT
            proxy    running  812  1m0s  1         ok      signal 9 (SIGKILL)
            vrrp     running  815  1h0m  0         -       -

            INSTANCE  VRID  ROLE    VIPS             MASTER
            www       51    master  198.18.0.100/24  198.18.0.11

            SEVERITY  SINCE                 ALARM
            WARNING   2024-11-22 07:59:00Z  generation 40 failed to apply (the proxy refused the reload: failed to bind 198.18.0.100:443: address in use); generation 39 was restored as generation 41
        "#]],
    );
}

#[test]
fn status_without_vrrp_or_config() {
    let v = json!({
        "ok": true, "node": null, "version": "0.1.0", "uptime_s": 5, "now_ms": T0,
        "generation": null, "pending_confirm": null, "maintenance": true,
        "maintenance_since_ms": T0 - 3_720_000, "maintenance_by": "alice", "services": [],
        "vrrp": {"available": false, "reason": "no vrrp daemon on this node (no vrrp instances for it)", "instances": []},
        "peer": {"state": "unknown", "detail": "config sync is not available yet"},
        "sync": {"state": "not available yet"}, "alarms": []
    });
    check(
        render::status(&v),
        expect![[r#"
        node     (unnamed node)  firmware 0.1.0  up 5s  MAINTENANCE since 1h2m ago by alice (holds VRRP backup; `maintenance off` ends it)
        config   none committed
        peer     unknown (config sync is not available yet)
        sync     not available yet

        SERVICE  STATE  PID  UP  RESTARTS  HEALTH  LAST EXIT

        vrrp: role unknown (no vrrp daemon on this node (no vrrp instances for it))

        no alarms
    "#]],
    );
}

#[test]
fn show_servers() {
    check(
        render::servers(&servers_reply()),
        expect![[r#"
        backend shop
        SERVER        ADDRESS           STATE  HEALTH  WEIGHT  SESSIONS  QUEUE  2XX    4XX  5XX
        web1          198.18.0.21:8080  ready  up      50/50   3/1520    0      1500   8    2
        web2          198.18.0.22:8080  drain  up      100/0   1/12004   0      11990  10   4
        dr1 (backup)  198.18.2.21:8080  ready  down    100/0   0/0       0      0      0    0

        backend canary
        SERVER   ADDRESS           STATE  HEALTH  WEIGHT  SESSIONS  QUEUE  2XX  4XX  5XX
        canary1  198.18.0.41:8080  maint  up      100/0   0/7       0      7    0    0
        WEIGHT is weight/effective weight, SESSIONS current/total
    "#]],
    );
}

#[test]
fn show_stats() {
    let v = json!({"ok": true,
    "frontends": [{"name": "web", "mode": "http", "binds": ["0.0.0.0:80"],
        "sessions_current": 12, "sessions_total": 9000, "max_connections": 10000,
        "bytes_in": 0, "bytes_out": 123_456,
        "responses": {"1xx": 0, "2xx": 8800, "3xx": 0, "4xx": 150, "5xx": 50, "other": 0},
        "denied": {"connection_rate": 0, "request_rate": 140, "concurrent": 0}}],
    "backends": [
        {"name": "shop", "algorithm": "roundrobin", "sessions_current": 3, "sessions_total": 9000,
            "queue": 0, "bytes_in": 0, "bytes_out": 123_456,
            "responses": {"1xx": 0, "2xx": 8800, "3xx": 0, "4xx": 10, "5xx": 50, "other": 0},
            "servers_total": 3, "servers_accepting": 2},
        {"name": "canary", "algorithm": "roundrobin", "sessions_current": 0, "sessions_total": 7,
            "queue": 2, "bytes_in": 512, "bytes_out": 3_221_225_472u64,
            "responses": {"1xx": 0, "2xx": 7, "3xx": 0, "4xx": 0, "5xx": 0, "other": 0},
            "servers_total": 1, "servers_accepting": 0}
    ]});
    check(
        render::stats(&v),
        expect![[r#"
        FRONTEND  MODE  SESSIONS  2XX   3XX  4XX  5XX  BYTES IN  BYTES OUT
        web       http  12/9000   8800  0    150  50   0 B       120.6 KiB

        BACKEND  SERVERS  SESSIONS  QUEUE  2XX   3XX  4XX  5XX  BYTES IN  BYTES OUT
        shop     2/3      3/9000    0      8800  0    10   50   0 B       120.6 KiB
        canary   0/1      0/7       2      7     0    0    0    512 B     3.0 GiB
        SESSIONS current/total, SERVERS accepting/total
    "#]],
    );
}

#[test]
fn proxy_down_error() {
    let v = json!({"ok": false,
        "error": "cannot connect to /run/tandem/proxy.sock: Connection refused (os error 111)",
        "hint": "the proxy is not running; see `tandemctl status`"});
    check(
        render::error(&v),
        expect![[r#"
        error: cannot connect to /run/tandem/proxy.sock: Connection refused (os error 111)
        next: the proxy is not running; see `tandemctl status`
    "#]],
    );
}

#[test]
fn show_history() {
    let v = json!({"ok": true, "current": 43, "generations": [
        {"number": 43, "author": "auto-rollback", "node": "lb1", "time_ms": T0 + 300_000, "comment": "automatic rollback: commit confirmed of generation 42 was not confirmed in time", "restores": 41},
        {"number": 42, "author": "alice", "node": "lb1", "time_ms": T0, "comment": "raise web1 weight"},
        {"number": 41, "author": "bob", "node": null, "time_ms": T0 - 86_400_000, "comment": ""}
    ]});
    check(
        render::history(&v),
        expect![[r#"
        GEN  TIME                  AUTHOR         NODE  COMMENT
        43*  2024-11-22 08:05:00Z  auto-rollback  lb1   automatic rollback: commit confirmed of generation 42 was not confirmed in time
        42   2024-11-22 08:00:00Z  alice          lb1   raise web1 weight
        41   2024-11-21 08:00:00Z  bob            -
        * current; `config rollback N` restores generation N as a new generation
    "#]],
    );
}

#[test]
fn config_diff() {
    let v = json!({"ok": true, "against": 42, "changes": [
        {"kind": "changed", "path": "backends[shop].servers[web1].weight", "old": "100", "new": "50"},
        {"kind": "added", "path": "backends[shop].servers[web3]", "new": "{}"},
        {"kind": "removed", "path": "frontends[old]", "old": "{}"}
    ], "text": "~ backends[shop].servers[web1].weight: 100 -> 50\n+ backends[shop].servers[web3]\n- frontends[old]\n"});
    check(
        render::diff(&v),
        expect![[r#"
        ~ backends[shop].servers[web1].weight: 100 -> 50
        + backends[shop].servers[web3]
        - frontends[old]
        3 changes against generation 42
    "#]],
    );
}

#[test]
fn commit_confirmed() {
    let v = json!({"ok": true, "committed": true, "generation": 42, "changes": [
        {"kind": "changed", "path": "backends[shop].servers[web1].weight", "old": "100", "new": "50"}
    ], "nodes": ["lb1"], "warnings": [], "confirmed": null,
       "pending_confirm": {"generation": 42, "restore": 41, "deadline_ms": T0 + 30_000, "author": "alice"},
       "peer": "config sync is not available yet; the peer was not updated"});
    check(
        render::commit(&v),
        expect![[r#"
        committed generation 42 on lb1 (1 change)
          ~ backends[shop].servers[web1].weight: 100 -> 50
        reverts to generation 41 at 2024-11-22 08:00:30Z unless confirmed with `config confirm`
        peer: config sync is not available yet; the peer was not updated
    "#]],
    );
}

#[test]
fn invalid_commit_error() {
    let v = json!({"ok": false,
    "error": "the candidate has 2 errors; nothing was changed",
    "hint": "fix them (`config edit`) and run `config validate`",
    "diagnostics": [
        {"severity": "error", "origin": "candidate", "line": 10, "column": 57, "path": "backends[0].servers[0].weight", "message": "expected an integer from 0 to 256, found `heavy`"},
        {"severity": "error", "origin": "candidate", "line": 14, "column": 22, "path": "frontends[0].default_backend", "message": "backend `ap` is not defined; did you mean `app`?"}
    ]});
    check(
        render::error(&v),
        expect![[r#"
        error: the candidate has 2 errors; nothing was changed
          candidate:10:57: error: backends[0].servers[0].weight: expected an integer from 0 to 256, found `heavy`
          candidate:14:22: error: frontends[0].default_backend: backend `ap` is not defined; did you mean `app`?
        next: fix them (`config edit`) and run `config validate`
    "#]],
    );
}

#[test]
fn failed_apply_error() {
    let v = json!({"ok": false,
        "error": "generation 2 failed to apply: the proxy refused the reload: failed to bind 127.0.0.1:8443: Address already in use (os error 98); the previous configuration (generation 1) was restored as generation 3",
        "hint": "nothing changed on the running system; fix the candidate (`config edit`) and commit again",
        "generation": 2, "restored": 3, "restored_from": 1});
    check(
        render::error(&v),
        expect![[r#"
        error: generation 2 failed to apply: the proxy refused the reload: failed to bind 127.0.0.1:8443: Address already in use (os error 98); the previous configuration (generation 1) was restored as generation 3
        running configuration: generation 3
        next: nothing changed on the running system; fix the candidate (`config edit`) and commit again
    "#]],
    );
}

#[test]
fn pair_with_a_bootstrap_peer() {
    let v = json!({
        "ok": true, "fingerprint": "AB:CD", "peer_fingerprint": "EF:01", "paired": true,
        "bootstrap": {"peer": "lb1", "local": "198.18.1.2:7400", "remote": "198.18.1.1:7400"}
    });
    check(
        render::pair(&v),
        expect![[r#"
        this node's sync certificate fingerprint (SHA-256):
          AB:CD
        pinned peer certificate:
          EF:01
        until a configuration names this node: listening on 198.18.1.2:7400, peer lb1 at 198.18.1.1:7400 (its configuration is taken when this node has none)
    "#]],
    );
}
