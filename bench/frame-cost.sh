#!/usr/bin/env bash
# bench/frame-cost.sh: what one small frame costs tapnet (CPU time and system calls),
# for one build, or for two builds side by side in the same run.
#
# On a two-container lab (ports a and b on bridge br0, as bench/compare.sh builds it:
# fc-a-PID 10.245.0.2/24 and fc-b-PID 10.245.0.3/24, namespaces tapnet creates), for
# each binary (--bin, given once or twice; default the repository's release build), R
# rounds, the binaries in turn, the first one alternating every round, a fresh
# `tapnet up` for each measurement:
#   flood: iperf3 -u -l 64 -b 0 a -> b. Over N s, after 1.5 s of warm-up: the frames
#          tapnet forwarded (`tapnet show threads`), the datagrams b's stack took in
#          (Udp InDatagrams in b's namespace), and tapnet's CPU time per forwarded
#          frame. Then, over N s more, where `perf` can count the syscalls
#          tracepoints: tapnet's system calls per forwarded frame, all of them and by
#          call. The two windows are apart because perf's tracing adds its own cost to
#          every system call (and to everything else running meanwhile).
#   rate:  iperf3 -u -l 64 paced at --rate KPPS (default 100), below what tapnet
#          carries on this machine (the report's received/offered says whether it was):
#          the same figures over N s. This is the test that says whether a frame got
#          cheaper: on a flood tapnet gets the share of the CPUs the scheduler gives it,
#          whatever it does with it.
# It prints the median and the range of each figure for each binary and, with two, the
# second's median over the first's. Anything else busy on the machine moves every
# figure: run it on a quiet one. The flood's received datagrams are compared in the
# same run, never across runs: they depend on how the CPUs are shared between the
# sender, tapnet and the receiver.
#
# Usage: bench/frame-cost.sh [--bin FILE [--bin FILE]] [--rate KPPS] [--threads N]
#                            [--seconds N] [--repeat R] [--json FILE] [--no-build]
# Defaults: the release build (built unless --no-build), --rate 100, --threads 1 (one
# datapath thread: each frame's cost lands on one thread, whichever queue the flow's
# hash picks), --seconds 4, --repeat 3. TAPNET_UP_ARGS (environment) adds its words to
# `tapnet up`. Two builds of two commits: `git worktree add /tmp/old COMMIT`, build it
# there, and pass --bin /tmp/old/target/release/tapnet --bin target/release/tapnet.
# Needs root, iproute2, iperf3, ping, python3; perf (Debian: linux-perf) for the system
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
        --bin=*) BINS+=("${1#*=}"); ARGS_USED=1 ;;
        --rate) RATE_KPPS="${2:?--rate needs a value}"; ARGS_USED=2 ;;
        --rate=*) RATE_KPPS="${1#*=}"; ARGS_USED=1 ;;
        --threads) THREADS="${2:?--threads needs a value}"; ARGS_USED=2 ;;
        --threads=*) THREADS="${1#*=}"; ARGS_USED=1 ;;
    esac
}
parse_args --seconds 4 "$@"
[[ ${#BINS[@]} -le 2 ]] || { echo "$BENCH_NAME: --bin at most twice" >&2; exit 1; }
[[ "$RATE_KPPS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: --rate must be a positive integer (kpps)" >&2; exit 1; }
[[ "$THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: --threads must be a positive integer" >&2; exit 1; }
require_root "namespaces, TAP"
require_cmds "apt-get install -y iperf3 iproute2 iputils-ping python3" ip iperf3 ping python3 ss

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

# perf's list of events is one word, commas and all
PERF_EVENTS=(-e "raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write"
             -e "syscalls:sys_enter_io_uring_enter,syscalls:sys_enter_epoll_wait")
PERF=0
if command -v perf >/dev/null \
    && perf stat "${PERF_EVENTS[@]}" -o /dev/null -- true >/dev/null 2>&1; then
    PERF=1
else
    log "perf cannot count the syscalls tracepoints here: no system call figures"
fi

bin_id() {  # bin: the commit it was built from, if it sits in a git work tree's target/
    local root
    root="$(cd "$(dirname "$1")/../.." 2>/dev/null && pwd)" || { echo "?"; return 0; }
    if git -C "$root" rev-parse --short HEAD >/dev/null 2>&1; then
        echo "$(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD 2>/dev/null || echo -dirty)"
    else
        echo "?"
    fi
}

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

udp_in() {  # the datagrams b's UDP has taken in (Udp InDatagrams in fc-b-PID)
    # shellcheck disable=SC2016  # awk's own $2
    ip netns exec "fc-b-$ID" awk '/^Udp:/ { if (seen) { print $2; exit } seen = 1 }' /proc/net/snmp
}

# measure BIN-INDEX TEST ROUND: one tapnet up, one iperf3 run, one JSON line to $SAMPLES
measure() {
    local i=$1 test=$2 round=$3 bin=${BINS[$1]} rate=0 f0 f1 c0 c1 t0 t1 u0 u1 p0 p1 cpid secs
    "$bin" up --threads "$THREADS" "${TAPNET_UP[@]}" "$TMP/lab.toml" \
        >"$TMP/tapnet.out" 2>"$TMP/tapnet.err" &
    TN_PID=$!
    wait_ready "$TN_PID" "$TMP/tapnet" " (bin $i)"
    ping_ok "fc-a-$ID" "$B_IP" "bin $i"
    start_server "fc-b-$ID" "$B_IP"
    secs=$((SECS + 3))
    [[ $test == flood && $PERF -eq 1 ]] && secs=$((2 * SECS + 3))
    # iperf3 paces bits of payload: 64 bytes a datagram; 0 is unpaced
    [[ $test == rate ]] && rate=$((RATE_KPPS * 1000 * 64 * 8))
    ip netns exec "fc-a-$ID" iperf3 -c "$B_IP" -p "$PORT" -u -l 64 -b "$rate" \
        -t "$secs" -J >"$TMP/iperf.json" 2>&1 &
    cpid=$!
    sleep 1.5
    f0="$(frames "$bin")"; c0="$(cpu_ticks "$TN_PID")"; u0="$(udp_in)"; t0="$(now)"
    sleep "$SECS"
    f1="$(frames "$bin")"; c1="$(cpu_ticks "$TN_PID")"; u1="$(udp_in)"; t1="$(now)"
    : >"$TMP/perf.txt"
    p0=0; p1=0
    if [[ $test == flood && $PERF -eq 1 ]]; then
        p0="$(frames "$bin")"
        perf stat -x, -o "$TMP/perf.txt" -p "$TN_PID" "${PERF_EVENTS[@]}" -- sleep "$SECS" \
            2>"$TMP/perf.err" || { cat "$TMP/perf.err" >&2; die "perf stat failed"; }
        p1="$(frames "$bin")"
    fi
    wait "$cpid" || { cat "$TMP/iperf.json" >&2; die "iperf3 client failed (bin $i, $test)"; }
    stop_server 50
    proc_live "$TN_PID" || { tail -20 "$TMP/tapnet.err" >&2; die "tapnet (bin $i) died during the run"; }
    stop_tapnet_hard "$TN_PID"
    TN_PID=""
    H sample "$SAMPLES" "$i" "$test" "$round" "$((f1 - f0))" "$((c1 - c0))" "$CLK_TCK" \
        "$t0" "$t1" "$((u1 - u0))" "$RATE_KPPS" "$((p1 - p0))" "$TMP/perf.txt"
}

write_helpers <<'PY'
def sample(samples, i, test, rnd, frames, ticks, tck, t0, t1, rx, rate, perf_frames, perf):
    frames, secs, rx, perf_frames = int(frames), float(t1) - float(t0), int(rx), int(perf_frames)
    calls = {}
    for line in open(perf):
        f = line.strip().split(",")
        if len(f) > 3 and f[0].replace(".", "").isdigit():
            calls[f[2].split(":")[-1].replace("sys_enter_", "")] = float(f[0])
    s = {"bin": int(i), "test": test, "round": int(rnd), "frames": frames, "seconds": secs,
         "fps": frames / secs if secs else None,
         "rx_pps": rx / secs if secs else None,
         "rx_of_offered": rx / secs / (int(rate) * 1e3) if test == "rate" and secs else None,
         "cpu_us_per_frame": int(ticks) / int(tck) * 1e6 / frames if frames else None,
         "cpu_pct": 100.0 * int(ticks) / int(tck) / secs if secs else None}
    for k, v in calls.items():
        s["calls_" + k] = v / perf_frames if perf_frames else None
    with open(samples, "a") as f:
        f.write(json.dumps(s) + "\n")

def report(samples, bins, ids, rate, threads, secs, repeat, json_out=""):
    S = [json.loads(l) for l in open(samples)]
    bins, ids = bins.split("\n"), ids.split("\n")
    def got(i, test, key):
        return [s[key] for s in S if s["bin"] == i and s["test"] == test and s.get(key) is not None]
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
        ("rate", "rx_of_offered", 100, "%.1f", "rate: received of offered (%)"),
        ("rate", "cpu_us_per_frame", 1, "%.3f", "rate: tapnet CPU a frame (us)"),
    ]
    print("tapnet frame cost, %s, %d round(s) of %s s, --threads %s, rate %s kpps" % (
        env_line(), int(repeat), secs, threads, rate))
    for i, b in enumerate(bins):
        print("bin %d: %s (%s)" % (i, b, ids[i]))
    print("\n%-34s" % "median (range)" + "".join("%-24s" % ("bin %d" % i) for i in range(len(bins)))
          + ("bin 1 / bin 0" if len(bins) == 2 else ""))
    out = {"bins": bins, "commits": ids, "rows": {}}
    for test, key, scale, fmt, label in rows:
        v = [got(i, test, key) for i in range(len(bins))]
        if not any(v):
            continue
        m = [statistics.median(x) if x else None for x in v]
        cell = lambda x: (fmt % (statistics.median(x) * scale) + " (" + fmt % (min(x) * scale)
                          + "-" + fmt % (max(x) * scale) + ")") if x else "-"
        line = "%-34s" % label + "".join("%-24s" % cell(x) for x in v)
        if len(bins) == 2 and m[0] and m[1] is not None:
            line += "%.2fx" % (m[1] / m[0])
        print(line)
        out["rows"][label.strip()] = m
    print("\n(per-run samples:)")
    for s in S:
        print("  bin %d %-5s round %d: %8.1f kpps forwarded, %8.1f kpps received, CPU %5.1f%%, %s us/frame%s" % (
            s["bin"], s["test"], s["round"], (s["fps"] or 0) / 1e3, (s["rx_pps"] or 0) / 1e3, s["cpu_pct"] or 0,
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
IDS=()
for b in "${BINS[@]}"; do IDS+=("$(bin_id "$b")"); done
H report "$SAMPLES" "$(IFS=$'\n'; echo "${BINS[*]}")" "$(IFS=$'\n'; echo "${IDS[*]}")" \
    "$RATE_KPPS" "$THREADS" "$SECS" "$REPEAT" "$JSON_OUT"
