#!/usr/bin/env bash
# bench/compare.sh: tapnet against a Linux kernel bridge, same tests, same run.
#
# Builds two identical two-namespace networks side by side:
#   kernel: namespace bench-kbr-PID holds a Linux bridge and one end of two veth
#           pairs; the other ends are eth0 in bench-k-a-PID (10.251.0.2/24) and
#           bench-k-b-PID (10.251.0.3/24). MTU 1500. Nothing is added to the root
#           namespace.
#   tapnet: `tapnet up` on a generated lab, ports a (bench-tn-a-PID, 10.250.0.2/24)
#           and b (bench-tn-b-PID, 10.250.0.3/24) on bridge br0.
# and runs, against each, alternating kernel/tapnet R times:
#   tcp  : iperf3 one stream a -> b, N seconds, receiver bits/s
#   udp  : iperf3 -u -l 64 -b 0 a -> b, N seconds, packets/s received by b, loss
#   ping : ping -c 200 -i 0.005 a -> b, average RTT
# and prints the medians, tapnet/kernel ratios, tapnet's CPU time and the
# frames/bytes per frame tapnet read from port a during the TCP test.
#
# Usage: bench/compare.sh [--seconds N] [--repeat R] [--json FILE] [--no-build]
#                         [--busy-poll-us US]   (passed to `tapnet up`)
# Needs root, iproute2, iperf3, ping, python3. Everything it creates carries the
# script's PID in its name and is removed on exit, failure or Ctrl-C.
set -euo pipefail

SECS=5
REPEAT=3
JSON_OUT=""
BUILD=1
BUSY_POLL_US=""

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
        --busy-poll-us) BUSY_POLL_US="${2:?--busy-poll-us needs a value}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument: $1 (see --help)" >&2; exit 1 ;;
    esac
done
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --seconds must be a positive integer" >&2; exit 1; }
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --repeat must be a positive integer" >&2; exit 1; }
if [[ -n "$JSON_OUT" && "$JSON_OUT" != /* ]]; then JSON_OUT="$PWD/$JSON_OUT"; fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release/tapnet"

die() { echo "compare.sh: error: $*" >&2; exit 2; }
log() { echo "# $*" >&2; }

[[ $EUID -eq 0 ]] || die "must run as root (namespaces, bridge, TAP)"
for c in ip iperf3 ping python3 timeout; do
    command -v "$c" >/dev/null || die "$c not found"
done

# ---------------------------------------------------------------- names (unique per run)
ID=$$
K_BR_NS="bench-kbr-$ID"          # kernel bridge host
K_A_NS="bench-k-a-$ID"
K_B_NS="bench-k-b-$ID"
K_BR="kbr$ID"                    # bridge device inside K_BR_NS
K_VA="kva$ID"                    # veth ends inside K_BR_NS (peers are eth0 in K_A/K_B)
K_VB="kvb$ID"
K_A_IP=10.251.0.2
K_B_IP=10.251.0.3
T_LAB="benchlab-$ID"
T_A_NS="bench-tn-a-$ID"
T_B_NS="bench-tn-b-$ID"
T_A_IP=10.250.0.2
T_B_IP=10.250.0.3
PORT=5201                        # iperf3 port, inside our own namespaces
OUR_NS=("$K_A_NS" "$K_B_NS" "$K_BR_NS" "$T_A_NS" "$T_B_NS")

TMP="$(mktemp -d /tmp/tapnet-bench.XXXXXX)"
TN_PID=""
SRV_PID=""
CREATED_NS=()

# ---------------------------------------------------------------- teardown
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n "$SRV_PID" ]] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null
    fi
    if [[ -n "$TN_PID" ]]; then
        # signal it only while it is still our tapnet; then reap it, dead or alive
        if proc_live "$TN_PID" && [[ "$(cat "/proc/$TN_PID/comm" 2>/dev/null)" == tapnet ]]; then
            kill -TERM "$TN_PID" 2>/dev/null
            for _ in $(seq 100); do proc_live "$TN_PID" || break; sleep 0.1; done
            if proc_live "$TN_PID"; then
                echo "compare.sh: tapnet (pid $TN_PID) ignored SIGTERM for 10 s; killing it" >&2
                kill -KILL "$TN_PID" 2>/dev/null
            fi
        fi
        wait "$TN_PID" 2>/dev/null
    fi
    # Anything still running inside our namespaces was started by this script.
    local ns pid
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] && ip netns del "$ns" 2>/dev/null
    done
    # A tapnet killed hard leaves its control socket behind; the name is ours.
    [[ -S "/run/tapnet/$T_LAB.sock" ]] && rm -f "/run/tapnet/$T_LAB.sock"
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'echo "compare.sh: interrupted" >&2; exit 130' INT
trap 'echo "compare.sh: terminated" >&2; exit 143' TERM

# ---------------------------------------------------------------- python helpers
cat >"$TMP/h.py" <<'PY'
import json, re, statistics, sys

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

def ping(path):
    t = open(path).read()
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", t)
    l = re.search(r"(\d+) packets transmitted, (\d+) received", t)
    if not m or not l:
        sys.exit("cannot parse ping output:\n" + t)
    print(json.dumps({"min_us": float(m.group(1)) * 1000, "avg_us": float(m.group(2)) * 1000,
                      "max_us": float(m.group(3)) * 1000, "mdev_us": float(m.group(4)) * 1000,
                      "sent": int(l.group(1)), "received": int(l.group(2))}))

def drops(link_path, snmp_path):
    # tx drops on the sender's eth0 (a TAP whose queue tapnet does not drain in time,
    # or a veth) and receive-buffer overflows of the receiver's UDP sockets
    tx = json.load(open(link_path))[0]["stats64"]["tx"]["dropped"]
    rows = [l.split() for l in open(snmp_path) if l.startswith("Udp:")]
    rcvbuf = int(rows[1][rows[0].index("RcvbufErrors")])
    print(tx, rcvbuf)

def port(path, name):
    d = json.load(open(path))
    for p in d["ports"]:
        if p["name"] == name:
            print(p["rx_packets"], p["rx_bytes"])
            return
    sys.exit("port %s not in show ports output" % name)

def report(samples_path, meta_path, json_out):
    meta = json.load(open(meta_path))
    S = [json.loads(l) for l in open(samples_path) if l.strip()]
    def vals(test, impl, key):
        return [s[key] for s in S if s["test"] == test and s["impl"] == impl]
    def med(test, impl, key):
        v = vals(test, impl, key)
        return statistics.median(v) if v else None
    rows = [
        # test, label, key, scale, fmt, target op, target
        ("tcp", "tcp 1500 (Gbit/s)", "bps", 1e-9, "%.2f", ">=", 0.85),
        ("udp", "udp 64B rx (kpps)", "pps", 1e-3, "%.1f", ">=", 0.75),
        ("ping", "ping rtt (us)", "avg_us", 1.0, "%.1f", "<=", 2.0),
    ]
    out = {"seconds": meta["seconds"], "repeat": meta["repeat"], "tests": {},
           "tapnet": meta.get("tapnet", {}), "env": meta.get("env", {}), "samples": S}
    print()
    print("%-21s %-16s %-10s %-15s %-8s %s" % ("test", "kernel bridge", "tapnet", "tapnet/kernel", "target", "met"))
    for test, label, key, scale, fmt, op, tgt in rows:
        k, t = med(test, "kernel", key), med(test, "tapnet", key)
        ratio = t / k if k and t is not None else None
        ok = None if ratio is None else (ratio >= tgt if op == ">=" else ratio <= tgt)
        print("%-21s %-16s %-10s %-15s %-8s %s" % (
            label,
            fmt % (k * scale) if k is not None else "-",
            fmt % (t * scale) if t is not None else "-",
            ("%.2fx" % ratio) if ratio is not None else "-",
            "%s %.2gx" % (op, tgt),
            {None: "-", True: "yes", False: "NO"}[ok]))
        out["tests"][test] = {"metric": key, "unit": label[label.find("(") + 1:label.find(")")],
                              "kernel": k * scale if k is not None else None,
                              "tapnet": t * scale if t is not None else None,
                              "ratio": ratio, "target": "%s %g" % (op, tgt), "met": ok}
    lk, lt = med("udp", "kernel", "loss_pct"), med("udp", "tapnet", "loss_pct")
    sk, st = med("udp", "kernel", "tx_pps"), med("udp", "tapnet", "tx_pps")
    print("%-21s %-16s %-10s" % ("udp 64B loss (%)", "%.2f" % lk, "%.2f" % lt))
    print("%-21s %-16s %-10s" % ("udp 64B tx (kpps)", "%.1f" % (sk / 1e3), "%.1f" % (st / 1e3)))
    def share(impl, key):
        v = [s[key] / s["sent"] * 100 for s in S if s["test"] == "udp" and s["impl"] == impl and key in s]
        return statistics.median(v) if v else None
    dk, dt = share("kernel", "sender_txq_drops"), share("tapnet", "sender_txq_drops")
    rk, rt = share("kernel", "rcvbuf_drops"), share("tapnet", "rcvbuf_drops")
    if None not in (dk, dt, rk, rt):
        print("%-21s %-16s %-10s" % ("  lost at a eth0 (%)", "%.2f" % dk, "%.2f" % dt))
        print("%-21s %-16s %-10s" % ("  lost at b sock (%)", "%.2f" % rk, "%.2f" % rt))
        out["tests"]["udp"].update({"kernel_lost_at_sender_eth0_pct": dk, "tapnet_lost_at_sender_eth0_pct": dt,
                                    "kernel_lost_at_receiver_socket_pct": rk, "tapnet_lost_at_receiver_socket_pct": rt})
    out["tests"]["udp"].update({"kernel_loss_pct": lk, "tapnet_loss_pct": lt,
                                "kernel_tx_kpps": sk / 1e3, "tapnet_tx_kpps": st / 1e3})
    nk, nt = med("ping", "kernel", "min_us"), med("ping", "tapnet", "min_us")
    print("%-21s %-16s %-10s" % ("ping rtt min (us)", "%.1f" % nk, "%.1f" % nt))
    out["tests"]["ping"].update({"kernel_min_us": nk, "tapnet_min_us": nt})
    print("(udp: the kernel bridge forwards inside the sender's sendmsg, which paces the sender;\n"
          " a TAP queue does not push back, so with tapnet the sender runs ahead and the excess\n"
          " is dropped at a's eth0 queue, or at b's socket when the receiver loses CPU to tapnet.\n"
          " Compare received kpps, not loss.)")
    print("(medians of %d run(s) each, %d s per iperf3 run; kernel and tapnet alternate)"
          % (meta["repeat"], meta["seconds"]))

    print("\nper-run samples:")
    for test, label, key, scale, fmt, op, tgt in rows:
        for impl in ("kernel", "tapnet"):
            print("  %-5s %-7s %s" % (test, impl, "  ".join(fmt % (v * scale) for v in vals(test, impl, key))))

    tn = meta.get("tapnet", {})
    print("\ntapnet CPU time (utime+stime from /proc/PID/stat, all threads):")
    for test in ("tcp", "udp", "ping"):
        c = sum(vals(test, "tapnet", "cpu_s")); w = sum(vals(test, "tapnet", "wall_s"))
        if w:
            print("  %-5s %7.2f s CPU over %7.2f s  = %5.1f%% of one core" % (test, c, w, 100 * c / w))
            out["tests"][test]["tapnet_cpu_pct_of_core"] = 100 * c / w
    if "cpu_s" in tn:
        print("  whole run: %.2f s CPU over %.2f s from ready to SIGTERM" % (tn["cpu_s"], tn["wall_s"]))
    fr = sum(vals("tcp", "tapnet", "a_rx_frames")); by = sum(vals("tcp", "tapnet", "a_rx_bytes"))
    if fr:
        print("\ntapnet port a during the TCP test (a -> b data direction, `tapnet show ports`):")
        print("  rx frames %d, rx bytes %d, %.0f bytes/frame%s" % (
            fr, by, by / fr, "  (super-frames: GSO frames pass unsegmented)" if by / fr > 3000 else
            "  (<= MTU-sized: traffic is being segmented)"))
        out["tests"]["tcp"].update({"tapnet_port_a_rx_frames": fr, "tapnet_port_a_rx_bytes": by,
                                    "tapnet_port_a_bytes_per_frame": by / fr})
    if "exit_status" in tn:
        print("\ntapnet exit status after SIGTERM: %s; left behind: %s" % (
            tn["exit_status"], ", ".join(tn.get("leftovers", [])) or "nothing"))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print("\nJSON written to " + json_out)

cmd = sys.argv[1]
if cmd == "report":
    report(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
elif cmd == "drops":
    drops(sys.argv[2], sys.argv[3])
elif cmd == "port":
    port(sys.argv[2], sys.argv[3])
else:
    globals()[cmd](sys.argv[2])
PY
H() { python3 "$TMP/h.py" "$@"; }
SAMPLES="$TMP/samples.jsonl"
: >"$SAMPLES"

now() { date +%s.%N; }
proc_live() {  # running, not a zombie: a dead child stays in /proc (and answers kill -0) until reaped
    local s
    s="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    s="${s##*) }"
    [[ "${s:0:1}" != Z && "${s:0:1}" != X ]]
}
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

for ns in "${OUR_NS[@]}"; do
    [[ ! -e "/run/netns/$ns" ]] || die "namespace $ns already exists"
done

# ---------------------------------------------------------------- kernel bridge
log "kernel: bridge $K_BR in $K_BR_NS, veth to $K_A_NS ($K_A_IP) and $K_B_NS ($K_B_IP)"
for ns in "$K_BR_NS" "$K_A_NS" "$K_B_NS"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
done
ip -n "$K_BR_NS" link add "$K_BR" type bridge stp_state 0 forward_delay 0
ip -n "$K_BR_NS" link set "$K_BR" mtu 1500
ip -n "$K_BR_NS" link add "$K_VA" mtu 1500 type veth peer name eth0 mtu 1500 netns "$K_A_NS"
ip -n "$K_BR_NS" link add "$K_VB" mtu 1500 type veth peer name eth0 mtu 1500 netns "$K_B_NS"
for v in "$K_VA" "$K_VB"; do ip -n "$K_BR_NS" link set "$v" master "$K_BR" up; done
ip -n "$K_BR_NS" link set "$K_BR" up
ip -n "$K_A_NS" addr add "$K_A_IP/24" dev eth0
ip -n "$K_B_NS" addr add "$K_B_IP/24" dev eth0
ip -n "$K_A_NS" link set eth0 up
ip -n "$K_B_NS" link set eth0 up

# ---------------------------------------------------------------- tapnet
cat >"$TMP/lab.toml" <<EOF
name = "$T_LAB"
[[bridge]]
name = "br0"
subnet = "10.250.0.0/24"
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
EOF
log "tapnet: $BIN up (lab $T_LAB: $T_A_NS $T_A_IP, $T_B_NS $T_B_IP)"
"$BIN" up ${BUSY_POLL_US:+--busy-poll-us "$BUSY_POLL_US"} "$TMP/lab.toml" >"$TMP/tapnet.out" 2>"$TMP/tapnet.err" &
TN_PID=$!
for _ in $(seq 300); do
    grep -q '^ready: ' "$TMP/tapnet.out" 2>/dev/null && break
    proc_live "$TN_PID" || { cat "$TMP/tapnet.err" >&2; die "tapnet up exited before ready"; }
    sleep 0.1
done
grep -q '^ready: ' "$TMP/tapnet.out" || { cat "$TMP/tapnet.err" >&2; die "tapnet not ready after 30 s"; }
log "tapnet (pid $TN_PID): $(grep '^ready: ' "$TMP/tapnet.out")"
TN_T0="$(now)"; TN_C0="$(cpu_ticks "$TN_PID")"

tapnet_alive() {
    proc_live "$TN_PID" && return 0
    echo "--- tapnet stderr:" >&2; tail -20 "$TMP/tapnet.err" >&2
    die "tapnet died during the run"
}

# ---------------------------------------------------------------- measurement helpers
# impl -> client ns, server ns, server ip
ends() {
    if [[ $1 == kernel ]]; then echo "$K_A_NS $K_B_NS $K_B_IP"; else echo "$T_A_NS $T_B_NS $T_B_IP"; fi
}

start_server() {  # ns ip
    ip netns exec "$1" iperf3 -s -1 -B "$2" -p "$PORT" >"$TMP/server.log" 2>&1 &
    SRV_PID=$!
    for _ in $(seq 100); do
        if ip netns exec "$1" ss -Hltn "sport = :$PORT" 2>/dev/null | grep -q .; then return 0; fi
        proc_live "$SRV_PID" || { cat "$TMP/server.log" >&2; die "iperf3 server exited"; }
        sleep 0.05
    done
    die "iperf3 server in $1 not listening after 5 s"
}

stop_server() {
    for _ in $(seq 50); do proc_live "$SRV_PID" || break; sleep 0.1; done
    kill "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
    SRV_PID=""
}

udp_drops() {  # client-ns server-ns -> "eth0-tx-dropped-in-client-ns udp-rcvbuf-errors-in-server-ns"
    ip -n "$1" -s -j link show eth0 >"$TMP/link.json"
    ip netns exec "$2" cat /proc/net/snmp >"$TMP/snmp.txt"
    H drops "$TMP/link.json" "$TMP/snmp.txt"
}

# run_one TEST IMPL ROUND: one measurement, appends a JSON line to $SAMPLES
run_one() {
    local test=$1 impl=$2 round=$3 cns sns sip out t0 c0 t1 c1 extra='' p0 p1 b0 b1 d0 d1 r0 r1
    read -r cns sns sip <<<"$(ends "$impl")"
    out="$TMP/$test-$impl-$round.out"
    [[ $impl == tapnet ]] && tapnet_alive
    if [[ $test != ping ]]; then start_server "$sns" "$sip"; fi
    if [[ $test == udp ]]; then
        udp_drops "$cns" "$sns" >"$TMP/drops0" || die "cannot read drop counters via $impl"
    fi
    if [[ $impl == tapnet ]]; then
        if [[ $test == tcp ]]; then
            "$BIN" show ports --lab "$T_LAB" --json >"$TMP/ports0.json" || die "tapnet show ports failed"
        fi
        t0="$(now)"; c0="$(cpu_ticks "$TN_PID")" || tapnet_alive
    fi
    local rc=0
    case $test in
        tcp)  timeout $((SECS + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -t "$SECS" -J >"$out" 2>&1 || rc=$? ;;
        udp)  timeout $((SECS + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -u -l 64 -b 0 -t "$SECS" -J >"$out" 2>&1 || rc=$? ;;
        ping) timeout 60 ip netns exec "$cns" ping -c 200 -i 0.005 -q -w 50 "$sip" >"$out" 2>&1 || rc=$? ;;
    esac
    if [[ $impl == tapnet ]]; then
        tapnet_alive
        c1="$(cpu_ticks "$TN_PID")" || tapnet_alive
        t1="$(now)"
        extra="$(python3 -c 'import sys; a=sys.argv; print(", \"cpu_s\": %.3f, \"wall_s\": %.3f" % ((int(a[2])-int(a[1]))/int(a[5]), float(a[4])-float(a[3])))' "$c0" "$c1" "$t0" "$t1" "$CLK_TCK")"
        if [[ $test == tcp ]]; then
            "$BIN" show ports --lab "$T_LAB" --json >"$TMP/ports1.json" || die "tapnet show ports failed"
            H port "$TMP/ports0.json" a >"$TMP/port0" || die "cannot read port a counters"
            H port "$TMP/ports1.json" a >"$TMP/port1" || die "cannot read port a counters"
            read -r p0 b0 <"$TMP/port0"
            read -r p1 b1 <"$TMP/port1"
            extra+=", \"a_rx_frames\": $((p1 - p0)), \"a_rx_bytes\": $((b1 - b0))"
        fi
    fi
    if [[ $test != ping ]]; then stop_server; fi
    if [[ $test == udp && $rc -eq 0 ]]; then
        read -r d0 r0 <"$TMP/drops0"
        udp_drops "$cns" "$sns" >"$TMP/drops1" || die "cannot read drop counters via $impl"
        read -r d1 r1 <"$TMP/drops1"
        extra+=", \"sender_txq_drops\": $((d1 - d0)), \"rcvbuf_drops\": $((r1 - r0))"
    fi
    if [[ $rc -ne 0 ]]; then
        echo "--- $test via $impl, exit status $rc:" >&2; tail -20 "$out" >&2
        [[ $impl == tapnet ]] && tapnet_alive
        die "$test via $impl failed"
    fi
    local parsed
    parsed="$(H "$test" "$out")" || die "cannot read $test result via $impl"
    echo "{\"test\": \"$test\", \"impl\": \"$impl\", \"round\": $round, ${parsed#\{}" \
        | sed "s/}\$/$extra}/" >>"$SAMPLES"
    case $test in
        tcp)  log "$(printf '%-4s %-6s run %d: %s' "$test" "$impl" "$round" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.2f Gbit/s" % (d["bps"]/1e9))' "$parsed")")" ;;
        udp)  log "$(printf '%-4s %-6s run %d: %s' "$test" "$impl" "$round" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("%.1f kpps rx, %.1f kpps tx, loss %.2f%%" % (d["pps"]/1e3, d["tx_pps"]/1e3, d["loss_pct"]))' "$parsed")")" ;;
        ping) log "$(printf '%-4s %-6s run %d: %s' "$test" "$impl" "$round" "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("avg %.1f us (min %.1f, max %.1f), %d/%d replies" % (d["avg_us"], d["min_us"], d["max_us"], d["received"], d["sent"]))' "$parsed")")" ;;
    esac
}

# ---------------------------------------------------------------- connectivity
for impl in kernel tapnet; do
    read -r cns sns sip <<<"$(ends "$impl")"
    ok=0
    for _ in $(seq 50); do
        if ip netns exec "$cns" ping -c 1 -W 1 -q "$sip" >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
    done
    [[ $ok -eq 1 ]] || die "no ping from $cns to $sip via $impl"
done
log "both networks answer ping; running tcp, udp, ping: $REPEAT x ${SECS}s each, alternating"

# ---------------------------------------------------------------- measurements
for test in tcp udp ping; do
    for ((r = 1; r <= REPEAT; r++)); do
        if (( r % 2 == 1 )); then order=(kernel tapnet); else order=(tapnet kernel); fi
        for impl in "${order[@]}"; do run_one "$test" "$impl" "$r"; done
    done
done

# ---------------------------------------------------------------- stop tapnet
tapnet_alive
TN_C1="$(cpu_ticks "$TN_PID")"; TN_T1="$(now)"
kill -TERM "$TN_PID"
TN_RC=0
for _ in $(seq 100); do proc_live "$TN_PID" || break; sleep 0.1; done
proc_live "$TN_PID" && die "tapnet still running 10 s after SIGTERM"
wait "$TN_PID" || TN_RC=$?
TN_PID=""
LEFT=()
for ns in "$T_A_NS" "$T_B_NS"; do [[ -e "/run/netns/$ns" ]] && LEFT+=("netns $ns"); done
[[ -S "/run/tapnet/$T_LAB.sock" ]] && LEFT+=("/run/tapnet/$T_LAB.sock")
log "tapnet stopped, exit status $TN_RC"

python3 - "$TMP/meta.json" "$SECS" "$REPEAT" "$TN_C0" "$TN_C1" "$TN_T0" "$TN_T1" "$CLK_TCK" "$TN_RC" \
    "$(uname -r)" "$(iperf3 --version | head -1)" "$(nproc)" \
    "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo -dirty)" \
    "${LEFT[@]+"${LEFT[@]}"}" <<'PY'
import json, sys
a = sys.argv
json.dump({"seconds": int(a[2]), "repeat": int(a[3]),
           "tapnet": {"cpu_s": (int(a[5]) - int(a[4])) / int(a[8]), "wall_s": float(a[7]) - float(a[6]),
                      "exit_status": int(a[9]), "leftovers": a[14:]},
           "env": {"kernel": a[10], "iperf3": a[11], "cpus": int(a[12]), "git": a[13]}},
          open(a[1], "w"))
PY

echo "tapnet vs Linux kernel bridge, $(uname -r), $(nproc) CPUs, $(iperf3 --version | head -1), tapnet $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')${BUSY_POLL_US:+, --busy-poll-us $BUSY_POLL_US}"
H report "$SAMPLES" "$TMP/meta.json" "$JSON_OUT"
if [[ $TN_RC -ne 0 || ${#LEFT[@]} -gt 0 ]]; then
    die "tapnet exited $TN_RC after SIGTERM / left behind: ${LEFT[*]-}"
fi
