#!/usr/bin/env bash
# The machine's floor for a flip skew: N processes, each in a directory of its own, sleep until
# one instant, rename a staged `current` link there (as ship's armed switch does on each host),
# and note their clock right after. No SSH, no ship: what the spread of their stamps shows is
# what this machine's cores and scheduler take to run N processes woken at one instant, the
# least any tool can reach with N hosts that share these cores.
#   bench/switch-floor.sh                 # 20, 100, 1000 processes, 3 rounds each
#   bench/switch-floor.sh 1000 5 0.02     # 1000 processes, 5 rounds, 20 ms before each exits
# The third argument is how long each process waits after its rename before it exits (ship's
# "settle": 200 µs per host, at most 0.5 s); with 0 the first exits compete with later renames.
set -euo pipefail
sizes=${1:-20,100,1000}
rounds=${2:-3}
settle=${3:-}
command -v perl >/dev/null || { echo "needs perl" >&2; exit 1; }
work=$(mktemp -d /var/tmp/ship-switch-floor.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "switch floor: N processes woken at one instant to rename a link, spread of their stamps (ms after the first)"
printf '%6s %6s %8s %8s %8s %8s %8s\n' procs round p10 p50 p90 p99 max
for n in ${sizes//,/ }; do
    wait_s=${settle:-$(awk -v n="$n" 'BEGIN { s = n * 0.0002; if (s > 0.5) s = 0.5; print s }')}
    for r in $(seq "$rounds"); do
        rm -rf "${work:?}"/*
        for i in $(seq "$n"); do
            mkdir -p "$work/$i/stage" "$work/$i/releases/a" "$work/$i/releases/b"
            ln -s releases/a "$work/$i/current"
            ln -s releases/b "$work/$i/stage/current"
        done
        # The instant: far enough ahead for every process to start and go to sleep.
        at=$(( $(date +%s%N) / 1000 + 2000000 + n * 3000 ))
        for i in $(seq "$n"); do
            (
                cd "$work/$i"
                exec perl -MTime::HiRes=gettimeofday,sleep -e '
                    my ($at, $settle) = @ARGV;
                    my ($s, $u) = gettimeofday();
                    my $wait = ($at - ($s * 1e6 + $u)) / 1e6;
                    sleep($wait) if $wait > 0;
                    rename("stage/current", "current") or die "rename: $!";
                    ($s, $u) = gettimeofday();
                    sleep($settle) if $settle > 0;
                    printf("%d\n", $s * 1e6 + $u);' "$at" "$wait_s" > stamp
            ) &
        done
        wait
        cat "$work"/*/stamp | sort -n | awk -v n="$n" -v r="$r" '
            { a[NR] = $1 }
            END {
                f = a[1]
                printf("%6d %6d %8.2f %8.2f %8.2f %8.2f %8.2f\n", n, r,
                    (a[int(NR * 0.10) + 1] - f) / 1000, (a[int(NR * 0.50) + 1] - f) / 1000,
                    (a[int(NR * 0.90) + 1] - f) / 1000, (a[int(NR * 0.99) + 1] - f) / 1000,
                    (a[NR] - f) / 1000)
            }'
    done
done
