#!/usr/bin/env bash
# Set-up, build, and the most complete example there is: the CPU/tier report and an
# embedded kernel. (Once the generator lands, this runs it on a toy checkpoint.)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++-12 -DDSV4_PYTHON=/usr/bin/python3
cmake --build build -j"$(nproc)" --target dsv4-info dsv4-embed-one-kernel
build/examples/dsv4-info
build/examples/dsv4-embed-one-kernel
