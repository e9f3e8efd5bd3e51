#!/usr/bin/env bash
# Build the llama.cpp tools hogwild measures itself against, once, and print their folder:
# llama-batched-bench (speed: `hogwild bench --llama-cpp DIR`), llama-quantize and
# llama-perplexity (quality: `hogwild quality --llama-cpp DIR`).
#
# Usage: bench/build_llama_cpp.sh [--no-amx] [DIR]
#   DIR       where the source goes (default: ${HOGWILD_CACHE:-~/.cache/hogwild}/llama.cpp)
#   --no-amx  build into DIR/build-noamx with every instruction set this CPU has except AMX.
#             On the project's AMX machine the default build (-DGGML_NATIVE=ON, which compiles
#             ggml's AMX backend) crashes in ggml_backend_amx_mul_mat on quantized files unless
#             run with --no-repack, which also turns off its AVX-512 repacked layouts; this build
#             runs repacked (docs/results/quant/bench-llama-cpp-noamx/README.md).
#
# The source is the llama.cpp copy vendored in llama-cpp-python's source package on PyPI (the
# only registry this project's machines reach), so the version is pinned by that package
# (LLAMA_CPP_PYTHON_VERSION, default below). About 7 minutes on 2 cores per build; a folder
# that already has the tools is only printed. Needs cmake and a C++ compiler.
set -euo pipefail

amx=on
if [ "${1:-}" = "--no-amx" ]; then amx=off; shift; fi
dir=${1:-${HOGWILD_CACHE:-$HOME/.cache/hogwild}/llama.cpp}
version=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
build="$dir/build"; [ $amx = off ] && build="$dir/build-noamx"
tools=(llama-batched-bench llama-quantize llama-perplexity)

complete=1
for t in "${tools[@]}"; do [ -x "$build/bin/$t" ] || complete=0; done
if [ $complete = 1 ]; then echo "$build/bin"; exit 0; fi

command -v cmake >/dev/null || { echo "build_llama_cpp.sh: cmake is needed (apt-get install cmake)" >&2; exit 1; }
if [ ! -f "$dir/CMakeLists.txt" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$version" -d "$work" >&2
  tar -xzf "$work"/llama_cpp_python-*.tar.gz -C "$work"
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir"
  mv "$work"/llama_cpp_python-*/vendor/llama.cpp "$dir"
fi

flags=(-DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DCMAKE_BUILD_TYPE=Release)
if [ $amx = on ]; then
  flags+=(-DGGML_NATIVE=ON)
else
  # GGML_NATIVE would compile with -march=native, AMX included: name the sets one by one
  cpu=$(grep -m1 '^flags' /proc/cpuinfo)
  has() { [[ " $cpu " == *" $1 "* ]] && echo ON || echo OFF; }
  flags+=(-DGGML_NATIVE=OFF -DGGML_AVX="$(has avx)" -DGGML_AVX2="$(has avx2)" -DGGML_BMI2="$(has bmi2)"
          -DGGML_FMA="$(has fma)" -DGGML_F16C="$(has f16c)" -DGGML_AVX512="$(has avx512f)"
          -DGGML_AVX512_VBMI="$(has avx512vbmi)" -DGGML_AVX512_VNNI="$(has avx512_vnni)"
          -DGGML_AVX512_BF16="$(has avx512_bf16)" -DGGML_AVX_VNNI="$(has avx_vnni)"
          -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
fi
cmake -S "$dir" -B "$build" "${flags[@]}" >&2
cmake --build "$build" -j"$(nproc)" --target "${tools[@]}" >&2
echo "$build/bin"
