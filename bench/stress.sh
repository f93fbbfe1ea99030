#!/usr/bin/env bash
# bench/stress.sh: tapnet under load and attack, with floods too long for the test suite.
# Prints figures; every flood is bounded in count and time, and stays inside namespaces
# this script makes (tapnet runs in a test "host" namespace whose only link leads to a
# test "outside" namespace).
#
#   sudo bench/stress.sh [--connections N] [--syns N] [--no-build]
#
# 1. Connections: N (default 10000) TCP connections from the outside through a forward
#    to an echo server in a container, each sending 6 bytes and waiting for them back,
#    then held idle. Meanwhile a ping between two other containers (-i 0.01). Prints
#    how many were echoed and how fast, the ping's loss, tapnet's RSS before, with the
#    connections idle (and per connection), and after they closed.
# 2. SYN flood: one container sends N (default 20000) SYNs from distinct source ports,
#    through masquerade, to an outside address that drops them. Meanwhile the same
#    ping. Then 20 masqueraded and 20 forwarded requests are timed.
#
# Needs root, iproute2, python3, ping, curl.
set -euo pipefail

CONNS=10000
SYNS=20000
BUILD=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --connections) CONNS="$2"; shift 2 ;;
        --syns) SYNS="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "stress.sh: unknown argument $1" >&2; exit 1 ;;
    esac
done
[[ $EUID -eq 0 ]] || { echo "stress.sh: run as root" >&2; exit 2; }
for c in ip python3 ping curl nsenter; do
    command -v "$c" >/dev/null || { echo "stress.sh: $c not found" >&2; exit 2; }
done

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$ROOT/target/release/tapnet"
if [[ $BUILD -eq 1 ]]; then (cd "$ROOT" && cargo build --release -q -p tapnet); fi
[[ -x "$BIN" ]] || { echo "stress.sh: $BIN missing (build it)" >&2; exit 2; }

S="st$$"
H="${S}h"; O="${S}o"; SRV="${S}s"; P1="${S}p1"; P2="${S}p2"; FL="${S}f"
TMP="$(mktemp -d)"
TAPNET_PID=""
cleanup() {
    set +e
    [[ -n "$TAPNET_PID" ]] && kill "$TAPNET_PID" 2>/dev/null && wait "$TAPNET_PID" 2>/dev/null
    for ns in "$SRV" "$P1" "$P2" "$FL" "$H" "$O"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

ip netns add "$H"; ip netns add "$O"
ip link add veth0 netns "$H" type veth peer name veth0 netns "$O"
ip -n "$H" addr add 10.250.0.1/24 dev veth0; ip -n "$O" addr add 10.250.0.2/24 dev veth0
for ns in "$H" "$O"; do ip -n "$ns" link set veth0 up; ip -n "$ns" link set lo up; done
ip -n "$H" route add default via 10.250.0.2
# An outside address that drops everything: where the SYN flood goes.
ip -n "$O" route add blackhole 10.248.0.0/16

cat > "$TMP/lab.toml" <<LAB
name = "$S"
[[bridge]]
name = "br0"
subnet = "10.252.0.0/16"
[[port]]
name = "srv"
bridge = "br0"
netns = "$SRV"
ip = "10.252.0.2/16"
[[port]]
name = "p1"
bridge = "br0"
netns = "$P1"
ip = "10.252.0.3/16"
[[port]]
name = "p2"
bridge = "br0"
netns = "$P2"
ip = "10.252.0.4/16"
[[port]]
name = "fl"
bridge = "br0"
netns = "$FL"
ip = "10.252.0.5/16"
[[forward]]
listen = "7000"
to = "10.252.0.2:7000"
[[forward]]
listen = "8080"
to = "10.252.0.2:8080"
[nat]
masquerade = true
LAB
nsenter --net="/run/netns/$H" "$BIN" up "$TMP/lab.toml" >"$TMP/up.out" 2>"$TMP/up.err" &
TAPNET_PID=$!
for _ in $(seq 100); do grep -q ready "$TMP/up.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$TMP/up.out" || { cat "$TMP/up.err" >&2; exit 2; }

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$TAPNET_PID/status"; }
fds() { ls "/proc/$TAPNET_PID/fd" | wc -l; }

# Servers: an echo server for many connections, a web server, both in srv; a web
# server outside.
cat > "$TMP/echo.py" <<'PY'
import selectors, socket, sys
sel = selectors.DefaultSelector()
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2]))); srv.listen(4096); srv.setblocking(False)
sel.register(srv, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is srv:
            try:
                while True:
                    c, _ = srv.accept(); c.setblocking(False); sel.register(c, selectors.EVENT_READ)
            except BlockingIOError:
                pass
        else:
            try:
                d = s.recv(4096)
            except (BlockingIOError, ConnectionResetError):
                d = b"" if False else None
            if d is None:
                continue
            if not d:
                sel.unregister(s); s.close()
            else:
                s.send(d)
PY
web() { # ns ip port
    ip netns exec "$1" python3 -c "import http.server as h, socket, sys; socket.getfqdn = lambda *a: 'x'; h.HTTPServer.allow_reuse_address = True; h.ThreadingHTTPServer(('$2', $3), h.BaseHTTPRequestHandler).serve_forever()" >/dev/null 2>&1 &
}
ip netns exec "$SRV" bash -c "ulimit -n $(ulimit -Hn); exec python3 $TMP/echo.py 10.252.0.2 7000" &
web "$SRV" 10.252.0.2 8080
web "$O" 10.250.0.2 8000
sleep 1

ping_start() { ip netns exec "$P1" ping -q -i 0.01 -W 1 10.252.0.4 >"$TMP/ping.out" 2>&1 & PING_PID=$!; }
# Stops the ping in this shell (not in a $(...) subshell, which cannot wait for it:
# its summary would not be written yet) and prints its loss.
ping_stop() {
    # Replies still on their way when ping stops would count as lost: give them time.
    sleep 2
    kill -INT "$PING_PID" 2>/dev/null; wait "$PING_PID" 2>/dev/null || true
    local loss count
    loss=$(grep -o '[0-9.]*% packet loss' "$TMP/ping.out" | head -1)
    count=$(grep -o '[0-9]* packets transmitted, [0-9]* received' "$TMP/ping.out" | head -1)
    echo "ping p1 -> p2 meanwhile: $loss ($count)"
}
# Where frames were lost: the TAP queue towards tapnet in p1 and p2 (tx dropped), and
# tapnet's own drop counters.
tap_drops() {
    local a b
    a=$(ip -n "$P1" -s link show eth0 | awk '/TX:/ {getline; print $4}')
    b=$(ip -n "$P2" -s link show eth0 | awk '/TX:/ {getline; print $4}')
    echo "TAP queue drops: p1 $a, p2 $b; tapnet: $(nsenter --net="/run/netns/$H" "$BIN" show drops --lab "$S" | tail -n +2 | tr -s ' ' | paste -sd, -)"
}

echo "# tapnet $(git_id), $(uname -r), $(nproc) CPUs"
echo "# 1. $CONNS connections through a forward"
RSS0=$(rss_kib)
cat > "$TMP/client.py" <<'PY'
import selectors, socket, sys, time, statistics
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sel = selectors.DefaultSelector()
socks, start, done, lat = [], {}, set(), []
t0 = time.time()
for i in range(n):
    s = socket.socket(); s.setblocking(False)
    try: s.connect((host, port))
    except BlockingIOError: pass
    socks.append(s); start[s] = time.time()
    sel.register(s, selectors.EVENT_WRITE)
    if i % 500 == 499:
        for key, ev in sel.select(0):
            pass
sent = set()
deadline = time.time() + 40
while len(done) < n and time.time() < deadline:
    for key, ev in sel.select(0.5):
        s = key.fileobj
        if s not in sent and ev & selectors.EVENT_WRITE:
            try:
                s.send(b"hello\n"); sent.add(s)
                sel.modify(s, selectors.EVENT_READ)
            except OSError:
                sel.unregister(s); done.add(s)
        elif ev & selectors.EVENT_READ:
            try:
                d = s.recv(100)
            except OSError:
                d = b""
            if d == b"hello\n":
                lat.append(time.time() - start[s])
            sel.unregister(s); done.add(s)
print("echoed %d of %d within 40 s; median %.2f s, p99 %.2f s" % (
    len(lat), n, statistics.median(lat) if lat else 0, sorted(lat)[int(len(lat) * .99)] if lat else 0))
sys.stdout.flush()
open(sys.argv[4], "w").write("held\n")
time.sleep(float(sys.argv[5]))
for s in socks: s.close()
PY
ping_start
ip netns exec "$O" bash -c "ulimit -n $(ulimit -Hn); exec python3 $TMP/client.py 10.250.0.1 7000 $CONNS $TMP/held 8" &
CLIENT=$!
for _ in $(seq 600); do [[ -f "$TMP/held" ]] && break; sleep 0.1; done
sleep 3
RSS1=$(rss_kib); FDS1=$(fds)
ACTIVE=$(nsenter --net="/run/netns/$H" "$BIN" show forwards --lab "$S" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["forwards"][0]["active"])')
wait "$CLIENT"
ping_stop
tap_drops
sleep 10
RSS2=$(rss_kib); FDS2=$(fds)
LEFT=$(ip netns exec "$SRV" ss -Htn state established '( sport = :7000 )' | wc -l)
echo "tapnet RSS: $RSS0 KiB before, $RSS1 KiB with $ACTIVE connections idle ($(( (RSS1 - RSS0) / (ACTIVE > 0 ? ACTIVE : 1) )) KiB each), $RSS2 KiB 10 s after they closed"
echo "tapnet descriptors: $FDS1 with them, $FDS2 after; connections left open in the container: $LEFT"

echo "# 2. SYN flood through masquerade: $SYNS SYNs to a dropping address"
RMAC=$(nsenter --net="/run/netns/$H" "$BIN" show ports --lab "$S" --json | python3 -c 'import json,sys; print([p["mac"] for p in json.load(sys.stdin)["ports"] if p["name"]=="router:br0"][0])')
cat > "$TMP/syn.py" <<'PY'
import socket, struct, sys, time
n, rmac = int(sys.argv[1]), bytes(int(x, 16) for x in sys.argv[2].split(":"))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
mac = bytes(int(x, 16) for x in open("/sys/class/net/eth0/address").read().strip().split(":"))
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while t >> 16: t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
src, dst = socket.inet_aton("10.252.0.5"), socket.inet_aton("10.248.0.1")
t0 = time.time()
for k in range(n):
    tcp = struct.pack("!HHIIBBHHH", 1024 + k % 60000, 80, k, 0, 5 << 4, 0x02, 65535, 0, 0)
    c = csum(src + dst + struct.pack("!BBH", 0, 6, 20) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, k & 0xffff, 0x4000, 64, 6, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    s.send(rmac + mac + b"\x08\x00" + ip + tcp)
print("sent %d SYNs in %.1f s" % (n, time.time() - t0))
PY
ping_start
ip netns exec "$FL" python3 "$TMP/syn.py" "$SYNS" "$RMAC"
sleep 2
ping_stop
nsenter --net="/run/netns/$H" "$BIN" show nat --lab "$S" --json | python3 -c '
import json, sys
h = json.load(sys.stdin)["host"]
print("host proxy: tcp_opened %d, syn_limited %d" % (h["tcp_opened"], h.get("syn_limited", 0)))'
time_requests() { # ns url
    python3 - "$1" "$2" <<'PY'
import subprocess, sys, statistics
ts = []
for _ in range(20):
    out = subprocess.run(["ip", "netns", "exec", sys.argv[1], "curl", "-s", "-o", "/dev/null",
                          "-m", "5", "-w", "%{time_total}", sys.argv[2]], capture_output=True, text=True)
    ts.append(float(out.stdout or 5))
print("median %.1f ms, worst %.1f ms" % (statistics.median(ts) * 1000, max(ts) * 1000))
PY
}
echo "20 masqueraded requests after: $(time_requests "$P1" http://10.250.0.2:8000/)"
echo "20 forwarded requests after: $(time_requests "$O" http://10.250.0.1:8080/)"
echo "tapnet RSS after everything: $(rss_kib) KiB, descriptors $(fds)"
