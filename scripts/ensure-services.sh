#!/usr/bin/env bash
# Make sure every real service the tests talk to is installed and answering.
# Installs from Debian's packages what is missing; a piece that cannot be had fails loudly.
set -euo pipefail

log() { echo "ensure-services: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

APT_UPDATED=0
apt_install() {
  if [ "$(id -u)" != 0 ]; then die "need root to install $* (apt-get)"; fi
  if [ $APT_UPDATED = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {  # host port name
  for _ in $(seq 1 50); do port_open "$1" "$2" && return 0; sleep 0.2; done
  die "$3 is not answering on $1:$2"
}

# PostgreSQL, MariaDB and Redis are started by the machine; start them again if they stopped.
if ! port_open 127.0.0.1 5432; then
  log "PostgreSQL is not answering; starting it"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
wait_port 127.0.0.1 5432 PostgreSQL
if ! port_open 127.0.0.1 3306; then
  log "MariaDB is not answering; starting it"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd || true
fi
wait_port 127.0.0.1 3306 MariaDB
if ! port_open 127.0.0.1 6379; then
  log "Redis is not answering; starting it"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi
wait_port 127.0.0.1 6379 Redis

# Memcached: from Debian's packages when missing.
command -v memcached >/dev/null || apt_install memcached
if ! port_open 127.0.0.1 11211; then
  log "starting memcached"
  memcached -d -u memcache -l 127.0.0.1 -p 11211 -m 64 -P /tmp/dm-memcached.pid 2>/dev/null \
    || memcached -d -u root -l 127.0.0.1 -p 11211 -m 64 -P /tmp/dm-memcached.pid
fi
wait_port 127.0.0.1 11211 Memcached

# Chromium for the browser tests: Debian's package, never a downloaded browser.
[ -x /usr/bin/chromium ] || apt_install chromium
/usr/bin/chromium --version >/dev/null 2>&1 || die "chromium does not run"

# OpenSSH client (ssh, ssh-keygen, ssh-keyscan): the SSH access tests log in to instances with it.
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null && command -v ssh-keyscan >/dev/null \
  || apt_install openssh-client

# Docker Engine: Debian's docker.io, dockerd started in the background.
command -v curl >/dev/null || apt_install curl
command -v dockerd >/dev/null || apt_install docker.io
if ! [ -S /var/run/docker.sock ] || ! curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null; then
  log "starting dockerd"
  mkdir -p /var/log
  nohup dockerd >/var/log/dm-dockerd.log 2>&1 &
  for _ in $(seq 1 100); do
    curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null 2>&1 && break
    sleep 0.2
  done
fi
curl -sf --unix-socket /var/run/docker.sock http://localhost/_ping >/dev/null \
  || die "dockerd is not answering on /var/run/docker.sock (see /var/log/dm-dockerd.log)"

# A local image registry for the pull tests: Debian's docker-registry on loopback (plain HTTP;
# dockerd trusts registries on 127.0.0.0/8 without TLS by default).
REGISTRY_DIR=/var/lib/dm-test-registry
REGISTRY_CONFIG=/etc/dm-test-registry.yml
registry_up() { curl -sf -o /dev/null http://127.0.0.1:5000/v2/; }
if ! command -v docker-registry >/dev/null; then
  apt_install docker-registry
  # Where systemd runs, the package starts its own registry on :5000 (all interfaces, htpasswd): not that one.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi
if ! registry_up; then
  log "starting the local registry on 127.0.0.1:5000"
  mkdir -p "$REGISTRY_DIR"
  cat >"$REGISTRY_CONFIG" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR
  delete:
    enabled: true
http:
  addr: 127.0.0.1:5000
YML
  setsid nohup docker-registry serve "$REGISTRY_CONFIG" >/var/log/dm-test-registry.log 2>&1 </dev/null &
  for _ in $(seq 1 50); do registry_up && break; sleep 0.2; done
fi
registry_up || die "the local registry is not answering on http://127.0.0.1:5000/v2/ (see /var/log/dm-test-registry.log)"

log "PostgreSQL, MariaDB, Redis, Memcached, Docker, the local registry, Chromium and the OpenSSH client are ready"
