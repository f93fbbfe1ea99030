# shellcheck shell=bash
# bench/lib.sh: what bench/compare.sh, compare-l3.sh and compare-vxlan.sh share.
#
# Sourced, never run. A script sets `set -euo pipefail` and BENCH_NAME (its name in
# messages, e.g. compare.sh) first, then sources this file, which only defines functions
# and sets ROOT, BIN and CLK_TCK. Everything the script creates stays the script's own:
# it keeps its names, namespaces, processes and its teardown(), which bench_exit (the
# EXIT trap installed by bench_traps) calls before it deletes $TMP and exits.
#
# Under `set -e` a function whose last command fails makes its caller fail too, so every
# function here that runs outside the EXIT trap ends on a command that succeeds.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/target/release/tapnet"

die() { echo "$BENCH_NAME: error: $*" >&2; exit 2; }
log() { echo "# $*" >&2; }

# ---------------------------------------------------------------- options
usage() {  # the script's header comment, up to `set -euo pipefail`
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

# parse_args "$@": sets SECS, REPEAT, JSON_OUT (made absolute), BUILD and FIRST_ROUND
# (--first-round N: the number of the first round, whose parity picks which network
# goes first, so that a driver running one round at a time still alternates). An option it
# does not know goes to the script's extra_arg "$@", if it has one, which sets
# ARGS_USED to the number of words it took; none taken is an unknown argument.
parse_args() {
    SECS=5
    REPEAT=3
    JSON_OUT=""
    BUILD=1
    FIRST_ROUND=1
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --seconds) SECS="${2:?--seconds needs a value}"; shift 2 ;;
            --seconds=*) SECS="${1#*=}"; shift ;;
            --repeat) REPEAT="${2:?--repeat needs a value}"; shift 2 ;;
            --repeat=*) REPEAT="${1#*=}"; shift ;;
            --json) JSON_OUT="${2:?--json needs a file}"; shift 2 ;;
            --json=*) JSON_OUT="${1#*=}"; shift ;;
            --no-build) BUILD=0; shift ;;
            --first-round) FIRST_ROUND="${2:?--first-round needs a value}"; shift 2 ;;
            --first-round=*) FIRST_ROUND="${1#*=}"; shift ;;
            -h|--help) usage; exit 0 ;;
            *)
                ARGS_USED=0
                if declare -F extra_arg >/dev/null; then extra_arg "$@"; fi
                [[ $ARGS_USED -gt 0 ]] || { echo "$BENCH_NAME: unknown argument: $1 (see --help)" >&2; exit 1; }
                shift "$ARGS_USED" ;;
        esac
    done
    [[ "$SECS" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: --seconds must be a positive integer" >&2; exit 1; }
    [[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: --repeat must be a positive integer" >&2; exit 1; }
    [[ "$FIRST_ROUND" =~ ^[1-9][0-9]*$ ]] || { echo "$BENCH_NAME: --first-round must be a positive integer" >&2; exit 1; }
    if [[ -n "$JSON_OUT" && "$JSON_OUT" != /* ]]; then JSON_OUT="$PWD/$JSON_OUT"; fi
    return 0
}

# veth NS_A IF_A ADDR_A NS_B IF_B ADDR_B: a veth pair (MTU 1500) between two of our
# namespaces, addressed and up
veth() {
    ip -n "$1" link add "$2" mtu 1500 type veth peer name "$5" mtu 1500 netns "$4"
    ip -n "$1" addr add "$3" dev "$2"
    ip -n "$4" addr add "$6" dev "$5"
    ip -n "$1" link set "$2" up
    ip -n "$4" link set "$5" up
}

# kernel_bridge BR_NS BR VA VB A_NS A_IP B_NS B_IP: the kernel baseline. New
# namespaces BR_NS (bridge BR, STP off, forward delay 0, MTU 1500), A_NS and B_NS, each
# of these with eth0 (A_IP/24, B_IP/24), a veth whose other end (VA, VB) is on BR.
kernel_bridge() {
    local br_ns=$1 br=$2 va=$3 vb=$4 a_ns=$5 a_ip=$6 b_ns=$7 b_ip=$8 v
    new_ns "$br_ns" "$a_ns" "$b_ns"
    ip -n "$br_ns" link add "$br" type bridge stp_state 0 forward_delay 0
    ip -n "$br_ns" link set "$br" mtu 1500
    ip -n "$br_ns" link add "$va" mtu 1500 type veth peer name eth0 mtu 1500 netns "$a_ns"
    ip -n "$br_ns" link add "$vb" mtu 1500 type veth peer name eth0 mtu 1500 netns "$b_ns"
    for v in "$va" "$vb"; do ip -n "$br_ns" link set "$v" master "$br" up; done
    ip -n "$br_ns" link set "$br" up
    ip -n "$a_ns" addr add "$a_ip/24" dev eth0
    ip -n "$b_ns" addr add "$b_ip/24" dev eth0
    ip -n "$a_ns" link set eth0 up
    ip -n "$b_ns" link set eth0 up
}

require_root() {  # why
    [[ $EUID -eq 0 ]] || die "must run as root ($1)"
}

require_cmds() {  # install-hint command...: dies on the first command not found
    local hint=$1 c
    shift
    for c in "$@"; do
        command -v "$c" >/dev/null || die "$c not found${hint:+ ($hint)}"
    done
}

# ---------------------------------------------------------------- processes and time
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
# shellcheck disable=SC2034  # read by the scripts
CLK_TCK="$(getconf CLK_TCK)"

preemptions() {  # involuntary context switches of a process's threads, summed: the
                 # times one was switched out while it could still run
    local n=0 f v
    for f in /proc/"$1"/task/*/status; do
        v="$(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$f" 2>/dev/null)" || continue
        n=$((n + ${v:-0}))
    done
    [[ -d /proc/$1 ]] && echo "$n"
}

git_id() {  # the commit, with -dirty when the work tree differs from it
    echo "$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo -dirty)"
}

# ---------------------------------------------------------------- teardown
# bench_traps: after TMP and every variable the script's teardown() reads are set.
bench_exit() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    teardown
    rm -rf "$TMP"
    exit "$rc"
}
bench_traps() {
    trap bench_exit EXIT
    trap 'echo "$BENCH_NAME: interrupted" >&2; exit 130' INT
    trap 'echo "$BENCH_NAME: terminated" >&2; exit 143' TERM
}

stop_tapnet_hard() {  # pid: SIGTERM while it is still our tapnet, SIGKILL after 10 s, reap
    local pid=$1
    if proc_live "$pid" && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == tapnet ]]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 100); do proc_live "$pid" || break; sleep 0.1; done
        if proc_live "$pid"; then
            echo "$BENCH_NAME: tapnet (pid $pid) ignored SIGTERM for 10 s; killing it" >&2
            kill -KILL "$pid" 2>/dev/null
        fi
    fi
    wait "$pid" 2>/dev/null
}

# Set once ns_free found every name of OUR_NS free: only then are they ours to clean.
OURS=${OURS:-0}

kill_in_ns() {  # [pid...]: SIGKILL every process in the namespaces of OUR_NS but these
    local ns pid keep spare
    [[ $OURS -eq 1 ]] || return 0
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] || continue
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            spare=0
            for keep in "$@"; do [[ $pid == "$keep" ]] && spare=1; done
            [[ $spare -eq 1 ]] || kill -KILL "$pid" 2>/dev/null
        done
    done
    return 0
}

del_ns() {  # delete those namespaces of OUR_NS that exist (if they are ours)
    local ns
    [[ $OURS -eq 1 ]] || return 0
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] && ip netns del "$ns" 2>/dev/null
    done
    return 0
}

# teardown_labs TAPNET_PID...: the rest of the teardown of a script whose tapnets run
# the labs of OUR_LABS in namespaces of OUR_NS (empty pids are skipped, in that order).
teardown_labs() {
    local pid ns lab
    # Anything running inside our namespaces was started by the script. Kill it before
    # tapnet removes the namespaces it created, so that nothing survives in an unnamed
    # namespace; tapnet itself gets SIGTERM and the chance to tear its lab down.
    kill_in_ns "$@"
    for pid in "$@"; do
        [[ -n "$pid" ]] && stop_tapnet_hard "$pid"
    done
    kill_in_ns
    # Deleting a namespace takes its devices with it: veth ends (and so their peers),
    # bridges, vxlan devices, TAPs, nft tables.
    del_ns
    # A tapnet killed hard leaves its control socket and state file; the names are ours.
    for lab in "${OUR_LABS[@]}"; do
        rm -f "/run/tapnet/$lab.sock" "/run/tapnet/$lab.state"
    done
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] && echo "$BENCH_NAME: warning: namespace $ns is still there" >&2
    done
    return 0
}

# ---------------------------------------------------------------- python helpers
# write_helpers <<'PY' ... PY: $TMP/h.py is the shared Python below, then the script's
# own (its report() and whatever else only it needs), then the dispatch: `H NAME ARG...`
# calls NAME(ARG...). Also starts $SAMPLES, one JSON line per measurement.
write_helpers() {
    {
        cat <<'PY'
import json, re, statistics, sys

def load(path):
    with open(path) as f:
        d = json.load(f)
    if "error" in d:
        sys.exit("iperf3: " + d["error"])
    return d

def ping(path):
    t = open(path).read()
    m = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", t)
    l = re.search(r"(\d+) packets transmitted, (\d+) received", t)
    if not m or not l:
        sys.exit("cannot parse ping output:\n" + t)
    print(json.dumps({"min_us": float(m.group(1)) * 1000, "avg_us": float(m.group(2)) * 1000,
                      "max_us": float(m.group(3)) * 1000, "mdev_us": float(m.group(4)) * 1000,
                      "sent": int(l.group(1)), "received": int(l.group(2))}))

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

def port(path, name):
    # rx = frames tapnet read from the port, tx = frames tapnet wrote to it
    for p in json.load(open(path))["ports"]:
        if p["name"] == name:
            print(p["rx_packets"], p["rx_bytes"], p["tx_packets"], p["tx_bytes"])
            return
    sys.exit("port %s not in show ports output" % name)

def sample(base, parsed, extra=""):
    d = json.loads(base); d.update(json.loads(parsed)); d.update(json.loads(extra or "{}"))
    print(json.dumps(d))

def cpu_wall(tck, t0, t1, *cpus):
    # cpus: NAME TICKS0 TICKS1 ...; prints JSON members (no braces): each NAME in
    # seconds of CPU, then "wall_s"
    m = ['"%s": %.3f' % (cpus[i], (int(cpus[i + 2]) - int(cpus[i + 1])) / int(tck))
         for i in range(0, len(cpus), 3)]
    m.append('"wall_s": %.3f' % (float(t1) - float(t0)))
    print(", ".join(m))

LINES = {  # one measurement, as the log line says it
    "tcp": lambda d: "%.2f Gbit/s, %s retransmits" % (d["bps"] / 1e9, d["retransmits"]),
    "tcp_bps": lambda d: "%.2f Gbit/s" % (d["bps"] / 1e9),
    "udp": lambda d: "%.1f kpps rx, %.1f kpps tx, loss %.2f%%" % (d["pps"] / 1e3, d["tx_pps"] / 1e3, d["loss_pct"]),
    "ping": lambda d: "avg %.1f us (min %.1f, max %.1f), %d/%d replies" % (
        d["avg_us"], d["min_us"], d["max_us"], d["received"], d["sent"]),
}

def line(kind, parsed):
    print(LINES[kind](json.loads(parsed)))

def stopped(tck, c0, c1, t0, t1, stop):
    # a tapnet's CPU and wall time from ready to SIGTERM, and what stop_tapnet wrote
    lines = open(stop).read().split("\n")
    return {"cpu_s": (int(c1) - int(c0)) / int(tck), "wall_s": float(t1) - float(t0),
            "exit_status": int(lines[0]), "leftovers": [l for l in lines[1:] if l]}

def env(kernel, iperf3, cpus, git):
    return {"kernel": kernel, "iperf3": iperf3, "cpus": int(cpus), "git": git}

# ---- report
def run_data(samples_path, meta_path):
    # the run's meta, its samples, and the start of its --json output
    meta = json.load(open(meta_path))
    S = [json.loads(l) for l in open(samples_path) if l.strip()]
    out = {"seconds": meta["seconds"], "repeat": meta["repeat"], "tests": {},
           "tapnet": meta.get("tapnet", {}), "env": meta.get("env", {}), "samples": S}
    return meta, S, out

def vals(S, test, impl, key="bps"):
    return [s[key] for s in S if s["test"] == test and s["impl"] == impl and s.get(key) is not None]

def med(S, test, impl, key="bps"):
    v = vals(S, test, impl, key)
    return statistics.median(v) if v else None

def udp_drop_rows(S, out):
    # where the UDP packets were lost, as a share of those sent (median over the runs)
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
    # How often tapnet's threads were switched out while runnable, per frame read from
    # a: a woken receiver taking the core from the thread that woke it, frame by frame.
    per = [s["preempted"] / s["a_rx_frames"] for s in S
           if s["test"] == "udp" and s["impl"] == "tapnet" and s.get("a_rx_frames") and "preempted" in s]
    if per:
        p = statistics.median(per)
        print("%-21s %-16s %-10s" % ("  tapnet preempted", "", "%.2f a frame" % p))
        out["tests"]["udp"]["tapnet_preempted_per_frame"] = p

def cpu_rows(S, out, tests, width):
    # one tapnet's CPU time per test, over the tapnet runs of that test
    print("\ntapnet CPU time (utime+stime from /proc/PID/stat, all threads):")
    for test in tests:
        c = sum(vals(S, test, "tapnet", "cpu_s")); w = sum(vals(S, test, "tapnet", "wall_s"))
        if w:
            print("  %-*s %7.2f s CPU over %7.2f s  = %5.1f%% of one core" % (width, test, c, w, 100 * c / w))
            out["tests"][test]["tapnet_cpu_pct_of_core"] = 100 * c / w

def exit_line(who, st, before=""):
    if "exit_status" in st:
        print("%s%s exit status after SIGTERM: %s; left behind: %s" % (
            before, who, st["exit_status"], ", ".join(st.get("leftovers", [])) or "nothing"))

def write_json(out, json_out):
    if json_out:
        with open(json_out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        print("\nJSON written to " + json_out)

# ---- the script's own
PY
        cat
        cat <<'PY'

globals()[sys.argv[1]](*sys.argv[2:])
PY
    } >"$TMP/h.py"
    SAMPLES="$TMP/samples.jsonl"
    : >"$SAMPLES"
}
H() { python3 "$TMP/h.py" "$@"; }

# ---------------------------------------------------------------- setup
build_tapnet() {  # cargo build unless --no-build; the binary must be there either way
    if [[ $BUILD -eq 1 ]]; then
        log "building: cargo build --release -p tapnet"
        (cd "$ROOT" && cargo build --release -p tapnet) >"$TMP/build.log" 2>&1 \
            || { cat "$TMP/build.log" >&2; die "cargo build failed"; }
    fi
    [[ -x "$BIN" ]] || die "$BIN not found (build it, or drop --no-build)"
}

ns_free() {  # [what-then]: dies if a namespace of OUR_NS already exists
    local ns
    for ns in "${OUR_NS[@]}"; do
        [[ ! -e "/run/netns/$ns" ]] || die "namespace $ns already exists${1-}"
    done
    OURS=1
}

new_ns() {  # ns...: new namespaces, loopback up
    local ns
    for ns in "$@"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
}

# ---------------------------------------------------------------- tapnet
# TAPNET_UP_ARGS (environment): extra arguments for every `tapnet up` a script starts,
# split at whitespace (e.g. TAPNET_UP_ARGS="--busy-poll-us 50"); empty by default.
read -ra TAPNET_UP <<<"${TAPNET_UP_ARGS-}"

# vxlan_lab NAME ME PEER CONTAINER IP SUBNET [MTU]: the lab file (stdout) of one of two
# VXLAN hosts: bridge ov (SUBNET, VNI $VNI, MTU if given) with port c (CONTAINER,
# IP/24), [vxlan] on ME:$VXPORT with PEER:$VXPORT as its peer.
vxlan_lab() {
    cat <<TOML
name = "$1"
[[bridge]]
name = "ov"
subnet = "$6"
vni = $VNI
${7:+mtu = $7}
[[port]]
name = "c"
bridge = "ov"
netns = "$4"
ip = "$5/24"
[vxlan]
listen = "$2:$VXPORT"
peers = ["$3:$VXPORT"]
TOML
}

# vxlan_pair HA HB A_TOML B_TOML OUT_A OUT_B: new host namespaces HA and HB joined by a
# veth underlay (u0, $UL_A/24 and $UL_B/24), a tapnet up in each on its lab file, both
# ready; sets TA_PID and TB_PID.
vxlan_pair() {
    new_ns "$1" "$2"
    # created inside host a with its peer put straight into host b: never in the root
    veth "$1" u0 "$UL_A/24" "$2" u0 "$UL_B/24"
    start_tapnet "$1" "$3" "$5"; TA_PID=$STARTED_PID
    start_tapnet "$2" "$4" "$6"; TB_PID=$STARTED_PID
    wait_ready "$TA_PID" "$5"
    wait_ready "$TB_PID" "$6"
}

start_tapnet() {  # home-ns lab-file out-prefix -> sets STARTED_PID
    nsenter --net="/run/netns/$1" "$BIN" up "${TAPNET_UP[@]}" "$2" >"$3.out" 2>"$3.err" &
    # shellcheck disable=SC2034  # read by the caller
    STARTED_PID=$!
}

# wait_ready PID OUT_PREFIX [WHAT]: waits up to 30 s for tapnet's `ready:` line in
# OUT_PREFIX.out; WHAT names it in messages (default " (OUT_PREFIX)")
wait_ready() {
    local what="${3- ($2)}"
    for _ in $(seq 300); do
        grep -q '^ready: ' "$2.out" 2>/dev/null && break
        proc_live "$1" || { cat "$2.err" >&2; die "tapnet up$what exited before ready"; }
        sleep 0.1
    done
    grep -q '^ready: ' "$2.out" || { cat "$2.err" >&2; die "tapnet$what not ready after 30 s"; }
    log "tapnet (pid $1)${TAPNET_UP_ARGS:+, up ${TAPNET_UP[*]}}: $(grep '^ready: ' "$2.out")"
}

# stop_tapnet PID LABEL LAB NS...: SIGTERM, wait up to 10 s, reap; prints the exit
# status, then one line per leftover (one of the namespaces NS, the lab's control
# socket). LABEL names it in messages: "tapnet (LABEL)", or just "tapnet" if empty.
stop_tapnet() {
    local pid=$1 label=$2 lab=$3 rc=0 ns
    shift 3
    kill -TERM "$pid"
    for _ in $(seq 100); do proc_live "$pid" || break; sleep 0.1; done
    proc_live "$pid" && die "tapnet${label:+ ($label)} still running 10 s after SIGTERM"
    wait "$pid" || rc=$?
    echo "$rc"
    for ns in "$@"; do [[ -e "/run/netns/$ns" ]] && echo "netns $ns"; done
    [[ -S "/run/tapnet/$lab.sock" ]] && echo "/run/tapnet/$lab.sock"
    return 0
}

check_stops() {  # stop-file...: dies unless each tapnet exited 0 and left nothing
    local f bad=""
    for f in "$@"; do
        [[ "$(head -1 "$f")" == 0 && "$(wc -l <"$f")" -eq 1 ]] || bad+=" $(basename "$f"): $(tr '\n' ' ' <"$f")"
    done
    [[ -z $bad ]] || die "tapnet did not exit 0 after SIGTERM or left something behind:$bad"
}

# ---------------------------------------------------------------- measurement
start_server() {  # ns ip: a fresh `iperf3 -s -1` on PORT, waited for until it listens
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

# iperf3_tries TEST IMPL ROUND SERVER_NS SERVER_IP OUT TRY [CHECK]: up to 5 tries, each
# against a fresh server, as a client that fails (a path not ready yet) may succeed on
# the next. TRY, the script's function, runs one client with its output to OUT and sets
# TRY_RC; it is called from here, so it sees the locals of the caller's run_one. Sets
# TRY_N to the try that worked. After 5 failures: the client's output, CHECK (if given),
# and die.
iperf3_tries() {
    local t_test=$1 t_impl=$2 t_round=$3 t_sns=$4 t_sip=$5 t_out=$6 t_try=$7 t_check=${8-}
    for TRY_N in 1 2 3 4 5; do
        start_server "$t_sns" "$t_sip"
        TRY_RC=0
        "$t_try"
        if [[ $TRY_RC -eq 0 ]]; then stop_server 50; return 0; fi
        stop_server 0
        log "$t_test $t_impl run $t_round: iperf3 client failed (attempt $TRY_N, status $TRY_RC): $(grep -o '"error":.*' "$t_out" | head -1)"
        [[ $TRY_N -lt 5 ]] && sleep 1
    done
    echo "--- $t_test via $t_impl, exit status $TRY_RC:" >&2; tail -20 "$t_out" >&2
    if [[ -n $t_check ]]; then "$t_check"; fi
    die "$t_test via $t_impl failed 5 times"
}

udp_drops() {  # client-ns server-ns -> "eth0-tx-dropped-in-client-ns udp-rcvbuf-errors-in-server-ns"
    ip -n "$1" -s -j link show eth0 >"$TMP/link.json"
    ip netns exec "$2" cat /proc/net/snmp >"$TMP/snmp.txt"
    H drops "$TMP/link.json" "$TMP/snmp.txt"
}

ping_ok() {  # ns ip [impl] [-6]: up to 50 single pings, 0.1 s apart, until one is answered
    for _ in $(seq 50); do
        ip netns exec "$1" ping ${4:-} -c 1 -W 1 -q "$2" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "no ping from $1 to $2${3:+ via $3}"
}
