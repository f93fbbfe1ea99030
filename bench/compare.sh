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
#   ping1: ping -c 5 -i 1 a -> b, average RTT: a lone ping a second, which finds
#          tapnet's thread asleep (issue 15: <= 3x the kernel)
# and prints the medians, tapnet/kernel ratios, tapnet's CPU time and the
# frames/bytes per frame tapnet read from port a during the TCP test.
# With --ipv6 both networks are dual-stack (kernel fd00:251::2 and ::3, tapnet
# fd00:250::2 and ::3 on subnet6 fd00:250::/64) and the same three tests run over
# IPv6 too (tcp6, udp6, ping6), in the same run: the report sets each IPv6 ratio
# beside tapnet's IPv4 ratio (issue 13's target: within 5% of it).
#
# Usage: bench/compare.sh [--seconds N] [--repeat R] [--json FILE] [--no-build]
#                         [--busy-poll-us US]   (passed to `tapnet up`)
#                         [--ipv6]
# TAPNET_UP_ARGS (environment) adds its words to `tapnet up`.
# Needs root, iproute2, iperf3, ping, python3. Everything it creates carries the
# script's PID in its name and is removed on exit, failure or Ctrl-C.
set -euo pipefail

BENCH_NAME=compare.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

BUSY_POLL_US=""
IPV6=0
extra_arg() {  # this script's options beyond lib.sh's
    case "$1" in
        --busy-poll-us) BUSY_POLL_US="${2:?--busy-poll-us needs a value}"; ARGS_USED=2 ;;
        --ipv6) IPV6=1; ARGS_USED=1 ;;
    esac
}
parse_args "$@"

require_root "namespaces, bridge, TAP"
require_cmds "" ip iperf3 ping python3 timeout

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
K_B_IP6=fd00:251::3
K_A_IP6=fd00:251::2
T_A_IP6=fd00:250::2
T_B_IP6=fd00:250::3
PORT=5201                        # iperf3 port, inside our own namespaces
OUR_NS=("$K_A_NS" "$K_B_NS" "$K_BR_NS" "$T_A_NS" "$T_B_NS")

TMP="$(mktemp -d /tmp/tapnet-bench.XXXXXX)"
TN_PID=""
SRV_PID=""
CREATED_NS=()

# ---------------------------------------------------------------- teardown
teardown() {  # called by lib.sh's EXIT trap, which then deletes $TMP
    if [[ -n "$SRV_PID" ]] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null
    fi
    [[ -n "$TN_PID" ]] && stop_tapnet_hard "$TN_PID"
    # Anything still running inside our namespaces was started by this script.
    kill_in_ns
    del_ns
    # A tapnet killed hard leaves its control socket behind; the name is ours.
    [[ -S "/run/tapnet/$T_LAB.sock" ]] && rm -f "/run/tapnet/$T_LAB.sock"
    rm -f "/run/tapnet/$T_LAB.state"
}
bench_traps

# ---------------------------------------------------------------- python helpers
write_helpers <<'PY'
def meta(path, secs, repeat, tck, c0, c1, t0, t1, stop, *env_):
    json.dump({"seconds": int(secs), "repeat": int(repeat),
               "tapnet": stopped(tck, c0, c1, t0, t1, stop), "env": env(*env_)},
              open(path, "w"))

def report(samples_path, meta_path, json_out=""):
    meta, S, out = run_data(samples_path, meta_path)
    rows = [
        # test, label, key, scale, fmt, target op, target
        ("tcp", "tcp 1500 (Gbit/s)", "bps", 1e-9, "%.2f", ">=", 0.85),
        ("udp", "udp 64B rx (kpps)", "pps", 1e-3, "%.1f", ">=", 0.75),
        ("ping", "ping rtt (us)", "avg_us", 1.0, "%.1f", "<=", 2.0),
        ("ping1", "ping 1/s rtt (us)", "avg_us", 1.0, "%.1f", "<=", 3.0),
    ]
    if any(s["test"] == "tcp6" for s in S):
        rows += [
            ("tcp6", "tcp6 1500 (Gbit/s)", "bps", 1e-9, "%.2f", ">=", 0.85),
            ("udp6", "udp6 64B rx (kpps)", "pps", 1e-3, "%.1f", ">=", 0.75),
            ("ping6", "ping6 rtt (us)", "avg_us", 1.0, "%.1f", "<=", 2.0),
        ]
    print()
    print("%-21s %-16s %-10s %-15s %-8s %s" % ("test", "kernel bridge", "tapnet", "tapnet/kernel", "target", "met"))
    for test, label, key, scale, fmt, op, tgt in rows:
        k, t = med(S, test, "kernel", key), med(S, test, "tapnet", key)
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
    v6 = [r for r in rows if r[0].endswith("6")]
    if v6:
        # Issue 13's target: each IPv6 ratio within 5% of tapnet's own IPv4 ratio.
        print("\n%-21s %-12s %-12s %-15s %s" % ("IPv6 vs IPv4", "ratio v4", "ratio v6", "v6/v4", "within 5%"))
        for test, label, key, *_ in v6:
            r4, r6 = out["tests"][test[:-1]]["ratio"], out["tests"][test]["ratio"]
            rel = r6 / r4 if r4 and r6 else None
            # For the ping RTT, lower is better: v6/v4 above 1 is worse.
            ok = None if rel is None else (rel >= 0.95 if key != "avg_us" else rel <= 1.05)
            print("%-21s %-12s %-12s %-15s %s" % (
                test, "%.2fx" % r4 if r4 else "-", "%.2fx" % r6 if r6 else "-",
                "%.3f" % rel if rel else "-", {None: "-", True: "yes", False: "NO"}[ok]))
            out["tests"][test].update({"ipv4_ratio": r4, "v6_over_v4": rel, "within_5pct": ok})
    lk, lt = med(S, "udp", "kernel", "loss_pct"), med(S, "udp", "tapnet", "loss_pct")
    sk, st = med(S, "udp", "kernel", "tx_pps"), med(S, "udp", "tapnet", "tx_pps")
    print("%-21s %-16s %-10s" % ("udp 64B loss (%)", "%.2f" % lk, "%.2f" % lt))
    print("%-21s %-16s %-10s" % ("udp 64B tx (kpps)", "%.1f" % (sk / 1e3), "%.1f" % (st / 1e3)))
    udp_drop_rows(S, out)
    out["tests"]["udp"].update({"kernel_loss_pct": lk, "tapnet_loss_pct": lt,
                                "kernel_tx_kpps": sk / 1e3, "tapnet_tx_kpps": st / 1e3})
    nk, nt = med(S, "ping", "kernel", "min_us"), med(S, "ping", "tapnet", "min_us")
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
            print("  %-5s %-7s %s" % (test, impl, "  ".join(fmt % (v * scale) for v in vals(S, test, impl, key))))

    tn = meta.get("tapnet", {})
    cpu_rows(S, out, tuple(r[0] for r in rows), 5)
    if "cpu_s" in tn:
        print("  whole run: %.2f s CPU over %.2f s from ready to SIGTERM" % (tn["cpu_s"], tn["wall_s"]))
    fr = sum(vals(S, "tcp", "tapnet", "a_rx_frames")); by = sum(vals(S, "tcp", "tapnet", "a_rx_bytes"))
    if fr:
        print("\ntapnet port a during the TCP test (a -> b data direction, `tapnet show ports`):")
        print("  rx frames %d, rx bytes %d, %.0f bytes/frame%s" % (
            fr, by, by / fr, "  (super-frames: GSO frames pass unsegmented)" if by / fr > 3000 else
            "  (<= MTU-sized: traffic is being segmented)"))
        out["tests"]["tcp"].update({"tapnet_port_a_rx_frames": fr, "tapnet_port_a_rx_bytes": by,
                                    "tapnet_port_a_bytes_per_frame": by / fr})
    exit_line("tapnet", tn, "\n")
    write_json(out, json_out)
PY

# ---------------------------------------------------------------- build
build_tapnet
ns_free

# ---------------------------------------------------------------- kernel bridge
log "kernel: bridge $K_BR in $K_BR_NS, veth to $K_A_NS ($K_A_IP) and $K_B_NS ($K_B_IP)"
kernel_bridge "$K_BR_NS" "$K_BR" "$K_VA" "$K_VB" "$K_A_NS" "$K_A_IP" "$K_B_NS" "$K_B_IP"
if (( IPV6 )); then
    ip -n "$K_A_NS" addr add "$K_A_IP6/64" dev eth0 nodad
    ip -n "$K_B_NS" addr add "$K_B_IP6/64" dev eth0 nodad
fi

# ---------------------------------------------------------------- tapnet
cat >"$TMP/lab.toml" <<EOF
name = "$T_LAB"
[[bridge]]
name = "br0"
subnet = "10.250.0.0/24"
$( (( IPV6 )) && echo 'subnet6 = "fd00:250::/64"')
[[port]]
name = "a"
bridge = "br0"
netns = "$T_A_NS"
ip = "$T_A_IP/24"
$( (( IPV6 )) && echo "ip6 = \"$T_A_IP6/64\"")
[[port]]
name = "b"
bridge = "br0"
netns = "$T_B_NS"
ip = "$T_B_IP/24"
$( (( IPV6 )) && echo "ip6 = \"$T_B_IP6/64\"")
EOF
log "tapnet: $BIN up (lab $T_LAB: $T_A_NS $T_A_IP, $T_B_NS $T_B_IP)"
"$BIN" up ${BUSY_POLL_US:+--busy-poll-us "$BUSY_POLL_US"} "${TAPNET_UP[@]}" "$TMP/lab.toml" >"$TMP/tapnet.out" 2>"$TMP/tapnet.err" &
TN_PID=$!
wait_ready "$TN_PID" "$TMP/tapnet" ""
TN_T0="$(now)"; TN_C0="$(cpu_ticks "$TN_PID")"

tapnet_alive() {
    proc_live "$TN_PID" && return 0
    echo "--- tapnet stderr:" >&2; tail -20 "$TMP/tapnet.err" >&2
    die "tapnet died during the run"
}

# ---------------------------------------------------------------- measurement helpers
# impl [test] -> client ns, server ns, server ip (IPv6 for tcp6, udp6, ping6)
ends() {
    local v6=0
    [[ ${2:-} == *6 ]] && v6=1
    if [[ $1 == kernel ]]; then
        echo "$K_A_NS $K_B_NS $( ((v6)) && echo "$K_B_IP6" || echo "$K_B_IP")"
    else
        echo "$T_A_NS $T_B_NS $( ((v6)) && echo "$T_B_IP6" || echo "$T_B_IP")"
    fi
}

# run_one TEST IMPL ROUND: one measurement, appends a JSON line to $SAMPLES
run_one() {
    local test=$1 impl=$2 round=$3 cns sns sip out t0 c0 t1 c1 x0 x1 extra='' p0 p1 b0 b1 d0 d1 r0 r1
    # tcp6, udp6, ping6: the same test over IPv6; ping1: a ping a second.
    local base=${test%6}
    base=${base%1}
    read -r cns sns sip <<<"$(ends "$impl" "$test")"
    out="$TMP/$test-$impl-$round.out"
    [[ $impl == tapnet ]] && tapnet_alive
    if [[ $base != ping ]]; then start_server "$sns" "$sip"; fi
    if [[ $base == udp ]]; then
        udp_drops "$cns" "$sns" >"$TMP/drops0" || die "cannot read drop counters via $impl"
    fi
    if [[ $impl == tapnet ]]; then
        if [[ $base == tcp || $base == udp ]]; then
            "$BIN" show ports --lab "$T_LAB" --json >"$TMP/ports0.json" || die "tapnet show ports failed"
        fi
        t0="$(now)"; c0="$(cpu_ticks "$TN_PID")" || tapnet_alive
        x0="$(preemptions "$TN_PID")" || tapnet_alive
    fi
    local rc=0
    case $base in
        tcp)  timeout $((SECS + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -t "$SECS" -J >"$out" 2>&1 || rc=$? ;;
        udp)  timeout $((SECS + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -u -l 64 -b 0 -t "$SECS" -J >"$out" 2>&1 || rc=$? ;;
        ping) if [[ $test == ping1 ]]; then
                  timeout 60 ip netns exec "$cns" ping -c 5 -i 1 -q -w 20 "$sip" >"$out" 2>&1 || rc=$?
              else
                  timeout 60 ip netns exec "$cns" ping $( [[ $test == ping6 ]] && echo -6) -c 200 -i 0.005 -q -w 50 "$sip" >"$out" 2>&1 || rc=$?
              fi ;;
    esac
    if [[ $impl == tapnet ]]; then
        tapnet_alive
        c1="$(cpu_ticks "$TN_PID")" || tapnet_alive
        x1="$(preemptions "$TN_PID")" || tapnet_alive
        t1="$(now)"
        extra=", $(H cpu_wall "$CLK_TCK" "$t0" "$t1" cpu_s "$c0" "$c1"), \"preempted\": $((x1 - x0))"
        if [[ $base == tcp || $base == udp ]]; then
            "$BIN" show ports --lab "$T_LAB" --json >"$TMP/ports1.json" || die "tapnet show ports failed"
            H port "$TMP/ports0.json" a >"$TMP/port0" || die "cannot read port a counters"
            H port "$TMP/ports1.json" a >"$TMP/port1" || die "cannot read port a counters"
            read -r p0 b0 _ <"$TMP/port0"
            read -r p1 b1 _ <"$TMP/port1"
            extra+=", \"a_rx_frames\": $((p1 - p0)), \"a_rx_bytes\": $((b1 - b0))"
        fi
    fi
    if [[ $base != ping ]]; then stop_server; fi
    if [[ $base == udp && $rc -eq 0 ]]; then
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
    parsed="$(H "$base" "$out")" || die "cannot read $test result via $impl"
    echo "{\"test\": \"$test\", \"impl\": \"$impl\", \"round\": $round, ${parsed#\{}" \
        | sed "s/}\$/$extra}/" >>"$SAMPLES"
    local kind=$base
    [[ $base == tcp ]] && kind=tcp_bps
    log "$(printf '%-4s %-6s run %d: %s' "$test" "$impl" "$round" "$(H line "$kind" "$parsed")")"
}

# ---------------------------------------------------------------- connectivity
TESTS=(tcp udp ping ping1)
(( IPV6 )) && TESTS+=(tcp6 udp6 ping6)
for impl in kernel tapnet; do
    read -r cns sns sip <<<"$(ends "$impl")"
    ping_ok "$cns" "$sip" "$impl"
    if (( IPV6 )); then
        read -r cns sns sip <<<"$(ends "$impl" ping6)"
        ping_ok "$cns" "$sip" "$impl over IPv6" -6
    fi
done
log "both networks answer ping; running ${TESTS[*]}: $REPEAT x ${SECS}s each, alternating"

# ---------------------------------------------------------------- measurements
for test in "${TESTS[@]}"; do
    for ((r = 1; r <= REPEAT; r++)); do
        if (( r % 2 == 1 )); then order=(kernel tapnet); else order=(tapnet kernel); fi
        for impl in "${order[@]}"; do run_one "$test" "$impl" "$r"; done
    done
done

# ---------------------------------------------------------------- stop tapnet
tapnet_alive
TN_C1="$(cpu_ticks "$TN_PID")"; TN_T1="$(now)"
stop_tapnet "$TN_PID" "" "$T_LAB" "$T_A_NS" "$T_B_NS" >"$TMP/stop"
TN_PID=""
TN_RC="$(head -1 "$TMP/stop")"
mapfile -t LEFT < <(tail -n +2 "$TMP/stop")
log "tapnet stopped, exit status $TN_RC"

H meta "$TMP/meta.json" "$SECS" "$REPEAT" "$CLK_TCK" "$TN_C0" "$TN_C1" "$TN_T0" "$TN_T1" "$TMP/stop" \
    "$(uname -r)" "$(iperf3 --version | head -1)" "$(nproc)" "$(git_id)"

echo "tapnet vs Linux kernel bridge, $(uname -r), $(nproc) CPUs, $(iperf3 --version | head -1), tapnet $(git_id)${BUSY_POLL_US:+, --busy-poll-us $BUSY_POLL_US}"
H report "$SAMPLES" "$TMP/meta.json" "$JSON_OUT"
if [[ $TN_RC -ne 0 || ${#LEFT[@]} -gt 0 ]]; then
    die "tapnet exited $TN_RC after SIGTERM / left behind: ${LEFT[*]-}"
fi
