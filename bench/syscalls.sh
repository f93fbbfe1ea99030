#!/usr/bin/env bash
# bench/syscalls.sh: how many system calls tapnet makes per frame it forwards, by
# call, on the bridge path (two containers on one bridge, as bench/compare.sh).
#
# Runs, one after the other, an iperf3 UDP flood of 64-byte datagrams (a -> b) and an
# iperf3 TCP stream (a -> b), each for N seconds, with `strace -c -f` attached to
# tapnet for the run, and divides each call's count by the frames tapnet forwarded in
# that time (the frames it read from a and b, from `tapnet show ports`; a TCP frame
# is mostly a TSO super-frame of ~60 KB). strace stops tapnet at
# every call, so rates under it mean nothing: only the calls per frame do.
# (Issue 15 asks for them: the baseline that recvmmsg, sendmmsg, io_uring and
# multi-queue TAPs are measured against.)
#
# Usage: bench/syscalls.sh [--seconds N] [--no-build]
# Needs root, iproute2, iperf3, strace, python3. Everything it creates carries the
# script's PID in its name and is removed on exit, failure or Ctrl-C.
set -euo pipefail

BENCH_NAME=syscalls.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
parse_args "$@"
require_root "namespaces, TAP"
require_cmds "apt-get install -y iperf3 strace" ip iperf3 strace python3 timeout

ID=$$
T_LAB="sysc-$ID"
T_A_NS="sysc-a-$ID"
T_B_NS="sysc-b-$ID"
T_A_IP=10.246.0.2
T_B_IP=10.246.0.3
PORT=5201
OUR_NS=("$T_A_NS" "$T_B_NS")
TMP="$(mktemp -d /tmp/tapnet-sysc.XXXXXX)"
TN_PID=""
SRV_PID=""
ST_PIDS=()                       # the running straces

teardown() {
    local pid
    for pid in "${ST_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    if [[ -n "$SRV_PID" ]] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null
    fi
    [[ -n "$TN_PID" ]] && stop_tapnet_hard "$TN_PID"
    kill_in_ns
    del_ns
    rm -f "/run/tapnet/$T_LAB.sock" "/run/tapnet/$T_LAB.state"
}
bench_traps

write_helpers <<'PY'
def strace_rows(strace_path):
    # strace -c's table: "% time seconds usecs/call calls errors syscall"
    rows = []
    for line in open(strace_path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] not in ("total",):
            calls = int(f[3]); errors = int(f[4]) if len(f) == 6 else 0
            rows.append((f[-1], calls, errors))
    return rows

def per_unit(strace_path, n, head, unit):
    # one strace -c table's calls divided by n units (frames, datagrams), by call
    rows = strace_rows(strace_path)
    total = sum(c for _, c, _ in rows)
    print("%s, %d system calls: %.2f per %s" % (head, total, total / n, unit))
    for name, calls, errors in sorted(rows, key=lambda r: -r[1]):
        if calls / n >= 0.005:
            err = errors / calls if calls else 0
            print("  %-16s %8.3f per %s%s" % (name, calls / n, unit,
                  "  (%d%% of them errors: EAGAIN, the end of a batch)" % round(100 * err) if err >= 0.01 else ""))

def per_frame(strace_path, ports0, ports1, what):
    def frames(path):
        # Frames tapnet read from either container: both directions of the test
        # (a TCP stream's ACKs from b too).
        return sum(p["rx_packets"] for p in json.load(open(path))["ports"] if p["name"] in ("a", "b"))
    n = frames(ports1) - frames(ports0)
    if n <= 0:
        sys.exit("no frames forwarded")
    per_unit(strace_path, n, "%s: %d frames forwarded (a and b)" % (what, n), "frame")
PY

strace_start() {  # tapnet-pid out: strace -c -f attached to it, added to ST_PIDS
    strace -c -f -q -p "$1" -o "$2" &
    ST_PIDS+=("$!")
}

strace_stop() {  # SIGINT to every strace of ST_PIDS: each detaches and writes its table
    local pid
    for pid in "${ST_PIDS[@]}"; do kill -INT "$pid"; done
    for pid in "${ST_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    ST_PIDS=()
}

build_tapnet
ns_free
cat >"$TMP/lab.toml" <<TOML
name = "$T_LAB"
[[bridge]]
name = "br0"
subnet = "10.246.0.0/24"
[[port]]
name = "a"
bridge = "br0"
netns = "$T_A_NS"
ip = "$T_A_IP/24"
[[port]]
name = "b"
bridge = "br0"
netns = "$T_B_NS"
ip = "$T_B_IP/24"
TOML
"$BIN" up "$TMP/lab.toml" >"$TMP/tapnet.out" 2>"$TMP/tapnet.err" &
TN_PID=$!
wait_ready "$TN_PID" "$TMP/tapnet" ""
ping_ok "$T_A_NS" "$T_B_IP" tapnet

measure() {  # name iperf3-args...
    local name=$1; shift
    start_server "$T_B_NS" "$T_B_IP"
    "$BIN" show ports --lab "$T_LAB" --json >"$TMP/p0.json"
    strace_start "$TN_PID" "$TMP/strace-$name"
    sleep 0.5
    timeout $((SECS + 30)) ip netns exec "$T_A_NS" iperf3 -c "$T_B_IP" -p "$PORT" -t "$SECS" "$@" >"$TMP/iperf-$name" 2>&1 \
        || die "iperf3 ($name) failed: $(tail -3 "$TMP/iperf-$name")"
    "$BIN" show ports --lab "$T_LAB" --json >"$TMP/p1.json"
    strace_stop
    stop_server
    H per_frame "$TMP/strace-$name" "$TMP/p0.json" "$TMP/p1.json" "$name"
}

echo "tapnet system calls per forwarded frame, $(uname -r), $(nproc) CPUs, tapnet $(git_id)"
measure "udp 64B" -u -l 64 -b 0
measure "tcp" 
stop_tapnet "$TN_PID" "" "$T_LAB" "$T_A_NS" "$T_B_NS" >"$TMP/stop"
TN_PID=""
