#!/usr/bin/env bash
# bench/uring-trial.sh: does io_uring beat read()/write() for TAP-to-TAP forwarding?
#
# bench/uring-trial/ is a wire between two TAPs (opened as tapnet opens its ports:
# IFF_VNET_HDR, TSO offloads; frames pass with their virtio-net header as they came).
# It has three loops: rw (tapnet's: epoll, a batch of up to 64 read()s, then a write()
# each), uring (N reads outstanding per TAP on registered buffers, the writes of a
# batch submitted together, one io_uring_enter a turn) and uring-ms (one multishot
# read per TAP from a ring of N provided buffers). For each mode asked for, the script
# starts one forwarder in its own namespace ut-MODE-fw-PID and moves its TAPs into
# ut-MODE-a-PID and ut-MODE-b-PID (eth0, 10.248.J.2/24 and .3/24); with the kernel
# bridge as the baseline, ut-kbr-PID bridges veth pairs to ut-k-a-PID and ut-k-b-PID
# (10.248.0.2/24, .3/24), as bench/compare.sh builds it. Then, R rounds, every network
# once a round in an order that rotates each round:
#   tcp : iperf3 one stream a -> b, MTU 1500, N seconds, receiver bits/s
#   udp : iperf3 -u -l 64 -b 0 a -> b, N seconds, packets/s received by b
# and prints medians, the ratios against rw and against the kernel (of the medians and,
# round by round, the median ratio), the forwarder's CPU per test, per frame and per
# GB, the threads it ended with (io-wq workers), and the system calls per frame it counted
# itself (SIGUSR1 prints its counters). Then, unless --no-strace, `strace -c -f` on
# each forwarder for a short run of each test (--strace-seconds), as a cross-check,
# and with --perf a `perf record` of each the same way: where the forwarder's CPU goes
# (copies, system call entry and exit, io_uring, the receiver's stack run inside the
# write, scheduling), in us per frame.
#
# Usage: bench/uring-trial.sh [--seconds N] [--repeat R] [--json FILE] [--no-build]
#                             [--modes "MODE..."] [--depth N] [--no-kernel]
#                             [--no-strace] [--strace-seconds S] [--perf]
#                             [--quiet PCT] [--quiet-max S]
# Defaults: --seconds 5 --repeat 3 --modes "rw uring uring-ms" --depth 64
# --strace-seconds 2 --quiet 80 --quiet-max 15: before each timed run the script waits
# (at most S s) until the machine is PCT % idle, since others' builds and benchmarks
# share its CPUs, and records how idle it was. A mode is rw, uring or uring-ms; an
# io_uring one may carry its own depth and `plain` (no registered files or buffers):
# "uring:4", "uring-ms:16:plain". bench/README.md explains the modes and every figure.
# Needs root, iproute2, iperf3, ping, python3, nsenter, strace (unless --no-strace),
# perf (with --perf) and a kernel with io_uring (6.7 for uring-ms). Everything it creates carries the
# script's PID in its name, lives in namespaces it creates, and is removed on exit,
# failure or Ctrl-C.
set -euo pipefail

BENCH_NAME=uring-trial.sh
# shellcheck source=SCRIPTDIR/lib.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

MODES_ARG="rw uring uring-ms"
DEPTH=64
KERNEL=1
STRACE=1
STRACE_SECS=2
PERF=0
QUIET_PCT=80
QUIET_MAX=15
# shellcheck disable=SC2034,SC2317  # ARGS_USED is read by lib.sh's parse_args
extra_arg() {  # this script's options beyond lib.sh's
    case "$1" in
        --modes) MODES_ARG="${2:?--modes needs a value}"; ARGS_USED=2 ;;
        --depth) DEPTH="${2:?--depth needs a value}"; ARGS_USED=2 ;;
        --no-kernel) KERNEL=0; ARGS_USED=1 ;;
        --no-strace) STRACE=0; ARGS_USED=1 ;;
        --perf) PERF=1; ARGS_USED=1 ;;
        --quiet) QUIET_PCT="${2:?--quiet needs a value}"; ARGS_USED=2 ;;
        --quiet-max) QUIET_MAX="${2:?--quiet-max needs a value}"; ARGS_USED=2 ;;
        --strace-seconds) STRACE_SECS="${2:?--strace-seconds needs a value}"; ARGS_USED=2 ;;
    esac
}
parse_args "$@"
[[ "$DEPTH" =~ ^[0-9]+$ ]] || die "--depth must be a number"
read -ra MODES <<<"$MODES_ARG"
[[ ${#MODES[@]} -ge 1 ]] || die "--modes needs at least one mode"
declare -A FW_ARGS
for m in "${MODES[@]}"; do  # MODE[:DEPTH][:plain]: the forwarder's arguments
    IFS=: read -ra parts <<<"$m"
    [[ ${parts[0]} == rw || ${parts[0]} == uring || ${parts[0]} == uring-ms ]] \
        || die "unknown mode $m (rw, uring or uring-ms, then :DEPTH or :plain for the io_uring ones)"
    [[ -z ${FW_ARGS[$m]-} ]] || die "mode $m given twice"
    FW_ARGS[$m]="--mode ${parts[0]} --depth $DEPTH"
    for o in "${parts[@]:1}"; do
        [[ ${parts[0]} != rw ]] || die "rw takes no options ($m)"
        case $o in
            plain) FW_ARGS[$m]+=" --no-fixed" ;;
            *[!0-9]*|'') die "unknown option $o in mode $m (a depth, or plain)" ;;
            *) FW_ARGS[$m]+=" --depth $o" ;;
        esac
    done
done
[[ "$STRACE_SECS" =~ ^[1-9][0-9]*$ ]] || die "--strace-seconds must be a positive integer"
[[ "$QUIET_PCT" =~ ^[0-9]+$ && "$QUIET_MAX" =~ ^[0-9]+$ ]] || die "--quiet and --quiet-max take whole numbers"

require_root "namespaces, bridge, TAP"
require_cmds "apt-get install -y iproute2 iperf3 iputils-ping util-linux strace" \
    ip iperf3 ping python3 timeout nsenter ss
(( STRACE )) && require_cmds "apt-get install -y strace" strace
(( PERF )) && require_cmds "apt-get install -y linux-perf" perf

TRIAL="$ROOT/target/release/uring-trial"

# ---------------------------------------------------------------- names (unique per run)
ID=$$
PORT=5201                        # iperf3 port, only ever inside our own namespaces
K_BR_NS="ut-kbr-$ID"
K_A_NS="ut-k-a-$ID"
K_B_NS="ut-k-b-$ID"
K_BR="utbr$ID"
K_VA="utva$ID"
K_VB="utvb$ID"
declare -A FW_NS A_NS B_NS A_IP B_IP TAP_A TAP_B FW_PID
OUR_NS=()
(( KERNEL )) && OUR_NS+=("$K_BR_NS" "$K_A_NS" "$K_B_NS")
j=0
for m in "${MODES[@]}"; do
    j=$((j + 1))
    FW_NS[$m]="ut-${m//:/-}-fw-$ID"
    A_NS[$m]="ut-${m//:/-}-a-$ID"
    B_NS[$m]="ut-${m//:/-}-b-$ID"
    A_IP[$m]="10.248.$j.2"
    B_IP[$m]="10.248.$j.3"
    TAP_A[$m]="ut${j}a$ID"       # at most 11 bytes; eth0 once moved
    TAP_B[$m]="ut${j}b$ID"
    OUR_NS+=("${FW_NS[$m]}" "${A_NS[$m]}" "${B_NS[$m]}")
done
IMPLS=()
(( KERNEL )) && IMPLS+=(kernel)
IMPLS+=("${MODES[@]}")

TMP="$(mktemp -d /tmp/uring-trial.XXXXXX)"
SRV_PID=""
ST_PID=""

# ---------------------------------------------------------------- teardown
stop_forwarder() {  # mode: SIGTERM, SIGKILL after 5 s, reap; sets FW_RC to its exit status
    local pid=${FW_PID[$1]-}
    FW_RC=0
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do proc_live "$pid" || break; sleep 0.1; done
    if proc_live "$pid"; then
        echo "$BENCH_NAME: forwarder $1 (pid $pid) ignored SIGTERM for 5 s; killing it" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || FW_RC=$?
    FW_PID[$1]=""
    return 0
}
# shellcheck disable=SC2317  # called by lib.sh's EXIT trap, which then deletes $TMP
teardown() {
    local m
    if [[ -n "$ST_PID" ]]; then kill -INT "$ST_PID" 2>/dev/null; wait "$ST_PID" 2>/dev/null; fi
    if [[ -n "$SRV_PID" ]]; then kill "$SRV_PID" 2>/dev/null; wait "$SRV_PID" 2>/dev/null; fi
    # The forwarders first: a TAP whose namespace is deleted while its descriptor is
    # still open would be moved to the root namespace. Once its forwarder is gone, the
    # TAP is gone (it is not persistent).
    for m in "${MODES[@]}"; do stop_forwarder "$m"; done
    kill_in_ns
    del_ns
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] && echo "$BENCH_NAME: warning: namespace $ns is still there" >&2
    done
    for m in "${MODES[@]}"; do
        for t in "${TAP_A[$m]}" "${TAP_B[$m]}"; do
            ip link show "$t" >/dev/null 2>&1 && echo "$BENCH_NAME: warning: $t is in the root namespace" >&2
        done
    done
    return 0
}
bench_traps

# ---------------------------------------------------------------- python helpers
write_helpers <<'PY'
def fw(path0, path1):
    # the forwarder's counters between two SIGUSR1 snapshots, as JSON members
    a, b = json.load(open(path0)), json.load(open(path1))
    keys = ("frames", "frames_ab", "frames_ba", "bytes", "dropped", "syscalls", "read",
            "eagain", "write", "epoll_wait", "io_uring_enter", "read_ops", "write_ops", "cqes")
    print(json.dumps({k: b[k] - a[k] for k in keys}))

def strace_rows(path):
    # strace -c's table: "% time seconds usecs/call calls errors syscall"
    rows = []
    for line in open(path):
        f = line.split()
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            rows.append((f[-1], int(f[3]), int(f[4]) if len(f) == 6 else 0))
    return rows

def strace_line(path, p0, p1, what):
    c = json.loads(open(p1).read()); c0 = json.loads(open(p0).read())
    n = c["frames"] - c0["frames"]
    rows = strace_rows(path)
    total = sum(r[1] for r in rows)
    if n <= 0:
        print("  %-24s no frames forwarded" % what)
        return
    calls = ", ".join("%s %.3f" % (name, calls / n) for name, calls, _ in
                      sorted(rows, key=lambda r: -r[1]) if calls / n >= 0.005)
    print("  %-24s %8d frames, %.3f calls/frame (%s)" % (what, n, total / n, calls))
    return {"frames": n, "calls_per_frame": total / n,
            "by_call": {name: calls / n for name, calls, _ in rows}}

# perf symbols by what they do, first match wins (the rest is "other")
PERF_CATS = [
    ("copy (frame bytes)", r"^(_copy_to_iter|_copy_from_iter|__pi_memcpy|memcpy|copy_user|rep_movs|copy_page|csum_partial_copy|skb_copy_datagram|__check_object_size|__check_heap_object|__virt_addr_valid)"),
    ("syscall entry/exit", r"^(do_syscall_64|entry_SYSCALL|syscall_exit|syscall_return|exit_to_user_mode|__x64_sys_(read|write)$|ksys_(read|write)|vfs_(read|write)|fdget|__fget|fput|rw_verify_area|__fsnotify_parent|security_file_permission|read$|write$|__GI___libc_(read|write)|__libc_(read|write)|epoll_wait$|__GI_epoll_wait|__GI___io_uring_enter|syscall$)"),
    ("epoll", r"^(ep_|do_epoll|__x64_sys_epoll|__ep_|epoll_)"),
    ("io_uring", r"^(io_|__io_|tctx_|__x64_sys_io_uring|__sys_io_uring|io_uring|llist_)"),
    ("tun read/write", r"^(tun_|__tun_|tap_|virtio_net_hdr)"),
    ("skb alloc/free", r"^(slab_|__slab|kmem_cache|kmalloc|__kmalloc|kfree|__free_frozen_pages|__folio_put|page_frag|__alloc_skb|alloc_skb|build_skb|__build_skb|kfree_skb|consume_skb|__kfree_skb|skb_release|skb_free|free_unref|__free_pages|alloc_pages|__alloc_pages|get_page_from_freelist|rmqueue|__put_page|put_page)"),
    ("receiver's stack", r"^(handle_softirqs|__do_softirq|do_softirq|net_rx_action|__netif|netif_|process_backlog|__napi|napi_|ip_|ip6_|__ip|udp|__udp|tcp_|__tcp|sock_|sk_|__sk_|skb_|__skb|kfree_skb|consume_skb|__kfree_skb|eth_|__dev_|dev_|inet_|raw_|nf_|br_|__build_skb|build_skb|kmem_cache|kmalloc|__kmalloc|kfree|page_frag|__alloc_skb|alloc_skb|__copy_skb|__wake_up|sock_def_readable|ep_poll_callback)"),
    ("scheduling, wakeups, irqs", r"^(__raw_callee_save___pv|pv_|finish_task_switch|__schedule|schedule|try_to_wake_up|_raw_spin_unlock_irqrestore|_raw_spin_lock|_raw_spin_unlock|ttwu_|enqueue_|dequeue_|update_|pick_next|psi_|native_|irqentry|sysvec|asm_sysvec|__sysvec|hrtimer|_raw_spin|cpuidle|default_idle|do_idle)"),
    ("forwarder's own code", r"^(uring_trial|core::|alloc::|std::|io_uring::|<)"),
]

def perf_split(path, others=None):
    # shares (%) of the samples by PERF_CATS; a line is "  12.34%  [k] symbol". The
    # symbols left in "other" go to others (a list), if given.
    sh = {}
    for line in open(path):
        m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.*\S)", line)
        if not m:
            continue
        pct, kind, sym = float(m.group(1)), m.group(2), m.group(3)
        cat = next((c for c, rx in PERF_CATS if re.search(rx, sym)), None)
        if cat is None and kind == "." and not sym.startswith("0x"):
            cat = "forwarder's own code"
        sh[cat or "other"] = sh.get(cat or "other", 0.0) + pct
        if cat is None and others is not None:
            others.append((pct, sym))
    return sh

def report(samples_path, meta_path, json_out=""):
    meta, S, out = run_data(samples_path, meta_path)
    impls = meta["impls"]; modes = [i for i in impls if i != "kernel"]
    rows = [("tcp", "tcp 1500 (Gbit/s)", "bps", 1e-9, "%.2f"),
            ("udp", "udp 64B rx (kpps)", "pps", 1e-3, "%.1f")]
    w = max(11, max(len(i) for i in impls) + 2)
    print("\n%-20s" % "median" + "".join("%-*s" % (w, i) for i in impls))
    M = {}
    for test, label, key, scale, fmt in rows:
        M[test] = {i: med(S, test, i, key) for i in impls}
        print("%-20s" % label + "".join("%-*s" % (w, fmt % (M[test][i] * scale) if M[test][i] is not None else "-")
                                       for i in impls))
        out["tests"][test] = {"metric": key, "unit": label[label.find("(") + 1:label.find(")")],
                              "median": {i: (M[test][i] * scale if M[test][i] is not None else None) for i in impls},
                              "ratio": {}}
    print("(medians of %d round(s), %d s per iperf3 run; every network once a round, the order rotating)"
          % (meta["repeat"], meta["seconds"]))
    idle = [s["idle_before_pct"] for s in S if "idle_before_pct" in s]
    waited = sum(s.get("waited_s", 0) for s in S)
    if idle:
        print("(the machine was %d%% idle before the median run, %d%% to %d%%; %.0f s spent waiting for it to be quieter)"
              % (statistics.median(idle), min(idle), max(idle), waited))
        out["idle_before_pct"] = {"median": statistics.median(idle), "min": min(idle), "max": max(idle),
                                  "waited_s": waited}

    # Each ratio twice: of the medians, and the median of the ratios round by round (the
    # two runs of a round are close in time, so they share most of the machine's mood).
    bases = [b for b in ("rw", "kernel") if b in impls]
    cols = [(test, b) for b in bases for test, *_ in rows]
    print("\n%-20s" % "ratio" + "".join("%-17s" % ("%s vs %s" % c) for c in cols))
    for i in modes:
        line = "%-20s" % i
        for test, b in cols:
            key = next(r[2] for r in rows if r[0] == test)
            r = M[test][i] / M[test][b] if i != b and M[test][i] and M[test][b] else None
            by_round = {}
            for smp in S:
                if smp["test"] == test and smp["impl"] in (i, b) and smp.get(key):
                    by_round.setdefault(smp["round"], {})[smp["impl"]] = smp[key]
            pr = [d[i] / d[b] for d in by_round.values() if i in d and b in d] if i != b else []
            rr = statistics.median(pr) if pr else None
            line += "%-17s" % ("%.2fx (%.2fx)" % (r, rr) if r is not None and rr is not None else "-")
            if r is not None:
                out["tests"][test]["ratio"]["%s/%s" % (i, b)] = r
                out["tests"][test]["ratio"]["%s/%s by round" % (i, b)] = rr
        print(line)
    print("(ratio of the medians, and in brackets the median of the ratios round by round)")

    print("\nper-run samples (spread: (max - min) / median, the noise of this run):")
    for test, label, key, scale, fmt in rows:
        for i in impls:
            v = vals(S, test, i, key)
            spread = (max(v) - min(v)) / statistics.median(v) if len(v) > 1 and statistics.median(v) else None
            print("  %-4s %-*s %s%s" % (test, w, i, "  ".join(fmt % (x * scale) for x in v),
                                        "   (spread %.0f%%)" % (100 * spread) if spread is not None else ""))
            out["tests"][test].setdefault("spread", {})[i] = spread

    print("\nudp 64B: sent (kpps) and where the rest was lost (% of sent, medians):")
    for i in impls:
        def m_(k):
            v = [s[k] / s["sent"] * 100 for s in S if s["test"] == "udp" and s["impl"] == i and k in s and s["sent"]]
            return statistics.median(v) if v else float("nan")
        print("  %-*s sent %6.1f kpps, lost at a's eth0 %5.1f%%, at b's socket %5.1f%%" % (
            w, i, (med(S, "udp", i, "tx_pps") or 0) / 1e3, m_("sender_txq_drops"), m_("rcvbuf_drops")))

    print("\nforwarder, over the timed runs (its own counters; CPU = utime+stime of all its threads):")
    print("  %-4s %-*s %9s %10s %12s %9s %14s  %s" % ("test", w, "mode", "CPU %core", "kframes/s", "CPU us/frame",
                                                       "CPU s/GB", "syscalls/frame", "by call (per frame)"))
    for test, *_ in rows:
        for mo in modes:
            ss = [s for s in S if s["test"] == test and s["impl"] == mo and "frames" in s]
            fr = sum(s["frames"] for s in ss); cpu = sum(s["cpu_s"] for s in ss); wall = sum(s["wall_s"] for s in ss)
            if not fr or not wall:
                continue
            calls = {k: sum(s[k] for s in ss) / fr for k in ("read", "write", "epoll_wait", "io_uring_enter")}
            sc = sum(s["syscalls"] for s in ss) / fr
            by = ", ".join("%s %.3f" % (k, v) for k, v in calls.items() if v >= 0.0005)
            if mo == "rw":
                by += " (%.0f%% of reads EAGAIN)" % (100 * sum(s["eagain"] for s in ss) / max(1, sum(s["read"] for s in ss)))
            else:
                by += " (%.1f frames per enter)" % (fr / max(1, sum(s["io_uring_enter"] for s in ss)))
            gb = sum(s["bytes"] for s in ss) / 1e9
            print("  %-4s %-*s %8.1f%% %10.1f %12.2f %9.2f %14.3f  %s" % (
                test, w, mo, 100 * cpu / wall, fr / wall / 1e3, cpu / fr * 1e6, cpu / gb if gb else 0, sc, by))
            out["tests"][test].setdefault("forwarder", {})[mo] = {
                "cpu_pct_of_core": 100 * cpu / wall, "frames_per_s": fr / wall, "cpu_us_per_frame": cpu / fr * 1e6,
                "cpu_s_per_gb": cpu / gb if gb else None,
                "syscalls_per_frame": sc, "calls_per_frame": calls,
                "bytes_per_frame": sum(s["bytes"] for s in ss) / fr,
                "dropped": sum(s["dropped"] for s in ss)}
    for mo in modes:
        f = out["tests"]["tcp"].get("forwarder", {}).get(mo)
        if f:
            print("  tcp  %-*s %.0f bytes/frame%s" % (w, mo, f["bytes_per_frame"],
                  "  (TSO super-frames pass whole)" if f["bytes_per_frame"] > 3000 else "  (<= MTU: segmented)"))
    if meta.get("strace"):
        print("\nstrace -c -f on the forwarder, %d s per test (strace stops it at every call: only the"
              " calls per frame mean anything, and the slower loop batches more):" % meta["strace_seconds"])
        out["strace"] = {}
        for what, p in meta["strace"]:
            r = strace_line(p + ".strace", p + ".0", p + ".1", what)
            out["strace"][what] = r
    if meta.get("perf"):
        print("\nperf record on the forwarder, %d s per test: where its CPU went, in us per frame forwarded"
              " (perf's share of samples x its CPU time / frames; the share in %%):" % meta["strace_seconds"])
        out["perf"] = {}
        cols = []
        for what, p in meta["perf"]:
            c0, c1 = json.load(open(p + ".0")), json.load(open(p + ".1"))
            n = c1["frames"] - c0["frames"]
            cpu = (int(open(p + ".cpu1").read()) - int(open(p + ".cpu0").read())) / int(meta["clk_tck"])
            others = []
            cols.append((what, perf_split(p + ".syms", others), cpu / n * 1e6 if n > 0 else 0.0))
            out["perf_other_top"] = out.get("perf_other_top", {})
            out["perf_other_top"][what] = ["%.2f%% %s" % o for o in sorted(others, reverse=True)[:8]]
        cw = max(16, max(len(w) for w, *_ in cols) + 2)
        print("  %-28s" % "" + "".join("%-*s" % (cw, w) for w, *_ in cols))
        for cat in [c for c, _ in PERF_CATS] + ["other"]:
            print("  %-28s" % cat + "".join("%-*s" % (cw, "%.2f (%.0f%%)" % (us * sh.get(cat, 0) / 100, sh.get(cat, 0)))
                                              for w, sh, us in cols))
        print("  %-28s" % "total" + "".join("%-*s" % (cw, "%.2f" % us) for w, sh, us in cols))
        for what, sh, us in cols:
            out["perf"][what] = {"cpu_us_per_frame": us, "share_pct": sh}
        print("  (on a VM perf samples by timer, which cannot fire while interrupts are off: the time of a\n"
              "   context switch or a wakeup lands on finish_task_switch or _raw_spin_unlock_irqrestore)")
    stops = meta.get("stops", {})
    if stops:
        print("\nforwarders' threads at the end, and exit status after SIGTERM:")
        for m, st in stops.items():
            print("  %-*s %s; exit status %d" % (w, m, st["threads"], st["exit_status"]))
        out["stops"] = stops
    write_json(out, json_out)

def meta(path, secs, repeat, impls, strace_secs, stops, strace_list, perf_list, clk_tck, *env_):
    st = [l.split("\t") for l in open(strace_list).read().splitlines() if l]
    pf = [l.split("\t") for l in open(perf_list).read().splitlines() if l]
    stops_d = {}
    for l in open(stops).read().splitlines():
        if l:
            m, rc, threads = (l.split(" ", 2) + [""])[:3]
            stops_d[m] = {"exit_status": int(rc), "threads": threads}
    json.dump({"seconds": int(secs), "repeat": int(repeat), "impls": impls.split(),
               "strace_seconds": int(strace_secs), "strace": st, "perf": pf, "stops": stops_d,
               "clk_tck": int(clk_tck),
               "env": env(*env_)},
              open(path, "w"))
PY

# ---------------------------------------------------------------- build
if [[ $BUILD -eq 1 ]]; then
    log "building: cargo build --release (bench/uring-trial, target/release/uring-trial)"
    (cd "$ROOT" && cargo build --release --manifest-path bench/uring-trial/Cargo.toml --target-dir target) \
        >"$TMP/build.log" 2>&1 || { cat "$TMP/build.log" >&2; die "cargo build failed"; }
fi
[[ -x "$TRIAL" ]] || die "$TRIAL not found (build it, or drop --no-build)"
# shellcheck disable=SC2119  # no message to add
ns_free

# ---------------------------------------------------------------- kernel bridge
if (( KERNEL )); then
    log "kernel: bridge $K_BR in $K_BR_NS, veth to $K_A_NS (10.248.0.2) and $K_B_NS (10.248.0.3)"
    kernel_bridge "$K_BR_NS" "$K_BR" "$K_VA" "$K_VB" "$K_A_NS" 10.248.0.2 "$K_B_NS" 10.248.0.3
fi

# ---------------------------------------------------------------- forwarders
for m in "${MODES[@]}"; do
    new_ns "${FW_NS[$m]}" "${A_NS[$m]}" "${B_NS[$m]}"
    # Started in its own namespace: its TAPs never appear in the root namespace.
    # shellcheck disable=SC2086  # FW_ARGS[$m] is words
    nsenter --net="/run/netns/${FW_NS[$m]}" "$TRIAL" ${FW_ARGS[$m]} \
        --tap-a "${TAP_A[$m]}" --tap-b "${TAP_B[$m]}" >"$TMP/fw-$m.out" 2>"$TMP/fw-$m.err" &
    FW_PID[$m]=$!
    for _ in $(seq 100); do
        grep -q '^ready: ' "$TMP/fw-$m.out" 2>/dev/null && break
        proc_live "${FW_PID[$m]}" || { cat "$TMP/fw-$m.err" >&2; die "forwarder $m exited before ready"; }
        sleep 0.05
    done
    grep -q '^ready: ' "$TMP/fw-$m.out" || die "forwarder $m not ready after 5 s"
    for side in a b; do
        if [[ $side == a ]]; then t=${TAP_A[$m]} ns=${A_NS[$m]} ip4=${A_IP[$m]}
        else t=${TAP_B[$m]} ns=${B_NS[$m]} ip4=${B_IP[$m]}; fi
        ip -n "${FW_NS[$m]}" link set "$t" netns "$ns"
        ip -n "$ns" link set "$t" name eth0
        ip -n "$ns" link set eth0 mtu 1500
        ip -n "$ns" addr add "$ip4/24" dev eth0
        ip -n "$ns" link set eth0 up
    done
    log "forwarder $m (pid ${FW_PID[$m]}): $(grep '^ready: ' "$TMP/fw-$m.out")"
done

fw_alive() {  # mode
    proc_live "${FW_PID[$1]}" && return 0
    echo "--- forwarder $1 stderr:" >&2; tail -20 "$TMP/fw-$1.err" >&2
    die "forwarder $1 died during the run"
}

snap() {  # mode file: the forwarder's counters now (SIGUSR1; it prints a JSON line)
    local f="$TMP/fw-$1.out" n
    n=$(wc -l <"$f")
    kill -USR1 "${FW_PID[$1]}"
    for _ in $(seq 200); do
        (( $(wc -l <"$f") > n )) && { tail -1 "$f" >"$2"; return 0; }
        sleep 0.01
    done
    fw_alive "$1"
    die "forwarder $1 did not answer SIGUSR1"
}

ends() {  # impl -> client ns, server ns, server ip
    if [[ $1 == kernel ]]; then echo "$K_A_NS $K_B_NS 10.248.0.3"
    else echo "${A_NS[$1]} ${B_NS[$1]} ${B_IP[$1]}"; fi
}

for impl in "${IMPLS[@]}"; do
    read -r cns _ sip <<<"$(ends "$impl")"
    ping_ok "$cns" "$sip" "$impl"
done

# ---------------------------------------------------------------- measurements
try_client() {  # for iperf3_tries; sees the caller's test, impl, secs, cns, sip, out
    TRY_RC=0
    case $test in
        tcp) timeout $((secs + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -t "$secs" -J >"$out" 2>&1 || TRY_RC=$? ;;
        udp) timeout $((secs + 30)) ip netns exec "$cns" iperf3 -c "$sip" -p "$PORT" -t "$secs" -u -l 64 -b 0 -J >"$out" 2>&1 || TRY_RC=$? ;;
    esac
    # A forwarder that died takes its TAPs with it: say so rather than retry.
    if [[ $TRY_RC -ne 0 && $impl != kernel ]]; then fw_alive "$impl"; fi
    return 0
}

idle_pct() {  # the share of both CPUs idle over the next 0.5 s (/proc/stat), in %
    local a b
    read -r _ a <<<"$(head -1 /proc/stat)"
    sleep 0.5
    read -r _ b <<<"$(head -1 /proc/stat)"
    awk -v a="$a" -v b="$b" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); t = 0
        for (k = 1; k <= 8 && k <= n; k++) t += y[k] - x[k]   # user..steal
        idle = (y[4] - x[4]) + (y[5] - x[5])                  # idle + iowait
        printf "%.0f", (t > 0 ? 100 * idle / t : 100) }'
}

# wait_quiet: before a timed run, while nothing of ours runs, waits up to QUIET_MAX s
# for the machine to be at least QUIET_PCT % idle (others' builds and benchmarks);
# sets IDLE to the last figure and WAITED to the seconds waited.
wait_quiet() {
    local t0
    t0="$(now)"
    IDLE="$(idle_pct)"
    while (( IDLE < QUIET_PCT )) && awk -v a="$t0" -v b="$(now)" -v m="$QUIET_MAX" 'BEGIN { exit !(b - a < m) }'; do
        IDLE="$(idle_pct)"
    done
    WAITED="$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a - 0.5 }')"
}

# run_one TEST IMPL ROUND: one timed run, appends a JSON line to $SAMPLES
run_one() {
    local test=$1 impl=$2 round=$3 secs=$SECS cns sns sip out t0 t1 c0 c1 extra="{}" d0 r0 d1 r1
    read -r cns sns sip <<<"$(ends "$impl")"
    wait_quiet
    out="$TMP/$test-$impl-$round.json"
    [[ $test == udp ]] && { udp_drops "$cns" "$sns" >"$TMP/drops0" || die "cannot read drop counters ($impl)"; }
    if [[ $impl != kernel ]]; then
        fw_alive "$impl"
        snap "$impl" "$TMP/c0"
        t0="$(now)"; c0="$(cpu_ticks "${FW_PID[$impl]}")"
    fi
    iperf3_tries "$test" "$impl" "$round" "$sns" "$sip" "$out" try_client
    if [[ $impl != kernel ]]; then
        c1="$(cpu_ticks "${FW_PID[$impl]}")" || fw_alive "$impl"
        t1="$(now)"
        snap "$impl" "$TMP/c1"
        extra="$(H fw "$TMP/c0" "$TMP/c1")"
        extra="${extra%\}}, $(H cpu_wall "$CLK_TCK" "$t0" "$t1" cpu_s "$c0" "$c1")}"
    fi
    if [[ $test == udp ]]; then
        read -r d0 r0 <"$TMP/drops0"
        udp_drops "$cns" "$sns" >"$TMP/drops1" || die "cannot read drop counters ($impl)"
        read -r d1 r1 <"$TMP/drops1"
        extra="${extra%\}}$([[ $extra == "{}" ]] || echo ,) \"sender_txq_drops\": $((d1 - d0)), \"rcvbuf_drops\": $((r1 - r0))}"
    fi
    local parsed
    parsed="$(H "$test" "$out")" || die "cannot read $test result ($impl)"
    H sample "{\"test\": \"$test\", \"impl\": \"$impl\", \"round\": $round, \"attempts\": $TRY_N, \"idle_before_pct\": $IDLE, \"waited_s\": $WAITED}" \
        "$parsed" "$extra" >>"$SAMPLES"
    local kind=$test
    [[ $test == tcp ]] && kind=tcp_bps
    log "$(printf '%-4s %-9s run %d: %s (machine %s%% idle before)' "$test" "$impl" "$round" "$(H line "$kind" "$parsed")" "$IDLE")"
}

log "running tcp and udp through ${IMPLS[*]}: $REPEAT round(s) x ${SECS} s, the order rotating"
T_START="$(now)"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"
for test in tcp udp; do
    for ((r = 0; r < REPEAT; r++)); do
        n=${#IMPLS[@]}
        for ((k = 0; k < n; k++)); do run_one "$test" "${IMPLS[(k + r) % n]}" "$((r + 1))"; done
    done
done

# ---------------------------------------------------------------- strace and perf
# side_run TOOL MODE TEST: one short run (--strace-seconds) with TOOL attached to the
# forwarder; its output in $TMP/TOOL-MODE-TEST.*, listed in $TMP/TOOL.list
side_run() {
    local tool=$1 m=$2 test=$3 impl=$2 p="$TMP/$1-$2-$3" cns sns sip secs=$STRACE_SECS out="$TMP/$1-$2-$3.iperf"
    read -r cns sns sip <<<"$(ends "$m")"
    fw_alive "$m"
    snap "$m" "$p.0"
    cpu_ticks "${FW_PID[$m]}" >"$p.cpu0"
    case $tool in
        strace) strace -c -f -q -p "${FW_PID[$m]}" -o "$p.strace" & ;;
        perf) perf record -q -p "${FW_PID[$m]}" -o "$p.perf" >/dev/null 2>&1 & ;;
    esac
    ST_PID=$!
    sleep 0.5
    start_server "$sns" "$sip"
    try_client
    stop_server
    kill -INT "$ST_PID"; wait "$ST_PID" 2>/dev/null || true
    ST_PID=""
    [[ $TRY_RC -eq 0 ]] || { tail -5 "$out" >&2; die "iperf3 under $tool ($m $test) failed"; }
    snap "$m" "$p.1"
    cpu_ticks "${FW_PID[$m]}" >"$p.cpu1"
    if [[ $tool == perf ]]; then
        # Every symbol where the forwarder's threads spent time, kernel and user.
        perf report -i "$p.perf" --stdio --no-children --sort sym -g none --percent-limit 0 2>/dev/null \
            | grep -v '^#' | grep -v '^ *$' >"$p.syms" || true
    fi
    printf '%s %s\t%s\n' "$test" "$m" "$p" >>"$TMP/$tool.list"
    log "$tool: $test through $m done"
}
: >"$TMP/strace.list"
: >"$TMP/perf.list"
for m in "${MODES[@]}"; do
    for test in udp tcp; do
        if (( STRACE )); then side_run strace "$m" "$test"; fi
        if (( PERF )); then side_run perf "$m" "$test"; fi
    done
done
T_END="$(now)"
LOAD_END="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- stop the forwarders
: >"$TMP/stops"
for m in "${MODES[@]}"; do
    fw_alive "$m"
    # io_uring may hand work it cannot do inline to io-wq worker threads (iou-wrk-*):
    # their CPU is counted with the forwarder's, but they are worth knowing about.
    threads=$(cat /proc/"${FW_PID[$m]}"/task/*/comm | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = "," }')
    stop_forwarder "$m"
    echo "$m $FW_RC $threads" >>"$TMP/stops"
done

H meta "$TMP/meta.json" "$SECS" "$REPEAT" "${IMPLS[*]}" "$STRACE_SECS" "$TMP/stops" "$TMP/strace.list" "$TMP/perf.list" "$CLK_TCK" \
    "$(uname -r)" "$(iperf3 --version | head -1)" "$(nproc)" "$(git_id)"
echo "io_uring vs read/write, TAP to TAP: $(uname -r), $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), $(iperf3 --version | head -1), tapnet $(git_id), depth $DEPTH"
H report "$SAMPLES" "$TMP/meta.json" "$JSON_OUT"
awk -v a="$T_START" -v b="$T_END" -v l0="$LOAD_START" -v l1="$LOAD_END" \
    'BEGIN { printf "\n(measurements took %.0f s; load average %s before the first run, %s at the end, where this run itself adds about 2-3)\n", b - a, l0, l1 }'
awk '$2 != 0 { bad = 1 } END { exit !bad }' "$TMP/stops" && die "a forwarder did not exit 0 after SIGTERM: $(tr '\n' ' ' <"$TMP/stops")"
exit 0
