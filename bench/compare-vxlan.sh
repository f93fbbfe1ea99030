#!/usr/bin/env bash
# bench/compare-vxlan.sh: tapnet's VXLAN overlay against the Linux kernel's vxlan
# device and bridge, same tests, same run.
#
# Two "hosts" joined by a veth underlay (host a 10.70.0.1/24, host b 10.70.0.2/24),
# one container behind each, the containers on one L2 segment stretched over VXLAN
# (VNI 42, UDP port 4789), built twice side by side:
#   kernel: hosts vxk-ha-PID and vxk-hb-PID; in each, `vx42` (type vxlan id 42
#           dstport 4789 remote PEER local ME), a Linux bridge br42 holding vx42 and
#           a veth to the container (vxk-ca-PID 10.71.0.2/24, vxk-cb-PID
#           10.71.0.3/24, MTU 1450, tx checksum offload off: see below).
#   tapnet: hosts vxt-ha-PID and vxt-hb-PID, each running its own `tapnet up`
#           inside it (nsenter): labs vxbench-a-PID and vxbench-b-PID, bridge ov
#           (10.72.0.0/24, vni 42, MTU 1450), port c in vxb-ca-PID (10.72.0.2) and
#           vxb-cb-PID (10.72.0.3), both created by tapnet; [vxlan] listens on the
#           host's underlay address, port 4789, with the other host as its peer.
# and runs, against each, alternating kernel/tapnet R times:
#   tcp : iperf3 one stream, container a -> container b, N seconds, receiver bits/s
#   udp : iperf3 -u -l 64 -b 0 a -> b, N seconds, packets/s received by b, loss
# and prints the medians, tapnet/kernel ratios, both tapnets' CPU time per test,
# frames and datagrams per tapnet run, and `tapnet show vxlan --json` after the runs.
#
# Usage: bench/compare-vxlan.sh [--seconds N] [--repeat R] [--json FILE] [--no-build]
# Needs root, iproute2, iperf3, ping, python3, nsenter (util-linux), ethtool, and the
# vxlan, bridge, veth and tun kernel drivers. Everything it creates carries the
# script's PID in its name, lives in namespaces it creates, and is removed on exit,
# failure or Ctrl-C. Nothing is added to the root namespace: no address, route or
# device (veth, bridge, vxlan, TAP), and all traffic stays between its namespaces.
set -euo pipefail

SECS=5
REPEAT=3
JSON_OUT=""
BUILD=1

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) SECS="${2:?--seconds needs a value}"; shift 2 ;;
        --seconds=*) SECS="${1#*=}"; shift ;;
        --repeat) REPEAT="${2:?--repeat needs a value}"; shift 2 ;;
        --repeat=*) REPEAT="${1#*=}"; shift ;;
        --json) JSON_OUT="${2:?--json needs a file}"; shift 2 ;;
        --json=*) JSON_OUT="${1#*=}"; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare-vxlan.sh: unknown argument: $1 (see --help)" >&2; exit 1 ;;
    esac
done
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || { echo "compare-vxlan.sh: --seconds must be a positive integer" >&2; exit 1; }
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "compare-vxlan.sh: --repeat must be a positive integer" >&2; exit 1; }
if [[ -n "$JSON_OUT" && "$JSON_OUT" != /* ]]; then JSON_OUT="$PWD/$JSON_OUT"; fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release/tapnet"

die() { echo "compare-vxlan.sh: error: $*" >&2; exit 2; }
log() { echo "# $*" >&2; }

[[ $EUID -eq 0 ]] || die "must run as root (namespaces, veth, vxlan, bridge, TAP)"
for c in ip iperf3 ping python3 timeout nsenter ethtool ss; do
    command -v "$c" >/dev/null || die "$c not found (apt-get install -y iproute2 iperf3 iputils-ping util-linux ethtool)"
done

# ---------------------------------------------------------------- names (unique per run)
ID=$$
PORT=5201                        # iperf3 port, only ever inside our own namespaces
VNI=42
VXPORT=4789
UL_A=10.70.0.1                   # underlay: host a, in both setups
UL_B=10.70.0.2                   # underlay: host b
MTU_IN=1450                      # inner MTU: a 1500-byte underlay less VXLAN's 50
# kernel
K_HA="vxk-ha-$ID"
K_HB="vxk-hb-$ID"
K_CA="vxk-ca-$ID"
K_CB="vxk-cb-$ID"
K_CA_IP=10.71.0.2
K_CB_IP=10.71.0.3
# tapnet
T_LAB_A="vxbench-a-$ID"
T_LAB_B="vxbench-b-$ID"
T_HA="vxt-ha-$ID"                # tapnet of lab a runs in here
T_HB="vxt-hb-$ID"
T_CA="vxb-ca-$ID"                # created and removed by tapnet
T_CB="vxb-cb-$ID"
T_CA_IP=10.72.0.2
T_CB_IP=10.72.0.3

OUR_NS=("$K_HA" "$K_HB" "$K_CA" "$K_CB" "$T_HA" "$T_HB" "$T_CA" "$T_CB")
OUR_LABS=("$T_LAB_A" "$T_LAB_B")

TMP="$(mktemp -d /tmp/tapnet-bench-vxlan.XXXXXX)"
TA_PID=""                        # tapnet, lab a (host a: the sending side)
TB_PID=""                        # tapnet, lab b (host b: the receiving side)
SRV_PID=""
CLI_PID=""                       # the iperf3 client (under timeout)
OURS=0                           # 1 once our names were found free: only then are they ours to remove

proc_live() {  # running, not a zombie: a dead child stays in /proc (and answers kill -0) until reaped
    local s
    s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    s="${s##*) }"
    [[ "${s:0:1}" != Z && "${s:0:1}" != X ]]
}

# ---------------------------------------------------------------- teardown
stop_tapnet_hard() {  # pid: SIGTERM while it is still our tapnet, SIGKILL after 10 s, reap
    local pid=$1
    if proc_live "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == tapnet ]]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do proc_live "$pid" || break; sleep 0.1; done
        if proc_live "$pid"; then
            echo "compare-vxlan.sh: tapnet (pid $pid) ignored SIGTERM for 10 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local pid ns lab
    for pid in "$CLI_PID" "$SRV_PID"; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    if [[ $OURS -eq 0 ]]; then rm -rf "$TMP"; exit "$rc"; fi
    # Anything running inside our namespaces was started by this script (iperf3
    # servers and clients). Kill it before tapnet removes the namespaces it created,
    # so that nothing survives in an unnamed namespace; tapnet itself gets SIGTERM and
    # the chance to tear its lab down.
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            [[ $pid == "$TA_PID" || $pid == "$TB_PID" ]] || kill -KILL "$pid" 2>/dev/null
        done
    done
    [[ -n "$TA_PID" ]] && stop_tapnet_hard "$TA_PID"
    [[ -n "$TB_PID" ]] && stop_tapnet_hard "$TB_PID"
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    # Deleting a namespace takes its devices with it: veth ends (and so their peers),
    # the bridge, the vxlan device, TAPs, and tapnet's underlay sockets are gone with
    # the process.
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] && ip netns del "$ns" 2>/dev/null
    done
    # A tapnet killed hard leaves its control socket and state file; the names are ours.
    for lab in "${OUR_LABS[@]}"; do
        rm -f "/run/tapnet/$lab.sock" "/run/tapnet/$lab.state"
    done
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] && echo "compare-vxlan.sh: warning: namespace $ns is still there" >&2
    done
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "compare-vxlan.sh: interrupted" >&2; exit 130' INT
trap 'echo "compare-vxlan.sh: terminated" >&2; exit 143' TERM

# ---------------------------------------------------------------- python helpers
cat >"$TMP/h.py" <<'PY'
import json, statistics, sys

def load(path):
    with open(path) as f:
        d = json.load(f)
    if "error" in d:
        sys.exit("iperf3: " + d["error"])
    return d

def tcp(path):
    e = load(path)["end"]
    print(json.dumps({"bps": e["sum_received"]["bits_per_second"],
                      "retransmits": e.get("sum_sent", {}).get("retransmits")}))

def udp(path):
    e = load(path)["end"]
    sent = e.get("sum_sent", e["sum"])["packets"]
    # iperf3's receiver "packets" is the highest sequence number seen, lost
    # packets included; what arrived is packets - lost_packets (= bytes / 64).
    # Packets lost after the last one that arrived are in neither figure, so
    # loss is taken against what the client sent.
    r = e.get("sum_received") or e["sum"]
    rx = r["packets"] - r["lost_packets"]
    secs = r["seconds"]
    print(json.dumps({"sent": sent, "received": rx, "seconds": secs,
                      "pps": rx / secs, "tx_pps": sent / e.get("sum_sent", e["sum"])["seconds"],
                      "loss_pct": 100.0 * (sent - rx) / sent if sent else 0.0,
                      "iperf_lost_pct": r.get("lost_percent")}))

def drops(link_path, snmp_path):
    # tx drops on the sender's eth0 (a TAP whose queue tapnet does not drain in time,
    # or a veth) and receive-buffer overflows of the receiver's UDP sockets
    tx = json.load(open(link_path))[0]["stats64"]["tx"]["dropped"]
    rows = [l.split() for l in open(snmp_path) if l.startswith("Udp:")]
    rcvbuf = int(rows[1][rows[0].index("RcvbufErrors")])
    print(tx, rcvbuf)

def counters(ports_path, vxlan_path):
    # port c: rx = frames tapnet read from the container, tx = frames it wrote to it;
    # the lab's only VXLAN peer: datagrams sent to it and received from it
    c = [p for p in json.load(open(ports_path))["ports"] if p["name"] == "c"]
    v = json.load(open(vxlan_path))["peers"]
    if len(c) != 1 or len(v) != 1:
        sys.exit("expected one port c and one VXLAN peer")
    c, v = c[0], v[0]
    print(c["rx_packets"], c["rx_bytes"], c["tx_packets"], c["tx_bytes"],
          v["tx_packets"], v["tx_bytes"], v["rx_packets"], v["rx_bytes"], v["tx_errors"])

def sample(base, parsed, extra):
    d = json.loads(base); d.update(json.loads(parsed)); d.update(json.loads(extra or "{}"))
    print(json.dumps(d))

def report(samples_path, meta_path, json_out):
    meta = json.load(open(meta_path))
    S = [json.loads(l) for l in open(samples_path) if l.strip()]
    def vals(test, impl, key):
        return [s[key] for s in S if s["test"] == test and s["impl"] == impl and s.get(key) is not None]
    def med(test, impl, key):
        v = vals(test, impl, key)
        return statistics.median(v) if v else None
    rows = [
        # test, label, key, scale, fmt, target (tapnet/kernel at least), or None
        ("tcp", "tcp 1450 (Gbit/s)", "bps", 1e-9, "%.2f", 0.5),
        ("udp", "udp 64B rx (kpps)", "pps", 1e-3, "%.1f", None),
    ]
    out = {"seconds": meta["seconds"], "repeat": meta["repeat"], "tests": {},
           "tapnet": meta.get("tapnet", {}), "env": meta.get("env", {}), "samples": S}
    print()
    print("VXLAN overlay (VNI 42, UDP 4789), container a on host a -> container b on host b")
    print("%-21s %-16s %-10s %-15s %-9s %s" % ("test", "kernel vxlan", "tapnet", "tapnet/kernel", "target", "met"))
    for test, label, key, scale, fmt, tgt in rows:
        k, t = med(test, "kernel", key), med(test, "tapnet", key)
        ratio = t / k if k and t is not None else None
        ok = None if ratio is None or tgt is None else ratio >= tgt
        print("%-21s %-16s %-10s %-15s %-9s %s" % (
            label,
            fmt % (k * scale) if k is not None else "-",
            fmt % (t * scale) if t is not None else "-",
            ("%.2fx" % ratio) if ratio is not None else "-",
            (">= %gx" % tgt) if tgt is not None else "-",
            {None: "-", True: "yes", False: "NO"}[ok]))
        out["tests"][test] = {"metric": key, "unit": label[label.find("(") + 1:label.find(")")],
                              "kernel": k * scale if k is not None else None,
                              "tapnet": t * scale if t is not None else None,
                              "ratio": ratio, "target": None if tgt is None else ">= %g" % tgt,
                              "met": ok}
    rk_, rt_ = med("tcp", "kernel", "retransmits"), med("tcp", "tapnet", "retransmits")
    if rk_ is not None and rt_ is not None:
        print("%-21s %-16s %-10s" % ("tcp retransmits", "%g" % rk_, "%g" % rt_))
    lk, lt = med("udp", "kernel", "loss_pct"), med("udp", "tapnet", "loss_pct")
    sk, st = med("udp", "kernel", "tx_pps"), med("udp", "tapnet", "tx_pps")
    if None not in (lk, lt, sk, st):
        print("%-21s %-16s %-10s" % ("udp 64B loss (%)", "%.2f" % lk, "%.2f" % lt))
        print("%-21s %-16s %-10s" % ("udp 64B tx (kpps)", "%.1f" % (sk / 1e3), "%.1f" % (st / 1e3)))
        out["tests"]["udp"].update({"kernel_loss_pct": lk, "tapnet_loss_pct": lt,
                                    "kernel_tx_kpps": sk / 1e3, "tapnet_tx_kpps": st / 1e3})
    def share(impl, key):
        v = [s[key] / s["sent"] * 100 for s in S if s["test"] == "udp" and s["impl"] == impl and key in s and s["sent"]]
        return statistics.median(v) if v else None
    dk, dt = share("kernel", "sender_txq_drops"), share("tapnet", "sender_txq_drops")
    rk, rt = share("kernel", "rcvbuf_drops"), share("tapnet", "rcvbuf_drops")
    if None not in (dk, dt, rk, rt):
        print("%-21s %-16s %-10s" % ("  lost at a eth0 (%)", "%.2f" % dk, "%.2f" % dt))
        print("%-21s %-16s %-10s" % ("  lost at b sock (%)", "%.2f" % rk, "%.2f" % rt))
        out["tests"]["udp"].update({"kernel_lost_at_sender_eth0_pct": dk, "tapnet_lost_at_sender_eth0_pct": dt,
                                    "kernel_lost_at_receiver_socket_pct": rk, "tapnet_lost_at_receiver_socket_pct": rt})
    print("(medians of %d run(s) each, %d s per iperf3 run; kernel and tapnet alternate.\n"
          " udp: the kernel forwards and encapsulates inside the sender's sendmsg, which paces\n"
          " the sender; a TAP queue does not push back, so compare received kpps, not loss.)"
          % (meta["repeat"], meta["seconds"]))

    print("\nper-run samples:")
    for test, label, key, scale, fmt, tgt in rows:
        for impl in ("kernel", "tapnet"):
            ss = [s for s in S if s["test"] == test and s["impl"] == impl]
            if test == "tcp":
                txt = "  ".join("%.2f (%s rtx)" % (s["bps"] * scale, s.get("retransmits")) for s in ss)
            else:
                txt = "  ".join("%.1f (tx %.1f)" % (s["pps"] * scale, s["tx_pps"] * scale) for s in ss)
            print("  %-4s %-7s %s" % (test, impl, txt))

    print("\ntapnet CPU time per test (utime+stime from /proc/PID/stat, all threads, both tapnets):")
    for test in ("tcp", "udp"):
        ca = sum(vals(test, "tapnet", "cpu_a_s")); cb = sum(vals(test, "tapnet", "cpu_b_s"))
        w = sum(vals(test, "tapnet", "wall_s"))
        if w:
            print("  %-4s host a (sender) %5.1f%%, host b (receiver) %5.1f%%, together %5.1f%% of one core"
                  "  (%.2f + %.2f s CPU over %.2f s)" % (test, 100 * ca / w, 100 * cb / w,
                                                         100 * (ca + cb) / w, ca, cb, w))
            out["tests"][test].update({"tapnet_a_cpu_pct_of_core": 100 * ca / w,
                                       "tapnet_b_cpu_pct_of_core": 100 * cb / w})
    tn = meta.get("tapnet", {})
    for which in ("a", "b"):
        st_ = tn.get(which, {})
        if "cpu_s" in st_:
            print("  whole run, host %s: %.2f s CPU over %.2f s from ready to SIGTERM" % (which, st_["cpu_s"], st_["wall_s"]))

    def per(test, key_n, key_b, what):
        n = sum(vals(test, "tapnet", key_n)); b = sum(vals(test, "tapnet", key_b))
        if not n:
            return
        print("  %-48s %10d, %13d bytes, %6.0f bytes each" % (what, n, b, b / n))
        out["tests"][test].update({"tapnet_" + key_n: n, "tapnet_" + key_b: b})
    for test in ("tcp", "udp"):
        print("\ntapnet during the %s runs (`show ports` port c, `show vxlan` peer; data flows a -> b):" % test)
        per(test, "a_c_rx_frames", "a_c_rx_bytes", "host a: frames read from container a")
        per(test, "a_peer_tx_packets", "a_peer_tx_bytes", "host a: datagrams sent to host b")
        per(test, "b_peer_rx_packets", "b_peer_rx_bytes", "host b: datagrams received from host a")
        per(test, "b_c_tx_frames", "b_c_tx_bytes", "host b: frames written to container b")
        per(test, "b_peer_tx_packets", "b_peer_tx_bytes", "host b: datagrams sent back to a (acks, reports)")
        per(test, "a_c_tx_frames", "a_c_tx_bytes", "host a: frames written to container a")
        e = sum(vals(test, "tapnet", "a_peer_tx_errors")) + sum(vals(test, "tapnet", "b_peer_tx_errors"))
        if e:
            print("  peer tx_errors (both hosts): %d" % e)

    for which in ("a", "b"):
        v = tn.get("vxlan_" + which)
        if v is not None:
            print("\ntapnet show vxlan --lab %s --json (after the runs): listen %s" % (v.get("lab"), v.get("listen")))
            for p in v.get("peers", []):
                print("  peer %s: tx %d packets %d bytes, rx %d packets %d bytes, tx_errors %d, remote MACs %s" % (
                    p["peer"], p["tx_packets"], p["tx_bytes"], p["rx_packets"], p["rx_bytes"],
                    p["tx_errors"], ", ".join(p.get("remote_macs", [])) or "-"))
            nz = {k: c for k, c in v.get("drops", {}).items() if c}
            print("  drops: %s" % (", ".join("%s %d" % kv for kv in sorted(nz.items())) or "none"))
    for which in ("a", "b"):
        st_ = tn.get(which, {})
        if "exit_status" in st_:
            print("tapnet (host %s) exit status after SIGTERM: %s; left behind: %s" % (
                which, st_["exit_status"], ", ".join(st_.get("leftovers", [])) or "nothing"))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print("\nJSON written to " + json_out)

cmd = sys.argv[1]
if cmd == "report":
    report(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
elif cmd in ("drops", "counters"):
    globals()[cmd](sys.argv[2], sys.argv[3])
elif cmd == "sample":
    sample(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
else:
    globals()[cmd](sys.argv[2])
PY
H() { python3 "$TMP/h.py" "$@"; }
SAMPLES="$TMP/samples.jsonl"
: >"$SAMPLES"

now() { date +%s.%N; }
cpu_ticks() {  # utime+stime of a process (whole thread group), in clock ticks
    local s f
    s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    read -ra f <<<"${s##*) }"   # f[0] is field 3 (state); utime is field 14, stime 15
    echo $(( f[11] + f[12] ))
}
CLK_TCK="$(getconf CLK_TCK)"

# ---------------------------------------------------------------- build
if [[ $BUILD -eq 1 ]]; then
    log "building: cargo build --release -p tapnet"
    (cd "$ROOT" && cargo build --release -p tapnet) >"$TMP/build.log" 2>&1 \
        || { cat "$TMP/build.log" >&2; die "cargo build failed"; }
fi
[[ -x "$BIN" ]] || die "$BIN not found (build it, or drop --no-build)"
# The commit the binary was built from (taken now: others may commit during the run).
GIT_ID="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo -dirty)"

for ns in "${OUR_NS[@]}"; do
    [[ ! -e "/run/netns/$ns" ]] || die "namespace $ns already exists (not ours: left alone)"
done
for lab in "${OUR_LABS[@]}"; do
    [[ ! -e "/run/tapnet/$lab.sock" ]] || die "a lab $lab already runs (not ours: left alone)"
done
OURS=1

# ---------------------------------------------------------------- building blocks
new_ns() {
    local ns
    for ns in "$@"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
}
# underlay HOST_A HOST_B: one veth between two host namespaces, u0 on both sides.
# The pair is created inside HOST_A with its peer placed straight into HOST_B, so
# neither end ever exists in the root namespace.
underlay() {
    ip -n "$1" link add u0 mtu 1500 type veth peer name u0 mtu 1500 netns "$2"
    ip -n "$1" addr add "$UL_A/24" dev u0
    ip -n "$2" addr add "$UL_B/24" dev u0
    ip -n "$1" link set u0 up
    ip -n "$2" link set u0 up
}

# ---------------------------------------------------------------- kernel overlay
# kernel_host HOST ME PEER CONTAINER CONTAINER_IP
kernel_host() {
    local h=$1 me=$2 peer=$3 c=$4 cip=$5
    ip -n "$h" link add vx42 type vxlan id "$VNI" dstport "$VXPORT" remote "$peer" local "$me"
    ip -n "$h" link add br42 type bridge stp_state 0 forward_delay 0
    ip -n "$h" link set vx42 master br42
    ip -n "$h" link add cv mtu "$MTU_IN" type veth peer name eth0 mtu "$MTU_IN" netns "$c"
    ip -n "$h" link set cv master br42
    ip -n "$h" link set vx42 up
    ip -n "$h" link set cv up
    ip -n "$h" link set br42 up
    # A veth hands the frames its sender left checksum-partial (CHECKSUM_PARTIAL: the
    # TCP/UDP checksum "to be finished by the NIC") through the bridge, the kernel's
    # VXLAN encapsulation and the underlay veth still unfinished: no NIC ever finishes
    # them, and the receiving kernel, handed the same skb over a veth, trusts them. A
    # 64 KiB TSO frame even crosses the underlay whole (UDP tunnel GSO). That is a
    # shortcut no real wire allows. With tx checksum offload off on the container's
    # eth0, the container computes its own checksums and its software GSO cuts TCP
    # into MTU-sized segments before they leave, as on a real network. tapnet's
    # containers are TAPs: tapnet finishes the checksums and cuts super-frames itself
    # before encapsulating, so they keep their offloads.
    ip netns exec "$c" ethtool -K eth0 tx off >/dev/null
    ip -n "$c" addr add "$cip/24" dev eth0
    ip -n "$c" link set eth0 up
}
log "kernel: $K_CA ($K_CA_IP) - $K_HA ($UL_A, vx42 + br42) =underlay= $K_HB ($UL_B, vx42 + br42) - $K_CB ($K_CB_IP)"
new_ns "$K_HA" "$K_HB" "$K_CA" "$K_CB"
underlay "$K_HA" "$K_HB"
kernel_host "$K_HA" "$UL_A" "$UL_B" "$K_CA" "$K_CA_IP"
kernel_host "$K_HB" "$UL_B" "$UL_A" "$K_CB" "$K_CB_IP"

# ---------------------------------------------------------------- tapnet overlay
lab_file() {  # name me peer container ip
    cat <<EOF
name = "$1"
[[bridge]]
name = "ov"
subnet = "10.72.0.0/24"
vni = $VNI
[[port]]
name = "c"
bridge = "ov"
netns = "$4"
ip = "$5/24"
[vxlan]
listen = "$2:$VXPORT"
peers = ["$3:$VXPORT"]
EOF
}
lab_file "$T_LAB_A" "$UL_A" "$UL_B" "$T_CA" "$T_CA_IP" >"$TMP/a.toml"
lab_file "$T_LAB_B" "$UL_B" "$UL_A" "$T_CB" "$T_CB_IP" >"$TMP/b.toml"
"$BIN" check "$TMP/a.toml" || die "tapnet check refused the lab of host a"
"$BIN" check "$TMP/b.toml" || die "tapnet check refused the lab of host b"

start_tapnet() {  # home-ns lab-file out-prefix -> sets STARTED_PID
    nsenter --net="/run/netns/$1" "$BIN" up "$2" >"$3.out" 2>"$3.err" &
    STARTED_PID=$!
}
wait_ready() {  # pid out-prefix
    for _ in $(seq 300); do
        grep -q '^ready: ' "$2.out" 2>/dev/null && break
        proc_live "$1" || { cat "$2.err" >&2; die "tapnet up ($2) exited before ready"; }
        sleep 0.1
    done
    grep -q '^ready: ' "$2.out" || { cat "$2.err" >&2; die "tapnet ($2) not ready after 30 s"; }
    log "tapnet (pid $1): $(grep '^ready: ' "$2.out")"
}

log "tapnet: $T_CA ($T_CA_IP) - $T_HA ($UL_A, lab $T_LAB_A) =underlay= $T_HB ($UL_B, lab $T_LAB_B) - $T_CB ($T_CB_IP)"
new_ns "$T_HA" "$T_HB"
underlay "$T_HA" "$T_HB"
start_tapnet "$T_HA" "$TMP/a.toml" "$TMP/tn-a"; TA_PID=$STARTED_PID
start_tapnet "$T_HB" "$TMP/b.toml" "$TMP/tn-b"; TB_PID=$STARTED_PID
wait_ready "$TA_PID" "$TMP/tn-a"
wait_ready "$TB_PID" "$TMP/tn-b"
TA_T0="$(now)"; TA_C0="$(cpu_ticks "$TA_PID")"
TB_T0="$(now)"; TB_C0="$(cpu_ticks "$TB_PID")"

tapnet_alive() {  # check both
    local pid which
    for which in a b; do
        if [[ $which == a ]]; then pid=$TA_PID; else pid=$TB_PID; fi
        proc_live "$pid" && continue
        echo "--- tapnet (host $which) stderr:" >&2; tail -20 "$TMP/tn-$which.err" >&2
        die "tapnet (host $which) died during the run"
    done
}

# ---------------------------------------------------------------- measurement helpers
ends() {  # impl -> client ns, server ns, server ip
    case "$1" in
        kernel) echo "$K_CA $K_CB $K_CB_IP" ;;
        tapnet) echo "$T_CA $T_CB $T_CB_IP" ;;
        *) die "no such network: $1" ;;
    esac
}

start_server() {  # ns ip
    ip netns exec "$1" iperf3 -s -1 -B "$2" -p "$PORT" >"$TMP/server.log" 2>&1 &
    SRV_PID=$!
    for _ in $(seq 100); do
        if ip netns exec "$1" ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .; then return 0; fi
        proc_live "$SRV_PID" || { cat "$TMP/server.log" >&2; die "iperf3 server in $1 exited"; }
        sleep 0.05
    done
    die "iperf3 server in $1 not listening after 5 s"
}

stop_server() {  # wait up to $1 tenths of a second for `-1` to end it, then kill
    for _ in $(seq "${1:-50}"); do proc_live "$SRV_PID" || break; sleep 0.1; done
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=""
}

udp_drops() {  # client-ns server-ns -> "eth0-tx-dropped-in-client-ns udp-rcvbuf-errors-in-server-ns"
    ip -n "$1" -s -j link show eth0 >"$TMP/link.json"
    ip netns exec "$2" cat /proc/net/snmp >"$TMP/snmp.txt"
    H drops "$TMP/link.json" "$TMP/snmp.txt"
}

tn_counters() {  # lab out: "c_rx_pkts c_rx_bytes c_tx_pkts c_tx_bytes peer_tx_pkts peer_tx_bytes peer_rx_pkts peer_rx_bytes peer_tx_errors"
    "$BIN" show ports --lab "$1" --json >"$TMP/ports.json" || die "tapnet show ports --lab $1 failed"
    "$BIN" show vxlan --lab "$1" --json >"$TMP/vxlan.json" || die "tapnet show vxlan --lab $1 failed"
    H counters "$TMP/ports.json" "$TMP/vxlan.json" >"$2" || die "cannot read the counters of lab $1"
}

# run_client IMPL OUT NS CMD...: runs CMD in NS (at most SECS + 30 s), its output to
# OUT, exit status in CLI_RC. Both tapnets are watched meanwhile: if one dies, the
# client is stopped and the run fails at once instead of waiting for the timeout.
run_client() {
    local impl=$1 out=$2 ns=$3
    shift 3
    timeout $((SECS + 30)) ip netns exec "$ns" "$@" >"$out" 2>&1 &
    CLI_PID=$!
    while proc_live "$CLI_PID"; do
        if [[ $impl == tapnet ]] && ! { proc_live "$TA_PID" && proc_live "$TB_PID"; }; then
            kill "$CLI_PID" 2>/dev/null || true
            wait "$CLI_PID" 2>/dev/null || true
            CLI_PID=""
            tapnet_alive
        fi
        sleep 0.2
    done
    CLI_RC=0
    wait "$CLI_PID" || CLI_RC=$?
    CLI_PID=""
}

# deltas NAME_PREFIX FILE0 FILE1 -> JSON members (no braces) for the sample
deltas() {
    python3 - "$@" <<'PY'
import sys
p, f0, f1 = sys.argv[1:4]
a = [int(x) for x in open(f0).read().split()]
b = [int(x) for x in open(f1).read().split()]
keys = ["c_rx_frames", "c_rx_bytes", "c_tx_frames", "c_tx_bytes", "peer_tx_packets",
        "peer_tx_bytes", "peer_rx_packets", "peer_rx_bytes", "peer_tx_errors"]
print(", ".join('"%s_%s": %d' % (p, k, y - x) for k, x, y in zip(keys, a, b)))
PY
}

# run_one TEST IMPL ROUND: one measurement, appends a JSON line to $SAMPLES
run_one() {
    local test=$1 impl=$2 round=$3 cns sns sip out t0 ca0 cb0 t1 ca1 cb1 attempt rc
    local extra d0 r0 d1 r1
    read -r cns sns sip <<<"$(ends "$impl")"
    out="$TMP/$test-$impl-$round.json"
    [[ $impl == tapnet ]] && tapnet_alive
    # The server is a fresh `iperf3 -s -1`; a client that fails (a path not ready
    # yet) is retried against a fresh server.
    for attempt in 1 2 3 4 5; do
        start_server "$sns" "$sip"
        if [[ $test == udp ]]; then
            udp_drops "$cns" "$sns" >"$TMP/drops0" || die "cannot read drop counters via $impl"
        fi
        if [[ $impl == tapnet ]]; then
            tn_counters "$T_LAB_A" "$TMP/cnt-a0"
            tn_counters "$T_LAB_B" "$TMP/cnt-b0"
            t0="$(now)"
            ca0="$(cpu_ticks "$TA_PID")" || tapnet_alive
            cb0="$(cpu_ticks "$TB_PID")" || tapnet_alive
        fi
        case $test in
            tcp) run_client "$impl" "$out" "$cns" iperf3 -c "$sip" -p "$PORT" -t "$SECS" -J ;;
            udp) run_client "$impl" "$out" "$cns" iperf3 -c "$sip" -p "$PORT" -u -l 64 -b 0 -t "$SECS" -J ;;
        esac
        rc=$CLI_RC
        if [[ $impl == tapnet ]]; then
            tapnet_alive
            ca1="$(cpu_ticks "$TA_PID")" || tapnet_alive
            cb1="$(cpu_ticks "$TB_PID")" || tapnet_alive
            t1="$(now)"
        fi
        if [[ $rc -eq 0 ]]; then stop_server 50; break; fi
        stop_server 0
        log "$test $impl run $round: iperf3 client failed (attempt $attempt, status $rc): $(grep -o '"error":.*' "$out" | head -1)"
        [[ $attempt -lt 5 ]] && sleep 1
    done
    if [[ $rc -ne 0 ]]; then
        echo "--- $test via $impl, exit status $rc:" >&2; tail -20 "$out" >&2
        [[ $impl == tapnet ]] && tapnet_alive
        die "$test via $impl failed 5 times"
    fi
    local m=()                   # JSON members of the sample beyond iperf3's figures
    if [[ $test == udp ]]; then
        read -r d0 r0 <"$TMP/drops0"
        udp_drops "$cns" "$sns" >"$TMP/drops1" || die "cannot read drop counters via $impl"
        read -r d1 r1 <"$TMP/drops1"
        m+=("\"sender_txq_drops\": $((d1 - d0))" "\"rcvbuf_drops\": $((r1 - r0))")
    fi
    if [[ $impl == tapnet ]]; then
        tn_counters "$T_LAB_A" "$TMP/cnt-a1"
        tn_counters "$T_LAB_B" "$TMP/cnt-b1"
        m+=("$(deltas a "$TMP/cnt-a0" "$TMP/cnt-a1")" "$(deltas b "$TMP/cnt-b0" "$TMP/cnt-b1")")
        m+=("$(python3 -c 'import sys; a=sys.argv; t=int(a[7]); print("\"cpu_a_s\": %.3f, \"cpu_b_s\": %.3f, \"wall_s\": %.3f" % ((int(a[2])-int(a[1]))/t, (int(a[4])-int(a[3]))/t, float(a[6])-float(a[5])))' "$ca0" "$ca1" "$cb0" "$cb1" "$t0" "$t1" "$CLK_TCK")")
    fi
    extra="{$(IFS=,; echo "${m[*]}")}"
    local parsed
    parsed="$(H "$test" "$out")" || die "cannot read the $test result via $impl"
    H sample "{\"test\": \"$test\", \"impl\": \"$impl\", \"round\": $round, \"attempts\": $attempt}" \
        "$parsed" "$extra" >>"$SAMPLES"
    case $test in
        tcp) log "$(printf '%-3s %-6s run %d: %s' "$test" "$impl" "$round" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.2f Gbit/s, %s retransmits" % (d["bps"]/1e9, d["retransmits"]))' "$parsed")")" ;;
        udp) log "$(printf '%-3s %-6s run %d: %s' "$test" "$impl" "$round" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.1f kpps rx, %.1f kpps tx, loss %.2f%%" % (d["pps"]/1e3, d["tx_pps"]/1e3, d["loss_pct"]))' "$parsed")")" ;;
    esac
}

# ---------------------------------------------------------------- connectivity
ping_ok() {  # ns ip
    for _ in $(seq 50); do
        ip netns exec "$1" ping -c 1 -W 1 -q "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "no ping from $1 to $2"
}
ping_ok "$K_HA" "$UL_B"
ping_ok "$T_HA" "$UL_B"
ping_ok "$K_CA" "$K_CB_IP"
ping_ok "$K_CB" "$K_CA_IP"
ping_ok "$T_CA" "$T_CB_IP"
ping_ok "$T_CB" "$T_CA_IP"
tapnet_alive
log "both overlays answer ping; running tcp, udp: $REPEAT x ${SECS}s each, alternating"

# ---------------------------------------------------------------- measurements
for test in tcp udp; do
    for ((r = 1; r <= REPEAT; r++)); do
        if (( r % 2 == 1 )); then order=(kernel tapnet); else order=(tapnet kernel); fi
        for impl in "${order[@]}"; do run_one "$test" "$impl" "$r"; done
    done
done
"$BIN" show vxlan --lab "$T_LAB_A" --json >"$TMP/vxlan-a.json" || die "tapnet show vxlan --lab $T_LAB_A failed"
"$BIN" show vxlan --lab "$T_LAB_B" --json >"$TMP/vxlan-b.json" || die "tapnet show vxlan --lab $T_LAB_B failed"

# ---------------------------------------------------------------- stop tapnet
stop_tapnet() {  # pid which lab ns... -> prints "exit-status leftover..." (one per line)
    local pid=$1 which=$2 lab=$3 rc=0 ns
    shift 3
    kill -TERM "$pid"
    for _ in $(seq 100); do proc_live "$pid" || break; sleep 0.1; done
    proc_live "$pid" && die "tapnet (host $which) still running 10 s after SIGTERM"
    wait "$pid" || rc=$?
    echo "$rc"
    for ns in "$@"; do [[ -e "/run/netns/$ns" ]] && echo "netns $ns"; done
    [[ -S "/run/tapnet/$lab.sock" ]] && echo "/run/tapnet/$lab.sock"
    return 0
}
tapnet_alive
TA_C1="$(cpu_ticks "$TA_PID")"; TA_T1="$(now)"
TB_C1="$(cpu_ticks "$TB_PID")"; TB_T1="$(now)"
stop_tapnet "$TA_PID" a "$T_LAB_A" "$T_CA" >"$TMP/stop-a"
TA_PID=""
stop_tapnet "$TB_PID" b "$T_LAB_B" "$T_CB" >"$TMP/stop-b"
TB_PID=""
log "tapnet stopped: host a exit status $(head -1 "$TMP/stop-a"), host b exit status $(head -1 "$TMP/stop-b")"

python3 - "$TMP/meta.json" "$SECS" "$REPEAT" "$CLK_TCK" \
    "$TA_C0" "$TA_C1" "$TA_T0" "$TA_T1" "$TMP/stop-a" \
    "$TB_C0" "$TB_C1" "$TB_T0" "$TB_T1" "$TMP/stop-b" \
    "$TMP/vxlan-a.json" "$TMP/vxlan-b.json" \
    "$(uname -r)" "$(iperf3 --version | head -1)" "$(nproc)" \
    "$GIT_ID" <<'PY'
import json, sys
a = sys.argv
tck = int(a[4])
def lab(c0, c1, t0, t1, stop):
    lines = open(stop).read().split("\n")
    return {"cpu_s": (int(c1) - int(c0)) / tck, "wall_s": float(t1) - float(t0),
            "exit_status": int(lines[0]), "leftovers": [l for l in lines[1:] if l]}
json.dump({"seconds": int(a[2]), "repeat": int(a[3]),
           "tapnet": {"a": lab(*a[5:10]), "b": lab(*a[10:15]),
                      "vxlan_a": json.load(open(a[15])), "vxlan_b": json.load(open(a[16]))},
           "env": {"kernel": a[17], "iperf3": a[18], "cpus": int(a[19]), "git": a[20]}},
          open(a[1], "w"))
PY

echo "tapnet VXLAN vs the Linux kernel's vxlan + bridge, $(uname -r), $(nproc) CPUs, $(iperf3 --version | head -1), tapnet $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["env"]["git"])' "$TMP/meta.json")"
H report "$SAMPLES" "$TMP/meta.json" "$JSON_OUT"
BAD=""
for f in "$TMP/stop-a" "$TMP/stop-b"; do
    [[ "$(head -1 "$f")" == 0 && "$(wc -l <"$f")" -eq 1 ]] || BAD+=" $(basename "$f"): $(tr '\n' ' ' <"$f")"
done
[[ -z $BAD ]] || die "tapnet did not exit 0 after SIGTERM or left something behind:$BAD"
