#!/usr/bin/env bash
# Long fuzz runs measured in CPU time, not wall time:
#   scripts/fuzz-long.sh CPU_SECONDS [TARGET...]   (default: every target)
# Each target runs (one at a time) until its process has used CPU_SECONDS of
# CPU (user + sys, all its threads), then is interrupted; on a shared or busy
# machine that takes longer than CPU_SECONDS of wall time. Prints one line per
# target: CPU minutes, executions, and whether it crashed. New inputs go to
# fuzz/corpus/TARGET, crashes to fuzz/artifacts/TARGET.
#
# Running beside other work: `nice` alone does little where the kernel groups
# processes by session (autogroups, the default on many distributions); lower
# the group's weight too, e.g. `echo 19 > /proc/self/autogroup` in the shell
# that starts this. Do not SIGSTOP a run for longer than its 30 s unit timeout:
# the timeout counts wall time, and libFuzzer would report a hang that is not
# there. `plugin_check` and `cache_entry` write a file per input: give them
# TMPDIR on a tmpfs (e.g. TMPDIR=/dev/shm), or they wait on the disk more than
# they compute.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

budget=${1:?usage: scripts/fuzz-long.sh CPU_SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
cargo +nightly fuzz build -s none -O
bin=target/x86_64-unknown-linux-gnu/release
ticks=$(getconf CLK_TCK)
crashed=0

for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log=$(mktemp)
    "$bin/$target" "corpus/$target" -artifact_prefix="artifacts/$target/" \
        -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 >"$log" 2>&1 &
    pid=$!
    cpu=0
    while kill -0 "$pid" 2>/dev/null; do
        # Fields 14 and 15 of /proc/PID/stat: user and system time, in ticks.
        if read -r -a stat < "/proc/$pid/stat" 2>/dev/null; then
            cpu=$(( (stat[13] + stat[14]) / ticks ))
        fi
        if [ "$cpu" -ge "$budget" ]; then
            kill -INT "$pid"
            break
        fi
        sleep 5
    done
    wait "$pid" || true
    execs=$(grep -Eo '^stat::number_of_executed_units: [0-9]+' "$log" | grep -Eo '[0-9]+$' || echo "?")
    verdict="no crash"
    if compgen -G "artifacts/$target/crash-*" > /dev/null || grep -q "==[0-9]*== ERROR" "$log"; then
        verdict="CRASHED (see fuzz/artifacts/$target)"
        crashed=1
        grep -E "==[0-9]+== ERROR|panicked" "$log" | head -5 >&2 || true
    fi
    printf 'fuzz-long: %-16s %6.1f CPU-min  %12s executions  %s\n' \
        "$target" "$(awk "BEGIN { print $cpu / 60 }")" "$execs" "$verdict"
    rm -f "$log"
done
exit "$crashed"
