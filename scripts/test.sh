#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, GCC 12 build in build/ with every
# test (all tiers this CPU runs), the installed-package and add_subdirectory consumers,
# then the same suite built with Clang 14 in build-clang/, then the fuzz targets (build-fuzz/).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
jobs=$(nproc)
py=-DDSV4_PYTHON=/usr/bin/python3

echo "== GCC 12: build/"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++-12 "$py"
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== consumers: find_package(dsv4) after install, and add_subdirectory"
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

echo "== Clang 14: build-clang/"
cmake -S . -B build-clang -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 "$py"
cmake --build build-clang -j"$jobs"
ctest --test-dir build-clang --output-on-failure -j"$jobs"

echo "== fuzz targets (clang-14, libFuzzer + ASan + UBSan): build, then a 10 s smoke run each"
./scripts/fuzz.sh 10
