#!/usr/bin/env bash
# bench/frame-cost.sh: what one small frame costs tapnet (CPU time and system calls),
# for one build, or for two builds side by side in the same run.
#
# On a two-container lab (ports a and b on bridge br0, as bench/compare.sh builds it:
# fc-a-PID 10.245.0.2/24 and fc-b-PID 10.245.0.3/24, namespaces tapnet creates), for
# each binary (--bin, given once or twice; default the repository's release build), R
# rounds, the binaries in turn, the first one alternating every round, a fresh
# `tapnet up` for each measurement:
#   flood: iperf3 -u -l 64 -b 0 a -> b for N+3 s. Over N s in the middle: the frames
#          tapnet forwarded (`tapnet show threads`), the datagrams b received, tapnet's
#          CPU time, and (where `perf` can count the syscalls tracepoints) tapnet's
#          system calls per forwarded frame, all of them and by call.
#   rate:  iperf3 -u -l 64 paced at --rate KPPS (default 100), below what tapnet
#          carries on this machine (check `lost` in the report): tapnet's CPU time per
#          forwarded frame over N s, the figure a flood cannot give (there tapnet
#          gets the share of the CPUs the scheduler gives it, whatever it does with it).
# It prints the medians for each binary and, with two, the second's over the first's.
# The flood's received datagrams are compared in the same run, never across runs:
# they depend on how the CPUs are shared between the sender, tapnet and the receiver.
#
# Usage: bench/frame-cost.sh [--bin FILE [--bin FILE]] [--rate KPPS] [--threads N]
#                            [--seconds N] [--repeat R] [--json FILE] [--no-build]
# Defaults: the release build (built unless --no-build), --rate 100, --threads 1 (one
# datapath thread: each frame's cost lands on one thread, whichever queue the flow's
# hash picks), --seconds 4, --repeat 3. TAPNET_UP_ARGS (environment) adds its words to
# `tapnet up`. Two builds of two commits: `git worktree add /tmp/old COMMIT`, build it
# there, and pass --bin /tmp/old/target/release/tapnet --bin target/release/tapnet.
# Needs root, iproute2, iperf3, python3; perf (Debian: linux-perf) for the system
# calls, optional. Everything it creates carries the script's PID in its name, lives in
# namespaces tapnet creates for the run, and is removed on exit, failure or Ctrl-C.
set -euo pipefail

BENCH_NAME=frame-cost.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"
BINS=()
RATE_KPPS=100
THREADS=1
extra_arg() {  # for parse_args: --bin FILE, --rate KPPS, --threads N
    # shellcheck disable=SC2034  # ARGS_USED is read by parse_args
    case "$1" in
        --bin) BINS+=("${2:?--bin needs a file}"); ARGS_USED=2 ;;
        --rate) RATE_KPPS="${2:?--rate needs a value}"; ARGS_USED=2 ;;
        --threads) THREADS="${2:?--threads needs a value}"; ARGS_USED=2 ;;
    esac
}
parse_args --seconds 4 "$@"
[[ ${#BINS[@]} -le 2 ]] || { echo "$BENCH_NAME: --bin at most twice" >&2; exit 1; }
[[ "$RATE_KPPS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: --rate must be a positive integer (kpps)" >&2; exit 1; }
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: --threads must be a positive integer" >&2; exit 1; }
require_root "namespaces, TAP"
require_cmds "apt-get install -y iperf3 iproute2 python3" ip iperf3 python3 ss

ID=$$
PORT=5201
A_IP=10.245.0.2
B_IP=10.245.0.3
TMP="$(mktemp -d /tmp/tapnet-fcost.XXXXXX)"
SRV_PID=""
TN_PID=""
OUR_NS=("fc-a-$ID" "fc-b-$ID")
OUR_LABS=("fcost-$ID")

teardown() {  # called by lib.sh's EXIT trap, which then deletes $TMP
    if [[ -n "$SRV_PID" ]] && kill -0 "$SRV_PID" 2>/dev/null; then
        kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null
    fi
    teardown_labs "$TN_PID"
}
bench_traps

if [[ ${#BINS[@]} -eq 0 ]]; then
    build_tapnet
    BINS=("$BIN")
fi
for b in "${BINS[@]}"; do
    [[ -x "$b" ]] || die "$b: not an executable"
done
ns_free " (another run of this script, or a leftover: ip netns del it)"

PERF=0
if command -v perf >/dev/null \
    && perf stat -e raw_syscalls:sys_enter -o /dev/null -- true >/dev/null 2>&1; then
    PERF=1
else
    log "perf cannot count the syscalls tracepoints here: no system call figures"
fi

cat >"$TMP/lab.toml" <<EOF
name = "fcost-$ID"
[[bridge]]
name = "br0"
subnet = "10.245.0.0/24"
[[port]]
name = "a"
bridge = "br0"
netns = "fc-a-$ID"
ip = "$A_IP/24"
[[port]]
name = "b"
bridge = "br0"
netns = "fc-b-$ID"
ip = "$B_IP/24"
EOF

frames() {  # bin: the frames every datapath thread of the running lab forwarded
    "$1" show threads --lab "fcost-$ID" --json \
        | python3 -c 'import json,sys; print(sum(t["frames"] for t in json.load(sys.stdin)["threads"]))'
}

# measure BIN-INDEX TEST ROUND: one tapnet up, one iperf3 run, one JSON line to $SAMPLES
measure() {
    local i=$1 test=$2 round=$3 bin=${BINS[$1]} client_args f0 f1 c0 c1 t0 t1 cpid
    "$bin" up --threads "$THREADS" "${TAPNET_UP[@]}" "$TMP/lab.toml" \
        >"$TMP/tapnet.out" 2>"$TMP/tapnet.err" &
    TN_PID=$!
    wait_ready "$TN_PID" "$TMP/tapnet" " (bin $i)"
    ping_ok "fc-a-$ID" "$B_IP" "bin $i"
    start_server "fc-b-$ID" "$B_IP"
    if [[ $test == flood ]]; then
        client_args=(-b 0)
    else
        # iperf3 paces bits of payload: 64 bytes a datagram
        client_args=(-b "$((RATE_KPPS * 1000 * 64 * 8))")
    fi
    ip netns exec "fc-a-$ID" iperf3 -c "$B_IP" -p "$PORT" -u -l 64 "${client_args[@]}" \
        -t "$((SECS + 3))" -J >"$TMP/iperf.json" 2>&1 &
    cpid=$!
    sleep 1.5
    f0="$(frames "$bin")"; c0="$(cpu_ticks "$TN_PID")"; t0="$(now)"
    if [[ $PERF -eq 1 ]]; then
        perf stat -x, -o "$TMP/perf.txt" -p "$TN_PID" \
            -e raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write \
            -e syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait \
            -- sleep "$SECS" 2>/dev/null
    else
        sleep "$SECS"
        : >"$TMP/perf.txt"
    fi
    f1="$(frames "$bin")"; c1="$(cpu_ticks "$TN_PID")"; t1="$(now)"
    wait "$cpid" || { cat "$TMP/iperf.json" >&2; die "iperf3 client failed (bin $i, $test)"; }
    stop_server 50
    proc_live "$TN_PID" || { tail -20 "$TMP/tapnet.err" >&2; die "tapnet (bin $i) died during the run"; }
    stop_tapnet_hard "$TN_PID"
    TN_PID=""
    H sample "$SAMPLES" "$i" "$test" "$round" "$((f1 - f0))" "$((c1 - c0))" "$CLK_TCK" \
        "$t0" "$t1" "$TMP/iperf.json" "$TMP/perf.txt"
}

write_helpers <<'PY'
def sample(samples, i, test, rnd, frames, ticks, tck, t0, t1, iperf, perf):
    frames, secs = int(frames), float(t1) - float(t0)
    u = load(iperf)["end"]
    r = u.get("sum_received") or u["sum"]
    calls = {}
    for line in open(perf):
        f = line.strip().split(",")
        if len(f) > 3 and f[0].replace(".", "").isdigit():
            calls[f[2].split(":")[-1].replace("sys_enter_", "")] = float(f[0])
    s = {"bin": int(i), "test": test, "round": int(rnd), "frames": frames, "seconds": secs,
         "fps": frames / secs if secs else None,
         "rx_pps": (r["packets"] - r["lost_packets"]) / r["seconds"],
         "lost_pct": r.get("lost_percent"),
         "cpu_us_per_frame": int(ticks) / int(tck) * 1e6 / frames if frames else None,
         "cpu_pct": 100.0 * int(ticks) / int(tck) / secs if secs else None}
    for k, v in calls.items():
        s["calls_" + k] = v / frames if frames else None
    with open(samples, "a") as f:
        f.write(json.dumps(s) + "\n")

def report(samples, bins, rate, threads, secs, repeat, json_out=""):
    S = [json.loads(l) for l in open(samples)]
    bins = bins.split("\n")
    def med(i, test, key):
        v = [s[key] for s in S if s["bin"] == i and s["test"] == test and s.get(key) is not None]
        return statistics.median(v) if v else None
    rows = [
        ("flood", "fps", 1e-3, "%.1f", "flood: frames forwarded (kpps)"),
        ("flood", "rx_pps", 1e-3, "%.1f", "flood: datagrams received (kpps)"),
        ("flood", "cpu_pct", 1, "%.0f", "flood: tapnet CPU (% of a core)"),
        ("flood", "cpu_us_per_frame", 1, "%.3f", "flood: tapnet CPU a frame (us)"),
        ("flood", "calls_sys_enter", 1, "%.3f", "flood: system calls a frame"),
        ("flood", "calls_read", 1, "%.3f", "  read"),
        ("flood", "calls_write", 1, "%.3f", "  write"),
        ("flood", "calls_io_uring_enter", 1, "%.3f", "  io_uring_enter"),
        ("flood", "calls_epoll_wait", 1, "%.3f", "  epoll_wait"),
        ("rate", "fps", 1e-3, "%.1f", "rate: frames forwarded (kpps)"),
        ("rate", "lost_pct", 1, "%.2f", "rate: lost (%)"),
        ("rate", "cpu_us_per_frame", 1, "%.3f", "rate: tapnet CPU a frame (us)"),
    ]
    print("tapnet frame cost, %s, %d round(s) of %s s, --threads %s, rate %s kpps" % (
        env_line(), int(repeat), secs, threads, rate))
    for i, b in enumerate(bins):
        print("bin %d: %s" % (i, b))
    head = "%-34s" % "" + "".join("%-12s" % ("bin %d" % i) for i in range(len(bins)))
    print("\n" + head + ("bin 1 / bin 0" if len(bins) == 2 else ""))
    out = {"bins": bins, "rows": {}}
    for test, key, scale, fmt, label in rows:
        m = [med(i, test, key) for i in range(len(bins))]
        if all(v is None for v in m):
            continue
        line = "%-34s" % label + "".join("%-12s" % (fmt % (v * scale) if v is not None else "-") for v in m)
        if len(bins) == 2 and m[0] and m[1] is not None:
            line += "%.2fx" % (m[1] / m[0])
        print(line)
        out["rows"][label.strip()] = m
    print("\n(medians; per-run samples:)")
    for s in S:
        print("  bin %d %-5s round %d: %8.1f kpps forwarded, %8.1f kpps received, CPU %5.1f%%, %s us/frame%s" % (
            s["bin"], s["test"], s["round"], (s["fps"] or 0) / 1e3, s["rx_pps"] / 1e3, s["cpu_pct"] or 0,
            "%.3f" % s["cpu_us_per_frame"] if s["cpu_us_per_frame"] else "-",
            ", %.3f calls/frame" % s["calls_sys_enter"] if s.get("calls_sys_enter") is not None else ""))
    write_json({"samples": S, **out}, json_out)

def env_line():
    import os, platform
    return "%s, %d CPUs" % (platform.release(), os.cpu_count())
PY

for ((r = FIRST_ROUND; r < FIRST_ROUND + REPEAT; r++)); do
    order=(0)
    if [[ ${#BINS[@]} -eq 2 ]]; then
        if (( r % 2 )); then order=(0 1); else order=(1 0); fi
    fi
    for test in flood rate; do
        for i in "${order[@]}"; do
            log "round $r: $test, bin $i"
            measure "$i" "$test" "$r"
        done
    done
done
H report "$SAMPLES" "$(IFS=$'\n'; echo "${BINS[*]}")" \
    "$RATE_KPPS" "$THREADS" "$SECS" "$REPEAT" "$JSON_OUT"
