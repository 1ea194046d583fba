#!/bin/sh
# Runs every fuzz target one after another (the machine has 2 cores), each
# from its committed seeds, and prints the executions each one ran.
# Usage (from fuzz/): ./run-all.sh [RUNS [SECONDS]]
set -e
RUNS=${1:-3000000}
SECS=${2:-600}
for t in envelope key_file config index snapshot lock tree blob pack_header; do
    mkdir -p corpus/$t
    cargo +nightly fuzz run -a $t corpus/$t seeds/$t -- \
        -runs=$RUNS -max_total_time=$SECS -malloc_limit_mb=300 -rss_limit_mb=2048 \
        -print_final_stats=1 2>&1 | tee logs-$t.txt | grep -E 'number_of_executed_units|ERROR|panicked|Done' || true
done
grep -H number_of_executed_units logs-*.txt
