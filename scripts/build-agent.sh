#!/usr/bin/env bash
# Build dist/dmc, the node agent as one file (PyInstaller --onefile). Called by `make agent-binary`.
#
# The daemon's server-only dependencies are excluded explicitly, so a stray import fails loudly at
# run time instead of silently growing the binary (tests/agent/test_binary.py checks the archive).
# Goal: dist/dmc <= 25 MB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYINSTALLER="${PYINSTALLER:-$ROOT/.venv/bin/pyinstaller}"
if [[ ! -x "$PYINSTALLER" ]]; then
    echo "build-agent: $PYINSTALLER not found; run 'make' first (pip install -e '.[agent-binary]')" >&2
    exit 1
fi

SERVER_ONLY=(
    sqlalchemy alembic aiohttp_session aiohttp_jinja2 jinja2 argon2 asyncpg aiomysql aiosqlite
    redis aiomcache pydantic pydantic_core dmd mako
)
# asyncssh (the agent serves SSH for instances without a server) imports these lazily or by name.
HIDDEN=(
    asyncssh asyncssh.crypto.ed asyncssh.crypto.ec asyncssh.crypto.rsa asyncssh.crypto.dh asyncssh.crypto.kdf
    asyncssh.crypto.cipher asyncssh.crypto.chacha asyncssh.crypto.umac asyncssh.forward asyncssh.sftp
    asyncssh.scp asyncssh.stream
)
# asyncssh's optional parts the agent never uses (GSSAPI, X.509, FIDO keys, PKCS#11, libnacl).
UNNEEDED_SSH=(gssapi OpenSSL fido2 pkcs11 libnacl bcrypt)
# Standard-library and tooling modules the agent never needs (smaller binary, less to extract).
UNNEEDED=(
    tkinter _tkinter unittest pydoc pydoc_data doctest pdb lib2to3 idlelib ensurepip venv
    sqlite3 _sqlite3 curses xmlrpc turtle turtledemo distutils setuptools pip pkg_resources
    pytest _pytest playwright mypy ruff PyInstaller
)

ARGS=()
for mod in "${SERVER_ONLY[@]}" "${UNNEEDED[@]}" "${UNNEEDED_SSH[@]}"; do
    ARGS+=(--exclude-module "$mod")
done
for mod in "${HIDDEN[@]}"; do
    ARGS+=(--hidden-import "$mod")
done

BUILD="$ROOT/build/agent"
mkdir -p "$BUILD" "$ROOT/dist"

"$PYINSTALLER" \
    --noconfirm --clean --log-level WARN \
    --onefile \
    --name dmc \
    --paths "$ROOT" \
    --distpath "$ROOT/dist" \
    --workpath "$BUILD/work" \
    --specpath "$BUILD" \
    --strip \
    --optimize 2 \
    "${ARGS[@]}" \
    "$ROOT/agent/__main__.py"

SIZE=$(stat -c %s "$ROOT/dist/dmc")
awk -v s="$SIZE" 'BEGIN { printf "build-agent: dist/dmc is %d bytes (%.1f MB; goal <= 25 MB)\n", s, s / 1000000 }'
