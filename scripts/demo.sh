#!/usr/bin/env bash
# Set-up, build, and the most complete example: the whole model generating text on the toy
# checkpoint (written by the NumPy reference, same layout as the official one, with a small
# tokenizer.json; random weights, so the text is gibberish: the pipeline is what it shows).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=g++-12 -DDSV4_PYTHON=/usr/bin/python3
cmake --build build -j"$(nproc)" --target dsv4-info dsv4-generate
build/examples/dsv4-info
/usr/bin/python3 reference/make_checkpoint.py --preset toy --out build/toy
build/examples/dsv4-generate --model build/toy --prompt "Hello! What can you do?" --max-new-tokens 16
printf 'Hi there\nAnd a second turn, appended to the live sequence\n' |
  build/examples/dsv4-generate --model build/toy --chat --think --system "Be brief." --max-new-tokens 12
