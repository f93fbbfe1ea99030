#!/usr/bin/env bash
# bench/etcd-scale.sh: what a lab of many hosts costs one tapnet and the store, at the
# largest scale this machine allows: one real tapnet and N simulated hosts
# (bench/etcd_hosts.py), each with P container ports, registered in a real etcd
# exactly as tapnet registers itself. Everything runs inside one test namespace
# (es-PID: etcd on its loopback, tapnet's underlay on a veth with both ends there, so
# nothing it sends leaves the namespace) and a container namespace (es-c-PID).
#
# Measures: the time for N registrations to reach tapnet (a join: one key, one watch
# event per other host), tapnet's RSS and CPU time before and after taking N hosts and
# N x P remote MACs, etcd's database size and one host's value size, the time one
# more host takes to reach tapnet, and what ARP suppression saves: the datagrams one
# ARP resolution sends to the peers (0 when suppressed, N when flooded by head-end
# replication).
#
# Usage: sudo bench/etcd-scale.sh [--hosts N] [--ports P] [--no-build] [--bin FILE]
# Needs root, iproute2, python3, etcd-server and etcd-client (installed with apt-get
# if missing, saying so).
set -euo pipefail
cd "$(dirname "$0")/.."

HOSTS=50
PORTS=50
BUILD=1
BIN=target/release/tapnet
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) HOSTS=$2; shift 2 ;;
    --ports) PORTS=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --bin) BIN=$2; BUILD=0; shift 2 ;;
    *) echo "usage: $0 [--hosts N] [--ports P] [--no-build] [--bin FILE]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root (it makes namespaces)" >&2; exit 2; }
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ $BUILD = 1 ] && cargo build --release -q -p tapnet

NS=es-$$
CNS=es-c-$$
LAB=es$$
WORK=$(mktemp -d)
URL=http://127.0.0.1:23799
cleanup() {
  [ -n "${SIM:-}" ] && { exec 3>&- || true; wait "$SIM" 2>/dev/null || true; }
  [ -n "${TAPNET:-}" ] && { kill "$TAPNET" 2>/dev/null || true; wait "$TAPNET" 2>/dev/null || true; }
  [ -n "${ETCD:-}" ] && { kill "$ETCD" 2>/dev/null || true; wait "$ETCD" 2>/dev/null || true; }
  ip netns del "$NS" 2>/dev/null || true
  ip netns del "$CNS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

ip netns add "$NS"
ip -n "$NS" link set lo up
# The underlay: a veth whose both ends stay in the namespace (what is sent to the
# simulated hosts goes nowhere else).
ip -n "$NS" link add d0 type veth peer name d1
ip -n "$NS" addr add 10.99.0.1/16 dev d0
ip -n "$NS" link set d0 up
ip -n "$NS" link set d1 up

ip netns exec "$NS" etcd --data-dir "$WORK/etcd" --listen-client-urls $URL \
  --advertise-client-urls $URL --listen-peer-urls http://127.0.0.1:23800 \
  --initial-advertise-peer-urls http://127.0.0.1:23800 \
  --initial-cluster default=http://127.0.0.1:23800 >"$WORK/etcd.log" 2>&1 &
ETCD=$!
ctl() { ip netns exec "$NS" env ETCDCTL_API=3 etcdctl --endpoints $URL "$@"; }
for _ in $(seq 100); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.2; done

cat >"$WORK/lab.toml" <<EOF
name = "$LAB"
[[bridge]]
name = "ov"
subnet = "10.200.0.0/16"
vni = 42
fdb_max = $(( HOSTS * PORTS + 1024 ))
[[port]]
name = "c"
bridge = "ov"
netns = "$CNS"
ip = "10.200.255.250/16"
[vxlan]
listen = "10.99.0.1:4789"
etcd = ["$URL"]
etcd_ttl_s = 30
EOF
export TAPNET_RUN_DIR=$WORK/run
mkdir -p "$TAPNET_RUN_DIR"
ip netns exec "$NS" "$BIN" up "$WORK/lab.toml" >"$WORK/tapnet.out" 2>&1 &
TAPNET=$!
for _ in $(seq 100); do grep -q ready "$WORK/tapnet.out" 2>/dev/null && break; sleep 0.1; done
grep -q ready "$WORK/tapnet.out" || { cat "$WORK/tapnet.out" >&2; exit 1; }
# `ip netns exec` execs: the tapnet process is $TAPNET itself.
PID=$TAPNET
# The container says nothing by itself (no IPv6 router solicitations or MLD reports
# flooded to every peer in the middle of the ARP count below): a setting of the
# container's own namespace, not the host's.
ip netns exec "$CNS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1

rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$PID"/status; }
cpu_ms() { awk '{print ($14 + $15) * 10}' /proc/"$PID"/stat; }
# CPU time by thread name (ms): the datapath ("tapnet"), the store client's threads,
# the control threads that answered the measurement's own queries.
cpu_by_thread() {
  for t in /proc/"$PID"/task/*; do
    printf '%s %s\n' "$(cat "$t/comm")" "$(awk '{print ($14 + $15) * 10}' "$t/stat")"
  done | awk '{a[$1] += $2} END {for (k in a) printf "%s=%d ", k, a[k]}'
}
peers() { "$BIN" show vxlan --lab "$LAB" --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["peers"]))'; }
taken_macs() { "$BIN" show vxlan --lab "$LAB" --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(sum(x["remote_macs"] for x in v["vnis"]), v["store"]["registered_over_limit"])'; }
# Datagrams sent to the peers, or tried (with a thousand simulated hosts that are not
# there, the namespace's neighbour table overflows and sends fail: counted as errors).
tx_total() { "$BIN" show vxlan --lab "$LAB" --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(sum(p["tx_packets"] + p["tx_errors"] for p in v["peers"]))'; }
arp_suppressed() { "$BIN" show vxlan --lab "$LAB" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["arp_suppressed"])'; }
now_ms() { date +%s%3N; }
# Waits until tapnet lists more than $1 peers, asking its control socket every 5 ms
# (no process started per look); prints how long that took, in ms.
wait_peers_over() {
  python3 - "$TAPNET_RUN_DIR/$LAB.sock" "$1" <<'PY'
import json, socket, sys, time
path, want = sys.argv[1], int(sys.argv[2])
t = time.monotonic()
while time.monotonic() - t < 60:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(b"show vxlan\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    if len(json.loads(data)["peers"]) > want:
        break
    time.sleep(0.005)
print(int((time.monotonic() - t) * 1000))
PY
}

sleep 1
RSS0=$(rss_kib); CPU0=$(cpu_ms)
DB0=$(ctl endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')

# N simulated hosts, registered one after another; their leases kept alive meanwhile.
exec 3> >(ip netns exec "$NS" python3 bench/etcd_hosts.py $URL "$LAB" "$HOSTS" "$PORTS" --ttl 30 >"$WORK/sim.out")
SIM=$!
TOOK=$(wait_peers_over $((HOSTS - 1)))
GOT=$(peers)
sleep 1
RSS1=$(rss_kib); CPU1=$(cpu_ms)
THREADS=$(cpu_by_thread)
read -r TAKEN OVER < <(taken_macs)
DB1=$(ctl endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
SIMLINE=$(head -1 "$WORK/sim.out")

# One more host joins: how long from its put's answer until tapnet has it.
ip netns exec "$NS" python3 - "$URL" "$LAB" <<'EOF'
import base64, json, sys, urllib.request, time
url, lab = sys.argv[1], sys.argv[2]
v = json.dumps({"version": 1, "lab": lab, "vtep": "10.99.250.1:4789", "vnis": [42], "ports": []})
k = f"/tapnet/v1/{lab}/hosts/10.99.250.1:4789"
b = lambda s: base64.b64encode(s.encode()).decode()
req = urllib.request.Request(url + "/v3/kv/put", data=json.dumps({"key": b(k), "value": b(v)}).encode(), method="POST")
urllib.request.urlopen(req, timeout=5).read()
EOF
JOIN=$(wait_peers_over "$GOT")
# What one look costs (the join above is measured by looking every 5 ms).
LOOK=$( { time -p "$BIN" show vxlan --lab "$LAB" --json >/dev/null; } 2>&1 | awk '/real/ {print int($2 * 1000)}')

# ARP suppression: the container resolves a registered address (10.200.3.7, host 3's
# port 6): answered by tapnet, nothing flooded to the peers; then, for comparison, an
# address no host registered, flooded to every peer.
ip netns exec "$CNS" ip neigh flush all
TX0=$(tx_total); S0=$(arp_suppressed)
ip netns exec "$CNS" ping -c 1 -W 1 10.200.3.7 >/dev/null 2>&1 || true
TX1=$(tx_total); S1=$(arp_suppressed)
ip netns exec "$CNS" ping -c 1 -W 1 10.200.255.251 >/dev/null 2>&1 || true
TX2=$(tx_total)

[ -n "${ES_KEEP:-}" ] && sleep "$ES_KEEP"
python3 - "$HOSTS" "$PORTS" "$TOOK" "$GOT" "$RSS0" "$RSS1" "$CPU0" "$CPU1" "$DB0" "$DB1" \
  "$JOIN" "$LOOK" "$THREADS" "$TAKEN" "$OVER" "$((S1 - S0))" "$((TX1 - TX0))" "$((TX2 - TX1))" "$SIMLINE" \
  "$(git rev-parse --short HEAD)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" "$(uname -r)" <<'EOF'
import json, sys
(hosts, ports, took, got, rss0, rss1, cpu0, cpu1, db0, db1, join_ms, look_ms, threads, taken, over, supp,
 tx_supp, tx_flood, sim, commit, cpu, kernel) = sys.argv[1:]
sim = json.loads(sim)
macs = int(hosts) * int(ports)
print(f"commit {commit}, {cpu}, kernel {kernel}")
print(f"{hosts} simulated hosts x {ports} ports ({macs} remote MACs), one tapnet watching")
print(f"  registered in etcd in {sim['register_s']} s; all {got} in tapnet's peers {int(took)/1000:.2f} s after the simulator started")
print(f"  one host's value: {sim['value_bytes']} bytes; all keys: {sim['keys_bytes']} bytes; etcd db {int(db0)//1024} KiB -> {int(db1)//1024} KiB")
print(f"  remote MACs taken: {taken} (past the VNI's fdb_max: {over})")
print(f"  tapnet RSS {int(rss0)} KiB -> {int(rss1)} KiB (+{int(rss1)-int(rss0)} KiB, {((int(rss1)-int(rss0))*1024)/max(int(taken),1):.0f} bytes per remote MAC taken)")
print(f"  tapnet CPU time taking them: {int(cpu1)-int(cpu0)} ms (since start, by thread, ms: {threads.strip()})")
print(f"  one more host: in tapnet's peers {join_ms} ms after its put was answered (one watch event; "
      f"seen by asking `show vxlan`, which takes {look_ms} ms itself at this size)")
print(f"  ARP for a registered container: {supp} answered here, {tx_supp} datagrams to peers (ping's echo included); "
      f"for an unregistered address: {tx_flood} datagrams (the request flooded to every peer, as head-end replication does)")
EOF
