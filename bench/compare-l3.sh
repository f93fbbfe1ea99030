#!/usr/bin/env bash
# bench/compare-l3.sh: tapnet's router and port forwards against the Linux kernel,
# same tests, same run.
#
# A. routed, subnet to subnet (iperf3 TCP, one stream, a -> b):
#   kernel: namespace l3-kr-PID routes (ip_forward=1 there only) between
#           l3-k1-PID (10.252.1.2/24) and l3-k2-PID (10.252.2.2/24) over two veth
#           pairs; router 10.252.1.1 and 10.252.2.1.
#   tapnet: lab l3bench-PID, bridges b1 10.253.1.0/24 and b2 10.253.2.0/24, port a
#           (l3-a-PID, 10.253.1.2) and port b (l3-b-PID, 10.253.2.2); tapnet routes.
# B. port forward, outside -> host:5201 -> container (iperf3 TCP, one stream):
#   each path has a "host" namespace whose only other link is a veth to its own
#   "outside" namespace (host 10.254.0.1/24, outside 10.254.0.2/24); the client
#   runs in the outside namespace and connects to 10.254.0.1:5201.
#   tapnet: tapnet runs inside l3-h-PID (nsenter), lab l3fwd-PID, bridge f1
#           10.255.1.0/24, container l3-c-PID (created by tapnet) at 10.255.1.2,
#           [[forward]] tcp 0.0.0.0:5201 -> 10.255.1.2:5201.
#   dnat:   l3-h2-PID with ip_forward=1 and one nft prerouting DNAT rule
#           tcp dport 5201 -> 10.255.2.2:5201, container l3-c2-PID over a veth.
#   socat:  `socat TCP-LISTEN:5201,fork,reuseaddr TCP:10.255.3.2:5201` in l3-h3-PID,
#           container l3-c3-PID over a veth (no forwarding).
#   direct: l3-do-PID straight to l3-dc-PID (10.255.4.2) over a veth: the baseline.
# Each test runs R rounds, the order of the networks alternating; the table shows
# medians and ratios, plus tapnet's CPU time, the frames and bytes per frame tapnet
# wrote to the container during the forward test, and `tapnet show forwards`.
#
# Usage: bench/compare-l3.sh [--seconds N] [--repeat R] [--json FILE] [--no-build]
#                            [--first-round N]
#   --first-round N numbers the rounds from N (the order of the networks alternates
#   by round number), so that bench/roundrobin.sh, which runs one round at a time
#   (--repeat 1), alternates the order too. TAPNET_UP_ARGS (environment) adds its
#   words to every `tapnet up`.
# Needs root, iproute2, iperf3, ping, python3, nsenter, nft (nftables), socat.
# Everything it creates carries the script's PID in its name, lives in namespaces it
# creates, and is removed on exit, failure or Ctrl-C. Nothing is added to the root
# namespace: no address, route, nft rule or device.
set -euo pipefail

BENCH_NAME=compare-l3.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
parse_args "$@"

require_root "namespaces, veth, TAP, nft"
require_cmds "apt-get install -y iproute2 iperf3 iputils-ping util-linux nftables socat" \
    ip iperf3 ping python3 timeout nsenter nft socat ss

# ---------------------------------------------------------------- names (unique per run)
ID=$$
PORT=5201                        # iperf3 port, only ever inside our own namespaces
# A. routed
K_R_NS="l3-kr-$ID"               # kernel router
K_1_NS="l3-k1-$ID"
K_2_NS="l3-k2-$ID"
K_1_IP=10.252.1.2
K_2_IP=10.252.2.2
T_R_LAB="l3bench-$ID"
T_R_HOME="l3-tr-$ID"             # tapnet (routed lab) runs in this empty namespace
T_A_NS="l3-a-$ID"                # created and removed by tapnet
T_B_NS="l3-b-$ID"
T_A_IP=10.253.1.2
T_B_IP=10.253.2.2
# B. forward; every host namespace is 10.254.0.1, its outside namespace 10.254.0.2
HOST_IP=10.254.0.1
OUT_IP=10.254.0.2
T_F_LAB="l3fwd-$ID"
F_H_NS="l3-h-$ID"                # tapnet's host
F_O_NS="l3-o-$ID"
F_C_NS="l3-c-$ID"                # created and removed by tapnet
F_C_IP=10.255.1.2
D_H_NS="l3-h2-$ID"               # kernel DNAT
D_O_NS="l3-o2-$ID"
D_C_NS="l3-c2-$ID"
D_C_IP=10.255.2.2
S_H_NS="l3-h3-$ID"               # socat
S_O_NS="l3-o3-$ID"
S_C_NS="l3-c3-$ID"
S_C_IP=10.255.3.2
X_O_NS="l3-do-$ID"               # direct
X_C_NS="l3-dc-$ID"
X_C_IP=10.255.4.2
NFT_TABLE="l3bench$ID"           # in D_H_NS only

OUR_NS=("$K_R_NS" "$K_1_NS" "$K_2_NS" "$T_R_HOME" "$T_A_NS" "$T_B_NS"
        "$F_H_NS" "$F_O_NS" "$F_C_NS" "$D_H_NS" "$D_O_NS" "$D_C_NS"
        "$S_H_NS" "$S_O_NS" "$S_C_NS" "$X_O_NS" "$X_C_NS")
OUR_LABS=("$T_R_LAB" "$T_F_LAB")

TMP="$(mktemp -d /tmp/tapnet-bench-l3.XXXXXX)"
TR_PID=""                        # tapnet, routed lab
TF_PID=""                        # tapnet, forward lab
SRV_PID=""
SOCAT_PID=""

# ---------------------------------------------------------------- teardown
teardown() {  # called by lib.sh's EXIT trap, which then deletes $TMP
    local pid
    for pid in "$SRV_PID" "$SOCAT_PID"; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    # then everything else in our namespaces (iperf3 clients, socat's children), the
    # tapnets, the namespaces (with their veths, TAPs and the nft table), the labs' files
    teardown_labs "$TF_PID" "$TR_PID"
}
bench_traps

# ---------------------------------------------------------------- python helpers
write_helpers <<'PY'
ROUTED = ("kernel", "tapnet")
FWD = ("direct", "dnat", "socat", "tapnet")
FWD_LABEL = {"direct": "direct (veth, no host)", "dnat": "kernel DNAT (nft)",
             "socat": "socat", "tapnet": "tapnet forward"}

def meta(path, secs, repeat, tck, rc0, rc1, rt0, rt1, rstop, fc0, fc1, ft0, ft1, fstop,
         forwards, forward_lab, *env_):
    fw = json.load(open(forwards))
    json.dump({"seconds": int(secs), "repeat": int(repeat),
               "tapnet": {"routed": stopped(tck, rc0, rc1, rt0, rt1, rstop),
                          "forward": stopped(tck, fc0, fc1, ft0, ft1, fstop),
                          "forwards": fw.get("forwards", fw), "forward_lab": forward_lab},
               "env": env(*env_)},
              open(path, "w"))

def report(samples_path, meta_path, json_out=""):
    meta, S, out = run_data(samples_path, meta_path)
    def g(v):
        return "%.2f" % (v / 1e9) if v is not None else "-"
    def ratio(a, b):
        return a / b if a is not None and b else None
    def rx(r):
        return "%.2fx" % r if r is not None else "-"
    def met(r, tgt):
        return "-" if r is None else ("yes" if r >= tgt else "NO")

    print()
    print("A. routed, subnet to subnet: iperf3 TCP, one stream, MTU 1500 (Gbit/s)")
    print("%-22s %-10s %-10s %-15s %-9s %s" % ("test", "kernel", "tapnet", "tapnet/kernel", "target", "met"))
    k, t = med(S, "routed", "kernel"), med(S, "routed", "tapnet")
    r = ratio(t, k)
    print("%-22s %-10s %-10s %-15s %-9s %s" % ("tcp routed (Gbit/s)", g(k), g(t), rx(r), ">= 0.5x", met(r, 0.5)))
    out["tests"]["routed"] = {"unit": "Gbit/s", "kernel": k and k / 1e9, "tapnet": t and t / 1e9,
                              "ratio": r, "target": ">= 0.5", "met": None if r is None else r >= 0.5}

    print()
    print("B. port forward, outside -> host:5201 -> container: iperf3 TCP, one stream (Gbit/s)")
    print("%-22s %-10s %s" % ("path", "Gbit/s", "vs direct"))
    m = {i: med(S, "forward", i) for i in FWD}
    fw = {"unit": "Gbit/s"}
    for i in FWD:
        vd = ratio(m[i], m["direct"])
        print("%-22s %-10s %s" % (FWD_LABEL[i], g(m[i]), rx(vd)))
        fw[i] = m[i] and m[i] / 1e9
        fw[i + "_vs_direct"] = vd
    print("%-22s %-10s %-9s %s" % ("ratio", "value", "target", "met"))
    r_s = ratio(m["tapnet"], m["socat"]); r_d = ratio(m["tapnet"], m["dnat"])
    print("%-22s %-10s %-9s %s" % ("tapnet/socat", rx(r_s), ">= 1.0x", met(r_s, 1.0)))
    print("%-22s %-10s %-9s %s" % ("tapnet/kernel DNAT", rx(r_d), "-", "-"))
    fw.update({"tapnet_vs_socat": r_s, "tapnet_vs_socat_target": ">= 1.0",
               "tapnet_vs_socat_met": None if r_s is None else r_s >= 1.0, "tapnet_vs_dnat": r_d})
    out["tests"]["forward"] = fw
    print("(medians of %d run(s) each, %d s per iperf3 run; the order of the networks alternates)"
          % (meta["repeat"], meta["seconds"]))

    print("\nper-run samples (Gbit/s, TCP retransmits):")
    for test, impls in (("routed", ROUTED), ("forward", FWD)):
        for i in impls:
            ss = [s for s in S if s["test"] == test and s["impl"] == i]
            print("  %-7s %-7s %s" % (test, i, "  ".join(
                "%.2f (%s rtx)" % (s["bps"] / 1e9, s.get("retransmits")) for s in ss)))

    tn = meta.get("tapnet", {})
    cpu_rows(S, out, ("routed", "forward"), 7)

    def frames(test, key_f, key_b, what):
        fr = sum(vals(S, test, "tapnet", key_f)); by = sum(vals(S, test, "tapnet", key_b))
        if not fr:
            return
        kind = ("super-frames: GSO frames, unsegmented" if by / fr > 3000 else
                "<= MTU-sized segments")
        print("  %-40s %9d frames, %12d bytes, %6.0f bytes/frame  (%s)" % (what, fr, by, by / fr, kind))
        out["tests"][test].update({key_f: fr, key_b: by, key_f.replace("frames", "bytes_per_frame"): by / fr})
    print("\ntapnet frames during the tapnet runs (`tapnet show ports --json`; data flows client -> server):")
    frames("routed", "port_a_rx_frames", "port_a_rx_bytes", "routed: read from port a (sender)")
    frames("routed", "port_b_tx_frames", "port_b_tx_bytes", "routed: written to port b (receiver)")
    frames("forward", "container_tx_frames", "container_tx_bytes", "forward: written to the container port")
    frames("forward", "container_rx_frames", "container_rx_bytes", "forward: read from the container port")

    fwd = tn.get("forwards")
    if fwd is not None:
        print("\ntapnet show forwards --lab %s --json (after the forward runs):" % tn.get("forward_lab", "?"))
        print("  " + json.dumps(fwd))
    for which in ("routed", "forward"):
        exit_line("tapnet (%s lab)" % which, tn.get(which, {}))
    write_json(out, json_out)
PY

# ---------------------------------------------------------------- build
build_tapnet
ns_free

# ---------------------------------------------------------------- building blocks
sysctl_in() { ip netns exec "$1" sysctl -qw "$2"; }

# ---------------------------------------------------------------- A. kernel router
log "routed/kernel: $K_1_NS ($K_1_IP) -> router $K_R_NS -> $K_2_NS ($K_2_IP)"
new_ns "$K_R_NS" "$K_1_NS" "$K_2_NS"
veth "$K_R_NS" r1 10.252.1.1/24 "$K_1_NS" eth0 "$K_1_IP/24"
veth "$K_R_NS" r2 10.252.2.1/24 "$K_2_NS" eth0 "$K_2_IP/24"
ip -n "$K_1_NS" route add default via 10.252.1.1
ip -n "$K_2_NS" route add default via 10.252.2.1
sysctl_in "$K_R_NS" net.ipv4.ip_forward=1

# ---------------------------------------------------------------- B. kernel DNAT
log "forward/dnat: $D_O_NS -> $D_H_NS $HOST_IP:$PORT (nft DNAT) -> $D_C_NS $D_C_IP:$PORT"
new_ns "$D_H_NS" "$D_O_NS" "$D_C_NS"
veth "$D_H_NS" out0 "$HOST_IP/24" "$D_O_NS" eth0 "$OUT_IP/24"
veth "$D_H_NS" c0 10.255.2.1/24 "$D_C_NS" eth0 "$D_C_IP/24"
ip -n "$D_C_NS" route add default via 10.255.2.1
sysctl_in "$D_H_NS" net.ipv4.ip_forward=1
ip netns exec "$D_H_NS" nft -f - <<EOF
table ip $NFT_TABLE {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        tcp dport $PORT dnat to $D_C_IP:$PORT
    }
}
EOF

# ---------------------------------------------------------------- B. socat
log "forward/socat: $S_O_NS -> $S_H_NS $HOST_IP:$PORT (socat) -> $S_C_NS $S_C_IP:$PORT"
new_ns "$S_H_NS" "$S_O_NS" "$S_C_NS"
veth "$S_H_NS" out0 "$HOST_IP/24" "$S_O_NS" eth0 "$OUT_IP/24"
veth "$S_H_NS" c0 10.255.3.1/24 "$S_C_NS" eth0 "$S_C_IP/24"
ip netns exec "$S_H_NS" socat "TCP-LISTEN:$PORT,fork,reuseaddr" "TCP:$S_C_IP:$PORT" \
    >"$TMP/socat.log" 2>&1 &
SOCAT_PID=$!

# ---------------------------------------------------------------- B. direct
log "forward/direct: $X_O_NS -> $X_C_NS $X_C_IP:$PORT over one veth"
new_ns "$X_O_NS" "$X_C_NS"
veth "$X_O_NS" eth0 10.255.4.1/24 "$X_C_NS" eth0 "$X_C_IP/24"

# ---------------------------------------------------------------- tapnet labs
cat >"$TMP/routed.toml" <<EOF
name = "$T_R_LAB"
[[bridge]]
name = "b1"
subnet = "10.253.1.0/24"
[[bridge]]
name = "b2"
subnet = "10.253.2.0/24"
[[port]]
name = "a"
bridge = "b1"
netns = "$T_A_NS"
ip = "$T_A_IP/24"
[[port]]
name = "b"
bridge = "b2"
netns = "$T_B_NS"
ip = "$T_B_IP/24"
EOF
cat >"$TMP/forward.toml" <<EOF
name = "$T_F_LAB"
[[bridge]]
name = "f1"
subnet = "10.255.1.0/24"
[[port]]
name = "c"
bridge = "f1"
netns = "$F_C_NS"
ip = "$F_C_IP/24"
[[forward]]
proto = "tcp"
listen = "0.0.0.0:$PORT"
to = "$F_C_IP:$PORT"
EOF
"$BIN" check "$TMP/routed.toml" || die "tapnet check refused the routed lab"
"$BIN" check "$TMP/forward.toml" || die "tapnet check refused the forward lab"

log "routed/tapnet: lab $T_R_LAB in $T_R_HOME: $T_A_NS ($T_A_IP) -> $T_B_NS ($T_B_IP)"
new_ns "$T_R_HOME"
start_tapnet "$T_R_HOME" "$TMP/routed.toml" "$TMP/tn-routed"; TR_PID=$STARTED_PID

log "forward/tapnet: $F_O_NS -> $F_H_NS $HOST_IP:$PORT (tapnet $T_F_LAB) -> $F_C_NS $F_C_IP:$PORT"
new_ns "$F_H_NS" "$F_O_NS"
veth "$F_H_NS" out0 "$HOST_IP/24" "$F_O_NS" eth0 "$OUT_IP/24"
start_tapnet "$F_H_NS" "$TMP/forward.toml" "$TMP/tn-forward"; TF_PID=$STARTED_PID

wait_ready "$TR_PID" "$TMP/tn-routed"
wait_ready "$TF_PID" "$TMP/tn-forward"
TR_T0="$(now)"; TR_C0="$(cpu_ticks "$TR_PID")"
TF_T0="$(now)"; TF_C0="$(cpu_ticks "$TF_PID")"

tapnet_alive() {  # pid name
    proc_live "$1" && return 0
    echo "--- tapnet ($2) stderr:" >&2; tail -20 "$TMP/tn-$2.err" >&2
    die "tapnet ($2 lab) died during the run"
}

# ---------------------------------------------------------------- measurement helpers
# test impl -> client ns, server ns, server (bind) ip, address the client connects to
ends() {
    case "$1/$2" in
        routed/kernel)  echo "$K_1_NS $K_2_NS $K_2_IP $K_2_IP" ;;
        routed/tapnet)  echo "$T_A_NS $T_B_NS $T_B_IP $T_B_IP" ;;
        forward/tapnet) echo "$F_O_NS $F_C_NS $F_C_IP $HOST_IP" ;;
        forward/dnat)   echo "$D_O_NS $D_C_NS $D_C_IP $HOST_IP" ;;
        forward/socat)  echo "$S_O_NS $S_C_NS $S_C_IP $HOST_IP" ;;
        forward/direct) echo "$X_O_NS $X_C_NS $X_C_IP $X_C_IP" ;;
        *) die "no such network: $1/$2" ;;
    esac
}

ports_json() {  # lab file
    "$BIN" show ports --lab "$1" --json >"$2" || die "tapnet show ports --lab $1 failed"
}

# one client run of run_one, for iperf3_tries (which calls it in run_one's scope)
try_client() {
    if [[ -n $tpid ]]; then
        ports_json "$lab" "$TMP/ports0.json"
        t0="$(now)"; c0="$(cpu_ticks "$tpid")" || tapnet_alive "$tpid" "$test"
    fi
    timeout $((SECS + 30)) ip netns exec "$cns" iperf3 -c "$dst" -p "$PORT" -t "$SECS" -J >"$out" 2>&1 || TRY_RC=$?
    if [[ -n $tpid ]]; then
        tapnet_alive "$tpid" "$test"
        c1="$(cpu_ticks "$tpid")" || tapnet_alive "$tpid" "$test"
        t1="$(now)"
    fi
}

# run_one TEST IMPL ROUND: one iperf3 TCP measurement, appends a JSON line to $SAMPLES
run_one() {
    local test=$1 impl=$2 round=$3 cns sns sip dst out tpid lab port1 port2 t0 c0 t1 c1
    local extra='{}'
    read -r cns sns sip dst <<<"$(ends "$test" "$impl")"
    out="$TMP/$test-$impl-$round.json"
    tpid=""
    if [[ $impl == tapnet ]]; then
        if [[ $test == routed ]]; then tpid=$TR_PID lab=$T_R_LAB port1=a port2=b
        else tpid=$TF_PID lab=$T_F_LAB port1=c port2=c; fi
        tapnet_alive "$tpid" "$test"
    fi
    iperf3_tries "$test" "$impl" "$round" "$sns" "$sip" "$out" try_client
    if [[ -n $tpid ]]; then
        local a0 b0 c0_ d0 a1 b1 c1_ d1 e0 f0 g0 h0 e1 f1 g1 h1
        ports_json "$lab" "$TMP/ports1.json"
        H port "$TMP/ports0.json" "$port1" >"$TMP/p10" || die "cannot read port $port1 counters"
        H port "$TMP/ports1.json" "$port1" >"$TMP/p11" || die "cannot read port $port1 counters"
        H port "$TMP/ports0.json" "$port2" >"$TMP/p20" || die "cannot read port $port2 counters"
        H port "$TMP/ports1.json" "$port2" >"$TMP/p21" || die "cannot read port $port2 counters"
        read -r a0 b0 c0_ d0 <"$TMP/p10"
        read -r a1 b1 c1_ d1 <"$TMP/p11"
        read -r e0 f0 g0 h0 <"$TMP/p20"
        read -r e1 f1 g1 h1 <"$TMP/p21"
        if [[ $test == routed ]]; then
            extra="{\"port_a_rx_frames\": $((a1 - a0)), \"port_a_rx_bytes\": $((b1 - b0)),"
            extra+=" \"port_b_tx_frames\": $((g1 - g0)), \"port_b_tx_bytes\": $((h1 - h0)),"
        else
            extra="{\"container_tx_frames\": $((c1_ - c0_)), \"container_tx_bytes\": $((d1 - d0)),"
            extra+=" \"container_rx_frames\": $((a1 - a0)), \"container_rx_bytes\": $((b1 - b0)),"
        fi
        extra+=" $(H cpu_wall "$CLK_TCK" "$t0" "$t1" cpu_s "$c0" "$c1")}"
    fi
    local parsed
    parsed="$(H tcp "$out")" || die "cannot read the iperf3 result of $test via $impl"
    H sample "{\"test\": \"$test\", \"impl\": \"$impl\", \"round\": $round, \"attempts\": $TRY_N}" \
        "$parsed" "$extra" >>"$SAMPLES"
    log "$(printf '%-7s %-6s run %d: %s' "$test" "$impl" "$round" "$(H line tcp "$parsed")")"
}

# ---------------------------------------------------------------- connectivity
ping_ok "$K_1_NS" "$K_2_IP"
ping_ok "$T_A_NS" "$T_B_IP"
ping_ok "$F_O_NS" "$HOST_IP"
ping_ok "$D_O_NS" "$HOST_IP"
ping_ok "$D_H_NS" "$D_C_IP"
ping_ok "$S_O_NS" "$HOST_IP"
ping_ok "$S_H_NS" "$S_C_IP"
ping_ok "$X_O_NS" "$X_C_IP"
proc_live "$SOCAT_PID" || { cat "$TMP/socat.log" >&2; die "socat exited"; }
log "every network answers ping; running routed (kernel, tapnet) and forward (direct, dnat, socat, tapnet): $REPEAT x ${SECS}s each, alternating"

# ---------------------------------------------------------------- measurements
for ((r = FIRST_ROUND; r < FIRST_ROUND + REPEAT; r++)); do
    if (( r % 2 == 1 )); then order=(kernel tapnet); else order=(tapnet kernel); fi
    for impl in "${order[@]}"; do run_one routed "$impl" "$r"; done
done
for ((r = FIRST_ROUND; r < FIRST_ROUND + REPEAT; r++)); do
    if (( r % 2 == 1 )); then order=(direct dnat socat tapnet); else order=(tapnet socat dnat direct); fi
    for impl in "${order[@]}"; do
        [[ $impl == socat ]] && { proc_live "$SOCAT_PID" || { cat "$TMP/socat.log" >&2; die "socat exited"; }; }
        run_one forward "$impl" "$r"
    done
done
"$BIN" show forwards --lab "$T_F_LAB" --json >"$TMP/forwards.json" || die "tapnet show forwards failed"

# ---------------------------------------------------------------- stop tapnet
tapnet_alive "$TR_PID" routed
tapnet_alive "$TF_PID" forward
TR_C1="$(cpu_ticks "$TR_PID")"; TR_T1="$(now)"
TF_C1="$(cpu_ticks "$TF_PID")"; TF_T1="$(now)"
stop_tapnet "$TR_PID" "routed lab" "$T_R_LAB" "$T_A_NS" "$T_B_NS" >"$TMP/stop-routed"
TR_PID=""
stop_tapnet "$TF_PID" "forward lab" "$T_F_LAB" "$F_C_NS" >"$TMP/stop-forward"
TF_PID=""
log "tapnet stopped: routed lab exit status $(head -1 "$TMP/stop-routed"), forward lab exit status $(head -1 "$TMP/stop-forward")"

H meta "$TMP/meta.json" "$SECS" "$REPEAT" "$CLK_TCK" \
    "$TR_C0" "$TR_C1" "$TR_T0" "$TR_T1" "$TMP/stop-routed" \
    "$TF_C0" "$TF_C1" "$TF_T0" "$TF_T1" "$TMP/stop-forward" \
    "$TMP/forwards.json" "$T_F_LAB" \
    "$(uname -r)" "$(iperf3 --version | head -1)" "$(nproc)" "$(git_id)"

echo "tapnet router and forwards vs the Linux kernel, $(uname -r), $(nproc) CPUs, $(iperf3 --version | head -1), tapnet $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["env"]["git"])' "$TMP/meta.json")"
H report "$SAMPLES" "$TMP/meta.json" "$JSON_OUT"
check_stops "$TMP/stop-routed" "$TMP/stop-forward"
