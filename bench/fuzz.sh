#!/usr/bin/env bash
# Fuzzes tapnet's parsers and decision code on stable Rust: builds the tapnet-fuzz
# binary (the `fuzz/` crate) and runs each target for SECONDS (default 60), printing
# `TARGET: N execs, M crashes` for each. The targets:
#   ingress  check_ingress, port security (PortGuard::check), Bridge::peek/decide, GRO
#   router   Router::handle/from_host/tick/trace on two legs and two services, reassembly
#   vxlan    Endpoint::accept/egress, offload::rx_checksums/rx_super_frame/max_rx_frame/segment
#   lab      lab::parse on mutated lab files (the default lab, docs/lab-file.md's examples)
# An input that panics, or breaks an invariant the target checks (an assertion), is a
# crash: saved as fuzz/artifacts/TARGET/crash-HASH (the panic message beside it in
# crash-HASH.txt; the directory is not committed). The exit status is 1 if any target
# crashed.
#
# Rerun:       bench/fuzz.sh 300                 (5 minutes a target)
#              target/release/tapnet-fuzz --seconds 60 --seed 42 router   (one target, a fixed seed)
# Reproduce:   RUST_BACKTRACE=1 target/release/tapnet-fuzz --repro TARGET fuzz/artifacts/TARGET/crash-HASH
#              runs the saved input once with the ordinary panic hook, so the panic and its
#              backtrace show; turn it into a unit test in the crate where the bug is.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
cargo build --release -q -p tapnet-fuzz
bin=target/release/tapnet-fuzz
status=0
for target in $("$bin" --list); do
    # One process a target, each bounded: a hang shows as a timeout, not a stuck run.
    timeout --signal=KILL "$((seconds + 60))" "$bin" --seconds "$seconds" "$target" || status=1
done
exit "$status"
