#!/usr/bin/env bash
# What a first run gives, measured: the Train tab's default settings on the default data source
# (the bundled real samples plus a freshly generated SYNTHETIC set), with DP off, at the default
# noise multiplier, and at sigma 0.5 and 3. Prints test accuracy, epsilon and seconds for each,
# beside the goals of issue 16. A measurement on this machine, not a test: run it on a quiet
# machine. Extra arguments go to `privxray bench demo` (e.g. --runs off,default --json).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p privxray-ui
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
exec ./target/release/privxray bench demo "$@"
