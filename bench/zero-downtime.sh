#!/usr/bin/env bash
# The zero-downtime benchmark (benches/zero.rs): hosts serving a PHP app through nginx and
# php-fpm with OPcache, continuous requests, K deploys and K rollbacks with ship, and the same
# with the seeds' recipe (`ln -nfs`); per setting: requests, failed, mixed, stale, latency.
#   bench/zero-downtime.sh                 # 2 hosts, 10 deploys and 10 rollbacks
#   bench/zero-downtime.sh --deploys 3 --hosts 4
# Needs root (sshd in mount namespaces), openssh-server, nginx and php-fpm, like scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
ls /usr/sbin/php-fpm* >/dev/null 2>&1 || missing+=(php-fpm)
if [ ${#missing[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
exec cargo bench --bench zero -- "$@"
