#!/usr/bin/env python3
"""Simulated tapnet hosts for bench/etcd-scale.sh: registers N hosts of a lab in etcd
through its v3 JSON gateway, each under a lease of its own with P container ports on a
VNI, exactly as tapnet registers itself (key {prefix}v1/{lab}/hosts/{ip}:4789, the
JSON value of encap/src/store.rs), then keeps the leases alive until told to stop.

Usage: etcd_hosts.py URL LAB HOSTS PORTS [--prefix /tapnet/] [--ttl 30] [--base 10.99.1.0]
Prints one JSON line when every host is registered: the time it took, the value size
of one host and the keys' total, then keeps the leases alive until stdin closes, and
revokes them on the way out.
"""

import base64
import ipaddress
import json
import sys
import threading
import time
import urllib.request


def call(url, path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def b64(s):
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def main():
    args = sys.argv[1:]
    opts = {"--prefix": "/tapnet/", "--ttl": "30", "--base": "10.99.1.0"}
    pos = []
    i = 0
    while i < len(args):
        if args[i] in opts:
            opts[args[i]] = args[i + 1]
            i += 2
        else:
            pos.append(args[i])
            i += 1
    url, lab, hosts, ports = pos[0], pos[1], int(pos[2]), int(pos[3])
    base = ipaddress.IPv4Address(opts["--base"])
    leases = []
    value_bytes = 0
    start = time.monotonic()
    for h in range(hosts):
        vtep = f"{base + h + 1}:4789"
        value = json.dumps({
            "version": 1,
            "lab": lab,
            "vtep": vtep,
            "vnis": [42],
            "ports": [
                {
                    "vni": 42,
                    "mac": "02:%02x:%02x:%02x:%02x:%02x" % (
                        0x5e, (h >> 8) & 0xff, h & 0xff, (p >> 8) & 0xff, p & 0xff),
                    "ip": str(ipaddress.IPv4Address(0x0AC80000 + h * 256 + p + 1)),
                }
                for p in range(ports)
            ],
        }, separators=(",", ":"))
        value_bytes = len(value)
        lease = call(url, "/v3/lease/grant", {"TTL": opts["--ttl"]})["ID"]
        key = f"{opts['--prefix']}v1/{lab}/hosts/{vtep}"
        call(url, "/v3/kv/put", {"key": b64(key), "value": b64(value), "lease": lease})
        leases.append(lease)
    took = time.monotonic() - start
    print(json.dumps({"hosts": hosts, "ports": ports, "register_s": round(took, 3),
                      "value_bytes": value_bytes, "keys_bytes": value_bytes * hosts}),
          flush=True)

    stop = threading.Event()

    def keepalive():
        every = max(1.0, int(opts["--ttl"]) / 3)
        while not stop.wait(every):
            for lease in leases:
                try:
                    call(url, "/v3/lease/keepalive", {"ID": lease})
                except OSError:
                    pass

    t = threading.Thread(target=keepalive, daemon=True)
    t.start()
    sys.stdin.read()
    stop.set()
    for lease in leases:
        try:
            call(url, "/v3/lease/revoke", {"ID": lease})
        except OSError:
            pass


if __name__ == "__main__":
    main()
