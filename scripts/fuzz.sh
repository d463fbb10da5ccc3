#!/usr/bin/env bash
# Fuzzes the parsers of untrusted input: safetensors headers, model.safetensors.index.json,
# config.json, tests/npy.hpp and tokenizer.json (dsv4::text, when PCRE2 and ICU are installed).
# Builds the libFuzzer targets (clang-14, ASan + UBSan) in build-fuzz/, then runs each for a
# bounded time on a corpus grown in build-fuzz/corpus/<target> from the seeds written by the
# build (build-fuzz/fuzz-seeds/<target>).
#
#   ./scripts/fuzz.sh [seconds-per-target] [target...]     default: 60 s, every target
#   DSV4_FUZZ_RUNS=N ./scripts/fuzz.sh SECS ...               also stop each target after N executions
#
# A crash, sanitizer report, leak, timeout (>10 s) or broken invariant stops that target and
# leaves the input in build-fuzz/crashes/<target>/; add it to tests/fuzz/regressions/<target>/
# (the `loader` test replays that directory) once fixed. Exit status 1 if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(safetensors_header index_json config_json npy_file tokenizer_json)
jobs=$(nproc)

cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 -DDSV4_FUZZ=ON \
  -DDSV4_BUILD_TESTS=OFF -DDSV4_BUILD_BENCHMARKS=OFF -DDSV4_BUILD_EXAMPLES=OFF -DDSV4_PYTHON=/usr/bin/python3 >/dev/null
cmake --build build-fuzz -j"$jobs" --target dsv4_fuzz_all

failed=()
summary=()
for t in "${targets[@]}"; do
  exe=build-fuzz/tests/fuzz/fuzz_$t
  [ -x "$exe" ] || { echo "fuzz: no target $t" >&2; exit 2; }
  corpus=build-fuzz/corpus/$t crashes=build-fuzz/crashes/$t log=build-fuzz/fuzz-$t.log
  mkdir -p "$corpus" "$crashes"
  echo "== fuzz_$t for ${secs} s (log: $log)"
  rc=0
  runs_opt=()
  [ -n "${DSV4_FUZZ_RUNS:-}" ] && runs_opt=(-runs="$DSV4_FUZZ_RUNS")
  start=$(date +%s)
  "$exe" "$corpus" "build-fuzz/fuzz-seeds/$t" -max_total_time="$secs" "${runs_opt[@]}" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$crashes/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 || true)
  line="fuzz_$t: ${runs:-?} executions in ${took} s, ${cov:-cov: ?}, corpus $(find "$corpus" -type f | wc -l) files"
  if [ "$rc" != 0 ]; then
    line+=", FAILED (rc $rc): $(ls "$crashes" | head -n 3 | tr '\n' ' ')"
    failed+=("$t")
    grep -E "ERROR|SUMMARY|invariant|terminate" "$log" | head -n 5 || true
  fi
  summary+=("$line")
  echo "$line"
done
echo "== summary"
printf '%s\n' "${summary[@]}"
((${#failed[@]} == 0)) || { echo "fuzz: failures in ${failed[*]}" >&2; exit 1; }
