#!/usr/bin/env bash
# bench/compare-rootless.sh: rootless tapnet against root tapnet, and rootless tapnet's
# port forward against pasta's and slirp4netns's, same tests, same run.
#
# A. two-container lab, rootless vs root (iperf3 TCP, one stream, a -> b, MTU 1500):
#   root:     `tapnet up` as root inside the empty namespace rl-rh-PID (nsenter); lab
#             rlroot-PID, bridge br0 10.246.0.0/24, port a in rl-ra-PID (.2), port b in
#             rl-rb-PID (.3): named namespaces, reached with `ip netns exec`.
#   rootless: the same lab run by the unprivileged user tapnet-bench inside rl-uh-PID:
#             lab rlless-PID, bridge br0 10.247.0.0/24, ports a and b in namespaces
#             tapnet creates and holds in its own user namespace (rl-ua-PID and
#             rl-ub-PID are only labels), reached with
#             `tapnet exec --lab rlless-PID PORT -- CMD` as that user.
# B. rootless port forward, outside -> host:P -> container (iperf3 TCP, one stream):
#   one "host" namespace rl-h-PID (192.168.240.1/24, default route via the outside)
#   with a veth to an "outside" namespace rl-o-PID (192.168.240.2/24), where the client
#   runs as root and connects to 192.168.240.1:P. In the host namespace, as tapnet-bench:
#   tapnet:      rootless labs rlfwd-PID (bridge MTU 1500) and rlfwdj-PID (MTU 65520),
#                container c at 10.248.1.2 / 10.248.2.2, one [[forward]]
#                tcp 0.0.0.0:P -> c:P per run;
#   pasta:       `pasta --config-net -4 -t PORTS [-m 1500] -- sleep infinity`, its own
#                user and network namespace; MTU 65520 (its default) and 1500;
#   slirp4netns: `unshare -Urn sleep infinity` holds a namespace, `slirp4netns
#                --configure --mtu M --api-socket S`, one add_hostfwd per run; MTU 1500
#                and 65520 (only where slirp4netns is installed).
# Every run has an iperf3 server port of its own. Each round runs every path once, in
# turn (round-robin), the order reversed every other round; the tables show medians and
# ratios, plus each process's CPU time and what each tapnet left behind.
#
# Usage: bench/compare-rootless.sh [--seconds N] [--repeat R] [--json FILE] [--no-build]
#                                  [--bin FILE] [--only LIST]
#   --secs N, --runs R  the same as --seconds N, --repeat R
#   --bin FILE          run this tapnet binary instead of building (implies --no-build)
#   --only LIST         only these paths, comma-separated, of: root, rootless,
#                       tapnet-forward, pasta, slirp4netns (default: all)
# Needs root: it builds the namespaces as root and drops to the user tapnet-bench for
# everything rootless. Needs iproute2, python3, util-linux (nsenter, unshare, setpriv),
# iperf3 and pasta (Debian package passt); slirp4netns is optional. Missing iperf3, passt
# and slirp4netns are installed with apt-get, saying so. Creates the system user
# tapnet-bench if missing, and leaves it. Where /dev/net/tun is not usable by that user
# (mode 0600 without udev), makes it 0666, as udev does on stock distributions, and puts
# the old mode back on exit. Everything else it creates carries the script's PID in its
# name, lives in namespaces it creates, and is removed on exit, failure or Ctrl-C;
# nothing is added to the root namespace.
set -euo pipefail

BENCH_NAME=compare-rootless.sh
# shellcheck source=SCRIPTDIR/lib.sh disable=SC1091  # followed with shellcheck -x
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib.sh"

BIN_OPT=""
ONLY="root,rootless,tapnet-forward,pasta,slirp4netns"
# shellcheck disable=SC2034  # ARGS_USED is read by lib.sh's parse_args
extra_arg() {  # this script's options beyond lib.sh's
    case "$1" in
        --secs) SECS="${2:?--secs needs a value}"; ARGS_USED=2 ;;
        --secs=*) SECS="${1#*=}"; ARGS_USED=1 ;;
        --runs) REPEAT="${2:?--runs needs a value}"; ARGS_USED=2 ;;
        --runs=*) REPEAT="${1#*=}"; ARGS_USED=1 ;;
        --bin) BIN_OPT="${2:?--bin needs a file}"; ARGS_USED=2 ;;
        --bin=*) BIN_OPT="${1#*=}"; ARGS_USED=1 ;;
        --only) ONLY="${2:?--only needs a list}"; ARGS_USED=2 ;;
        --only=*) ONLY="${1#*=}"; ARGS_USED=1 ;;
    esac
}
parse_args "$@"
# shellcheck disable=SC2153  # REPEAT is set by parse_args
(( REPEAT <= 999 )) || { echo "$BENCH_NAME: --repeat must be at most 999 (one port per run)" >&2; exit 1; }
if [[ -n $BIN_OPT ]]; then
    [[ $BIN_OPT == /* ]] || BIN_OPT="$PWD/$BIN_OPT"
    BIN="$BIN_OPT"
    # shellcheck disable=SC2034  # read by lib.sh's build_tapnet
    BUILD=0
fi
want() { [[ ",$ONLY," == *",$1,"* ]]; }
for g in ${ONLY//,/ }; do
    case $g in
        root|rootless|tapnet-forward|pasta|slirp4netns) ;;
        *) echo "$BENCH_NAME: --only: no such path: $g (root, rootless, tapnet-forward, pasta, slirp4netns)" >&2; exit 1 ;;
    esac
done

require_root "namespaces, veth; it drops to an unprivileged user for the rootless parts"
require_cmds "apt-get install -y iproute2 python3 util-linux" \
    ip python3 timeout nsenter unshare setpriv ss useradd stat

# ---------------------------------------------------------------- names (unique per run)
ID=$$
USER_NAME=tapnet-bench           # the unprivileged user of every rootless process
# A. two-container lab
A_R_LAB="rlroot-$ID"             # root tapnet
A_R_HOME="rl-rh-$ID"             # it runs in this empty namespace
A_R_A="rl-ra-$ID"                # created and removed by it (named)
A_R_B="rl-rb-$ID"
A_R_NET=10.246.0
A_U_LAB="rlless-$ID"             # rootless tapnet
A_U_HOME="rl-uh-$ID"             # it runs in this empty namespace
A_U_A="rl-ua-$ID"                # labels only: tapnet creates and holds these itself
A_U_B="rl-ub-$ID"
A_U_NET=10.247.0
# B. port forwards: one host namespace, one outside namespace
B_H="rl-h-$ID"
B_O="rl-o-$ID"
HOST_IP=192.168.240.1
OUT_IP=192.168.240.2
B_T_LAB="rlfwd-$ID"              # rootless tapnet, bridge MTU 1500
B_T_C="rl-fc-$ID"                # label
B_T_NET=10.248.1
B_J_LAB="rlfwdj-$ID"             # rootless tapnet, bridge MTU 65520
B_J_C="rl-fj-$ID"                # label
B_J_NET=10.248.2
JUMBO=65520                      # pasta's default MTU (65535 less 802.3 header, rounded)

OUR_NS=("$A_R_HOME" "$A_R_A" "$A_R_B" "$A_U_HOME" "$B_H" "$B_O")

TMP="$(mktemp -d /tmp/tapnet-bench-rootless.XXXXXX)"
chmod 0711 "$TMP"                # the user may reach $TMP/bin, $TMP/labs and $TMP/run
UBIN_DIR="$TMP/bin"              # the copy of tapnet every tapnet here runs (0755)
UBIN="$UBIN_DIR/tapnet"
LABS="$TMP/labs"                 # lab files, readable by the user
URUN="$TMP/run"                  # the user's XDG_RUNTIME_DIR, 0700, theirs
mkdir -m 0755 "$UBIN_DIR" "$LABS"
mkdir -m 0700 "$URUN"
AS_USER=(setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --clear-groups
         env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
         HOME="$URUN" XDG_RUNTIME_DIR="$URUN")

SRV_PID=""
TUN_MODE_WAS=""                  # set when the script changed /dev/net/tun's mode
AR_PID=""                        # root tapnet (A)
AU_PID=""                        # rootless tapnet (A)
BT_PID=""                        # rootless tapnet, forward MTU 1500
BJ_PID=""                        # rootless tapnet, forward MTU 65520
P_PID=""; P_HOLD=""              # pasta (MTU 65520) and the child holding its namespace
PM_PID=""; PM_HOLD=""            # pasta -m 1500
S_PID=""; S_HOLD=""              # slirp4netns (MTU 1500) and its unshare -Urn holder
SJ_PID=""; SJ_HOLD=""            # slirp4netns MTU 65520
UNNAMED_NS=()                    # net:[INODE] of every namespace we reach by process
TN_NS=()                         # ... of those, the rootless labs' ports
cd /                             # no tool run as the user starts in a directory it cannot read

# ---------------------------------------------------------------- teardown
kill_in_unnamed() {  # [pid...]: SIGKILL every process in UNNAMED_NS but these
    local d pid ns keep spare
    [[ ${#UNNAMED_NS[@]} -gt 0 ]] || return 0
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        ns="$(readlink "$d/ns/net" 2>/dev/null)" || continue
        [[ " ${UNNAMED_NS[*]} " == *" $ns "* ]] || continue
        spare=0
        for keep in "$@"; do [[ $pid == "$keep" ]] && spare=1; done
        [[ $spare -eq 1 ]] || kill -KILL "$pid" 2>/dev/null
    done
    return 0
}
stop_pid() {  # pid signal: signal it, wait up to 5 s, SIGKILL (disowned: no job notices)
    [[ -n $1 ]] || return 0
    if proc_live "$1"; then
        kill "-$2" "$1" 2>/dev/null
        for _ in $(seq 50); do proc_live "$1" || break; sleep 0.1; done
        proc_live "$1" && kill -KILL "$1" 2>/dev/null
    fi
    wait "$1" 2>/dev/null
    return 0
}
teardown() {  # called by lib.sh's EXIT trap, which then deletes $TMP (and $URUN in it)
    local pid tapnets=("$AR_PID" "$AU_PID" "$BT_PID" "$BJ_PID") m
    [[ -n $SRV_PID ]] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
    # pasta and slirp4netns first (pasta's child is PID 1 of its own PID namespace and
    # ignores SIGTERM), then everything else in our namespaces (iperf3, the holders),
    # all started by the script, while the tapnets still run, so nothing outlives them
    for pid in "$P_HOLD" "$PM_HOLD"; do stop_pid "$pid" KILL; done
    for pid in "$P_PID" "$PM_PID" "$S_PID" "$SJ_PID" "$S_HOLD" "$SJ_HOLD"; do stop_pid "$pid" TERM; done
    kill_in_unnamed "${tapnets[@]}"
    kill_in_ns "${tapnets[@]}"
    for pid in "${tapnets[@]}"; do [[ -n $pid ]] && stop_tapnet_hard "$pid"; done
    kill_in_unnamed
    kill_in_ns
    del_ns
    for ns in "${OUR_NS[@]}"; do
        [[ -e "/run/netns/$ns" ]] && echo "$BENCH_NAME: warning: namespace $ns is still there" >&2
    done
    rm -f "/run/tapnet/$A_R_LAB.sock" "/run/tapnet/$A_R_LAB.state"
    if [[ -n $TUN_MODE_WAS ]]; then
        m="$(stat -c %a /dev/net/tun 2>/dev/null)"
        if [[ $m == 666 ]]; then
            chmod "$TUN_MODE_WAS" /dev/net/tun && echo "# /dev/net/tun: mode $TUN_MODE_WAS again" >&2
        fi
    fi
    return 0
}
bench_traps

# ---------------------------------------------------------------- python helpers
write_helpers <<'PY'
A_IMPLS = ("root", "rootless")
B_TOOLS = (("tapnet", "tapnet (rootless)"), ("pasta", "pasta"), ("slirp", "slirp4netns"))
MTUS = (1500, 65520)

def slirp_fwd(sock, port):
    # slirp4netns's API: one request per connection, shut down for writing after it
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(sock)
    s.sendall(json.dumps({"execute": "add_hostfwd", "arguments": {
        "proto": "tcp", "host_addr": "0.0.0.0", "host_port": int(port), "guest_port": int(port)}}).encode())
    s.shutdown(socket.SHUT_WR)
    r = b""
    while True:
        b = s.recv(4096)
        if not b:
            break
        r += b
    d = json.loads(r)
    if "return" not in d:
        sys.exit("slirp4netns add_hostfwd %s: %s" % (port, r.decode()))

def meta(path, secs, repeat, tck, stops, forwards, *env_):
    st = {}
    for f in stops.split():
        name, _, file = f.partition("=")
        if file:
            st[name] = stopped(tck, *open(file + ".cpu").read().split(), file)
    fw = {}
    for f in forwards.split():
        name, _, file = f.partition("=")
        try:
            d = json.load(open(file))
            fw[name] = d.get("forwards", d)
        except (OSError, ValueError):
            pass
    json.dump({"seconds": int(secs), "repeat": int(repeat), "tapnet": st, "forwards": fw,
               "env": env(*env_[:4]), "tools": {"pasta": env_[4], "slirp4netns": env_[5]}},
              open(path, "w"))

def report(samples_path, meta_path, json_out=""):
    meta, S, out = run_data(samples_path, meta_path)
    out["env"]["tools"] = meta.get("tools", {})
    def g(v):
        return "%.2f" % (v / 1e9) if v is not None else "-"
    def ratio(a, b):
        return a / b if a is not None and b else None
    def rx(r):
        return "%.2fx" % r if r is not None else "-"
    def met(r, tgt):
        return "-" if r is None else ("yes" if r >= tgt else "NO")

    print()
    print("A. two-container lab, rootless vs root tapnet: iperf3 TCP a -> b, one stream, MTU 1500 (Gbit/s)")
    print("%-22s %-10s %-10s %-15s %-9s %s" % ("test", "root", "rootless", "rootless/root", "target", "met"))
    k, t = med(S, "lab", "root"), med(S, "lab", "rootless")
    r = ratio(t, k)
    print("%-22s %-10s %-10s %-15s %-9s %s" % ("tcp a -> b (Gbit/s)", g(k), g(t), rx(r), ">= 0.95x", met(r, 0.95)))
    out["tests"]["lab"] = {"unit": "Gbit/s", "root": k and k / 1e9, "rootless": t and t / 1e9,
                           "ratio": r, "target": ">= 0.95", "met": None if r is None else r >= 0.95}

    print()
    print("B. rootless port forward, outside -> host:P -> container: iperf3 TCP, one stream (Gbit/s)")
    print("%-22s %-10s %s" % ("path", "MTU 1500", "MTU %d" % MTUS[1]))
    m = {}
    fw = {"unit": "Gbit/s"}
    for tool, label in B_TOOLS:
        for mtu in MTUS:
            m[tool, mtu] = med(S, "forward", "%s%d" % (tool, mtu))
            fw["%s_%d" % (tool, mtu)] = m[tool, mtu] and m[tool, mtu] / 1e9
        print("%-22s %-10s %s" % (label, g(m[tool, 1500]), g(m[tool, MTUS[1]])))
    print("%-22s %-7s %-10s %-9s %s" % ("ratio", "MTU", "value", "target", "met"))
    for other, label, tgt in (("pasta", "tapnet/pasta", 1.0), ("slirp", "tapnet/slirp4netns", None)):
        for mtu in MTUS:
            rr = ratio(m["tapnet", mtu], m[other, mtu])
            print("%-22s %-7s %-10s %-9s %s" % (label, mtu, rx(rr), ">= 1.0x" if tgt else "-",
                                               met(rr, tgt) if tgt else "-"))
            fw["tapnet_vs_%s_%d" % (other, mtu)] = rr
            if tgt:
                fw["tapnet_vs_%s_%d_met" % (other, mtu)] = None if rr is None else rr >= tgt
    fw["tapnet_vs_pasta_target"] = ">= 1.0"
    out["tests"]["forward"] = fw
    print("(medians of %d run(s) each, %d s per iperf3 run; every path once per round, in turn,\n"
          " the order reversed every other round)" % (meta["repeat"], meta["seconds"]))
    print("note: rootlesskit publishes pasta at 0.87 Gbit/s at MTU 1500 and 6.48 Gbit/s at MTU 65520\n"
          "      on their machine (their benchmark, iperf3 from the namespace to the host, not a\n"
          "      port forward); for scale only, not comparable with the figures above.")

    print("\nper-run samples (Gbit/s, TCP retransmits):")
    impls = [("lab", i) for i in A_IMPLS] + [("forward", "%s%d" % (t, mtu)) for t, _ in B_TOOLS for mtu in MTUS]
    for test, i in impls:
        ss = [s for s in S if s["test"] == test and s["impl"] == i]
        if ss:
            print("  %-7s %-12s %s" % (test, i, "  ".join(
                "%.2f (%s rtx)" % (s["bps"] / 1e9, s.get("retransmits")) for s in ss)))

    print("\nCPU time of the process that carries the traffic (utime+stime from /proc/PID/stat, all\n"
          "threads), over its runs, as a percentage of one core:")
    cpu = {}
    for test, i in impls:
        c = sum(vals(S, test, i, "cpu_s")); w = sum(vals(S, test, i, "wall_s"))
        if w:
            print("  %-7s %-12s %7.2f s CPU over %7.2f s  = %5.1f%%" % (test, i, c, w, 100 * c / w))
            cpu["%s/%s" % (test, i)] = 100 * c / w
    out["cpu_pct_of_core"] = cpu

    print("\ntapnet frames during its runs (`tapnet show ports --json` before and after each run):")
    fr_out = {}
    for test, i, kf, kb, what in (
            ("lab", "root", "a_rx_frames", "a_rx_bytes", "root, read from port a (sender)"),
            ("lab", "root", "b_tx_frames", "b_tx_bytes", "root, written to port b (receiver)"),
            ("lab", "rootless", "a_rx_frames", "a_rx_bytes", "rootless, read from port a (sender)"),
            ("lab", "rootless", "b_tx_frames", "b_tx_bytes", "rootless, written to port b (receiver)"),
            ("forward", "tapnet1500", "c_tx_frames", "c_tx_bytes", "forward 1500, written to port c (data)"),
            ("forward", "tapnet1500", "c_rx_frames", "c_rx_bytes", "forward 1500, read from port c (ACKs)"),
            ("forward", "tapnet65520", "c_tx_frames", "c_tx_bytes", "forward 65520, written to port c (data)"),
            ("forward", "tapnet65520", "c_rx_frames", "c_rx_bytes", "forward 65520, read from port c (ACKs)")):
        fr = sum(vals(S, test, i, kf)); by = sum(vals(S, test, i, kb))
        if fr:
            print("  %-40s %9d frames, %12d bytes, %6.0f bytes/frame" % (what, fr, by, by / fr))
            fr_out["%s/%s/%s" % (test, i, kf.replace("_frames", ""))] = {"frames": fr, "bytes": by, "bytes_per_frame": by / fr}
    out["tapnet_frames"] = fr_out
    print("  (above 3000 bytes per frame: GSO super-frames, unsegmented; about 1500: one\n"
          "   MTU-sized segment per frame)")

    for name, fwd in sorted(meta.get("forwards", {}).items()):
        print("\ntapnet show forwards --lab %s --json (after the runs):" % name)
        print("  " + json.dumps(fwd))
    print()
    for name, st in sorted(meta.get("tapnet", {}).items()):
        exit_line("tapnet (%s)" % name, st)
    write_json(out, json_out)
PY

# ---------------------------------------------------------------- tools, user, /dev/net/tun
PKGS=()
command -v iperf3 >/dev/null || PKGS+=(iperf3)
if want pasta; then command -v pasta >/dev/null || PKGS+=(passt); fi
if want slirp4netns; then command -v slirp4netns >/dev/null || PKGS+=(slirp4netns); fi
if [[ ${#PKGS[@]} -gt 0 ]]; then
    log "installing what is missing: apt-get install -y ${PKGS[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y "${PKGS[@]}" >"$TMP/apt.log" 2>&1; then
        log "apt-get install failed; apt-get update, then once more"
        { DEBIAN_FRONTEND=noninteractive apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "${PKGS[@]}"; } \
            >>"$TMP/apt.log" 2>&1 || { tail -5 "$TMP/apt.log" >&2; log "apt-get install ${PKGS[*]} failed"; }
    fi
fi
require_cmds "apt-get install -y iperf3" iperf3
if want pasta; then require_cmds "apt-get install -y passt" pasta; fi
HAVE_SLIRP=0
if want slirp4netns; then
    if command -v slirp4netns >/dev/null; then HAVE_SLIRP=1
    else log "slirp4netns not installed: its rows stay empty (apt-get install -y slirp4netns)"; fi
fi
tool_version() {  # package
    dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo unknown
}
PASTA_VERSION="$(want pasta && tool_version passt || echo -)"
SLIRP_VERSION="$( (( HAVE_SLIRP )) && slirp4netns --version 2>/dev/null | head -1 || echo -)"

if ! id -u "$USER_NAME" >/dev/null 2>&1; then
    log "creating the system user $USER_NAME: useradd --system --no-create-home --shell /usr/sbin/nologin $USER_NAME"
    useradd --system --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
fi
chown "$USER_NAME:$USER_NAME" "$URUN"
"${AS_USER[@]}" unshare --user --map-root-user --net true 2>"$TMP/userns.err" || {
    cat "$TMP/userns.err" >&2
    die "$USER_NAME cannot make a user namespace (user.max_user_namespaces, kernel.unprivileged_userns_clone or AppArmor's kernel.apparmor_restrict_unprivileged_userns)"
}
[[ -c /dev/net/tun ]] || die "no /dev/net/tun (modprobe tun)"
if ! "${AS_USER[@]}" sh -c '[ -r /dev/net/tun ] && [ -w /dev/net/tun ]'; then
    TUN_MODE_WAS="$(stat -c %a /dev/net/tun)"
    log "/dev/net/tun is mode $TUN_MODE_WAS, not usable by $USER_NAME: chmod 0666 /dev/net/tun, as udev does on stock distributions (pasta, slirp4netns and rootless tapnet open it); mode $TUN_MODE_WAS is put back on exit"
    chmod 0666 /dev/net/tun
fi

# ---------------------------------------------------------------- build
if want root || want rootless || want tapnet-forward; then
    build_tapnet
    install -m 0755 "$BIN" "$UBIN"
    log "tapnet: $BIN, copied to $UBIN, which root and $USER_NAME both run"
    BIN="$UBIN"
fi
ns_free " (not ours: left alone)"

# ---------------------------------------------------------------- building blocks
tn_as_user() {  # home-ns tapnet-args...: the copy of tapnet, as the user, in home-ns
    ip netns exec "$1" "${AS_USER[@]}" "$UBIN" "${@:2}"
}
netns_of() { readlink "/proc/$1/ns/net"; }
children_of() {  # pid: its children's pids
    local d s
    for d in /proc/[0-9]*; do
        s="$(cat "$d/stat" 2>/dev/null)" || continue
        s="${s##*) }"
        read -r _ s _ <<<"$s"
        [[ $s == "$1" ]] && echo "${d#/proc/}"
    done
    return 0
}
port_of() {  # impl round: the iperf3 port of that run; no two runs share one
    local k
    case $1 in
        root) k=0 ;; rootless) k=1 ;;
        tapnet1500) k=2 ;; "tapnet$JUMBO") k=3 ;;
        "pasta$JUMBO") k=4 ;; pasta1500) k=5 ;;
        slirp1500) k=6 ;; "slirp$JUMBO") k=7 ;;
        *) die "no such path: $1" ;;
    esac
    echo $((20000 + 1000 * k + $2))
}
ports_of() {  # impl: every run's port, "first-last" (or the one port)
    if [[ $REPEAT -eq 1 ]]; then port_of "$1" 1; else echo "$(port_of "$1" 1)-$(port_of "$1" "$REPEAT")"; fi
}

lab_two() {  # name net a-netns b-netns
    cat <<EOF
name = "$1"
[[bridge]]
name = "br0"
subnet = "$2.0/24"
[[port]]
name = "a"
bridge = "br0"
netns = "$3"
ip = "$2.2/24"
[[port]]
name = "b"
bridge = "br0"
netns = "$4"
ip = "$2.3/24"
EOF
}
lab_forward() {  # name net mtu c-netns impl: one container c and a forward per run
    local r p
    cat <<EOF
name = "$1"
[[bridge]]
name = "f1"
subnet = "$2.0/24"
mtu = $3
[[port]]
name = "c"
bridge = "f1"
netns = "$4"
ip = "$2.2/24"
EOF
    for ((r = 1; r <= REPEAT; r++)); do
        p="$(port_of "$5" "$r")"
        printf '[[forward]]\nproto = "tcp"\nlisten = "0.0.0.0:%s"\nto = "%s.2:%s"\n' "$p" "$2" "$p"
    done
}

# rootless tapnet: start_user_tapnet HOME LAB-FILE OUT-PREFIX -> STARTED_PID
start_user_tapnet() {
    ip netns exec "$1" "${AS_USER[@]}" "$UBIN" up "$2" >"$3.out" 2>"$3.err" &
    STARTED_PID=$!
}
# the network namespace of a rootless lab's port (through `tapnet exec`, which must
# not run in tapnet's own), recorded for the teardown and the leftover check
record_port_ns() {  # home lab port tapnet-pid
    local ns
    ns="$(tn_as_user "$1" exec --lab "$2" "$3" -- readlink /proc/self/ns/net 2>"$TMP/exec.err")" || {
        cat "$TMP/exec.err" >&2
        die "tapnet exec --lab $2 $3 -- readlink /proc/self/ns/net failed (as $USER_NAME)"
    }
    [[ $ns == net:\[*\] ]] || die "tapnet exec --lab $2 $3 -- readlink /proc/self/ns/net: unexpected output: $ns"
    [[ $ns != "$(netns_of "$4")" ]] || die "tapnet exec --lab $2 $3 ran in tapnet's own namespace ($ns)"
    UNNAMED_NS+=("$ns")
    TN_NS+=("$ns")
    log "lab $2 port $3: $ns"
}
# stop_user_tapnet PID LAB -> prints the exit status, then one line per leftover: a file
# of the lab under the user's runtime directory
stop_user_tapnet() {
    local pid=$1 lab=$2 rc=0 f
    kill -TERM "$pid"
    for _ in $(seq 100); do proc_live "$pid" || break; sleep 0.1; done
    proc_live "$pid" && die "tapnet (rootless, $lab) still running 10 s after SIGTERM"
    wait "$pid" || rc=$?
    echo "$rc"
    find "$URUN" -name "*$lab*" 2>/dev/null | while read -r f; do echo "$f"; done
    return 0
}
save_cpu() {  # pid t0 c0 file: what `stopped` reads from FILE.cpu
    echo "$3 $(cpu_ticks "$1") $2 $(now)" >"$4.cpu"
}

# pasta: start_pasta MTU-ARGS... -- PORT-SPEC OUT-PREFIX -> STARTED_PID, STARTED_HOLD
start_pasta() {  # out-prefix port-spec [pasta options]
    local out=$1 spec=$2 hold=""
    shift 2
    ip netns exec "$B_H" "${AS_USER[@]}" pasta --config-net -4 -f -q "$@" -t "$spec" -- sleep infinity \
        >"$out.out" 2>"$out.err" &
    STARTED_PID=$!
    disown "$STARTED_PID"        # its exit status says nothing; no job notice when it is killed
    for _ in $(seq 100); do
        hold="$(children_of "$STARTED_PID" | head -1)"
        if [[ -n $hold && "$(netns_of "$hold" 2>/dev/null)" != "$(netns_of "$STARTED_PID" 2>/dev/null)" ]] &&
            nsenter -t "$hold" -n ip -4 -o addr show 2>/dev/null | grep -q "inet $HOST_IP/"; then
            break
        fi
        proc_live "$STARTED_PID" || { grep -v 'to syslog' "$out.err" >&2; die "pasta $* exited"; }
        hold=""
        sleep 0.1
    done
    [[ -n $hold ]] || { grep -v 'to syslog' "$out.err" >&2; die "pasta $*: its namespace is not configured after 10 s"; }
    STARTED_HOLD=$hold
}

# slirp4netns: start_slirp MTU OUT-PREFIX IMPL -> STARTED_PID, STARTED_HOLD
start_slirp() {
    local mtu=$1 out=$2 impl=$3 hold sock="$URUN/slirp-$1.sock" r
    ip netns exec "$B_H" "${AS_USER[@]}" unshare --user --map-root-user --net sleep infinity \
        >"$out.hold" 2>&1 &
    hold=$!
    disown "$hold"
    STARTED_HOLD=$hold
    for _ in $(seq 100); do
        [[ "$(cat "/proc/$hold/comm" 2>/dev/null)" == sleep ]] && break
        proc_live "$hold" || { cat "$out.hold" >&2; die "unshare -Urn for slirp4netns exited"; }
        sleep 0.05
    done
    ip netns exec "$B_H" "${AS_USER[@]}" slirp4netns --configure --mtu="$mtu" --disable-host-loopback \
        --api-socket "$sock" "$hold" tap0 >"$out.out" 2>"$out.err" &
    STARTED_PID=$!
    disown "$STARTED_PID"
    for _ in $(seq 100); do
        if [[ -S $sock ]] && nsenter -t "$hold" -n ip -4 -o addr show dev tap0 2>/dev/null | grep -q 'inet '; then
            break
        fi
        proc_live "$STARTED_PID" || { cat "$out.err" >&2; die "slirp4netns --mtu=$mtu exited"; }
        sleep 0.1
    done
    [[ -S $sock ]] || { cat "$out.err" >&2; die "slirp4netns --mtu=$mtu: no API socket after 10 s"; }
    for ((r = 1; r <= REPEAT; r++)); do
        H slirp_fwd "$sock" "$(port_of "$impl" "$r")" || die "slirp4netns add_hostfwd failed"
    done
}

# ---------------------------------------------------------------- A. labs
lab_two "$A_R_LAB" "$A_R_NET" "$A_R_A" "$A_R_B" >"$LABS/root.toml"
lab_two "$A_U_LAB" "$A_U_NET" "$A_U_A" "$A_U_B" >"$LABS/rootless.toml"
lab_forward "$B_T_LAB" "$B_T_NET" 1500 "$B_T_C" tapnet1500 >"$LABS/fwd1500.toml"
lab_forward "$B_J_LAB" "$B_J_NET" "$JUMBO" "$B_J_C" "tapnet$JUMBO" >"$LABS/fwd$JUMBO.toml"
if want root || want rootless || want tapnet-forward; then
    for f in root rootless fwd1500 "fwd$JUMBO"; do
        "$BIN" check "$LABS/$f.toml" || die "tapnet check refused $LABS/$f.toml"
    done
fi

if want root; then
    log "A/root: tapnet up as root in $A_R_HOME: lab $A_R_LAB, a $A_R_A ($A_R_NET.2) -> b $A_R_B ($A_R_NET.3)"
    new_ns "$A_R_HOME"
    start_tapnet "$A_R_HOME" "$LABS/root.toml" "$TMP/tn-root"; AR_PID=$STARTED_PID
fi
if want rootless; then
    log "A/rootless: tapnet up as $USER_NAME in $A_U_HOME: lab $A_U_LAB, a ($A_U_NET.2) -> b ($A_U_NET.3)"
    new_ns "$A_U_HOME"
    start_user_tapnet "$A_U_HOME" "$LABS/rootless.toml" "$TMP/tn-rootless"; AU_PID=$STARTED_PID
fi

# ---------------------------------------------------------------- B. host, outside
log "B: host $B_H ($HOST_IP, default route via $OUT_IP) <-> outside $B_O ($OUT_IP)"
new_ns "$B_H" "$B_O"
ip -n "$B_H" link add out0 mtu 1500 type veth peer name eth0 mtu 1500 netns "$B_O"
ip -n "$B_H" addr add "$HOST_IP/24" dev out0
ip -n "$B_O" addr add "$OUT_IP/24" dev eth0
ip -n "$B_H" link set out0 up
ip -n "$B_O" link set eth0 up
# pasta takes its addresses and routes from the interface with the default route
ip -n "$B_H" route add default via "$OUT_IP"

if want tapnet-forward; then
    log "B/tapnet: rootless labs $B_T_LAB (MTU 1500) and $B_J_LAB (MTU $JUMBO) in $B_H, forwards $(ports_of tapnet1500) and $(ports_of "tapnet$JUMBO")"
    start_user_tapnet "$B_H" "$LABS/fwd1500.toml" "$TMP/tn-fwd1500"; BT_PID=$STARTED_PID
    start_user_tapnet "$B_H" "$LABS/fwd$JUMBO.toml" "$TMP/tn-fwd$JUMBO"; BJ_PID=$STARTED_PID
fi
if want pasta; then
    log "B/pasta: in $B_H as $USER_NAME, MTU $JUMBO (default), -t $(ports_of "pasta$JUMBO")"
    start_pasta "$TMP/pasta$JUMBO" "$(ports_of "pasta$JUMBO")"; P_PID=$STARTED_PID; P_HOLD=$STARTED_HOLD
    log "B/pasta: in $B_H as $USER_NAME, -m 1500, -t $(ports_of pasta1500)"
    start_pasta "$TMP/pasta1500" "$(ports_of pasta1500)" -m 1500; PM_PID=$STARTED_PID; PM_HOLD=$STARTED_HOLD
    UNNAMED_NS+=("$(netns_of "$P_HOLD")" "$(netns_of "$PM_HOLD")")
fi
if (( HAVE_SLIRP )); then
    log "B/slirp4netns: in $B_H as $USER_NAME, MTU 1500, add_hostfwd $(ports_of slirp1500)"
    start_slirp 1500 "$TMP/slirp1500" slirp1500; S_PID=$STARTED_PID; S_HOLD=$STARTED_HOLD
    UNNAMED_NS+=("$(netns_of "$S_HOLD")")
    log "B/slirp4netns: in $B_H as $USER_NAME, MTU $JUMBO, add_hostfwd $(ports_of "slirp$JUMBO")"
    start_slirp "$JUMBO" "$TMP/slirp$JUMBO" "slirp$JUMBO"; SJ_PID=$STARTED_PID; SJ_HOLD=$STARTED_HOLD
    UNNAMED_NS+=("$(netns_of "$SJ_HOLD")")
fi

# ---------------------------------------------------------------- readiness
declare -A T0 C0
if [[ -n $AR_PID ]]; then wait_ready "$AR_PID" "$TMP/tn-root" " (root)"; fi
if [[ -n $AU_PID ]]; then
    wait_ready "$AU_PID" "$TMP/tn-rootless" " (rootless)"
    record_port_ns "$A_U_HOME" "$A_U_LAB" a "$AU_PID"
    record_port_ns "$A_U_HOME" "$A_U_LAB" b "$AU_PID"
fi
if [[ -n $BT_PID ]]; then
    wait_ready "$BT_PID" "$TMP/tn-fwd1500" " (rootless, forward MTU 1500)"
    wait_ready "$BJ_PID" "$TMP/tn-fwd$JUMBO" " (rootless, forward MTU $JUMBO)"
    record_port_ns "$B_H" "$B_T_LAB" c "$BT_PID"
    record_port_ns "$B_H" "$B_J_LAB" c "$BJ_PID"
fi
for v in AR_PID AU_PID BT_PID BJ_PID; do
    if [[ -n ${!v} ]]; then T0[$v]="$(now)"; C0[$v]="$(cpu_ticks "${!v}")"; fi
done

# ---------------------------------------------------------------- paths
# path IMPL -> "TEST PID SERVER-CTX CLIENT-CTX DST": the process carrying the traffic,
# where the server runs, where the client runs, the address the client connects to.
# A context is ns:NAME (ip netns exec, as root), tn:HOME:LAB:PORT (tapnet exec as the
# user) or pid:PID (nsenter into that process's user and network namespace, as the user).
path() {
    case $1 in
        root)          echo "lab $AR_PID ns:$A_R_B ns:$A_R_A $A_R_NET.3" ;;
        rootless)      echo "lab $AU_PID tn:$A_U_HOME:$A_U_LAB:b tn:$A_U_HOME:$A_U_LAB:a $A_U_NET.3" ;;
        tapnet1500)    echo "forward $BT_PID tn:$B_H:$B_T_LAB:c ns:$B_O $HOST_IP" ;;
        "tapnet$JUMBO") echo "forward $BJ_PID tn:$B_H:$B_J_LAB:c ns:$B_O $HOST_IP" ;;
        "pasta$JUMBO")  echo "forward $P_PID pid:$P_HOLD ns:$B_O $HOST_IP" ;;
        pasta1500)     echo "forward $PM_PID pid:$PM_HOLD ns:$B_O $HOST_IP" ;;
        slirp1500)     echo "forward $S_PID pid:$S_HOLD ns:$B_O $HOST_IP" ;;
        "slirp$JUMBO")  echo "forward $SJ_PID pid:$SJ_HOLD ns:$B_O $HOST_IP" ;;
        *) die "no such path: $1" ;;
    esac
}
ctx() {  # context -> CTX, the command prefix that runs a command there
    local home lab port
    case $1 in
        ns:*)  CTX=(ip netns exec "${1#ns:}") ;;
        tn:*)  IFS=: read -r _ home lab port <<<"$1"
               CTX=(ip netns exec "$home" "${AS_USER[@]}" "$UBIN" exec --lab "$lab" "$port" --) ;;
        pid:*) CTX=("${AS_USER[@]}" nsenter -t "${1#pid:}" -U -n --preserve-credentials) ;;
        *) die "no such context: $1" ;;
    esac
}
alive() {  # pid impl: dies, with its stderr, if the process carrying IMPL is gone
    proc_live "$1" && return 0
    local f
    case $2 in
        root|rootless) f="$TMP/tn-$2.err" ;;
        tapnet*) f="$TMP/tn-fwd${2#tapnet}.err" ;;
        forward-*) f="$TMP/tn-fwd${2#forward-}.err" ;;
        *) f="$TMP/$2.err" ;;
    esac
    [[ -s $f ]] && { echo "--- $f:" >&2; grep -v 'to syslog' "$f" | tail -20 >&2; }
    die "the process carrying $2 (pid $1) died"
}

show_ports() {  # impl file: `tapnet show ports --json` of that path's lab (as its user)
    local how
    case $1 in
        root)          "$BIN" show ports --lab "$A_R_LAB" --json >"$2" 2>"$TMP/show.err"; how=$? ;;
        rootless)      tn_as_user "$A_U_HOME" show ports --lab "$A_U_LAB" --json >"$2" 2>"$TMP/show.err"; how=$? ;;
        tapnet1500)    tn_as_user "$B_H" show ports --lab "$B_T_LAB" --json >"$2" 2>"$TMP/show.err"; how=$? ;;
        "tapnet$JUMBO") tn_as_user "$B_H" show ports --lab "$B_J_LAB" --json >"$2" 2>"$TMP/show.err"; how=$? ;;
        *) die "no tapnet lab for $1" ;;
    esac
    [[ $how -eq 0 ]] || { cat "$TMP/show.err" >&2; die "tapnet show ports for $1 failed"; }
}
# port_frames TEST: JSON members (with a trailing comma) from ports0.json -> ports1.json:
# lab, what tapnet read from port a and wrote to port b; forward, what it wrote to the
# container's port c (the data) and read from it (the ACKs)
port_frames() {
    local f p a0 b0 c0_ d0 a1 b1 c1_ d1 ports=(c)
    [[ $1 == lab ]] && ports=(a b)
    for p in "${ports[@]}"; do
        for f in 0 1; do
            H port "$TMP/ports$f.json" "$p" >"$TMP/port$p$f" || die "cannot read port $p's counters"
        done
    done
    if [[ $1 == lab ]]; then
        read -r a0 b0 _ _ <"$TMP/porta0"; read -r a1 b1 _ _ <"$TMP/porta1"
        read -r _ _ c0_ d0 <"$TMP/portb0"; read -r _ _ c1_ d1 <"$TMP/portb1"
        echo "\"a_rx_frames\": $((a1 - a0)), \"a_rx_bytes\": $((b1 - b0)), \"b_tx_frames\": $((c1_ - c0_)), \"b_tx_bytes\": $((d1 - d0)),"
    else
        read -r a0 b0 c0_ d0 <"$TMP/portc0"; read -r a1 b1 c1_ d1 <"$TMP/portc1"
        echo "\"c_tx_frames\": $((c1_ - c0_)), \"c_tx_bytes\": $((d1 - d0)), \"c_rx_frames\": $((a1 - a0)), \"c_rx_bytes\": $((b1 - b0)),"
    fi
}

start_srv() {  # server-ctx port
    ctx "$1"
    "${CTX[@]}" iperf3 -s -1 -p "$2" >"$TMP/server.log" 2>&1 &
    SRV_PID=$!
    for _ in $(seq 200); do
        if "${CTX[@]}" ss -Hltn "sport = :$2" 2>/dev/null | grep -q .; then return 0; fi
        proc_live "$SRV_PID" || { cat "$TMP/server.log" >&2; die "iperf3 server ($1, port $2) exited"; }
        sleep 0.05
    done
    die "iperf3 server ($1, port $2) not listening after 10 s"
}

# run_one IMPL ROUND: one iperf3 TCP measurement, appends a JSON line to $SAMPLES
run_one() {
    local impl=$1 round=$2 test pid sctx cctx dst port out t0 c0 t1 c1 rc parsed frames=""
    read -r test pid sctx cctx dst <<<"$(path "$impl")"
    port="$(port_of "$impl" "$round")"
    out="$TMP/$impl-$round.json"
    alive "$pid" "$impl"
    for TRY_N in 1 2 3 4 5; do
        start_srv "$sctx" "$port"
        ctx "$cctx"
        if [[ $impl == root || $impl == rootless || $impl == tapnet* ]]; then
            show_ports "$impl" "$TMP/ports0.json"
        fi
        t0="$(now)"; c0="$(cpu_ticks "$pid")" || alive "$pid" "$impl"
        rc=0
        timeout $((SECS + 30)) "${CTX[@]}" iperf3 -c "$dst" -p "$port" -t "$SECS" -J >"$out" 2>&1 || rc=$?
        alive "$pid" "$impl"
        c1="$(cpu_ticks "$pid")" || alive "$pid" "$impl"
        t1="$(now)"
        if [[ $impl == root || $impl == rootless || $impl == tapnet* ]]; then
            show_ports "$impl" "$TMP/ports1.json"
            frames="$(port_frames "$test")"
        fi
        if [[ $rc -eq 0 ]]; then stop_server 50; break; fi
        stop_server 0
        log "$impl run $round: iperf3 client failed (attempt $TRY_N, status $rc): $(grep -o '"error":.*' "$out" | head -1)"
        if [[ $TRY_N -eq 5 ]]; then
            echo "--- $impl, port $port, exit status $rc:" >&2; tail -20 "$out" >&2
            die "$impl failed 5 times"
        fi
        sleep 1
    done
    parsed="$(H tcp "$out")" || die "cannot read the iperf3 result of $impl"
    H sample "{\"test\": \"$test\", \"impl\": \"$impl\", \"round\": $round, \"port\": $port, \"attempts\": $TRY_N}" \
        "$parsed" "{$frames$(H cpu_wall "$CLK_TCK" "$t0" "$t1" cpu_s "$c0" "$c1")}" >>"$SAMPLES"
    log "$(printf '%-12s run %d (port %d): %s' "$impl" "$round" "$port" "$(H line tcp "$parsed")")"
}

# ---------------------------------------------------------------- connectivity
IMPLS=()
if want root; then IMPLS+=(root); ping_ok "$A_R_A" "$A_R_NET.3" root; fi
if want rootless; then
    IMPLS+=(rootless)
    # ping as the user's uid 0 in the lab's user namespace; where it cannot even open
    # its socket, iperf3 will tell whether the path works
    ctx "tn:$A_U_HOME:$A_U_LAB:a"
    PING_OK=0
    for _ in $(seq 20); do
        if "${CTX[@]}" ping -c 1 -W 1 -q "$A_U_NET.3" >"$TMP/ping.out" 2>&1; then PING_OK=1; break; fi
        sleep 0.1
    done
    [[ $PING_OK -eq 1 ]] || log "warning: no ping from rootless a to b: $(tail -1 "$TMP/ping.out")"
fi
ping_ok "$B_O" "$HOST_IP"
if want tapnet-forward; then IMPLS+=(tapnet1500 "tapnet$JUMBO"); fi
if want pasta; then IMPLS+=("pasta$JUMBO" pasta1500); fi
if (( HAVE_SLIRP )); then IMPLS+=(slirp1500 "slirp$JUMBO"); fi
[[ ${#IMPLS[@]} -gt 0 ]] || die "nothing to run (--only $ONLY)"
log "running ${IMPLS[*]}: $REPEAT x ${SECS}s each, round-robin"

# ---------------------------------------------------------------- measurements
for ((r = 1; r <= REPEAT; r++)); do
    order=("${IMPLS[@]}")
    if (( r % 2 == 0 )); then
        order=()
        for ((i = ${#IMPLS[@]} - 1; i >= 0; i--)); do order+=("${IMPLS[i]}"); done
    fi
    for impl in "${order[@]}"; do run_one "$impl" "$r"; done
done
FWD_FILES=""
for v in "BT_PID:$B_T_LAB" "BJ_PID:$B_J_LAB"; do
    IFS=: read -r var lab <<<"$v"
    [[ -n ${!var} ]] || continue
    tn_as_user "$B_H" show forwards --lab "$lab" --json >"$TMP/forwards-$lab.json" 2>"$TMP/show.err" ||
        { cat "$TMP/show.err" >&2; die "tapnet show forwards --lab $lab (as $USER_NAME) failed"; }
    FWD_FILES+=" $lab=$TMP/forwards-$lab.json"
done

# ---------------------------------------------------------------- stop
STOPS=""
if [[ -n $AR_PID ]]; then
    alive "$AR_PID" root
    save_cpu "$AR_PID" "${T0[AR_PID]}" "${C0[AR_PID]}" "$TMP/stop-root"
    stop_tapnet "$AR_PID" "root" "$A_R_LAB" "$A_R_A" "$A_R_B" >"$TMP/stop-root"; AR_PID=""
    STOPS+=" root=$TMP/stop-root"
fi
for v in "AU_PID:$A_U_LAB:rootless" "BT_PID:$B_T_LAB:forward-1500" "BJ_PID:$B_J_LAB:forward-$JUMBO"; do
    IFS=: read -r var lab name <<<"$v"
    [[ -n ${!var} ]] || continue
    alive "${!var}" "$name"
    save_cpu "${!var}" "${T0[$var]}" "${C0[$var]}" "$TMP/stop-$name"
    stop_user_tapnet "${!var}" "$lab" >"$TMP/stop-$name"
    printf -v "$var" '%s' ""
    STOPS+=" $name=$TMP/stop-$name"
done
# whatever still runs in the rootless labs' namespaces outlived its tapnet
LEFT_PROCS=""
if [[ ${#TN_NS[@]} -gt 0 ]]; then
    for d in /proc/[0-9]*; do
        ns="$(readlink "$d/ns/net" 2>/dev/null)" || continue
        [[ " ${TN_NS[*]} " == *" $ns "* ]] && LEFT_PROCS+=" ${d#/proc/}($(cat "$d/comm" 2>/dev/null))"
    done
fi
[[ -z $LEFT_PROCS ]] || log "warning: processes left in the rootless labs' namespaces after tapnet exited:$LEFT_PROCS"

H meta "$TMP/meta.json" "$SECS" "$REPEAT" "$CLK_TCK" "$STOPS" "$FWD_FILES" \
    "$(uname -r)" "$(iperf3 --version | head -1)" "$(nproc)" "$(git_id)" "$PASTA_VERSION" "$SLIRP_VERSION"

if [[ -n $BIN_OPT ]]; then TAPNET_ID="$BIN_OPT (--bin; the work tree is at $(git_id))"; else TAPNET_ID="$(git_id)"; fi
echo "rootless tapnet vs root tapnet, pasta and slirp4netns, $(uname -r), $(nproc) CPUs, $(iperf3 --version | head -1), passt $PASTA_VERSION, $SLIRP_VERSION, tapnet $TAPNET_ID"
H report "$SAMPLES" "$TMP/meta.json" "$JSON_OUT"
# shellcheck disable=SC2086  # STOPS is a list of name=file words
set -- $STOPS
FILES=()
for s in "$@"; do FILES+=("${s#*=}"); done
[[ ${#FILES[@]} -eq 0 ]] || check_stops "${FILES[@]}"
[[ -z $LEFT_PROCS ]] || die "processes outlived their rootless tapnet:$LEFT_PROCS"
