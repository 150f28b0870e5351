#!/usr/bin/env bash
# failover-bench.sh - keepalived vs Tandem failover figures on the shared VRRP test bed.
#
# Runs `testbed.sh failover-test --modes kill,linkdown,term --reps N` twice in one run, with
# the same advert interval, phase seed and victim (lb1, the master): once with keepalived on
# both nodes and once with `tandem vrrp` on both nodes (through tandem-foreign.sh), then prints
# both sets of medians side by side:
#   linkdown : takeover (event -> VIP on peer), client outage
#   term     : client outage
#   kill     : time until the old master's VIP is gone (victim_vip_del_s; keepalived never
#              removes it) and how many trials had requests answered by both nodes at once
# Targets (advert 100 ms): link-down takeover <= 400 ms, client outage <= 450 ms; SIGTERM
# outage <= 80 ms; after SIGKILL the old master's VIP gone within 400 ms.
#
# Usage (root; keepalived, nginx, tcpdump, curl, python3):
#   tests/vrrp/failover-bench.sh [--reps N] [--advert-int SEC] [--tandem BIN]
# Default: 10 reps, 0.1 s, target/release/tandem if present else target/debug/tandem (build it
# first: cargo build --release -p tandem). Results: $OUT (default /tmp/tandem-failover-bench-*).
# This is a measurement, not a test: it never fails on a missed target, it reports it.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TESTBED=${TESTBED:-$ROOT/../shared/vrrp/testbed.sh}
REPS=10 ADV=0.1 TANDEM=""
while [ $# -gt 0 ]; do case $1 in
  --reps) REPS=$2; shift 2;; --advert-int) ADV=$2; shift 2;; --tandem) TANDEM=$2; shift 2;;
  *) echo "unknown option $1" >&2; exit 2;; esac; done
[ -x "$TESTBED" ] || [ -f "$TESTBED" ] || { echo "testbed.sh not found at $TESTBED" >&2; exit 2; }
if [ -z "$TANDEM" ]; then
  if [ -x "$ROOT/target/release/tandem" ]; then TANDEM=$ROOT/target/release/tandem
  else TANDEM=$ROOT/target/debug/tandem; fi
fi
[ -x "$TANDEM" ] || { echo "tandem binary not found: $TANDEM (cargo build -p tandem)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }

OUT=${OUT:-/tmp/tandem-failover-bench-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
export PFX=${PFX:-fb-}
FOREIGN="$HERE/tandem-foreign.sh $TANDEM"

run_one() { # name lb1-daemon lb2-daemon
  local name=$1 d1=$2 d2=$3
  export STATE=$OUT/$name
  bash "$TESTBED" down >/dev/null 2>&1 || true
  trap 'bash "$TESTBED" down >/dev/null 2>&1 || true' EXIT
  echo "=== $name: up (advert $ADV s)" >&2
  bash "$TESTBED" up --lb1 "$d1" --lb2 "$d2" --advert-int "$ADV" >&2
  bash "$TESTBED" failover-test --modes kill,linkdown,term --reps "$REPS" --phase random --seed 5798 \
    --out "$STATE/results" >&2
  bash "$TESTBED" down >&2
  trap - EXIT
}

run_one keepalived keepalived keepalived
run_one tandem "$FOREIGN" "$FOREIGN"

python3 - "$OUT" <<'PY'
import csv, os, statistics, sys
out = sys.argv[1]
def load(name):
    with open(os.path.join(out, name, 'results', 'trials.csv')) as f:
        return list(csv.DictReader(f))
def med(rows, mode, key, scale=1000.0):
    xs = [float(r[key]) for r in rows if r['mode'] == mode and r.get(key) not in (None, '')]
    if not xs: return 'n/a'
    return '%.0f ms (%.0f..%.0f, n=%d)' % (statistics.median(xs) * scale, min(xs) * scale, max(xs) * scale, len(xs))
def overlap(rows):
    # Trials where the killed master still had the VIP when the peer added it (both held it).
    n = 0
    for r in rows:
        if r['mode'] != 'kill': continue
        d, t = r.get('victim_vip_del_s') or '', r.get('takeover_s') or ''
        if d == '' or (t != '' and float(d) > float(t)): n += 1
    return n
def answered_by_both(name, rows):
    # Trials with a request answered by the killed master after the peer had answered one.
    n = 0
    for r in rows:
        if r['mode'] != 'kill' or not r.get('fo_first_served_by_peer_s'): continue
        t_peer = float(r['t_event']) + float(r['fo_first_served_by_peer_s'])
        t_rs = float(r['t_restore']) if r.get('t_restore') else float('inf')
        path = os.path.join(out, name, 'results', 'kill-%s.probe.csv' % r['rep'])
        try:
            with open(path) as f:
                late = [x for x in csv.DictReader(f) if x['ok'] == '1' and x['lb'] == r['victim']
                        and t_peer < float(x['t_start']) < t_rs]
        except OSError:
            continue
        n += 1 if late else 0
    return n
rows = {n: load(n) for n in ('keepalived', 'tandem')}
lines = []
fmt = '%-44s %-30s %-30s %s'
lines.append(fmt % ('metric (median, min..max)', 'keepalived', 'tandem', 'target'))
spec = [
    ('linkdown: takeover (event -> VIP on peer)', 'linkdown', 'takeover_s', '<= 400 ms'),
    ('linkdown: client outage', 'linkdown', 'fo_outage_s', '<= 450 ms'),
    ('term: client outage', 'term', 'fo_outage_s', '<= 80 ms'),
    ('term: takeover', 'term', 'takeover_s', ''),
    ('kill: takeover', 'kill', 'takeover_s', ''),
    ('kill: client outage', 'kill', 'fo_outage_s', ''),
    ('kill: old master VIP gone after', 'kill', 'victim_vip_del_s', '<= 400 ms'),
]
for label, mode, key, target in spec:
    lines.append(fmt % (label, med(rows['keepalived'], mode, key), med(rows['tandem'], mode, key), target))
lines.append(fmt % ('kill: trials with VIP on both nodes', str(overlap(rows['keepalived'])),
                    str(overlap(rows['tandem'])), '0 (no split brain)'))
lines.append(fmt % ('kill: trials answered by both nodes', str(answered_by_both('keepalived', rows['keepalived'])),
                    str(answered_by_both('tandem', rows['tandem'])), '0'))
text = '\n'.join(lines)
print(text)
open(os.path.join(out, 'comparison.txt'), 'w').write(text + '\n')
print('details:', out)
PY
