#!/bin/sh
# The PHP example's build step, run by ship inside the new release directory on every host.
# It bakes the release id into three source files, so that a response shows which release's
# files served it: one id three times, or — if a request ran files of two releases — two ids.
set -e
for part in a b c; do
    printf '<?php\nreturn %s;\n' "'$SHIP_RELEASE_ID'" > "src/$part.php"
done
printf '%s\n' "$SHIP_RELEASE_ID" > public/asset.txt
echo "built $SHIP_RELEASE_ID"
