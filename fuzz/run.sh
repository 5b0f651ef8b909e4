#!/usr/bin/env bash
# Run every fuzz target for SECONDS each (default 300) from the seed corpora; a crash, leak
# or sanitizer report fails the run and leaves the reproducer in fuzz/build/.
#   bash fuzz/run.sh 10      # the smoke version the test suite runs
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-300}"
bash fuzz/build.sh
for t in json:json conn:http; do
  name="${t%%:*}"; corpus="${t##*:}"
  work="fuzz/build/corpus-$corpus"
  mkdir -p "$work"
  cp -n fuzz/corpus/"$corpus"/* "$work"/ 2>/dev/null || true
  echo "fuzz_$name: ${SECONDS_EACH}s"
  (cd fuzz/build && ./fuzz_"$name" -max_total_time="$SECONDS_EACH" -max_len=4096 -timeout=10 \
      -print_final_stats=1 "corpus-$corpus" 2>&1 | tail -4)
done
echo "fuzz: all targets ran ${SECONDS_EACH}s without a finding"
