#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, GCC 12 build in build/ with every
# test (all tiers this CPU runs), the installed-package and add_subdirectory consumers,
# the benchmarks built with Clang 14 in build-clang/, then the whole suite with Clang 14 under
# AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/, the two-threads forward test under
# ThreadSanitizer in build-tsan/, then the fuzz targets (build-fuzz/). Each stage prints
# its wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
jobs=$(nproc)
# .venv (scripts/setup.sh): Debian python3 + NumPy from the system + `tokenizers` (tokenizer goldens)
py=-DDSV4_PYTHON=$PWD/.venv/bin/python3

stage_name="" stage_t0=$SECONDS
stage() {  # stage TITLE: closes the previous stage (prints its time), opens the next
  [ -z "$stage_name" ] || echo "== ${stage_name%%:*}: $((SECONDS - stage_t0)) s"
  stage_name=$1 stage_t0=$SECONDS
  [ -z "$1" ] || echo "== $1"
}

stage "GCC 12: build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++-12 "$py"
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

stage "consumers: find_package(dsv4) after install, and add_subdirectory"
rm -rf build/install build/consumer build/consumer-subdir
cmake --install build --prefix "$PWD/build/install" >/dev/null
cmake -S examples/consumer -B build/consumer -DCMAKE_CXX_COMPILER=g++-12 -DCMAKE_PREFIX_PATH="$PWD/build/install"
cmake --build build/consumer -j"$jobs"
build/consumer/consumer_static
build/consumer/consumer_native
build/consumer/consumer_dispatch
DSV4_ISA=scalar build/consumer/consumer_dispatch
cmake -S examples/consumer -B build/consumer-subdir -DCMAKE_CXX_COMPILER=g++-12 -DDSV4_CONSUMER_VIA_SUBDIR="$PWD"
cmake --build build/consumer-subdir -j"$jobs"
build/consumer-subdir/consumer_dispatch

# Clang 14 runs every test in the ASan + UBSan stage below (also -O3 Release); a plain Clang
# build of them would repeat it (4-5 min of the CI budget), so this stage only compiles what
# that stage leaves out: the benchmarks.
stage "Clang 14: build-clang/ (benchmarks)"
cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 "$py"
cmake --build build-clang -j"$jobs" --target dsv4-bench

# Every test, every tier, every label, as in build/: a sanitizer report fails the test
# (tests/CMakeLists.txt sets the runtimes' options). No benchmarks (not tests).
stage "ASan + UBSan (Clang 14): build-asan/"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 "$py" \
  -DDSV4_SANITIZE=address,undefined -DDSV4_BUILD_BENCHMARKS=OFF
cmake --build build-asan -j"$jobs"
ctest --test-dir build-asan --output-on-failure -j"$jobs"

# Two sequences prefilled and decoded on two threads sharing one model (forward.concurrent,
# plus its fixture checkpoint.toy); only that test's binary is built.
stage "TSan (Clang 14): build-tsan/, forward.concurrent"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 "$py" \
  -DDSV4_SANITIZE=thread -DDSV4_BUILD_BENCHMARKS=OFF
cmake --build build-tsan -j"$jobs" --target dsv4_test_forward
ctest --test-dir build-tsan --output-on-failure -R '^forward\.concurrent$'

stage "fuzz targets (clang-14, libFuzzer + ASan + UBSan): build, then a 10 s smoke run each"
./scripts/fuzz.sh 10
stage ""
echo "== all stages: ${SECONDS} s"
