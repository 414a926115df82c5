#!/usr/bin/env bash
# The fleet benchmark (benches/fleet.rs): N local sshd hosts, K deploys each, figures printed.
#   bench/run.sh                     # 1, 5, 20 hosts, 3 deploys each
#   bench/run.sh --hosts 1,5,20,50,100 --runs 5
#   bench/run.sh --hold 20           # 20 hosts up until Enter, to profile a deploy by hand
#   bench/run.sh --bastion 200       # 200 hosts direct, then through one stock-sshd bastion
#   bench/run.sh --bastion 20 --artifact-mb 16   # the same with a 16 MiB artifact to each host
#   bench/run.sh --journaled ...     # the hosts' files on a fresh journaled ext4 (a loop-mounted
#                                    # image), as on a server, whatever this machine's disk is
# Needs root (sshd in mount namespaces) and openssh-server, like scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
journaled=no
for a in "$@"; do
    if [ "$a" = --journaled ]; then journaled=yes; else args+=("$a"); fi
done
if [ "$journaled" = yes ]; then
    work=$(mktemp -d /var/tmp/ship-bench-disk.XXXXXX)
    chmod 755 "$work"
    truncate -s 4G "$work/disk.img"
    mkfs.ext4 -q -F "$work/disk.img"
    mkdir "$work/mnt"
    mount -o loop "$work/disk.img" "$work/mnt"
    chmod 1777 "$work/mnt"
    trap 'umount "$work/mnt" 2>/dev/null || umount -l "$work/mnt"; rm -rf "$work"' EXIT
    export TMPDIR="$work/mnt"
    cargo bench --bench fleet -- "${args[@]}"
else
    exec cargo bench --bench fleet -- "${args[@]}"
fi
