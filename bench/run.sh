#!/usr/bin/env bash
# The fleet benchmark (benches/fleet.rs): N local sshd hosts, K deploys each, figures printed.
#   bench/run.sh                     # 1, 5, 20 hosts, 3 deploys each
#   bench/run.sh --hosts 1,5,20,50,100 --runs 5
#   bench/run.sh --hold 20           # 20 hosts up until Enter, to profile a deploy by hand
# Needs root (sshd in mount namespaces) and openssh-server, like scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench fleet -- "$@"
