#!/usr/bin/env python3
"""Idle keep-alive memory: hold N HTTP/1.1 client connections open on a proxy, each after one
request, and report the proxy's resident memory before and after (VmRSS of its whole process
group, from /proc).

Usage: idle-conns.py PORT PID [N=10000] [HOLD_S=5]
  PORT  the proxy's HTTP listener on 127.0.0.1 (this tool never targets another host)
  PID   the proxy's process id (its process group is summed, as proxy-bench.sh counts CPU)
The proxy's idle keep-alive timeout must outlast the opening phase (open_s in the result),
or early connections close before the measurement (conns < N).

Prints one line: `IDLE_RESULT conns=<open at the end> rss_before_kb=.. rss_after_kb=..
per_conn_bytes=..`. Run it pinned away from the proxy (taskset -c 1). Needs `ulimit -n` above N.
"""

import os
import socket
import sys
import time

HOST = "127.0.0.1"  # fixed on purpose


def group_rss_kb(pid):
    pgid = os.getpgid(pid)
    total = 0
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            if os.getpgid(int(p)) != pgid:
                continue
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def main():
    port = int(sys.argv[1])
    pid = int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    hold = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    req = f"GET / HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    before = group_rss_kb(pid)
    t0 = time.monotonic()
    socks = []
    failed = 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((HOST, port))
            s.sendall(req)
            got = b""
            while b"\r\n\r\n" not in got:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("closed")
                got += chunk
            head, _, body = got.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            while len(body) < length:
                chunk = s.recv(4096)
                if not chunk:
                    raise OSError("closed")
                body += chunk
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    open_s = time.monotonic() - t0
    time.sleep(hold)
    after = group_rss_kb(pid)
    # Connections the proxy closed meanwhile read as EOF.
    open_now = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                continue
        except BlockingIOError:
            pass
        except OSError:
            continue
        open_now += 1
    per = (after - before) * 1024 // max(open_now, 1)
    print(
        f"IDLE_RESULT conns={open_now} failed={failed} rss_before_kb={before} "
        f"rss_after_kb={after} per_conn_bytes={per} open_s={open_s:.1f}"
    )
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
