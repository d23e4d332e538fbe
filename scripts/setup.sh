#!/usr/bin/env bash
# Set up everything a3s-power needs on a Debian/Ubuntu machine: system packages,
# a virtual environment in .venv, the pinned llama.cpp source, and the native
# build (installed in editable mode, so the checkout is what runs).
#
#   bash scripts/setup.sh            # CPU build tuned for this machine
#   POWER_CUDA=1 bash scripts/setup.sh   # with ggml's CUDA backend (needs the CUDA toolkit)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

sudo_cmd=""
if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
need=()
for pkg in ccache nginx docker-registry python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ] && command -v apt-get >/dev/null; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
pip=".venv/bin/python -m pip"
$pip install -q --upgrade pip >/dev/null 2>&1 || true
$pip install -q "scikit-build-core>=0.10" "cffi>=1.17" ninja

# ccache keyed on paths relative to the checkout, so another clone reuses it.
export CCACHE_BASEDIR="$root" CCACHE_NOHASHDIR=true
cmake_args="-DPOWER_CPU=${POWER_CPU_MODE:-native}"
[ "${POWER_CUDA:-0}" = 1 ] && cmake_args="$cmake_args -DPOWER_CUDA=ON"
[ "${POWER_VULKAN:-0}" = 1 ] && cmake_args="$cmake_args -DPOWER_VULKAN=ON"
python3 vendor/fetch.py
CMAKE_ARGS="$cmake_args" $pip install -q --no-build-isolation -e ".[test,bench]"
.venv/bin/python -c "import power.native as n; print('a3s-power native build ok, llama.cpp', n.llama_commit())"
