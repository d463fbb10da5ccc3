#!/bin/sh
# expect_failure.sh PATTERN CMD [ARGS...]: passes if CMD exits non-zero (and not by a
# signal) and its stderr matches the extended regular expression PATTERN.
pattern=$1; shift
err=$("$@" 2>&1 >/dev/null); rc=$?
printf '%s\n' "$err"
if [ "$rc" -eq 0 ]; then echo "expect_failure: exit status 0, expected an error" >&2; exit 1; fi
if [ "$rc" -gt 128 ]; then echo "expect_failure: killed by signal $((rc - 128))" >&2; exit 1; fi
printf '%s\n' "$err" | grep -Eq -- "$pattern" || { echo "expect_failure: message does not match '$pattern'" >&2; exit 1; }
exit 0
