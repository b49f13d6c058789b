#!/usr/bin/env bash
# Install the real perf_analyzer 2.51 (C++ client from Triton 24.10) into a cache
# directory outside the project's virtualenv, and print the path of a wrapper
# executable on the last line of stdout. Everything else goes to stderr.
#
# Usage:  PA=$(benchmarks/get_perf_analyzer.sh) && "$PA" --version
#
# Environment:
#   LOADGEN_CACHE      cache root (default: $HOME/.cache/loadgen)
#   PYTHON             python used to run pip (default: python3)
#   CUDA_RUNTIME_SPEC  pip requirement providing libcudart.so.12
#                      (default: nvidia-cuda-runtime-cu12==12.6.77, the CUDA of Triton 24.10)
#
# Why this way: the PyPI "perf-analyzer" package is a placeholder, tritonclient
# stopped shipping the binary after 2.60 (which also needs glibc >= 2.38), and the
# tritonclient 2.51.0 manylinux wheel carries it as a data file. The wheel is
# only downloaded and the binary extracted: it is never installed, so the
# project's own tritonclient stays untouched.
set -euo pipefail

PA_VERSION=2.51.0
PYTHON=${PYTHON:-python3}
CUDA_RUNTIME_SPEC=${CUDA_RUNTIME_SPEC:-nvidia-cuda-runtime-cu12==12.6.77}
CACHE_ROOT=${LOADGEN_CACHE:-${HOME:?HOME is not set}/.cache/loadgen}
DEST="$CACHE_ROOT/perf_analyzer-$PA_VERSION"
WRAPPER="$DEST/perf_analyzer"
EXPECTED="Perf Analyzer Version $PA_VERSION"

log() { printf 'get_perf_analyzer: %s\n' "$*" >&2; }
die() { printf 'get_perf_analyzer: error: %s\n' "$*" >&2; exit 1; }

# Run a command quietly; on failure show its output and the command line.
LOG=""
quiet() {
    if ! "$@" >"$LOG" 2>&1; then
        cat "$LOG" >&2
        die "command failed: $*"
    fi
}

wrapper_ok() {
    [[ -x "$WRAPPER" ]] || return 1
    local out
    out=$("$WRAPPER" --version 2>&1) || return 1
    [[ "$out" == *"$EXPECTED"* ]]
}

# Fast path: already installed and working.
if wrapper_ok; then
    printf '%s\n' "$WRAPPER"
    exit 0
fi

mkdir -p "$DEST" || die "cannot create $DEST"

# Serialise concurrent installs into the same cache directory.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DEST/.lock"
    flock 9 || die "cannot lock $DEST/.lock"
    if wrapper_ok; then   # another process finished the job while we waited
        printf '%s\n' "$WRAPPER"
        exit 0
    fi
fi

WORK=$(mktemp -d "$DEST/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
LOG="$WORK/log"

log "installing perf_analyzer $PA_VERSION into $DEST (one time)"

command -v "$PYTHON" >/dev/null 2>&1 || die "python '$PYTHON' not found (set PYTHON=...)"
"$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' does not work (set PYTHON=... to a python with pip)"
command -v unzip >/dev/null 2>&1 || die "unzip not found (apt-get install -y unzip)"

# 1. libb64 (Debian package libb64-0d provides libb64.so.0d).
have_libb64() {
    if command -v dpkg >/dev/null 2>&1 && dpkg -s libb64-0d >/dev/null 2>&1; then
        return 0
    fi
    ldconfig -p 2>/dev/null | grep -q 'libb64\.so\.0d'
}
if ! have_libb64; then
    command -v apt-get >/dev/null 2>&1 \
        || die "libb64.so.0d is missing and apt-get is not available; install libb64 (Debian: libb64-0d) by hand"
    [[ $(id -u) -eq 0 ]] \
        || die "libb64.so.0d is missing; run as root or: sudo apt-get install -y libb64-0d"
    log "apt-get install libb64-0d"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q libb64-0d >"$LOG" 2>&1; then
        log "apt-get update (package index missing or stale)"
        quiet apt-get update -q
        quiet apt-get install -y -q libb64-0d
    fi
    have_libb64 || die "libb64-0d installed but libb64.so.0d still not found"
fi

# 2. The perf_analyzer binary, extracted from the tritonclient wheel (never installed).
WHEEL_MEMBER="tritonclient-$PA_VERSION.data/data/bin/perf_analyzer"
log "downloading tritonclient==$PA_VERSION wheel"
quiet "$PYTHON" -m pip download --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux1_x86_64 \
    -d "$WORK/wheel" "tritonclient==$PA_VERSION"
shopt -s nullglob
wheels=("$WORK"/wheel/tritonclient-"$PA_VERSION"-*.whl)
shopt -u nullglob
[[ ${#wheels[@]} -ge 1 ]] || die "pip download produced no tritonclient-$PA_VERSION wheel"
quiet unzip -o -q "${wheels[0]}" "$WHEEL_MEMBER" -d "$WORK/x"
[[ -f "$WORK/x/$WHEEL_MEMBER" ]] || die "$WHEEL_MEMBER not found in ${wheels[0]}"
mkdir -p "$DEST/bin"
install -m 0755 "$WORK/x/$WHEEL_MEMBER" "$DEST/bin/perf_analyzer.real"

# 3. libcudart.so.12 in a private --target dir (not the project's virtualenv).
log "installing $CUDA_RUNTIME_SPEC into $DEST/cuda"
rm -rf "$DEST/cuda"
quiet "$PYTHON" -m pip install --no-deps --only-binary=:all: --no-compile \
    --target "$DEST/cuda" "$CUDA_RUNTIME_SPEC"
CUDA_LIB="$DEST/cuda/nvidia/cuda_runtime/lib"
[[ -e "$CUDA_LIB/libcudart.so.12" ]] || die "libcudart.so.12 not found in $CUDA_LIB after pip install"

# 4. Check the dynamic libraries resolve before writing the wrapper.
if command -v ldd >/dev/null 2>&1; then
    missing=$(LD_LIBRARY_PATH="$CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        ldd "$DEST/bin/perf_analyzer.real" 2>&1 | grep 'not found' || true)
    [[ -z "$missing" ]] || die "perf_analyzer has unresolved libraries:
$missing"
fi

# 5. The wrapper: relocatable, finds its files next to itself.
cat >"$WORK/wrapper" <<'WRAPPER_EOF'
#!/bin/sh
# perf_analyzer 2.51 wrapper written by benchmarks/get_perf_analyzer.sh
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/cuda/nvidia/cuda_runtime/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$here/bin/perf_analyzer.real" "$@"
WRAPPER_EOF
chmod 0755 "$WORK/wrapper"
mv -f "$WORK/wrapper" "$WRAPPER"

# 6. Verify.
if ! out=$("$WRAPPER" --version 2>&1) || [[ "$out" != *"$EXPECTED"* ]]; then
    printf '%s\n' "$out" >&2
    rm -f "$WRAPPER"
    die "'$WRAPPER --version' did not print '$EXPECTED'"
fi
log "ok: $EXPECTED"
printf '%s\n' "$WRAPPER"
