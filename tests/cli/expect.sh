#!/usr/bin/env bash
# The gsa command's error contract for one command line: passes when the command exits CODE and
# writes exactly one line to stderr, matching REGEX (grep -E).
# Usage: expect.sh CODE REGEX GSA_BINARY ARGS...
code=$1
regex=$2
shift 2
err=$("$@" 2>&1 >/dev/null </dev/null)
rc=$?
printf '%s\n' "$err"
[ "$rc" -eq "$code" ] || { echo "FAIL: exit status $rc, expected $code"; exit 1; }
lines=$(printf '%s\n' "$err" | grep -c .)
[ "$lines" -eq 1 ] || { echo "FAIL: $lines lines on stderr, expected 1"; exit 1; }
printf '%s\n' "$err" | grep -Eq -- "$regex" || { echo "FAIL: stderr does not match: $regex"; exit 1; }
