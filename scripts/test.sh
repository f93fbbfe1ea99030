#!/usr/bin/env bash
# The README's test command: installs what the tests run (real clients in real
# namespaces), then runs every test. Needs root: the integration tests create network
# namespaces and TAP devices.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: run as root (the tests create namespaces and TAP devices)" >&2
  exit 2
fi

# Debian packages the tests use: ip (iproute2), ping, iperf3, setpriv and unshare
# (util-linux), useradd (passwd, for the rootless tests' user), qemu-system-x86_64
# (qemu-system-x86: a VM's socket port), podman with runc, busybox-static and the
# reference CNI plugins (the CNI plugin under a real runtime),
# timeout (coreutils), python3 (raw-socket frames, http.server), curl, traceroute, ethtool,
# tcpdump and tshark (VXLAN and capture tests), rdisc6 (ndisc6: router advertisements
# with their DNS servers).
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v setpriv >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
command -v curl >/dev/null || need+=(curl)
command -v rdisc6 >/dev/null || need+=(ndisc6)
command -v traceroute >/dev/null || need+=(traceroute)
command -v ethtool >/dev/null || need+=(ethtool)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v tshark >/dev/null || need+=(tshark)
command -v useradd >/dev/null || need+=(passwd)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/bin/busybox ] || need+=(busybox-static)
[ -x /usr/lib/cni/tuning ] || need+=(containernetworking-plugins)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
modprobe tun 2>/dev/null || true
[ -c /dev/net/tun ] || { echo "scripts/test.sh: /dev/net/tun is missing" >&2; exit 2; }

# The rootless tests run tapnet as an ordinary user, `tapnet-test`, and need
# /dev/net/tun open to every user (mode 0666), as udev leaves it on Debian, Ubuntu and
# Fedora and as the README asks where no udev runs (containers, CI). The tests do both
# themselves too; here they are said out loud.
id tapnet-test >/dev/null 2>&1 ||
  useradd --system --no-create-home --shell /usr/sbin/nologin tapnet-test
chmod 0666 /dev/net/tun

# Release build: the datapath tests push real traffic (iperf3) through tapnet.
# Doc-tests are left out (there are none), so no runner closes on "0 passed"; the
# last line sums every test binary's result.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace --lib --bins --tests "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
exit "$status"
