#!/usr/bin/env bash
# Bring up a local fleet of three OpenSSH hosts in containers and deploy the example app to it
# with ship: the same thing a real `ship production` does against real servers.
#
#   scripts/demo.sh          build, start the fleet, deploy (run it again to deploy again)
#   scripts/demo.sh down     remove the fleet
set -euo pipefail
cd "$(dirname "$0")/.."
PROJECT=shipdemo
COMPOSE=(docker-compose -f docker-compose.test.yml -p "$PROJECT")
DEMO=.demo

if [ "${1:-}" = down ]; then
    "${COMPOSE[@]}" down --volumes --remove-orphans
    exit 0
fi

for tool in docker docker-compose cargo ssh-keygen; do
    command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is needed for the demo" >&2; exit 1; }
done

scripts/build-base-image.sh

mkdir -p "$DEMO"
[ -f "$DEMO/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C ship-demo -f "$DEMO/id_ed25519"
cp "$DEMO/id_ed25519.pub" "$DEMO/authorized_keys"
chmod 644 "$DEMO/authorized_keys"

"${COMPOSE[@]}" up -d --build

# Record each host's key through `docker exec` (a channel we trust), never by trusting the
# first key the network shows us.
: > "$DEMO/known_hosts"
for i in 1 2 3; do
    for _ in $(seq 1 100); do
        key=$("${COMPOSE[@]}" exec -T "web-$i" cat /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null || true)
        [ -n "$key" ] && break
        sleep 0.1
    done
    [ -n "$key" ] || { echo "error: web-$i did not start sshd" >&2; exit 1; }
    port_var="SHIP_DEMO_PORT_$i"
    port=${!port_var:-220$i}
    echo "[127.0.0.1]:$port $(echo "$key" | cut -d' ' -f1,2)" >> "$DEMO/known_hosts"
done

cat > "$DEMO/inventory.yaml" <<YAML
# Made by scripts/demo.sh: three containers from docker-compose.test.yml.
defaults:
  user: deploy
  identity_file: ./id_ed25519
  known_hosts: ./known_hosts
  deploy_to: /var/www/demo
  keep_releases: 3
  source:
    artifact: ../examples/app
  shared:
    files: [.env]
    dirs: [storage]
  build:
    - sh build.sh
  env:
    APP_ENV: demo
stages:
  demo:
    hosts:
      web-1: { address: 127.0.0.1, port: ${SHIP_DEMO_PORT_1:-2201} }
      web-2: { address: 127.0.0.1, port: ${SHIP_DEMO_PORT_2:-2202} }
      web-3: { address: 127.0.0.1, port: ${SHIP_DEMO_PORT_3:-2203} }
YAML

cargo build --quiet
./target/debug/ship deploy demo -i "$DEMO/inventory.yaml"

echo
echo "on the hosts:"
release=""
for i in 1 2 3; do
    cur=$("${COMPOSE[@]}" exec -T "web-$i" readlink /var/www/demo/current)
    echo "  web-$i: current -> $cur"
    if [ -n "$release" ] && [ "$cur" != "$release" ]; then
        echo "error: the hosts disagree" >&2
        exit 1
    fi
    release=$cur
done
echo
echo "deploy again: scripts/demo.sh   remove the fleet: scripts/demo.sh down"
