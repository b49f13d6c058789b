#!/usr/bin/env bash
# Install Triton Model Analyzer into a virtualenv of its own in a cache directory
# outside the project's, and print the path of its `model-analyzer` executable on
# the last line of stdout. Everything else goes to stderr.
#
# Usage:  MA=$(benchmarks/get_model_analyzer.sh) && "$MA" profile -f config.yaml
#
# Environment:
#   LOADGEN_CACHE  cache root (default: $HOME/.cache/loadgen)
#   PYTHON         python that creates the virtualenv (default: python3)
#   MA_VERSION     triton-model-analyzer release (default: 1.58.0, the one whose
#                  perf_analyzer calls loadgen's perf-analyzer follows)
#
# Why its own environment: Model Analyzer pulls tritonclient[all], grpcio and
# protobuf releases of its own, which must not replace the project's (tritonclient
# 2.51 next to the embedded server). It only ever runs perf_analyzer as a program,
# so loadgen's `perf-analyzer` console script is all it needs from this project.
set -euo pipefail

MA_VERSION=${MA_VERSION:-1.58.0}
PYTHON=${PYTHON:-python3}
CACHE_ROOT=${LOADGEN_CACHE:-${HOME:?HOME is not set}/.cache/loadgen}
DEST="$CACHE_ROOT/model-analyzer-$MA_VERSION"
VENV="$DEST/venv"
EXE="$VENV/bin/model-analyzer"
STAMP="$VENV/.installed"  # written last: a venv without it is a broken install, redone

log() { printf 'get_model_analyzer: %s\n' "$*" >&2; }
die() { printf 'get_model_analyzer: error: %s\n' "$*" >&2; exit 1; }

installed() { [[ -f "$STAMP" && -x "$EXE" ]]; }

# Fast path: already installed.
if installed; then
    printf '%s\n' "$EXE"
    exit 0
fi

mkdir -p "$DEST" || die "cannot create $DEST"

# Serialise concurrent installs into the same cache directory (a venv cannot be moved into place afterwards).
if command -v flock >/dev/null 2>&1; then
    exec 9>"$DEST/.lock"
    flock 9 || die "cannot lock $DEST/.lock"
    if installed; then  # another process finished the job while we waited
        printf '%s\n' "$EXE"
        exit 0
    fi
fi

command -v "$PYTHON" >/dev/null 2>&1 || die "python '$PYTHON' not found (set PYTHON=...)"
LOG="$DEST/install.log"
log "installing triton-model-analyzer $MA_VERSION into $VENV (one time, about 600 MB; log: $LOG)"
rm -rf "$VENV"
{
    "$PYTHON" -m venv "$VENV" &&
        "$VENV/bin/python" -m pip install --upgrade pip &&
        "$VENV/bin/python" -m pip install "triton-model-analyzer==$MA_VERSION"
} >"$LOG" 2>&1 || {
    tail -n 20 "$LOG" >&2
    die "pip install triton-model-analyzer==$MA_VERSION failed (see $LOG)"
}

# Verify: the package is the one asked for, and its command starts.
version=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("triton-model-analyzer"))') ||
    die "triton-model-analyzer does not import after the install (see $LOG)"
[[ "$version" == "$MA_VERSION" ]] || die "installed triton-model-analyzer $version, not $MA_VERSION"
"$EXE" --help >/dev/null 2>&1 || die "'$EXE --help' failed"
touch "$STAMP"
log "ok: triton-model-analyzer $version"
printf '%s\n' "$EXE"
