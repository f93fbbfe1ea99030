#!/usr/bin/env bash
# bench/roundrobin.sh: every path of the README's performance tables in ONE round-robin
# run, tapnet beside the Linux kernel, Open vSwitch and pasta (issue 15).
#
# Each round runs every scenario once (the order of the four blocks, and of the
# scenarios inside peers.sh, reversed every other round); the table shows medians:
#   1. the peers' benchmark, `peers.sh -r 1 -t N` (not part of this repository; see
#      --peers), with
#        L2, pbA -> pbB: kernel-bridge, ovs-tap-tso, extern-tap (= tapnet: a lab with
#        two ports without netns, started by peers.sh's PB_EXTERN_CMD hook in pbS):
#        tcp_gbps, udp64_rx_pps, ping_avg_ms
#        port forward, client in pbC: pf-direct, pf-dnat, pf-pasta-tap, pf-pasta-lo:
#        tcp_gbps
#   2. this script's own, built once for the whole run (names rr-*-PID, lab rr-PID):
#        pf-tapnet: tapnet's forward measured as peers.sh measures pf-*: tapnet runs in
#          host namespace rr-h-PID (eth0 10.78.5.1/24, a veth to rr-p-PID, as pbC's);
#          [[forward]] tcp 0.0.0.0:15205 -> container rr-tc-PID 10.78.6.2:5201; the
#          client runs in the host namespace and connects to 10.78.5.1:15205
#        lone ping: `ping -c 5 -i 1` between two containers on a kernel bridge
#          (rr-ka-PID -> rr-kb-PID) and on the same lab's bridge br0 (rr-ta-PID ->
#          rr-tb-PID): ping1_avg_ms (Open vSwitch not measured)
#   3. `compare-l3.sh --repeat 1 --first-round R --no-build --json`: routed TCP
#      (kernel, tapnet) and the forward from an outside namespace (direct, dnat, socat,
#      tapnet)
#   4. `compare-vxlan.sh --repeat 1 --first-round R --no-build --json`: VXLAN TCP and
#      64-byte UDP (kernel, kdef, tapnet)
# and prints the commit, CPU model, kernel, CPUs and date, one table of ratios (to the
# kernel; to the direct veth and to kernel DNAT for forwards) with each baseline's
# median, and the median of every scenario and metric.
#
# Usage: sudo bench/roundrobin.sh [-r ROUNDS] [-t SECONDS] [-o FILE] [--json FILE]
#                                 [--no-build] [--peers PATH]
#   -r R, --repeat R    rounds (default 3)
#   -t N, --seconds N   length of each iperf3 run (default 5)
#   -o FILE             raw samples, one line each, then the medians (default
#                       /tmp/tapnet-roundrobin-DATE.txt)
#   --json FILE         also the table, medians, samples and environment as JSON
#   --no-build          use target/release/tapnet as it is (no cargo build)
#   --peers PATH        peers.sh (also env PEERS_SH; default ../shared/bench/peers.sh
#                       from the repository root)
#   TAPNET_UP_ARGS      (environment) words added to every `tapnet up` of the run
#                       (extern-tap, rr-PID, compare-l3.sh's and compare-vxlan.sh's)
# One round at the default -t 5 takes about 165 s on the 2-vCPU development VM.
# Needs root, iproute2, iperf3, ping, python3, nsenter, jq, ethtool, nft, socat,
# Open vSwitch and pasta (apt-get install -y iperf3 jq ethtool iproute2 iputils-ping
# nftables socat openvswitch-switch passt). peers.sh uses fixed names (pb*) and
# removes whatever is in pb* namespaces when it starts, so the script refuses to start
# while any pb* namespace exists. Everything else it creates carries its PID. All of it
# is removed on exit, failure, Ctrl-C or SIGTERM. Exit status 0 whenever the
# measurement worked, 2 on a failure, 130 on Ctrl-C, 143 on SIGTERM.
set -euo pipefail

BENCH_NAME=roundrobin.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

OUT=""
PEERS="${PEERS_SH:-$ROOT/../shared/bench/peers.sh}"
extra_arg() {  # this script's options beyond lib.sh's
    case "$1" in
        -r|--rounds) REPEAT="${2:?$1 needs a value}"; ARGS_USED=2 ;;
        -t) SECS="${2:?-t needs a value}"; ARGS_USED=2 ;;
        -o) OUT="${2:?-o needs a file}"; ARGS_USED=2 ;;
        --peers) PEERS="${2:?--peers needs a path}"; ARGS_USED=2 ;;
        --peers=*) PEERS="${1#*=}"; ARGS_USED=1 ;;
    esac
}
parse_args "$@"
[[ -n $OUT ]] || OUT="/tmp/tapnet-roundrobin-$(date +%Y%m%d-%H%M%S).txt"
[[ $OUT == /* ]] || OUT="$PWD/$OUT"

APT_HINT="apt-get install -y iperf3 jq ethtool iproute2 iputils-ping nftables socat openvswitch-switch passt"
require_root "namespaces, veth, TAP, nft, Open vSwitch; peers.sh too"
require_cmds "$APT_HINT" ip iperf3 ping python3 timeout nsenter ss jq ethtool nft socat \
    ovsdb-tool ovsdb-server ovs-vswitchd ovs-vsctl pasta
[[ -f $PEERS ]] || die "peers.sh not found at $PEERS: it is not part of this repository; give its path with --peers PATH (or PEERS_SH=PATH)"
PEERS="$(cd "$(dirname "$PEERS")" && pwd)/$(basename "$PEERS")"
pb_ns() { ip netns list | awk '$1 ~ /^pb/ {print $1}'; }
[[ -z "$(pb_ns)" ]] || die "pb* namespaces exist ($(pb_ns | paste -sd " ")): another peers.sh run? peers.sh would kill what runs in them; if they are stale, remove them with: $PEERS --cleanup"

# ---------------------------------------------------------------- names (unique per run)
ID=$$
PORT=5201                        # iperf3 port in the containers, only ever in our namespaces
FWD_PORT=15205                   # tapnet's forward (peers.sh's pf-* use 15201-15204)
LAB="rr-$ID"                     # pf-tapnet and the lone ping's tapnet bridge
EXT_LAB="rrx-$ID"                # the extern-tap lab that peers.sh starts, once a round
H_NS="rr-h-$ID"                  # tapnet's home: the "host" (pbC of pf-*)
P_NS="rr-p-$ID"                  # the other end of the host's eth0 (pbP of pf-*), idle
HOST_IP=10.78.5.1
P_IP=10.78.5.2
C_NS="rr-tc-$ID"                 # the forward's container, created by tapnet
C_IP=10.78.6.2
TA_NS="rr-ta-$ID"                # lone ping on tapnet's bridge br0, created by tapnet
TB_NS="rr-tb-$ID"
TA_IP=10.78.1.2
TB_IP=10.78.1.3
KBR_NS="rr-kbr-$ID"              # lone ping on a kernel bridge
KA_NS="rr-ka-$ID"
KB_NS="rr-kb-$ID"
KA_IP=10.78.2.2
KB_IP=10.78.2.3

OUR_NS=("$H_NS" "$P_NS" "$C_NS" "$TA_NS" "$TB_NS" "$KBR_NS" "$KA_NS" "$KB_NS")
OUR_LABS=("$LAB" "$EXT_LAB")

PEERS_L2=(kernel-bridge ovs-tap-tso extern-tap)
PEERS_PF=(pf-direct pf-dnat pf-pasta-tap pf-pasta-lo)

TMP="$(mktemp -d /tmp/tapnet-bench-rr.XXXXXX)"
TN_PID=""                        # tapnet, lab rr-PID
SRV_PID=""
CHILD_PID=""                     # peers.sh, compare-l3.sh or compare-vxlan.sh while it runs
CHILD_NAME=""
PEERS_RAN=0

# ---------------------------------------------------------------- teardown
teardown() {  # called by lib.sh's EXIT trap, which then deletes $TMP
    # A child started with & ignores SIGINT (bash), so Ctrl-C reaches only this script:
    # SIGTERM makes the child tear down what it built, and it is waited for.
    if [[ -n $CHILD_PID ]] && proc_live "$CHILD_PID"; then
        log "stopping $CHILD_NAME (pid $CHILD_PID)"
        kill -TERM "$CHILD_PID" 2>/dev/null
        wait "$CHILD_PID" 2>/dev/null
    fi
    [[ -n $SRV_PID ]] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
    # pb* namespaces were free when the run began: any left now are peers.sh's of this run
    if [[ $PEERS_RAN -eq 1 && -n "$(pb_ns)" ]]; then
        PB_STATE="$TMP/pb" bash "$PEERS" --cleanup >/dev/null 2>&1
    fi
    [[ $OURS -eq 1 ]] || return 0
    teardown_labs "$TN_PID"
}
bench_traps

# ---------------------------------------------------------------- python helpers
write_helpers <<'PY'
def child(path, rnd, kind):
    # compare-l3.sh's or compare-vxlan.sh's --json: its samples as lines of ours
    names = {("routed", i): "routed-" + i for i in ("kernel", "tapnet")}
    names.update({("forward", i): "fwd-out-" + i for i in ("direct", "dnat", "socat", "tapnet")})
    names.update({(t, i): "vxlan-" + i for t in ("tcp", "udp") for i in ("kernel", "kdef", "tapnet")})
    for s in json.load(open(path))["samples"]:
        sc = names[(s["test"], s["impl"])]
        m = {}
        if s["test"] == "udp":
            m = {"udp64_rx_pps": round(s["pps"]), "udp64_tx_pps": round(s["tx_pps"]),
                 "udp64_loss_pct": round(s["loss_pct"], 2)}
        else:
            m = {"tcp_gbps": round(s["bps"] / 1e9, 3), "tcp_retrans": s.get("retransmits")}
        for k, v in m.items():
            print("round=%s scenario=%s metric=%s value=%s from=%s" % (rnd, sc, k, v, kind))

def ping_avg(path):
    t = open(path).read()
    m = re.search(r"= [\d.]+/([\d.]+)/", t)
    if not m:
        sys.exit("cannot parse ping output:\n" + t)
    print(m.group(1))

def read_out(path):
    info, S = {}, []
    for l in open(path):
        w = l.split()
        if not w:
            continue
        if w[0] == "info":
            k, _, v = l[5:].strip().partition("=")
            info[k] = v
        elif w[0].startswith("round="):
            d = dict(x.split("=", 1) for x in w)
            try:
                d["value"] = float(d["value"])
            except ValueError:
                continue
            d["round"] = int(d["round"])
            S.append(d)
    return info, S

def medians(S):
    keys = []
    for s in S:
        k = (s["scenario"], s["metric"])
        if k not in keys:
            keys.append(k)
    return {k: (statistics.median([s["value"] for s in S if (s["scenario"], s["metric"]) == k]),
                [s["value"] for s in S if (s["scenario"], s["metric"]) == k]) for k in keys}, keys

UNIT = {"tcp_gbps": ("Gbit/s", 1, "%.2f"), "udp64_rx_pps": ("kpps", 1e-3, "%.1f"),
        "ping_avg_ms": ("us", 1e3, "%.0f"), "ping1_avg_ms": ("us", 1e3, "%.0f")}
# label, metric, baseline scenario, its name, cells: column -> [(scenario, tag)]
L2 = {"kernel": [("kernel-bridge", "")], "ovs": [("ovs-tap-tso", "")], "tapnet": [("extern-tap", "")]}
PF = {"pasta": [("pf-pasta-tap", "tap"), ("pf-pasta-lo", "lo")], "tapnet": [("pf-tapnet", "")]}
ROWS = [
    ("L2: TCP, one stream, MTU 1500", "tcp_gbps", "kernel-bridge", "kernel bridge", L2),
    ("L2: UDP 64 B received", "udp64_rx_pps", "kernel-bridge", "kernel bridge", L2),
    ("L2: ping -i 0.01 RTT (lower=better)", "ping_avg_ms", "kernel-bridge", "kernel bridge", L2),
    ("L2: lone ping 1/s RTT (lower=better)", "ping1_avg_ms", "lone-kernel-bridge", "kernel bridge",
     {"kernel": [("lone-kernel-bridge", "")], "tapnet": [("lone-tapnet", "")]}),
    ("forward TCP, client on the host", "tcp_gbps", "pf-direct", "direct veth",
     dict(PF, kernel=[("pf-dnat", "DNAT")])),
    ("forward TCP, client on the host", "tcp_gbps", "pf-dnat", "DNAT (nft output)",
     dict(PF, kernel=[("pf-dnat", "")])),
    ("forward TCP, client outside (l3)", "tcp_gbps", "fwd-out-dnat", "DNAT (nft prerouting)",
     {"kernel": [("fwd-out-dnat", "")], "tapnet": [("fwd-out-tapnet", "")]}),
    ("forward TCP, client outside (l3)", "tcp_gbps", "fwd-out-socat", "socat",
     {"kernel": [("fwd-out-dnat", "DNAT")], "tapnet": [("fwd-out-tapnet", "")]}),
    ("routed TCP, subnet to subnet", "tcp_gbps", "routed-kernel", "kernel routing",
     {"kernel": [("routed-kernel", "")], "tapnet": [("routed-tapnet", "")]}),
    ("VXLAN TCP, inner MTU 1450", "tcp_gbps", "vxlan-kernel", "kernel vxlan",
     {"kernel": [("vxlan-kernel", ""), ("vxlan-kdef", "kdef")], "tapnet": [("vxlan-tapnet", "")]}),
    ("VXLAN UDP 64 B received", "udp64_rx_pps", "vxlan-kernel", "kernel vxlan",
     {"kernel": [("vxlan-kernel", ""), ("vxlan-kdef", "kdef")], "tapnet": [("vxlan-tapnet", "")]}),
]
COLS = (("kernel", "kernel"), ("ovs", "Open vSwitch"), ("pasta", "pasta"), ("tapnet", "tapnet"))
NAMES = [
    ("extern-tap", "tapnet through peers.sh's extern-tap hook (two ports without netns, moved into pbA/pbB)"),
    ("pf-tapnet", "tapnet's [[forward]], client in the host namespace as in pf-* (this script)"),
    ("pf-pasta-tap / -lo", "pasta -t, client to the host's address (tap path) / to 127.0.0.1 (splice)"),
    ("lone-*", "ping -c 5 -i 1 on a kernel bridge and on tapnet (this script; no Open vSwitch)"),
    ("routed-*, fwd-out-*", "compare-l3.sh --repeat 1 (forward: client in an outside namespace)"),
    ("vxlan-*", "compare-vxlan.sh --repeat 1 (kernel: tx csum off in the containers; kdef: defaults)"),
]

def report(out_path, json_out=""):
    info, S = read_out(out_path)
    M, keys = medians(S)
    print("tapnet round-robin against the kernel, Open vSwitch and pasta")
    print("commit %s; CPU %s (%s CPUs); kernel %s; %s" % (
        info.get("commit"), info.get("cpu"), info.get("cpus"), info.get("kernel"), info.get("date")))
    print("%s round(s) x %s s per iperf3 run, %s; tapnet up %s" % (
        info.get("rounds"), info.get("seconds"), info.get("duration", "?"),
        info.get("tapnet_up_args") or "(no extra arguments)"))
    print("%s; Open vSwitch %s; passt %s; peers.sh %s" % (
        info.get("iperf3"), info.get("ovs"), info.get("passt"), info.get("peers")))
    print()
    print("ratios of the medians to the baseline's median (pasta: tap path, lo = splice from 127.0.0.1)")
    fmt = "%-36s %-34s %-17s %-12s %-20s %s"
    print(fmt % ("path", "baseline (median)", "kernel", "Open vSwitch", "pasta", "tapnet"))
    rows = []
    for label, metric, base, base_name, cells in ROWS:
        unit, scale, vf = UNIT[metric]
        b = M.get((base, metric), (None,))[0]
        bt = "%s %s %s" % (base_name, vf % (b * scale), unit) if b is not None else base_name + " -"
        row = {"path": label, "metric": metric, "unit": unit, "baseline": base,
               "baseline_median": None if b is None else b * scale}
        txt = []
        for col, _ in COLS:
            parts = []
            for sc, tag in cells.get(col, []):
                v = M.get((sc, metric), (None,))[0]
                r = v / b if v is not None and b else None
                row.setdefault("ratios", {})[sc] = r
                parts.append(("%.2fx" % r if r is not None else "-") + (" " + tag if tag else ""))
            txt.append(", ".join(parts) or "-")
        print(fmt % (label, bt, *txt))
        rows.append(row)
    print("(medians over the rounds; per-run figures in %s)" % out_path)
    print()
    for n, what in NAMES:
        print("  %-20s %s" % (n, what))

    print("\nmedians (n = rounds):")
    print("  %-19s %-15s %12s %3s  %s" % ("scenario", "metric", "median", "n", "samples"))
    med_out = []
    for k in keys:
        sc, metric = k
        if metric == "loadavg1":
            continue
        v, all_ = M[k]
        print("  %-19s %-15s %12g %3d  %s" % (sc, metric, v, len(all_), " ".join("%g" % x for x in all_)))
        med_out.append({"scenario": sc, "metric": metric, "median": v, "samples": all_})
    with open(out_path, "a") as f:
        for m in med_out:
            f.write("median scenario=%s metric=%s value=%g n=%d\n" % (m["scenario"], m["metric"], m["median"], len(m["samples"])))
    write_json({"env": info, "rows": rows, "medians": med_out, "samples": S}, json_out)
PY

# ---------------------------------------------------------------- build
build_tapnet
GIT_ID="$(git_id)"               # the commit the binary was built from
ns_free " (not ours: left alone)"
for lab in "${OUR_LABS[@]}"; do
    [[ ! -e "/run/tapnet/$lab.sock" ]] || die "a lab $lab already runs (not ours: left alone)"
done

# ---------------------------------------------------------------- environment
T_START="$(date +%s)"
{
    echo "info commit=$GIT_ID"
    echo "info cpu=$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -1)"
    echo "info cpus=$(nproc)"
    echo "info kernel=$(uname -r)"
    echo "info date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "info rounds=$REPEAT"
    echo "info seconds=$SECS"
    echo "info tapnet_up_args=${TAPNET_UP_ARGS-}"
    echo "info iperf3=$(iperf3 --version | head -1)"
    echo "info ovs=$(ovs-vswitchd --version 2>/dev/null | awk 'NR==1{print $NF}')"
    echo "info passt=$(dpkg-query -W -f='${Version}' passt 2>/dev/null || echo unknown)"
    echo "info peers=$PEERS (sha256 $(sha256sum "$PEERS" | cut -c1-12))"
} >"$OUT" || die "cannot write $OUT"

# ---------------------------------------------------------------- building blocks
emit() {  # round scenario metric value from
    echo "round=$1 scenario=$2 metric=$3 value=$4 from=$5" >>"$OUT"
}

# ---------------------------------------------------------------- kernel bridge (lone ping)
log "lone ping, kernel: bridge in $KBR_NS, $KA_NS ($KA_IP) -> $KB_NS ($KB_IP)"
kernel_bridge "$KBR_NS" kbr kva kvb "$KA_NS" "$KA_IP" "$KB_NS" "$KB_IP"

# ---------------------------------------------------------------- tapnet: forward and lone ping
cat >"$TMP/lab.toml" <<EOF
name = "$LAB"
[[bridge]]
name = "br0"
subnet = "10.78.1.0/24"
[[port]]
name = "a"
bridge = "br0"
netns = "$TA_NS"
ip = "$TA_IP/24"
[[port]]
name = "b"
bridge = "br0"
netns = "$TB_NS"
ip = "$TB_IP/24"
[[bridge]]
name = "f1"
subnet = "10.78.6.0/24"
[[port]]
name = "c"
bridge = "f1"
netns = "$C_NS"
ip = "$C_IP/24"
[[forward]]
proto = "tcp"
listen = "0.0.0.0:$FWD_PORT"
to = "$C_IP:$PORT"
EOF
"$BIN" check "$TMP/lab.toml" || die "tapnet check refused the lab"
log "pf-tapnet: $H_NS ($HOST_IP:$FWD_PORT, tapnet $LAB) -> $C_NS $C_IP:$PORT; lone ping: $TA_NS ($TA_IP) -> $TB_NS ($TB_IP)"
new_ns "$H_NS" "$P_NS"
veth "$H_NS" eth0 "$HOST_IP/24" "$P_NS" eth0 "$P_IP/24"
ip -n "$H_NS" route add default via "$P_IP"
start_tapnet "$H_NS" "$TMP/lab.toml" "$TMP/tn"; TN_PID=$STARTED_PID
wait_ready "$TN_PID" "$TMP/tn"

tapnet_alive() {
    proc_live "$TN_PID" && return 0
    echo "--- tapnet ($LAB) stderr:" >&2; tail -20 "$TMP/tn.err" >&2
    die "tapnet ($LAB) died during the run"
}

ping_ok "$KA_NS" "$KB_IP"
ping_ok "$TA_NS" "$TB_IP"

# ---------------------------------------------------------------- extern-tap hook
# peers.sh runs PB_EXTERN_CMD with bash -c in pbS, with the TAP names as "$1" "$2"
# (pbtA, pbtB). The hook writes a lab whose two ports have no netns (their TAPs are
# made in pbS under the port names; peers.sh then moves them into pbA and pbB) and
# runs tapnet as its child, passing SIGTERM on, so that tapnet's exit status is kept.
EXT_STATUS="$TMP/ext.status"
{
    echo '#!/bin/bash'
    printf 'lab=%q bin=%q status=%q name=%q\n' "$TMP/ext.toml" "$BIN" "$EXT_STATUS" "$EXT_LAB"
    printf 'up=('
    if [[ ${#TAPNET_UP[@]} -gt 0 ]]; then printf ' %q' "${TAPNET_UP[@]}"; fi
    printf ' )\n'
    cat <<'X'
printf 'name = "%s"\n[[bridge]]\nname = "br0"\n[[port]]\nname = "%s"\nbridge = "br0"\n[[port]]\nname = "%s"\nbridge = "br0"\n' \
    "$name" "$1" "$2" >"$lab"
"$bin" up "${up[@]}" "$lab" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' TERM INT
rc=0
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done
echo "$rc" >"$status"
exit "$rc"
X
} >"$TMP/ext.sh"
chmod 0755 "$TMP/ext.sh"
# shellcheck disable=SC2016  # expanded by peers.sh's bash -c
EXT_CMD='exec '"$TMP/ext.sh"' "$1" "$2"'

# ---------------------------------------------------------------- blocks of a round
run_child() {  # name cmd...: runs it in the background (so a signal finds this script
               # waiting), its stdout to $TMP/NAME.out; dies if it fails
    CHILD_NAME=$1
    shift
    "$@" >"$TMP/$CHILD_NAME.out" &
    CHILD_PID=$!
    local rc=0
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    if [[ $rc -ne 0 ]]; then
        echo "--- $CHILD_NAME, exit status $rc; its output:" >&2
        tail -40 "$TMP/$CHILD_NAME.out" >&2
        die "$CHILD_NAME failed"
    fi
}

block_peers() {  # round
    local r=$1 scen=("${PEERS_L2[@]}" "${PEERS_PF[@]}") s
    if (( r % 2 == 0 )); then
        local rev=()
        for ((s = ${#scen[@]} - 1; s >= 0; s--)); do rev+=("${scen[s]}"); done
        scen=("${rev[@]}")
    fi
    log "round $r: peers.sh -r 1 -t $SECS ${scen[*]}"
    rm -f "$EXT_STATUS"
    PEERS_RAN=1
    # SIGPIPE back to its default: pasta refuses to start ("Couldn't install signal
    # handlers") if it inherits SIGPIPE ignored (a Python program that execs this one)
    run_child peers env --default-signal=PIPE PB_STATE="$TMP/pb" PB_EXTERN_CMD="$EXT_CMD" \
        bash "$PEERS" -r 1 -t "$SECS" -o "$TMP/peers-$r.txt" "${scen[@]}"
    # its measurements, as ours; a scenario that failed stops the run
    local bad
    bad="$(awk '$1 ~ /^scenario=/ && $2 == "run=1" && ($3 == "metric=error" || $4 == "value=NA")' "$TMP/peers-$r.txt")"
    if [[ -n $bad ]]; then
        echo "$bad" >&2
        for s in "${scen[@]}"; do
            if grep -q "^scenario=$s run=1 metric=error\|^scenario=$s run=1 .* value=NA" "$TMP/peers-$r.txt"; then
                echo "--- peers.sh's logs of $s ($TMP/pb/logs/$s):" >&2
                tail -n 20 "$TMP/pb/logs/$s"/*.log >&2 2>/dev/null || true
            fi
        done
        die "peers.sh: a scenario failed in round $r (above)"
    fi
    awk -v r="$r" '$1 ~ /^scenario=/ && $2 == "run=1" {
        sub(/^scenario=/, "", $1); print "round=" r " scenario=" $1 " " $3 " " $4 " from=peers.sh" }' \
        "$TMP/peers-$r.txt" >>"$OUT"
    # tapnet, started by the hook, must have exited 0 on peers.sh's SIGTERM
    [[ -s $EXT_STATUS ]] || die "extern-tap: tapnet's exit status was not recorded (killed?)"
    [[ "$(cat "$EXT_STATUS")" == 0 ]] || die "extern-tap: tapnet exited $(cat "$EXT_STATUS") on SIGTERM"
    [[ ! -e "/run/tapnet/$EXT_LAB.sock" ]] || die "extern-tap: tapnet left /run/tapnet/$EXT_LAB.sock behind"
    [[ -z "$(pb_ns)" ]] || die "peers.sh left namespaces behind: $(pb_ns | paste -sd " ")"
    grep '^scenario=.* run=1 metric=\(tcp_gbps\|udp64_rx_pps\|ping_avg_ms\) ' "$TMP/peers-$r.txt" \
        | sed 's/^scenario=/# /; s/ run=1 metric=/: /; s/ value=/ /' >&2 || true
}

# one client run for iperf3_tries (called in block_own's scope)
try_forward() {
    timeout $((SECS + 20)) ip netns exec "$H_NS" iperf3 -c "$HOST_IP" -p "$FWD_PORT" -t "$SECS" -J \
        >"$out" 2>&1 || TRY_RC=$?
}

lone_ping() {  # round scenario ns ip
    local out="$TMP/ping1-$2-$1.txt" rc=0 v
    timeout 60 ip netns exec "$3" ping -c 5 -i 1 -q -w 20 "$4" >"$out" 2>&1 || rc=$?
    [[ $rc -eq 0 ]] || { cat "$out" >&2; die "lone ping via $2 failed (status $rc)"; }
    v="$(H ping_avg "$out")" || die "cannot read the lone ping via $2"
    emit "$1" "$2" ping1_avg_ms "$v" roundrobin.sh
    log "$2: lone ping ${v} ms"
}

block_own() {  # round
    local r=$1 out="$TMP/pf-tapnet-$1.json" parsed g t
    tapnet_alive
    iperf3_tries forward pf-tapnet "$r" "$C_NS" "$C_IP" "$out" try_forward tapnet_alive
    tapnet_alive
    parsed="$(H tcp "$out")" || die "cannot read the iperf3 result of pf-tapnet"
    read -r g t <<<"$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(round(d["bps"]/1e9, 3), d["retransmits"])' "$parsed")"
    emit "$r" pf-tapnet tcp_gbps "$g" roundrobin.sh
    emit "$r" pf-tapnet tcp_retrans "$t" roundrobin.sh
    log "pf-tapnet: $g Gbit/s, $t retransmits"
    if (( r % 2 == 1 )); then
        lone_ping "$r" lone-kernel-bridge "$KA_NS" "$KB_IP"
        lone_ping "$r" lone-tapnet "$TA_NS" "$TB_IP"
    else
        lone_ping "$r" lone-tapnet "$TA_NS" "$TB_IP"
        lone_ping "$r" lone-kernel-bridge "$KA_NS" "$KB_IP"
    fi
    tapnet_alive
}

block_compare() {  # round script kind
    local r=$1 script=$2 kind=$3
    log "round $r: $script --repeat 1 --first-round $r --seconds $SECS --no-build"
    run_child "$kind" bash "$ROOT/bench/$script" --repeat 1 --first-round "$r" --seconds "$SECS" \
        --no-build --json "$TMP/$kind-$r.json"
    H child "$TMP/$kind-$r.json" "$r" "$script" >>"$OUT" || die "cannot read $script's JSON"
}
block_l3() { block_compare "$1" compare-l3.sh l3; }
block_vxlan() { block_compare "$1" compare-vxlan.sh vxlan; }

# ---------------------------------------------------------------- the rounds
log "$REPEAT round(s), ${SECS}s per iperf3 run; samples to $OUT"
for ((r = 1; r <= REPEAT; r++)); do
    t0="$(date +%s)"
    if (( r % 2 == 1 )); then blocks=(peers own l3 vxlan); else blocks=(vxlan l3 own peers); fi
    for b in "${blocks[@]}"; do "block_$b" "$r"; done
    log "round $r/$REPEAT took $(( $(date +%s) - t0 )) s"
done

# ---------------------------------------------------------------- stop tapnet
tapnet_alive
stop_tapnet "$TN_PID" "" "$LAB" "$C_NS" "$TA_NS" "$TB_NS" >"$TMP/stop"
TN_PID=""
check_stops "$TMP/stop"
echo "info duration=$(( $(date +%s) - T_START )) s" >>"$OUT"

H report "$OUT" "$JSON_OUT"
