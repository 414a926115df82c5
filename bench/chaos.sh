#!/usr/bin/env bash
# The chaos soak (tests/e2e/soak.rs), run long: random deploys, rollbacks, canaries and run-once
# deploys on 5 local sshd hosts, each with a random fault at a random moment, the operator's
# follow-up from docs/reliability.md, and the promises checked on every host. Prints a line per
# iteration, a table of the faults fired and the violations found; exits non-zero on any.
#   bench/chaos.sh                                # 100 iterations, a seed from the clock
#   bench/chaos.sh --iterations 400 --seed 7
#   bench/chaos.sh --seed 7 --replay 123          # iteration 123 of seed 7 again, alone
#   bench/chaos.sh --minutes 20                   # start no iteration after 20 minutes
# Needs root (sshd in mount namespaces, iptables) and openssh-server, like scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
iterations=100 minutes=60 seed= replay=
while [ $# -gt 0 ]; do
    case $1 in
        --iterations) iterations=$2; shift 2 ;;
        --seed) seed=$2; shift 2 ;;
        --replay) replay=$2; shift 2 ;;
        --minutes) minutes=$2; shift 2 ;;
        *) echo "usage: bench/chaos.sh [--iterations N] [--seed S] [--replay N] [--minutes M]" >&2; exit 2 ;;
    esac
done
export SHIP_CHAOS_ITERATIONS=$iterations SHIP_CHAOS_MINUTES=$minutes
if [ -n "$seed" ]; then export SHIP_CHAOS_SEED=$seed; fi
if [ -n "$replay" ]; then export SHIP_CHAOS_REPLAY=$replay; fi
exec cargo test --test e2e soak::chaos_soak -- --exact --nocapture
