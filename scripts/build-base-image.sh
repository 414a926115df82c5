#!/usr/bin/env bash
# Build the base image for the container test hosts without a registry: a minimal Debian root
# filesystem made by mmdebstrap from Debian's package mirror, imported into Docker. Skipped when
# the image already exists (set SHIP_REBUILD_BASE=1 to force).
set -euo pipefail
IMAGE=${SHIP_TESTHOST_BASE:-ship-testhost-base:bookworm}
if [ -z "${SHIP_REBUILD_BASE:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base image $IMAGE exists"
    exit 0
fi
if ! command -v mmdebstrap >/dev/null 2>&1; then
    echo "installing mmdebstrap"
    apt-get update -qq && apt-get install -y -qq mmdebstrap >/dev/null
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "building $IMAGE with mmdebstrap (about a minute)"
mmdebstrap --quiet --variant=minbase --include=openssh-server,git,ca-certificates \
    bookworm "$work/rootfs.tar"
docker import "$work/rootfs.tar" "$IMAGE" >/dev/null
echo "built $IMAGE"
