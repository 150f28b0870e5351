#!/usr/bin/env bash
# Idle keep-alive memory, Tandem against HAProxy 2.6 in one run: 10 000 HTTP/1.1 client
# connections held open after one request each, resident memory of each proxy before and
# after (crates/proxy/bench/idle-conns.py). Loopback only.
#
# Usage: crates/proxy/bench/idle-run.sh [TANDEM_BIN=target/release/tandem] [N=10000] [HAPROXY_N=3000]
# HAProxy is measured with fewer connections: on this machine HAProxy 2.6 stopped answering new
# connections somewhere above ~3 000 held ones in this set-up (cause not investigated), and
# per-connection memory is what is compared.
# Needs: haproxy, nginx (apt-get install -y haproxy nginx), root or a high `ulimit -n`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
BIN=${1:-target/release/tandem}
N=${2:-10000}
HAPROXY_N=${3:-3000}
WORK=$(mktemp -d /tmp/tandem-idle.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    nginx -p "$WORK" -c "$WORK/nginx.conf" -s stop 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
# Each process needs N descriptors (HAProxy about two per connection: it caps itself).
HARD=$(ulimit -Hn)
ulimit -n "$HARD"
HAPROXY_MAXCONN=$(( (HARD - 200) / 2 < N + 100 ? (HARD - 200) / 2 : N + 100 ))

BE_PORT=18080
TANDEM_PORT=18081
HAPROXY_PORT=18082

cat >"$WORK/nginx.conf" <<EOF
daemon on;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
worker_processes 1;
worker_rlimit_nofile 20000;
# Room for HAProxy server connections too.
events { worker_connections 19000; }
http {
    access_log off;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$BE_PORT;
        location / { return 200 "ok\n"; }
    }
}
EOF
taskset -c 1 nginx -p "$WORK" -c "$WORK/nginx.conf"

cat >"$WORK/tandem.yaml" <<EOF
version: 1
frontends:
  - name: http
    mode: http
    bind: ["127.0.0.1:$TANDEM_PORT"]
    timeouts: { client_header: 600s, client_idle: 600s }
    default_backend: web
backends:
  - name: web
    mode: http
    servers:
      - { name: be1, address: "127.0.0.1:$BE_PORT" }
EOF
"$BIN" check "$WORK/tandem.yaml" >/dev/null

cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    timeout http-request 600s
    timeout http-keep-alive 600s
frontend http
    bind 127.0.0.1:$HAPROXY_PORT
    maxconn $HAPROXY_MAXCONN
    default_backend web
backend web
    http-reuse always
    server be1 127.0.0.1:$BE_PORT
EOF

measure() { # name port pid connections
    sleep 1
    local r
    r=$(taskset -c 1 python3 crates/proxy/bench/idle-conns.py "$2" "$3" "$4" 5)
    echo "$1 $r"
}

setsid taskset -c 0 "$BIN" proxy --config "$WORK/tandem.yaml" >"$WORK/tandem.log" 2>&1 &
PIDS+=($!)
measure tandem "$TANDEM_PORT" "${PIDS[-1]}" "$N"
kill "${PIDS[-1]}"

setsid taskset -c 0 haproxy -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=($!)
measure haproxy "$HAPROXY_PORT" "${PIDS[-1]}" "$HAPROXY_N"
