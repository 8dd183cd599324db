#!/usr/bin/env bash
# The end of `make test`: how many nested boots were retried because QEMU's emulated SVM
# lost an L2's state (guest-runner/src/nested.rs records each in target/nested-retries.log,
# with its evidence), and a failure if more than one was: a second loss in one run is
# beyond what the emulator's known fault explains, and a retry must never become a habit.
set -euo pipefail
cd "$(dirname "$0")/../.."
log=target/nested-retries.log
count=0
[ -f "$log" ] && count=$(wc -l <"$log")
if [ "$count" -eq 0 ]; then
    echo "nested retries: 0"
    exit 0
fi
echo "nested retries: $count ($(cut -d: -f1 "$log" | paste -sd, -))"
sed 's/^/  /' "$log"
if [ "$count" -gt 1 ]; then
    echo "nested retries: more than one in this run; failing (each is listed above with its evidence)" >&2
    exit 1
fi
