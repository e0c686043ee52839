#!/bin/bash
# The same short training (attnkit train translate --max-steps 20) beside two CPU-bound
# processes, with three thread settings, interleaved, twice (docs/benchmarks.md, "Training on
# a busy machine"). Run from the repository: scripts/busy-machine-training.sh
A=${ATTNKIT_VENV:-.venv}/bin
OUT=$(mktemp -d)
python3 -c 'while 1: pass' & H1=$!
python3 -c 'while 1: pass' & H2=$!
trap "kill $H1 $H2 2>/dev/null" EXIT
sleep 3
run() {  # name, command...
  local name=$1; shift
  rm -rf $OUT/run
  local l0=$(cut -d' ' -f1 /proc/loadavg) s=$(date +%s.%N)
  "$@" train translate --max-steps 20 --out $OUT/run > $OUT/$name.log 2>&1
  local e=$(date +%s.%N)
  echo "$name $(echo "$e - $s" | bc | cut -c1-6) s, load $l0 -> $(cut -d' ' -f1 /proc/loadavg)"
}
OLD=(env -u OMP_WAIT_POLICY -u OMP_NUM_THREADS $A/python -c 'import sys; from attnkit.cli import main; sys.argv[0] = "attnkit"; main()')
NEW=(env -u OMP_WAIT_POLICY -u OMP_NUM_THREADS $A/attnkit)
ONE=(env -u OMP_WAIT_POLICY OMP_NUM_THREADS=1 $A/attnkit)
for round in 1 2; do
  run "runtime-default-$round" "${OLD[@]}"
  run "attnkit-default-$round" "${NEW[@]}"
  run "one-thread-$round" "${ONE[@]}"
done

grep -h "^threads:" $OUT/*.log | sort | uniq -c
rm -rf "$OUT"
