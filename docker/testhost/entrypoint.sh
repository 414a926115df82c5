#!/bin/sh
# Fresh host keys per container (never baked into the image), then sshd in the foreground.
set -e
ssh-keygen -A >/dev/null
exec /usr/sbin/sshd -D -e
