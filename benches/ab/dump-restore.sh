#!/usr/bin/env bash
# Issue 17: the pgbench-dump restore, cairn before (4f98424) and after (HEAD),
# interleaved on one repository, cold cache, 5 rounds each.
set -euo pipefail
# Binaries: $CAIRN_BIN_DIR/cairn-old, cairn-new, cairn-new2 (release builds of
# the revisions compared); corpus: `cargo xtask corpora --corpus sqldump`.
DUMP=$(ls ~/.cache/cairn-bench/corpora/sqldump/*1*.sql | head -1)
W=${WORK:-/tmp/cairn-ab17}; rm -rf $W; mkdir -p $W
export CAIRN_PASSWORD=bench
${CAIRN_BIN_DIR:-/tmp}/cairn-new -r $W/repo init -q
${CAIRN_BIN_DIR:-/tmp}/cairn-new -r $W/repo backup -q "$DUMP"
for round in 1 2 3 4 5; do
  for v in old new new2; do
    rm -rf $W/t; sync; echo 3 > /proc/sys/vm/drop_caches
    /usr/bin/time -f "$v round $round: %e s wall, %U s user, %S s sys, %M KB peak" \
      ${CAIRN_BIN_DIR:-/tmp}/cairn-$v -r $W/repo restore latest --target $W/t -q 2>&1 | tail -1
    cmp -s "$DUMP" "$W/t$DUMP" || echo "MISMATCH $v"
    rm -rf $W/t; sync; echo 3 > /proc/sys/vm/drop_caches
    /usr/bin/time -f "$v dump round $round: %e s wall, %U s user, %S s sys, %M KB peak" \
      sh -c "${CAIRN_BIN_DIR:-/tmp}/cairn-$v -r $W/repo dump latest $DUMP > $W/dump.out" 2>&1 | tail -1
    cmp -s "$DUMP" "$W/dump.out" || echo "DUMP MISMATCH $v"; rm -f $W/dump.out
  done
done
/usr/bin/time -f "floor (snapshots): %M KB peak" ${CAIRN_BIN_DIR:-/tmp}/cairn-new -r $W/repo snapshots -q 2>&1 | tail -1
