#!/usr/bin/env bash
# Issue 23: the kernel-tree restore, cold cache, interleaved rounds:
# cairn at the session's start (old), after (new2), restic; and a cold
# single-reader read of the tree (the floor).
set -uo pipefail
K=~/.cache/cairn-bench/corpora/kernel/linux-source-6.1
W=${WORK:-/tmp/cairn-ab23}; mkdir -p $W
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
# Binaries: $CAIRN_BIN_DIR/cairn-old and cairn-new3 (release builds of the
# two revisions compared); corpus: `cargo xtask corpora --corpus kernel`.
if [ ! -d $W/repo ]; then ${CAIRN_BIN_DIR:-/tmp}/cairn-new3 -r $W/repo init -q && ${CAIRN_BIN_DIR:-/tmp}/cairn-new3 -r $W/repo backup -q $K; fi
if [ ! -d $W/restic ]; then restic -r $W/restic init -q && restic -r $W/restic backup -q $K; fi
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
for round in 1 2 3; do
  for v in old new3 restic; do
    rm -rf $W/t; cold
    if [ $v = restic ]; then
      /usr/bin/time -f "$v round $round: %e s wall, %U s user, %S s sys, %M KB peak" restic -r $W/restic restore latest --target $W/t -q 2>&1 | tail -1
    else
      /usr/bin/time -f "$v round $round: %e s wall, %U s user, %S s sys, %M KB peak" ${CAIRN_BIN_DIR:-/tmp}/cairn-$v -r $W/repo restore latest --target $W/t -q 2>&1 | tail -1
    fi
  done
  cold
  /usr/bin/time -f "cat of the tree round $round: %e s wall, %U s user, %S s sys" sh -c "cd $K && find . -type f -print0 | xargs -0 cat > /dev/null" 2>&1 | tail -1
done
rm -rf $W/t
/usr/bin/time -f "cairn floor (snapshots): %M KB peak" ${CAIRN_BIN_DIR:-/tmp}/cairn-new3 -r $W/repo snapshots -q 2>&1 | tail -1
/usr/bin/time -f "restic floor (snapshots): %M KB peak" restic -r $W/restic snapshots -q 2>&1 | tail -1
