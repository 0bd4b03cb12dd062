#!/usr/bin/env bash
# Build (once) and cache the local images the tests use; no registry is needed.
#   dm-test/busybox:latest   Debian's static busybox as a root file system, imported through the
#                            Docker Engine API (tests/runtime/images.py, aiodocker; no docker CLI).
#   dm-test/openssh:bookworm Debian bookworm (debootstrap minbase + openssh-server), imported the
#                            same way; the root file system tarball is cached in /var/cache/dm-test.
# An image that exists is kept; pass --rebuild to replace it. Other arguments go to the helper
# (--docker-host URL).
set -euo pipefail

log() { echo "test-images: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }

cd "$(dirname "$0")/.."

PYTHON=.venv/bin/python
[ -x "$PYTHON" ] || PYTHON=python3

# busybox-static: its /bin/busybox needs no libraries, so it runs alone in the image.
static_busybox() {
  [ -x /bin/busybox ] && "$PYTHON" -c 'import sys; from tests.runtime.images import is_static_elf; sys.exit(0 if is_static_elf("/bin/busybox") else 1)'
}
if ! static_busybox; then
  [ "$(id -u)" = 0 ] || die "need root to install busybox-static (apt-get install busybox-static)"
  log "installing busybox-static"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >/dev/null; } \
    || die "apt-get install busybox-static failed"
  static_busybox || die "/bin/busybox is still not a static binary"
fi

# debootstrap: the openssh image's root file system (bootstrapped once, then cached).
if ! command -v debootstrap >/dev/null; then
  [ "$(id -u)" = 0 ] || die "need root to install debootstrap (apt-get install debootstrap)"
  log "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null 2>&1 \
    || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; } \
    || die "apt-get install debootstrap failed"
  command -v debootstrap >/dev/null || die "debootstrap is still missing"
fi

exec "$PYTHON" -m tests.runtime.images "$@"
