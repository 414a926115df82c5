#!/usr/bin/env bash
# The whole test suite: unit tests, integration tests, and end-to-end tests against real OpenSSH
# servers (one sshd per test host, each on its own loopback address and mount namespace; the
# fault suite cuts hosts off with iptables).
# Installs what the end-to-end tests need when run as root on Debian/Ubuntu.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v zstd >/dev/null 2>&1 || missing+=(zstd)
command -v sudo >/dev/null 2>&1 || missing+=(sudo)
command -v setfacl >/dev/null 2>&1 || missing+=(acl)
# The shells the session driver and the rendered scripts are tested under.
command -v dash >/dev/null 2>&1 || missing+=(dash)
command -v busybox >/dev/null 2>&1 || missing+=(busybox)
command -v perl >/dev/null 2>&1 || missing+=(perl)
# HTTP servers for health checks and downloads; the PHP stack of the zero-downtime test.
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
ls /usr/sbin/php-fpm* >/dev/null 2>&1 || missing+=(php-fpm)
command -v supervisord >/dev/null 2>&1 || missing+=(supervisor)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "error: the end-to-end tests need: ${missing[*]} (and root, for mount namespaces)" >&2
        exit 1
    fi
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: the end-to-end tests start sshd in mount namespaces and need root" >&2
    exit 1
fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --no-fail-fast "$@"
    # nextest does not run doctests
    cargo test --doc --quiet
else
    cargo test --no-fail-fast "$@"
fi
