# Shared helpers for the image scripts: logging, failing with a hint, the cache root.
# shellcheck shell=bash

log()  { printf '\033[1m[images]\033[0m %s\n' "$*" >&2; }
warn() { printf '\033[1;33m[images] WARNING:\033[0m %s\n' "$*" >&2; }
die()  { printf '\033[1;31m[images] error:\033[0m %s\n' "$*" >&2; exit 1; }

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE_ROOT=${MSHARE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mshare-vmm}
export REPO_ROOT CACHE_ROOT

# Run a long command with its output appended to LOGFILE; on failure show the tail and point at the log.
run_logged() {
    local what=$1 logfile=$2; shift 2
    mkdir -p "$(dirname "$logfile")"
    if ! "$@" >>"$logfile" 2>&1; then
        tail -n 30 "$logfile" >&2
        die "$what failed; full log: $logfile"
    fi
}
