#!/usr/bin/env bash
# bench/compare-vxlan.sh: tapnet's VXLAN overlay against the Linux kernel's vxlan
# device and bridge, same tests, same run.
#
# Two "hosts" joined by a veth underlay (host a 10.70.0.1/24, host b 10.70.0.2/24),
# one container behind each, the containers on one L2 segment stretched over VXLAN
# (VNI 42, UDP port 4789), built three times side by side:
#   kernel: hosts vxk-ha-PID and vxk-hb-PID; in each, `vx42` (type vxlan id 42
#           dstport 4789 remote PEER local ME), a Linux bridge br42 holding vx42 and
#           a veth to the container (vxk-ca-PID 10.71.0.2/24, vxk-cb-PID
#           10.71.0.3/24, MTU 1450, tx checksum offload off: see below). The
#           like-for-like baseline, and the one the target is measured against.
#   kdef:   the same with the kernel's default offloads (hosts vxd-ha-PID and
#           vxd-hb-PID, containers vxd-ca-PID 10.73.0.2/24 and vxd-cb-PID
#           10.73.0.3/24): checksums left partial and TSO frames crossing the veth
#           underlay whole. What two kernels reach on one machine; no real wire
#           allows it. For information, no target.
#   tapnet: hosts vxt-ha-PID and vxt-hb-PID, each running its own `tapnet up`
#           inside it (nsenter): labs vxbench-a-PID and vxbench-b-PID, bridge ov
#           (10.72.0.0/24, vni 42, MTU 1450), port c in vxb-ca-PID (10.72.0.2) and
#           vxb-cb-PID (10.72.0.3), both created by tapnet; [vxlan] listens on the
#           host's underlay address, port 4789, with the other host as its peer.
# and runs, against each, R rounds (kernel, kdef, tapnet, then the reverse):
#   tcp : iperf3 one stream, container a -> container b, N seconds, receiver bits/s
#   udp : iperf3 -u -l 64 -b 0 a -> b, N seconds, packets/s received by b, loss
# and prints the medians, tapnet/kernel ratios, both tapnets' CPU time per test,
# frames and datagrams per tapnet run, and `tapnet show vxlan --json` after the runs.
#
# Usage: bench/compare-vxlan.sh [--seconds N] [--repeat R] [--json FILE] [--no-build]
#                               [--first-round N]
#   --first-round N numbers the rounds from N (the order of the networks alternates
#   by round number), so that bench/roundrobin.sh, which runs one round at a time
#   (--repeat 1), alternates the order too. TAPNET_UP_ARGS (environment) adds its
#   words to every `tapnet up`.
# Needs root, iproute2, iperf3, ping, python3, nsenter (util-linux), ethtool, and the
# vxlan, bridge, veth and tun kernel drivers. Everything it creates carries the
# script's PID in its name, lives in namespaces it creates, and is removed on exit,
# failure or Ctrl-C. Nothing is added to the root namespace: no address, route or
# device (veth, bridge, vxlan, TAP), and all traffic stays between its namespaces.
set -euo pipefail

BENCH_NAME=compare-vxlan.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
parse_args "$@"

require_root "namespaces, veth, vxlan, bridge, TAP"
require_cmds "apt-get install -y iproute2 iperf3 iputils-ping util-linux ethtool" \
    ip iperf3 ping python3 timeout nsenter ethtool ss

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
# kernel, default offloads
D_HA="vxd-ha-$ID"
D_HB="vxd-hb-$ID"
D_CA="vxd-ca-$ID"
D_CB="vxd-cb-$ID"
D_CA_IP=10.73.0.2
D_CB_IP=10.73.0.3
# tapnet
T_LAB_A="vxbench-a-$ID"
T_LAB_B="vxbench-b-$ID"
T_HA="vxt-ha-$ID"                # tapnet of lab a runs in here
T_HB="vxt-hb-$ID"
T_CA="vxb-ca-$ID"                # created and removed by tapnet
T_CB="vxb-cb-$ID"
T_CA_IP=10.72.0.2
T_CB_IP=10.72.0.3

OUR_NS=("$K_HA" "$K_HB" "$K_CA" "$K_CB" "$D_HA" "$D_HB" "$D_CA" "$D_CB"
        "$T_HA" "$T_HB" "$T_CA" "$T_CB")
OUR_LABS=("$T_LAB_A" "$T_LAB_B")

TMP="$(mktemp -d /tmp/tapnet-bench-vxlan.XXXXXX)"
TA_PID=""                        # tapnet, lab a (host a: the sending side)
TB_PID=""                        # tapnet, lab b (host b: the receiving side)
SRV_PID=""
CLI_PID=""                       # the iperf3 client (under timeout)
OURS=0                           # 1 once our names were found free: only then are they ours to remove

# ---------------------------------------------------------------- teardown
teardown() {  # called by lib.sh's EXIT trap, which then deletes $TMP
    local pid
    for pid in "$CLI_PID" "$SRV_PID"; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    [[ $OURS -eq 1 ]] || return 0
    # then everything else in our namespaces, both tapnets, the namespaces (with the
    # underlay and container veths, the bridges, the vxlan devices and the TAPs; tapnet's
    # underlay sockets are gone with the process), the labs' files
    teardown_labs "$TA_PID" "$TB_PID"
}
bench_traps

# ---------------------------------------------------------------- python helpers
write_helpers <<'PY'
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

def meta(path, secs, repeat, tck, ac0, ac1, at0, at1, astop, bc0, bc1, bt0, bt1, bstop,
         vxlan_a, vxlan_b, *env_):
    json.dump({"seconds": int(secs), "repeat": int(repeat),
               "tapnet": {"a": stopped(tck, ac0, ac1, at0, at1, astop),
                          "b": stopped(tck, bc0, bc1, bt0, bt1, bstop),
                          "vxlan_a": json.load(open(vxlan_a)), "vxlan_b": json.load(open(vxlan_b))},
               "env": env(*env_)},
              open(path, "w"))

def report(samples_path, meta_path, json_out=""):
    meta, S, out = run_data(samples_path, meta_path)
    rows = [
        # test, label, key, scale, fmt, target (tapnet/kernel at least), or None
        ("tcp", "tcp 1450 (Gbit/s)", "bps", 1e-9, "%.2f", 0.5),
        ("udp", "udp 64B rx (kpps)", "pps", 1e-3, "%.1f", None),
    ]
    print()
    print("VXLAN overlay (VNI 42, UDP 4789), container a on host a -> container b on host b")
    print("kernel: containers' tx checksum offload off (like for like; the target's base)."
          "  kdef: kernel defaults (partial checksums, TSO frames whole over the veth underlay)")
    line = "%-21s %-14s %-14s %-10s %-14s %-9s %-4s %s"
    print(line % ("test", "kernel", "kdef", "tapnet", "tapnet/kernel", "target", "met", "tapnet/kdef"))
    for test, label, key, scale, fmt, tgt in rows:
        k, d, t = (med(S, test, impl, key) for impl in ("kernel", "kdef", "tapnet"))
        ratio = t / k if k and t is not None else None
        ratio_d = t / d if d and t is not None else None
        ok = None if ratio is None or tgt is None else ratio >= tgt
        print(line % (
            label,
            fmt % (k * scale) if k is not None else "-",
            fmt % (d * scale) if d is not None else "-",
            fmt % (t * scale) if t is not None else "-",
            ("%.2fx" % ratio) if ratio is not None else "-",
            (">= %gx" % tgt) if tgt is not None else "-",
            {None: "-", True: "yes", False: "NO"}[ok],
            ("%.2fx" % ratio_d) if ratio_d is not None else "-"))
        out["tests"][test] = {"metric": key, "unit": label[label.find("(") + 1:label.find(")")],
                              "kernel": k * scale if k is not None else None,
                              "kernel_defaults": d * scale if d is not None else None,
                              "tapnet": t * scale if t is not None else None,
                              "ratio": ratio, "target": None if tgt is None else ">= %g" % tgt,
                              "met": ok, "ratio_to_kernel_defaults": ratio_d}
    short = "%-21s %-14s %-14s %-10s"
    def three(test, key, f, scale=1):
        v = [med(S, test, impl, key) for impl in ("kernel", "kdef", "tapnet")]
        return v, [f % (x * scale) if x is not None else "-" for x in v]
    _, r = three("tcp", "retransmits", "%g")
    print(short % ("tcp retransmits", *r))
    (lk, ld, lt), r = three("udp", "loss_pct", "%.2f")
    if None not in (lk, ld, lt):
        print(short % ("udp 64B loss (%)", *r))
        (sk, sd, st), r = three("udp", "tx_pps", "%.1f", 1e-3)
        print(short % ("udp 64B tx (kpps)", *r))
        out["tests"]["udp"].update({"kernel_loss_pct": lk, "kernel_defaults_loss_pct": ld,
                                    "tapnet_loss_pct": lt, "kernel_tx_kpps": sk / 1e3,
                                    "kernel_defaults_tx_kpps": sd / 1e3, "tapnet_tx_kpps": st / 1e3})
    # where the UDP packets were lost, as a share of those sent (median over the runs)
    def share(impl, key):
        v = [s[key] / s["sent"] * 100 for s in S if s["test"] == "udp" and s["impl"] == impl and key in s and s["sent"]]
        return statistics.median(v) if v else None
    for what, key in (("  lost at a eth0 (%)", "sender_txq_drops"), ("  lost at b sock (%)", "rcvbuf_drops")):
        v = [share(impl, key) for impl in ("kernel", "kdef", "tapnet")]
        if None not in v:
            print(short % (what, *("%.2f" % x for x in v)))
            where = "sender_eth0" if key == "sender_txq_drops" else "receiver_socket"
            for name, x in zip(("kernel", "kernel_defaults", "tapnet"), v):
                out["tests"]["udp"]["%s_lost_at_%s_pct" % (name, where)] = x
    print("(medians of %d run(s) each, %d s per iperf3 run; the overlays take turns.\n"
          " udp: the kernel forwards and encapsulates inside the sender's sendmsg, which paces\n"
          " the sender; a TAP queue does not push back, so compare received kpps, not loss.)"
          % (meta["repeat"], meta["seconds"]))

    print("\nper-run samples:")
    for test, label, key, scale, fmt, tgt in rows:
        for impl in ("kernel", "kdef", "tapnet"):
            ss = [s for s in S if s["test"] == test and s["impl"] == impl]
            if test == "tcp":
                txt = "  ".join("%.2f (%s rtx)" % (s["bps"] * scale, s.get("retransmits")) for s in ss)
            else:
                txt = "  ".join("%.1f (tx %.1f)" % (s["pps"] * scale, s["tx_pps"] * scale) for s in ss)
            print("  %-4s %-7s %s" % (test, impl, txt))

    print("\ntapnet CPU time per test (utime+stime from /proc/PID/stat, all threads, both tapnets):")
    for test in ("tcp", "udp"):
        ca = sum(vals(S, test, "tapnet", "cpu_a_s")); cb = sum(vals(S, test, "tapnet", "cpu_b_s"))
        w = sum(vals(S, test, "tapnet", "wall_s"))
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
        n = sum(vals(S, test, "tapnet", key_n)); b = sum(vals(S, test, "tapnet", key_b))
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
        e = sum(vals(S, test, "tapnet", "a_peer_tx_errors")) + sum(vals(S, test, "tapnet", "b_peer_tx_errors"))
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
        exit_line("tapnet (host %s)" % which, tn.get(which, {}))
    write_json(out, json_out)
PY

# ---------------------------------------------------------------- build
build_tapnet
# The commit the binary was built from (taken now: others may commit during the run).
GIT_ID="$(git_id)"

ns_free " (not ours: left alone)"
for lab in "${OUR_LABS[@]}"; do
    [[ ! -e "/run/tapnet/$lab.sock" ]] || die "a lab $lab already runs (not ours: left alone)"
done
OURS=1

# ---------------------------------------------------------------- building blocks
# ---------------------------------------------------------------- kernel overlays
# kernel_host HOST ME PEER CONTAINER CONTAINER_IP TX: TX "off" turns the container's tx
# checksum offload off (the like-for-like baseline), "defaults" leaves it as it is
kernel_host() {
    local h=$1 me=$2 peer=$3 c=$4 cip=$5 tx=$6
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
    # before encapsulating, so they keep their offloads. The kdef overlay keeps the
    # kernel's defaults, shortcut and all, for comparison.
    if [[ $tx == off ]]; then ip netns exec "$c" ethtool -K eth0 tx off >/dev/null; fi
    ip -n "$c" addr add "$cip/24" dev eth0
    ip -n "$c" link set eth0 up
}
log "kernel: $K_CA ($K_CA_IP) - $K_HA ($UL_A, vx42 + br42) =underlay= $K_HB ($UL_B, vx42 + br42) - $K_CB ($K_CB_IP)"
new_ns "$K_HA" "$K_HB" "$K_CA" "$K_CB"
veth "$K_HA" u0 "$UL_A/24" "$K_HB" u0 "$UL_B/24"
kernel_host "$K_HA" "$UL_A" "$UL_B" "$K_CA" "$K_CA_IP" off
kernel_host "$K_HB" "$UL_B" "$UL_A" "$K_CB" "$K_CB_IP" off
log "kdef: $D_CA ($D_CA_IP) - $D_HA ($UL_A, vx42 + br42) =underlay= $D_HB ($UL_B, vx42 + br42) - $D_CB ($D_CB_IP), default offloads"
new_ns "$D_HA" "$D_HB" "$D_CA" "$D_CB"
veth "$D_HA" u0 "$UL_A/24" "$D_HB" u0 "$UL_B/24"
kernel_host "$D_HA" "$UL_A" "$UL_B" "$D_CA" "$D_CA_IP" defaults
kernel_host "$D_HB" "$UL_B" "$UL_A" "$D_CB" "$D_CB_IP" defaults

# ---------------------------------------------------------------- tapnet overlay
vxlan_lab "$T_LAB_A" "$UL_A" "$UL_B" "$T_CA" "$T_CA_IP" 10.72.0.0/24 >"$TMP/a.toml"
vxlan_lab "$T_LAB_B" "$UL_B" "$UL_A" "$T_CB" "$T_CB_IP" 10.72.0.0/24 >"$TMP/b.toml"
"$BIN" check "$TMP/a.toml" || die "tapnet check refused the lab of host a"
"$BIN" check "$TMP/b.toml" || die "tapnet check refused the lab of host b"

log "tapnet: $T_CA ($T_CA_IP) - $T_HA ($UL_A, lab $T_LAB_A) =underlay= $T_HB ($UL_B, lab $T_LAB_B) - $T_CB ($T_CB_IP)"
vxlan_pair "$T_HA" "$T_HB" "$TMP/a.toml" "$TMP/b.toml" "$TMP/tn-a" "$TMP/tn-b"
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
        kdef) echo "$D_CA $D_CB $D_CB_IP" ;;
        tapnet) echo "$T_CA $T_CB $T_CB_IP" ;;
        *) die "no such network: $1" ;;
    esac
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

# one client run of run_one, for iperf3_tries (which calls it in run_one's scope)
try_client() {
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
    TRY_RC=$CLI_RC
    if [[ $impl == tapnet ]]; then
        tapnet_alive
        ca1="$(cpu_ticks "$TA_PID")" || tapnet_alive
        cb1="$(cpu_ticks "$TB_PID")" || tapnet_alive
        t1="$(now)"
    fi
}

# run_one TEST IMPL ROUND: one measurement, appends a JSON line to $SAMPLES
run_one() {
    local test=$1 impl=$2 round=$3 cns sns sip out t0 ca0 cb0 t1 ca1 cb1 check=""
    local extra d0 r0 d1 r1
    read -r cns sns sip <<<"$(ends "$impl")"
    out="$TMP/$test-$impl-$round.json"
    [[ $impl == tapnet ]] && tapnet_alive
    [[ $impl == tapnet ]] && check=tapnet_alive   # after the last failed try, before dying
    iperf3_tries "$test" "$impl" "$round" "$sns" "$sip" "$out" try_client "$check"
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
        m+=("$(H cpu_wall "$CLK_TCK" "$t0" "$t1" cpu_a_s "$ca0" "$ca1" cpu_b_s "$cb0" "$cb1")")
    fi
    extra="{$(IFS=,; echo "${m[*]}")}"
    local parsed
    parsed="$(H "$test" "$out")" || die "cannot read the $test result via $impl"
    H sample "{\"test\": \"$test\", \"impl\": \"$impl\", \"round\": $round, \"attempts\": $TRY_N}" \
        "$parsed" "$extra" >>"$SAMPLES"
    log "$(printf '%-3s %-6s run %d: %s' "$test" "$impl" "$round" "$(H line "$test" "$parsed")")"
}

# ---------------------------------------------------------------- connectivity
ping_ok "$K_HA" "$UL_B"
ping_ok "$T_HA" "$UL_B"
ping_ok "$K_CA" "$K_CB_IP"
ping_ok "$K_CB" "$K_CA_IP"
ping_ok "$D_HA" "$UL_B"
ping_ok "$D_CA" "$D_CB_IP"
ping_ok "$D_CB" "$D_CA_IP"
ping_ok "$T_CA" "$T_CB_IP"
ping_ok "$T_CB" "$T_CA_IP"
tapnet_alive
log "all three overlays answer ping; running tcp, udp: $REPEAT x ${SECS}s each, alternating"

# ---------------------------------------------------------------- measurements
for test in tcp udp; do
    for ((r = FIRST_ROUND; r < FIRST_ROUND + REPEAT; r++)); do
        if (( r % 2 == 1 )); then order=(kernel kdef tapnet); else order=(tapnet kdef kernel); fi
        for impl in "${order[@]}"; do run_one "$test" "$impl" "$r"; done
    done
done
"$BIN" show vxlan --lab "$T_LAB_A" --json >"$TMP/vxlan-a.json" || die "tapnet show vxlan --lab $T_LAB_A failed"
"$BIN" show vxlan --lab "$T_LAB_B" --json >"$TMP/vxlan-b.json" || die "tapnet show vxlan --lab $T_LAB_B failed"

# ---------------------------------------------------------------- stop tapnet
tapnet_alive
TA_C1="$(cpu_ticks "$TA_PID")"; TA_T1="$(now)"
TB_C1="$(cpu_ticks "$TB_PID")"; TB_T1="$(now)"
stop_tapnet "$TA_PID" "host a" "$T_LAB_A" "$T_CA" >"$TMP/stop-a"
TA_PID=""
stop_tapnet "$TB_PID" "host b" "$T_LAB_B" "$T_CB" >"$TMP/stop-b"
TB_PID=""
log "tapnet stopped: host a exit status $(head -1 "$TMP/stop-a"), host b exit status $(head -1 "$TMP/stop-b")"

H meta "$TMP/meta.json" "$SECS" "$REPEAT" "$CLK_TCK" \
    "$TA_C0" "$TA_C1" "$TA_T0" "$TA_T1" "$TMP/stop-a" \
    "$TB_C0" "$TB_C1" "$TB_T0" "$TB_T1" "$TMP/stop-b" \
    "$TMP/vxlan-a.json" "$TMP/vxlan-b.json" \
    "$(uname -r)" "$(iperf3 --version | head -1)" "$(nproc)" "$GIT_ID"

echo "tapnet VXLAN vs the Linux kernel's vxlan + bridge, $(uname -r), $(nproc) CPUs, $(iperf3 --version | head -1), tapnet $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["env"]["git"])' "$TMP/meta.json")"
H report "$SAMPLES" "$TMP/meta.json" "$JSON_OUT"
check_stops "$TMP/stop-a" "$TMP/stop-b"
