#!/usr/bin/env bash
# Seeds the fuzz corpora from real traffic: captures loopback (dumpcap, from Debian's tshark)
# while integration tests run real clients through sluice against real servers, then cuts the
# conversations into each target's inputs (fuzz/from_pcap.py). The machine's own services on
# their standard ports are left out of the capture. Usage, from the repository root:
#   fuzz/capture.sh [test filter ...]     (default: the protocol, state and driver tests)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v dumpcap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y tshark
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(pg_protocol:: pg_state:: my_proxy:: my_statements:: drivers::psycopg)
scratch=$(mktemp -d)
chmod 777 "$scratch"
pcap=$scratch/capture.pcapng
dumpcap -q -i lo -f 'tcp and not port 5432 and not port 3306 and not port 6379' -w "$pcap" &
capture=$!
trap 'kill "$capture" 2>/dev/null; rm -rf "$scratch"' EXIT
sleep 2
for f in "${filters[@]}"; do
    cargo test --test it -- "$f" || true
done
kill -INT "$capture"
wait "$capture" || true
python3 fuzz/from_pcap.py "$pcap"
