#!/usr/bin/env bash
# bench/syscalls.sh: how many system calls tapnet makes per frame it forwards, by
# call, on the bridge path (two containers on one bridge, as bench/compare.sh) or,
# with --vxlan, on the VXLAN path (two hosts, as bench/compare-vxlan.sh).
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
# --vxlan: two "host" namespaces sysc-ha-PID (underlay 10.70.0.1) and sysc-hb-PID
# (10.70.0.2) joined by a veth, each running its own `tapnet up` inside it (labs
# syscvx-a-PID and syscvx-b-PID: bridge ov, 10.247.0.0/24, vni 42, MTU 1450, port c in
# sysc-ca-PID 10.247.0.2 and sysc-cb-PID 10.247.0.3, [vxlan] on port 4789 with the
# other host as its peer); no kernel overlay. The same two iperf3 runs, container a ->
# container b, with `strace -c -f` attached to BOTH tapnets. Per run it prints the
# sending tapnet's (host a) calls per frame it read from container a (`show ports`,
# port c rx_packets) and the receiving tapnet's (host b) calls per datagram it received
# from host a (`show vxlan`, the peer's rx_packets), by call; each side's calls include
# whatever else it did meanwhile (a TCP stream's ACKs going back b -> a). Also the
# sender's tx_gso_sends per datagram sent (UDP GSO sends: a super-frame's segments, or
# the small frames of one turn).
#
# Usage: bench/syscalls.sh [--vxlan] [--seconds N] [--no-build]
# Needs root, iproute2, iperf3, strace, python3 (and, for --vxlan, ping and nsenter
# from util-linux). Everything it creates carries the script's PID in its name and is
# removed on exit, failure or Ctrl-C. With --vxlan everything lives in namespaces it
# creates (the tapnets run inside the host namespaces): nothing is added to the root
# namespace, and there is no sysctl change.
set -euo pipefail

BENCH_NAME=syscalls.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
VXLAN=0
extra_arg() {  # for parse_args: --vxlan
    # shellcheck disable=SC2034  # ARGS_USED is read by parse_args
    case "$1" in --vxlan) VXLAN=1; ARGS_USED=1 ;; esac
}
parse_args "$@"
require_root "namespaces, TAP"
require_cmds "apt-get install -y iperf3 strace" ip iperf3 strace python3 timeout
if [[ $VXLAN -eq 1 ]]; then
    require_cmds "apt-get install -y iputils-ping util-linux" ping nsenter ss
fi

ID=$$
PORT=5201
TMP="$(mktemp -d /tmp/tapnet-sysc.XXXXXX)"
SRV_PID=""
ST_PIDS=()                       # the running straces, one per traced tapnet
if [[ $VXLAN -eq 0 ]]; then
    T_LAB="sysc-$ID"
    T_A_NS="sysc-a-$ID"
    T_B_NS="sysc-b-$ID"
    T_A_IP=10.246.0.2
    T_B_IP=10.246.0.3
    OUR_NS=("$T_A_NS" "$T_B_NS")
    TN_PID=""
else
    VNI=42
    VXPORT=4789
    UL_A=10.70.0.1               # underlay, only inside our host namespaces
    UL_B=10.70.0.2
    V_LAB_A="syscvx-a-$ID"
    V_LAB_B="syscvx-b-$ID"
    V_HA="sysc-ha-$ID"           # tapnet of lab a runs in here
    V_HB="sysc-hb-$ID"
    V_CA="sysc-ca-$ID"           # created and removed by tapnet
    V_CB="sysc-cb-$ID"
    V_CA_IP=10.247.0.2
    V_CB_IP=10.247.0.3
    OUR_NS=("$V_HA" "$V_HB" "$V_CA" "$V_CB")
    OUR_LABS=("$V_LAB_A" "$V_LAB_B")
    TA_PID=""                    # tapnet, host a: the sending side
    TB_PID=""                    # tapnet, host b: the receiving side
fi

teardown() {
    local pid
    for pid in "${ST_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    if [[ -n "$SRV_PID" ]] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null
    fi
    if [[ $VXLAN -eq 1 ]]; then
        [[ $OURS -eq 1 ]] && teardown_labs "$TA_PID" "$TB_PID"
        return 0
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

def per_unit(strace_path, n, head, unit, floor=0.005):
    # one strace -c table's calls divided by n units (frames, datagrams), by call;
    # calls fewer than floor per unit are left out
    rows = strace_rows(strace_path)
    total = sum(c for _, c, _ in rows)
    print("%s, %d system calls: %.2f per %s" % (head, total, total / n, unit))
    for name, calls, errors in sorted(rows, key=lambda r: -r[1]):
        if calls / n >= floor:
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

def the_one(path, key, name=None):
    # the lab's port NAME (key "ports") or its only VXLAN peer (key "peers")
    v = [x for x in json.load(open(path))[key] if name is None or x["name"] == name]
    if len(v) != 1:
        sys.exit("%s: expected one %s, found %d" % (path, "port " + name if name else "VXLAN peer", len(v)))
    return v[0]

def per_frame_vxlan(what, strace_a, strace_b, ports_a0, ports_a1, vx_a0, vx_a1, vx_b0, vx_b1):
    # host a (sender): per frame read from container a; host b (receiver): per
    # datagram received from host a
    def delta(p0, p1, key, field, name=None):
        return the_one(p1, key, name)[field] - the_one(p0, key, name)[field]
    frames = delta(ports_a0, ports_a1, "ports", "rx_packets", "c")
    sent = delta(vx_a0, vx_a1, "peers", "tx_packets")
    gso = delta(vx_a0, vx_a1, "peers", "tx_gso_sends")
    got = delta(vx_b0, vx_b1, "peers", "rx_packets")
    if frames <= 0 or sent <= 0 or got <= 0:
        sys.exit("%s: nothing went a -> b (frames read from a %d, datagrams sent %d, received %d)"
                 % (what, frames, sent, got))
    # a floor of 0.001: a GSO send of 64 datagrams is 0.016 per datagram, below the
    # bridge path's 0.005 when several frames share a turn
    per_unit(strace_a, frames, "%s, host a (sender): %d frames read from container a" % (what, frames), "frame", 0.001)
    print("  show vxlan: tx_gso_sends %.3f per datagram sent (%d UDP GSO sends, %d datagrams to host b)"
          % (gso / sent, gso, sent))
    per_unit(strace_b, got, "%s, host b (receiver): %d datagrams received from host a" % (what, got), "datagram", 0.001)
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

# ---------------------------------------------------------------- bridge path
bridge_path() {
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

    echo "tapnet system calls per forwarded frame, $(uname -r), $(nproc) CPUs, tapnet $(git_id)"
    measure "udp 64B" -u -l 64 -b 0
    measure "tcp"
    stop_tapnet "$TN_PID" "" "$T_LAB" "$T_A_NS" "$T_B_NS" >"$TMP/stop"
    TN_PID=""
}

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

# ---------------------------------------------------------------- VXLAN path
vxlan_path() {
    local lab
    ns_free " (not ours: left alone)"
    for lab in "${OUR_LABS[@]}"; do
        [[ -e "/run/tapnet/$lab.sock" ]] && { OURS=0; die "a lab $lab already runs (not ours: left alone)"; }
    done
    vxlan_lab "$V_LAB_A" "$UL_A" "$UL_B" "$V_CA" "$V_CA_IP" 10.247.0.0/24 1450 >"$TMP/a.toml"
    vxlan_lab "$V_LAB_B" "$UL_B" "$UL_A" "$V_CB" "$V_CB_IP" 10.247.0.0/24 1450 >"$TMP/b.toml"
    "$BIN" check "$TMP/a.toml" >/dev/null || die "tapnet check refused the lab of host a"
    "$BIN" check "$TMP/b.toml" >/dev/null || die "tapnet check refused the lab of host b"
    log "tapnet: $V_CA ($V_CA_IP) - $V_HA ($UL_A, lab $V_LAB_A) =underlay= $V_HB ($UL_B, lab $V_LAB_B) - $V_CB ($V_CB_IP)"
    vxlan_pair "$V_HA" "$V_HB" "$TMP/a.toml" "$TMP/b.toml" "$TMP/tn-a" "$TMP/tn-b"
    ping_ok "$V_HA" "$UL_B"
    ping_ok "$V_CA" "$V_CB_IP" tapnet
    ping_ok "$V_CB" "$V_CA_IP" tapnet

    echo "tapnet system calls per frame on the VXLAN path (container a on host a -> container b on host b)," \
         "$(uname -r), $(nproc) CPUs, tapnet $(git_id)"
    measure_vxlan "udp 64B" -u -l 64 -b 0
    measure_vxlan "tcp"
    stop_tapnet "$TA_PID" "host a" "$V_LAB_A" "$V_CA" >"$TMP/stop-a"
    TA_PID=""
    stop_tapnet "$TB_PID" "host b" "$V_LAB_B" "$V_CB" >"$TMP/stop-b"
    TB_PID=""
    check_stops "$TMP/stop-a" "$TMP/stop-b"
}

snapshot() {  # suffix: host a's ports, both hosts' vxlan peers
    "$BIN" show ports --lab "$V_LAB_A" --json >"$TMP/ports-a$1.json" || die "tapnet show ports --lab $V_LAB_A failed"
    "$BIN" show vxlan --lab "$V_LAB_A" --json >"$TMP/vx-a$1.json" || die "tapnet show vxlan --lab $V_LAB_A failed"
    "$BIN" show vxlan --lab "$V_LAB_B" --json >"$TMP/vx-b$1.json" || die "tapnet show vxlan --lab $V_LAB_B failed"
}

measure_vxlan() {  # name iperf3-args...
    local name=$1; shift
    start_server "$V_CB" "$V_CB_IP"
    snapshot 0
    strace_start "$TA_PID" "$TMP/strace-a-$name"
    strace_start "$TB_PID" "$TMP/strace-b-$name"
    sleep 0.5
    timeout $((SECS + 30)) ip netns exec "$V_CA" iperf3 -c "$V_CB_IP" -p "$PORT" -t "$SECS" "$@" >"$TMP/iperf-$name" 2>&1 \
        || die "iperf3 ($name) failed$(proc_live "$TA_PID" || echo " (tapnet of host a died)")$(
                proc_live "$TB_PID" || echo " (tapnet of host b died)"): $(tail -3 "$TMP/iperf-$name")"
    snapshot 1
    strace_stop
    stop_server
    H per_frame_vxlan "$name" "$TMP/strace-a-$name" "$TMP/strace-b-$name" \
        "$TMP/ports-a0.json" "$TMP/ports-a1.json" "$TMP/vx-a0.json" "$TMP/vx-a1.json" \
        "$TMP/vx-b0.json" "$TMP/vx-b1.json"
}

build_tapnet
if [[ $VXLAN -eq 1 ]]; then vxlan_path; else bridge_path; fi
