#!/usr/bin/env bash
# bench/threads.sh: tapnet's datapath threads, 1, 2 and 2 pinned, beside the kernel
# bridge, in one run: where the time goes on this machine.
#
# Builds four two-namespace networks side by side, each a -> b on one bridge, MTU 1500,
# a at 10.241.0.2/24 and b at 10.241.0.3/24 in every one (a ping's flow hash is its
# addresses alone, so it takes the same TAP queue, the same thread, on t2 and t2p):
#   kernel: namespace thr-kbr-PID holds a Linux bridge and one end of two veth pairs;
#           the other ends are eth0 in thr-k-a-PID and thr-k-b-PID.
#   t1:     `tapnet up --threads 1`, lab thr-t1-PID, run inside thr-t1-h-PID (nsenter):
#           ports a (thr-t1-a-PID) and b (thr-t1-b-PID).
#   t2:     the same with `--threads 2` (names thr-t2-*).
#   t2p:    `--threads 2 --pin-threads` (names thr-t2p-*): tapnet binds its thread
#           k to the k-th CPU it may use, CPU k on 2 vCPUs (the script checks with
#           `taskset -p -c` on the tids `tapnet show threads --json` gives). Nothing
#           else is pinned.
# and runs R rounds; each round runs every test once on every network, the order of
# the networks alternating by round (odd: kernel t1 t2 t2p, even: the reverse):
#   tcp1 : iperf3 TCP, one stream, a -> b, N seconds, receiver bits/s
#   tcp4 : iperf3 TCP, 4 streams (-P 4), a -> b, N seconds, receiver bits/s
#   udp  : iperf3 -u -l 64 -b 0, one stream, a -> b, N seconds, packets/s received
#   ping : ping -c 50 -i 0.01 a -> b, average RTT
# Around every tapnet test it takes `tapnet show threads --json` and tapnet's
# /proc/PID/stat, and records each datapath thread's CPU use during the test (cpu_ms
# delta over the wall time between the two, as % of one core) and its frames and
# handed_off deltas, and the whole process's CPU (threads outside the datapath too).
# For every iperf3 test, on every network, it records the client's and the server's
# CPU (% of one core: utime+stime over the test, as iperf3 reports them in its JSON,
# cpu_utilization_percent host_total and remote_total).
# It prints the commit, CPU model, kernel, nproc, date and load, then one table of
# medians with the ratio of each tapnet configuration to the kernel, then one of the
# CPU and frames of every thread per test and configuration (medians), with the share
# of frames the worker forwarded itself in each run.
#
# Usage: bench/threads.sh [-r|--repeat R] [-t|--seconds N] [--json FILE] [--no-build]
#   R rounds (default 3), N seconds per iperf3 run (default 5). TAPNET_UP_ARGS
#   (environment) adds its words to every `tapnet up`, after --threads.
# Needs root, iproute2, iperf3, ping, python3, nsenter, taskset (util-linux).
# Everything it creates carries the script's PID in its name, lives in namespaces it
# creates, and is removed on exit, failure or Ctrl-C. Nothing is added to the root
# namespace. Exit status: 0 when the measurement worked, 2 on a failure, 130 on
# Ctrl-C, 143 on SIGTERM.
set -euo pipefail

BENCH_NAME=threads.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

extra_arg() {  # -r and -t, short for --repeat and --seconds
    case "$1" in
        -r) REPEAT="${2:?-r needs a value}"; ARGS_USED=2 ;;
        -t) SECS="${2:?-t needs a value}"; ARGS_USED=2 ;;
    esac
}
parse_args "$@"

require_root "namespaces, bridge, TAP, taskset on tapnet's threads"
require_cmds "apt-get install -y iproute2 iperf3 iputils-ping python3 util-linux" \
    ip iperf3 ping python3 nsenter taskset timeout

# ---------------------------------------------------------------- names (unique per run)
ID=$$
K_BR_NS="thr-kbr-$ID"            # kernel bridge host
K_A_NS="thr-k-a-$ID"
K_B_NS="thr-k-b-$ID"
K_BR="kbr$ID"                    # bridge device inside K_BR_NS
K_VA="kva$ID"                    # veth ends inside K_BR_NS (peers are eth0 in K_A/K_B)
K_VB="kvb$ID"
K_A_IP=10.241.0.2                # a and b, on every network
K_B_IP=10.241.0.3
CFGS=(t1 t2 t2p)                 # the tapnet configurations
declare -A THREADS=([t1]=1 [t2]=2 [t2p]=2)
declare -A PIN=([t1]="" [t2]="" [t2p]="--pin-threads")
declare -A LAB HOME_NS A_NS B_NS TN_PID
for c in "${CFGS[@]}"; do
    LAB[$c]="thr-$c-$ID"
    HOME_NS[$c]="thr-$c-h-$ID"   # where that tapnet runs (its TAPs are made there)
    A_NS[$c]="thr-$c-a-$ID"
    B_NS[$c]="thr-$c-b-$ID"
    TN_PID[$c]=""
done
PORT=5201                        # iperf3 port, inside our own namespaces
TESTS=(tcp1 tcp4 udp ping)
NPROC="$(nproc)"

OUR_NS=("$K_BR_NS" "$K_A_NS" "$K_B_NS")
OUR_LABS=()
for c in "${CFGS[@]}"; do
    OUR_NS+=("${HOME_NS[$c]}" "${A_NS[$c]}" "${B_NS[$c]}")
    OUR_LABS+=("${LAB[$c]}")
done

TMP="$(mktemp -d /tmp/tapnet-bench-threads.XXXXXX)"
SRV_PID=""

# ---------------------------------------------------------------- teardown
teardown() {  # called by lib.sh's EXIT trap, which then deletes $TMP
    if [[ -n "$SRV_PID" ]]; then kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null; fi
    # then everything else in our namespaces (an iperf3 client, a ping), the tapnets,
    # the namespaces (with their veths, bridge and TAPs), the labs' files
    teardown_labs "${TN_PID[t1]}" "${TN_PID[t2]}" "${TN_PID[t2p]}"
}
bench_traps

# ---------------------------------------------------------------- python helpers
write_helpers <<'PY'
CFGS = ("kernel", "t1", "t2", "t2p")
CFG_LABEL = {"kernel": "kernel", "t1": "tapnet 1 thread", "t2": "2 threads", "t2p": "2 threads pinned"}

def ends_cpu(path):
    # the iperf3 client's and server's CPU over the test (getrusage: utime+stime), % of one core
    c = load(path)["end"].get("cpu_utilization_percent", {})
    print(json.dumps({"client_cpu_pct": c.get("host_total"), "server_cpu_pct": c.get("remote_total")}))

def tids(path):
    # "thread tid" per datapath thread
    for t in json.load(open(path))["threads"]:
        print(t["thread"], t["tid"])

def threads_delta(th0, th1, t0, t1, c0, c1, tck):
    # JSON members (no braces): wall_s, tapnet_cpu_pct (whole process) and per thread
    # its CPU (% of one core over the wall time), frames and handed_off deltas
    a = {t["thread"]: t for t in json.load(open(th0))["threads"]}
    b = {t["thread"]: t for t in json.load(open(th1))["threads"]}
    wall = float(t1) - float(t0)
    out = []
    for k in sorted(b):
        if k not in a or a[k]["tid"] != b[k]["tid"]:
            sys.exit("thread %d changed during the test" % k)
        cpu = None
        if a[k]["cpu_ms"] is not None and b[k]["cpu_ms"] is not None:
            cpu = 100.0 * (b[k]["cpu_ms"] - a[k]["cpu_ms"]) / 1000.0 / wall
        out.append({"thread": k, "tid": b[k]["tid"], "cpu_pct": cpu,
                    "frames": b[k]["frames"] - a[k]["frames"],
                    "handed_off": b[k]["handed_off"] - a[k]["handed_off"]})
    print('"wall_s": %.3f, "tapnet_cpu_pct": %.2f, "threads": %s' % (
        wall, 100.0 * (int(c1) - int(c0)) / int(tck) / wall, json.dumps(out)))

def stop_file(path):
    # what stop_tapnet wrote: the exit status, then one line per leftover
    lines = open(path).read().split("\n")
    return {"exit_status": int(lines[0]), "leftovers": [l for l in lines[1:] if l]}

def meta(path, secs, repeat, took, pin_path, stops, *env_):
    stops = stops.split(",")
    json.dump({"seconds": int(secs), "repeat": int(repeat), "took_s": float(took),
               "pinning": [l.rstrip("\n") for l in open(pin_path)],
               "tapnet": {c: stop_file(s) for c, s in zip(("t1", "t2", "t2p"), stops)},
               "env": dict(zip(("git", "cpu_model", "kernel", "nproc", "date", "iperf3",
                                "tapnet_up_args", "loadavg_start", "loadavg_end"),
                               env_[:3] + (int(env_[3]),) + env_[4:]))},
              open(path, "w"))

def worker_share(s):
    # the share of the frames tapnet took in that the worker forwarded itself: the
    # others thread 0 read itself or was handed
    th = s.get("threads", [])
    if len(th) < 2:
        return None
    total = th[0]["frames"] + sum(t["frames"] + t["handed_off"] for t in th[1:])
    return 100.0 * sum(t["frames"] for t in th[1:]) / total if total else None

def report(samples_path, meta_path, json_out=""):
    meta, S, out = run_data(samples_path, meta_path)
    e = meta["env"]
    out.update({"took_s": meta["took_s"], "pinning": meta["pinning"], "threads_table": []})
    print("tapnet datapath threads vs the Linux kernel bridge: commit %s, %s, kernel %s, %s CPUs, %s"
          % (e["git"], e["cpu_model"], e["kernel"], e["nproc"], e["date"]))
    print("%s; %d round(s) x %d s per iperf3 run, took %.0f s; load average %s at the start, %s at the end%s"
          % (e["iperf3"], meta["repeat"], meta["seconds"], meta["took_s"], e["loadavg_start"],
             e["loadavg_end"], "; TAPNET_UP_ARGS=" + e["tapnet_up_args"] if e["tapnet_up_args"] else ""))
    for l in meta["pinning"]:
        print(l)
    rows = [
        # test, label, key, scale, fmt
        ("tcp1", "TCP 1 stream (Gbit/s)", "bps", 1e-9, "%.2f"),
        ("tcp4", "TCP 4 streams (Gbit/s)", "bps", 1e-9, "%.2f"),
        ("udp", "UDP 64 B rx (kpps)", "pps", 1e-3, "%.1f"),
        ("ping", "ping -i 0.01 RTT (us)", "avg_us", 1.0, "%.1f"),
    ]
    print()
    print("%-23s %-9s %-17s %-17s %-17s" % ("test", *(CFG_LABEL[c] for c in CFGS)))
    for test, label, key, scale, fmt in rows:
        k = med(S, test, "kernel", key)
        cells, o = [], {"metric": key, "unit": label[label.find("(") + 1:label.find(")")]}
        for c in CFGS:
            v = med(S, test, c, key)
            o[c] = v * scale if v is not None else None
            if c == "kernel":
                cells.append(fmt % (v * scale) if v is not None else "-")
                continue
            r = v / k if v is not None and k else None
            o[c + "_ratio"] = r
            cells.append("-" if v is None else (fmt % (v * scale) + (" (%.2fx)" % r if r is not None else "")))
        print("%-23s %-9s %-17s %-17s %-17s" % (label, *cells))
        out["tests"][test] = o
    lo = {c: med(S, "udp", c, "loss_pct") for c in CFGS}
    print("%-23s %-9s %-17s %-17s %-17s" % ("  UDP loss (%)", *("%.1f" % lo[c] if lo[c] is not None else "-" for c in CFGS)))
    for c in CFGS:
        out["tests"]["udp"][c + "_loss_pct"] = lo[c]
    for key in ("min_us", "max_us"):
        v = {c: med(S, "ping", c, key) for c in CFGS}
        print("%-23s %-9s %-17s %-17s %-17s" % ("  ping RTT %s (us)" % key[:3], *("%.0f" % v[c] if v[c] is not None else "-" for c in CFGS)))
        for c in CFGS:
            out["tests"]["ping"][c + "_" + key] = v[c]
    print("(medians of %d run(s) each; ratios to the kernel; for the RTT lower is better)" % meta["repeat"])
    print("\nper-run samples:")
    for test, label, key, scale, fmt in rows:
        for c in CFGS:
            print("  %-5s %-17s %s" % (test, CFG_LABEL[c], "  ".join(fmt % (v * scale) for v in vals(S, test, c, key))))

    print("\nCPU (%% of one core, %d = every CPU busy) and frames per test, medians; thread 0 has the"
          " bridges, thread 1 is the worker:" % (100 * int(e["nproc"])))
    hdr = ("test", "config", "thr0 CPU", "thr0 frames", "thr1 CPU", "thr1 frames", "thr1 handed",
           "tapnet", "client", "server", "sum", "worker share per run")
    f = "%-5s %-17s %8s %11s %8s %11s %11s %7s %7s %7s %6s  %s"
    print(f % hdr)
    def md(v):
        v = [x for x in v if x is not None]
        return statistics.median(v) if v else None
    def fm(v, fmt):
        return "-" if v is None else fmt % v
    keys = ("thread0_cpu_pct", "thread0_frames", "thread1_cpu_pct", "thread1_frames",
            "thread1_handed_off", "tapnet_cpu_pct", "client_cpu_pct", "server_cpu_pct", "sum_cpu_pct")
    fmts = ("%.0f%%", "%d", "%.0f%%", "%d", "%d", "%.0f%%", "%.0f%%", "%.0f%%", "%.0f%%")
    for test, *_ in rows:
        for c in CFGS:
            ss = [s for s in S if s["test"] == test and s["impl"] == c]
            if not ss:
                continue
            th = lambda k, key: [next((t[key] for t in s.get("threads", []) if t["thread"] == k), None) for s in ss]
            tn = [s.get("tapnet_cpu_pct") for s in ss]
            cl = [s.get("client_cpu_pct") for s in ss]
            sv = [s.get("server_cpu_pct") for s in ss]
            tot = [None if None in (a, b) else a + b + (t or 0) for a, b, t in zip(cl, sv, tn)]
            share = [worker_share(s) for s in ss]
            meds = [md(v) for v in (th(0, "cpu_pct"), th(0, "frames"), th(1, "cpu_pct"), th(1, "frames"),
                                    th(1, "handed_off"), tn, cl, sv, tot)]
            print(f % ((test, CFG_LABEL[c]) + tuple(fm(v, x) for v, x in zip(meds, fmts))
                       + (" ".join("%.0f%%" % x for x in share if x is not None),)))
            o = {"test": test, "config": c}
            o.update(zip(keys, meds))
            o["worker_share_pct_per_run"] = share
            out["threads_table"].append(o)
    print("(tapnet: the whole process, the control thread too; client and server: iperf3's own\n"
          " figures; sum: the three; worker share: the frames the worker forwarded itself out of\n"
          " all frames tapnet took in, per run)")
    for c in ("t1", "t2", "t2p"):
        exit_line("tapnet %s" % c, meta["tapnet"][c], "\n" if c == "t1" else "")
    write_json(out, json_out)
PY

# ---------------------------------------------------------------- build
build_tapnet
ns_free " (not ours: left alone)"
for lab in "${OUR_LABS[@]}"; do
    [[ ! -e "/run/tapnet/$lab.sock" ]] || die "a lab $lab already runs (not ours: left alone)"
done
T_START="$(now)"
LOAD0="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- kernel bridge
log "kernel: bridge $K_BR in $K_BR_NS, veth to $K_A_NS ($K_A_IP) and $K_B_NS ($K_B_IP)"
kernel_bridge "$K_BR_NS" "$K_BR" "$K_VA" "$K_VB" "$K_A_NS" "$K_A_IP" "$K_B_NS" "$K_B_IP"

# ---------------------------------------------------------------- tapnet x 3
for c in "${CFGS[@]}"; do
    cat >"$TMP/$c.toml" <<EOF
name = "${LAB[$c]}"
[[bridge]]
name = "br0"
subnet = "10.241.0.0/24"
[[port]]
name = "a"
bridge = "br0"
netns = "${A_NS[$c]}"
ip = "$K_A_IP/24"
[[port]]
name = "b"
bridge = "br0"
netns = "${B_NS[$c]}"
ip = "$K_B_IP/24"
EOF
    "$BIN" check "$TMP/$c.toml" >/dev/null || die "tapnet check refused lab ${LAB[$c]}"
    log "$c: tapnet up --threads ${THREADS[$c]}${PIN[$c]:+ ${PIN[$c]}}, lab ${LAB[$c]} in ${HOME_NS[$c]}: ${A_NS[$c]} -> ${B_NS[$c]}"
    new_ns "${HOME_NS[$c]}"
    # shellcheck disable=SC2086  # PIN is one word or none
    nsenter --net="/run/netns/${HOME_NS[$c]}" "$BIN" up --threads "${THREADS[$c]}" ${PIN[$c]} "${TAPNET_UP[@]}" \
        "$TMP/$c.toml" >"$TMP/tn-$c.out" 2>"$TMP/tn-$c.err" &
    TN_PID[$c]=$!
done
for c in "${CFGS[@]}"; do wait_ready "${TN_PID[$c]}" "$TMP/tn-$c" " ($c)"; done

tapnet_alive() {  # cfg
    proc_live "${TN_PID[$1]}" && return 0
    echo "--- tapnet ($1) stderr:" >&2; tail -20 "$TMP/tn-$1.err" >&2
    die "tapnet ($1) died during the run"
}

show_threads() {  # cfg file
    "$BIN" show threads --json --lab "${LAB[$1]}" >"$2" || die "tapnet show threads ($1) failed"
}

# ---------------------------------------------------------------- threads, pinning
# Every tapnet must have its datapath threads running (a tid each) and as many as asked.
for c in "${CFGS[@]}"; do
    for _ in $(seq 30); do
        show_threads "$c" "$TMP/th-$c.json"
        H tids "$TMP/th-$c.json" >"$TMP/tids-$c"
        awk '$2 == 0 { z = 1 } END { exit !z }' "$TMP/tids-$c" || break
        sleep 0.1
    done
    [[ "$(wc -l <"$TMP/tids-$c")" -eq ${THREADS[$c]} ]] \
        || die "tapnet ($c) has $(wc -l <"$TMP/tids-$c") datapath threads, not ${THREADS[$c]}"
    ! awk '$2 == 0 { z = 1 } END { exit !z }' "$TMP/tids-$c" || die "tapnet ($c): a datapath thread has no tid yet"
done
# The CPUs this script may use (tapnet, its child, inherits them): t2p's thread k
# belongs on the k-th, wrapping around.
mapfile -t CPUS < <(python3 -c 'import os; print("\n".join(map(str, sorted(os.sched_getaffinity(0)))))')
pinned_cpu() { echo "${CPUS[$(($1 % ${#CPUS[@]}))]}"; }
affinity() {  # tid -> its CPU list
    taskset -p -c "$1" | sed 's/.*: *//'
}
: >"$TMP/pinning"
for c in "${CFGS[@]}"; do
    line="$c (pid ${TN_PID[$c]}):"
    while read -r k tid; do line+=" thread $k tid $tid CPUs $(affinity "$tid");"; done <"$TMP/tids-$c"
    echo "${line%;}" >>"$TMP/pinning"
done
log "affinity (t2p pinned by tapnet up --pin-threads): $(tr '\n' ' ' <"$TMP/pinning")"
while read -r k tid; do
    [[ "$(affinity "$tid")" == "$(pinned_cpu "$k")" ]] || die "t2p thread $k (tid $tid) is not pinned to CPU $(pinned_cpu "$k"): $(affinity "$tid")"
done <"$TMP/tids-t2p"

# ---------------------------------------------------------------- measurement
ends() {  # cfg -> client ns, server ns, server ip
    if [[ $1 == kernel ]]; then echo "$K_A_NS $K_B_NS $K_B_IP"
    else echo "${A_NS[$1]} ${B_NS[$1]} $K_B_IP"; fi
}

# snap CFG N: tapnet's threads and process CPU, and the time, before (0) or after (1)
snap() {
    [[ $1 == kernel ]] && return 0
    tapnet_alive "$1"
    show_threads "$1" "$TMP/snap$2.json"
    cpu_ticks "${TN_PID[$1]}" >"$TMP/snap$2.ticks" || tapnet_alive "$1"
    now >"$TMP/snap$2.t"
}

try_iperf() {  # iperf3_tries' TRY: sees run_one's locals
    snap "$cfg" 0
    case $test in
        tcp1) timeout $((SECS + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -t "$SECS" -J >"$out" 2>&1 || TRY_RC=$? ;;
        tcp4) timeout $((SECS + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -t "$SECS" -P 4 -J >"$out" 2>&1 || TRY_RC=$? ;;
        udp)  timeout $((SECS + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -u -l 64 -b 0 -t "$SECS" -J >"$out" 2>&1 || TRY_RC=$? ;;
    esac
    snap "$cfg" 1
}

# run_one TEST CFG ROUND: one measurement, appends a JSON line to $SAMPLES
run_one() {
    local test=$1 cfg=$2 round=$3 cns sns sip out parsed extra="" kind
    read -r cns sns sip <<<"$(ends "$cfg")"
    out="$TMP/$test-$cfg-$round.out"
    if [[ $test == ping ]]; then
        local rc=0
        snap "$cfg" 0
        timeout 60 ip netns exec "$cns" ping -c 50 -i 0.01 -q -w 30 "$sip" >"$out" 2>&1 || rc=$?
        snap "$cfg" 1
        if [[ $rc -ne 0 ]]; then
            echo "--- ping via $cfg, exit status $rc:" >&2; tail -20 "$out" >&2
            [[ $cfg != kernel ]] && tapnet_alive "$cfg"
            die "ping via $cfg failed"
        fi
        parsed="$(H ping "$out")" || die "cannot read ping result via $cfg"
        kind=ping
    else
        iperf3_tries "$test" "$cfg" "$round" "$sns" "$sip" "$out" try_iperf
        parsed="$(H "${test%[0-9]}" "$out")" || die "cannot read $test result via $cfg"
        extra=", $(H ends_cpu "$out" | sed 's/^{//; s/}$//')"
        kind=tcp_bps
        [[ $test == udp ]] && kind=udp
    fi
    if [[ $cfg != kernel ]]; then
        extra+=", $(H threads_delta "$TMP/snap0.json" "$TMP/snap1.json" "$(cat "$TMP/snap0.t")" \
            "$(cat "$TMP/snap1.t")" "$(cat "$TMP/snap0.ticks")" "$(cat "$TMP/snap1.ticks")" "$CLK_TCK")" \
            || die "cannot read tapnet's threads ($cfg)"
    fi
    H sample "{\"test\": \"$test\", \"impl\": \"$cfg\", \"round\": $round}" "$parsed" "{${extra#, }}" >>"$SAMPLES" \
        || die "cannot record $test via $cfg"
    log "$(printf '%-4s %-6s round %d: %s' "$test" "$cfg" "$round" "$(H line "$kind" "$parsed")")"
}

for c in kernel "${CFGS[@]}"; do
    read -r cns _ sip <<<"$(ends "$c")"
    ping_ok "$cns" "$sip" "$c"
done
log "every network answers ping; $REPEAT round(s) of ${TESTS[*]} on kernel ${CFGS[*]}, ${SECS}s per iperf3 run"

for ((r = 1; r <= REPEAT; r++)); do
    if (( r % 2 == 1 )); then order=(kernel t1 t2 t2p); else order=(t2p t2 t1 kernel); fi
    for test in "${TESTS[@]}"; do
        for cfg in "${order[@]}"; do run_one "$test" "$cfg" "$r"; done
    done
done

# ---------------------------------------------------------------- stop tapnet
# The pinned threads must still be where they were put.
while read -r k tid; do
    [[ "$(affinity "$tid")" == "$(pinned_cpu "$k")" ]] || die "t2p thread $k (tid $tid) is no longer pinned: $(affinity "$tid")"
done <"$TMP/tids-t2p"
STOPS=""
for c in "${CFGS[@]}"; do
    tapnet_alive "$c"
    stop_tapnet "${TN_PID[$c]}" "$c" "${LAB[$c]}" "${A_NS[$c]}" "${B_NS[$c]}" >"$TMP/stop-$c"
    TN_PID[$c]=""
    STOPS+="${STOPS:+,}$TMP/stop-$c"
done
log "tapnet stopped: exit status $(for c in "${CFGS[@]}"; do printf '%s %s ' "$c" "$(head -1 "$TMP/stop-$c")"; done)"

TOOK="$(python3 -c 'import sys; print("%.1f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$T_START" "$(now)")"
H meta "$TMP/meta.json" "$SECS" "$REPEAT" "$TOOK" "$TMP/pinning" "$STOPS" \
    "$(git_id)" "$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -1)" "$(uname -r)" \
    "$NPROC" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(iperf3 --version | head -1)" "${TAPNET_UP_ARGS-}" \
    "$LOAD0" "$(cut -d' ' -f1-3 /proc/loadavg)"
H report "$SAMPLES" "$TMP/meta.json" "$JSON_OUT"
check_stops "$TMP/stop-t1" "$TMP/stop-t2" "$TMP/stop-t2p"
