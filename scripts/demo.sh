#!/usr/bin/env bash
# Set-up, build, and the most complete example: the whole model generating token ids on
# the toy checkpoint (written by the NumPy reference, same layout as the official one).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++-12 -DDSV4_PYTHON=/usr/bin/python3
cmake --build build -j"$(nproc)" --target dsv4-info dsv4-generate
build/examples/dsv4-info
/usr/bin/python3 reference/make_checkpoint.py --preset toy --out build/toy
build/examples/dsv4-generate --model build/toy --prompt-ids 0,5,17,42,99,3,250 --max-new-tokens 16
