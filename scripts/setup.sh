#!/usr/bin/env bash
# Installs everything sysbreak, its tests and its benchmarks need, from nothing, on a Debian/Ubuntu machine.
# Idempotent and quick when everything is already there.  Run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v gdb >/dev/null || need+=(gdb)
command -v gcc >/dev/null || need+=(gcc)
command -v make >/dev/null || need+=(make)
command -v strace >/dev/null || need+=(strace)
command -v pmap >/dev/null || need+=(procps)
command -v objdump >/dev/null || need+=(binutils)
command -v gdbserver >/dev/null || need+=(gdbserver)
[ -e /usr/include/ucm/api/ucm.h ] || need+=(libucx-dev)
[ ! -x /usr/bin/python3.11 ] || [ -e /usr/bin/python3.11d ] || need+=(python3.11-dbg)  # CPython 3.11 debug info
command -v chromium >/dev/null || need+=(chromium)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi
stamp=.venv/.sysbreak-installed
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing sysbreak with its test extras into .venv"
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e '.[test]'
    touch "$stamp"
fi
make -s -C fixtures >/dev/null
echo "setup: ready (gdb: $(gdb --version | head -n1))"
