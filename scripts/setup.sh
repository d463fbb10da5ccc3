#!/usr/bin/env bash
# Installs everything dsv4 needs from Debian's packages. Idempotent: installs only what
# is missing, and does nothing (no apt at all) when everything is already there.
set -euo pipefail

packages=(
  cmake g++-12 clang-14 binutils make          # toolchains; binutils for the ISA check
  libxsimd-dev xtl-dev                          # SIMD batches (xsimd 8.1 + the xtl it links)
  libtbb-dev                                    # oneTBB: the thread-pool wrappers
  libbenchmark-dev                              # Google Benchmark: dsv4-bench
  doctest-dev                                   # tests
  nlohmann-json3-dev                            # JSON of checkpoints (safetensors headers, index, config.json)
  libclang-rt-14-dev                            # libFuzzer + sanitizer runtimes (scripts/fuzz.sh, build-asan/, build-tsan/)
  llvm-14                                       # llvm-symbolizer: file:line in sanitizer reports
  python3 python3-numpy                         # reference/ and the goldens
  libpcre2-dev pkg-config                       # dsv4::text: the pre-tokenizer's Unicode regexes (PCRE2 JIT: 5x Oniguruma)
  libicu-dev                                    # dsv4::text: NFC normalizer, White_Space/Alphabetic of added tokens
  python3-venv                                  # .venv with Hugging Face `tokenizers` (tokenizer goldens)
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

/usr/bin/python3 -c "import numpy" || { echo "setup: /usr/bin/python3 cannot import numpy" >&2; exit 1; }

# .venv: Debian's python3 (NumPy from the system) plus PyPI's `tokenizers`, which
# reference/make_tokenizer.py needs for the tokenizer goldens; CMake prefers .venv/bin/python3.
cd "$(dirname "$0")/.."
if ! .venv/bin/python3 -c "import numpy, tokenizers" 2>/dev/null; then
  echo "setup: creating .venv with tokenizers"
  /usr/bin/python3 -m venv --system-site-packages .venv
  .venv/bin/python3 -m pip install --quiet "tokenizers>=0.20"
fi
echo "setup: all dependencies present"
