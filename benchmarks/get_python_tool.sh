#!/usr/bin/env bash
# Install a Python tool from its package into a virtualenv of its own in a cache
# directory outside the project's, and print the path of its command on the last
# line of stdout. Everything else goes to stderr. get_model_analyzer.sh and
# get_aiperf.sh call it with their package.
#
# Usage:  get_python_tool.sh PACKAGE VERSION COMMAND SIZE
#         (SIZE: what the install weighs, for the message, e.g. "about 600 MB")
#
# Environment:
#   LOADGEN_CACHE  cache root (default: $HOME/.cache/loadgen)
#   PYTHON         python that creates the virtualenv (default: python3)
#
# Why its own environment: such tools pull releases of tritonclient, grpcio,
# protobuf, aiohttp (...) of their own, which must not replace the project's. They
# only ever run as programs.
set -euo pipefail

[[ $# -eq 4 ]] || { printf 'usage: get_python_tool.sh PACKAGE VERSION COMMAND SIZE\n' >&2; exit 2; }
PACKAGE=$1 VERSION=$2 COMMAND=$3 SIZE=$4
PYTHON=${PYTHON:-python3}
CACHE_ROOT=${LOADGEN_CACHE:-${HOME:?HOME is not set}/.cache/loadgen}
DEST="$CACHE_ROOT/$COMMAND-$VERSION"
VENV="$DEST/venv"
EXE="$VENV/bin/$COMMAND"
STAMP="$VENV/.installed"  # written last: a venv without it is a broken install, redone

log() { printf 'get %s: %s\n' "$COMMAND" "$*" >&2; }
die() { printf 'get %s: error: %s\n' "$COMMAND" "$*" >&2; exit 1; }

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
log "installing $PACKAGE $VERSION into $VENV (one time, $SIZE; log: $LOG)"
rm -rf "$VENV"
{
    "$PYTHON" -m venv "$VENV" &&
        "$VENV/bin/python" -m pip install --upgrade pip &&
        "$VENV/bin/python" -m pip install "$PACKAGE==$VERSION"
} >"$LOG" 2>&1 || {
    tail -n 20 "$LOG" >&2
    die "pip install $PACKAGE==$VERSION failed (see $LOG)"
}

# Verify: the package is the one asked for, and its command starts.
version=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$PACKAGE'))") ||
    die "$PACKAGE does not import after the install (see $LOG)"
[[ "$version" == "$VERSION" ]] || die "installed $PACKAGE $version, not $VERSION"
"$EXE" --help >/dev/null 2>&1 || die "'$EXE --help' failed"
touch "$STAMP"
log "ok: $PACKAGE $version"
printf '%s\n' "$EXE"
