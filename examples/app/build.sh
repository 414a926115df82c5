#!/bin/sh
# The example app's build step, run by ship inside the new release directory on every host.
# It stands in for `composer install` / `npm run build`: it writes a build artefact, and it fails
# on purpose when the host has a FAIL_BUILD marker in its shared/ directory (used by the tests
# and the demo to show the barrier: one failed build, and no host switches).
set -e
if [ -e "$SHIP_DEPLOY_TO/shared/FAIL_BUILD" ]; then
    echo "build failed: $SHIP_DEPLOY_TO/shared/FAIL_BUILD exists on this host" >&2
    exit 3
fi
echo "building release $SHIP_RELEASE_ID ($SHIP_REVISION)"
printf '%s\n' "$SHIP_RELEASE_ID" > public/release.txt
if [ -n "${BUILD_SECONDS:-}" ]; then sleep "$BUILD_SECONDS"; fi
echo "built"
