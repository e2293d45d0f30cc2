#!/usr/bin/env bash
# Installs everything sysbreak, its tests and its benchmarks need, from nothing, on a Debian/Ubuntu machine,
# and links a `sysbreak` command into /usr/local/bin (or ~/.local/bin) for the user.  Idempotent and quick when
# everything is already there.  Run as root or with sudo available.  Every step says what it is doing.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup-lib.sh
. scripts/setup-lib.sh

need=()
command -v gdb >/dev/null || need+=(gdb)
command -v gcc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)  # the C++ fixture of the unwinder's oracle test
command -v make >/dev/null || need+=(make)
command -v strace >/dev/null || need+=(strace)
command -v pmap >/dev/null || need+=(procps)
command -v objdump >/dev/null || need+=(binutils)
command -v gdbserver >/dev/null || need+=(gdbserver)
[ -e /usr/include/ucm/api/ucm.h ] || need+=(libucx-dev)
dpkg -s libc6-dbg >/dev/null 2>&1 || need+=(libc6-dbg)  # glibc's debug info: file:line and inlined frames in libc
[ ! -x /usr/bin/python3.11 ] || [ -e /usr/bin/python3.11d ] || need+=(python3.11-dbg)  # CPython 3.11 debug info
command -v chromium >/dev/null || need+=(chromium)
# jemalloc and tcmalloc, preloaded into a fixture by the report tests of their hints (tests/test_report_real.py)
ldconfig -p 2>/dev/null | grep 'libjemalloc\.so\.2 ' >/dev/null || need+=(libjemalloc2)
# (Debian 13 and Ubuntu 24.04 renamed tcmalloc's package for the 64-bit time_t transition: named after the update)
ldconfig -p 2>/dev/null | grep 'libtcmalloc_minimal\.so\.4 ' >/dev/null || need+=(@tcmalloc)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v go >/dev/null || need+=(golang-go)  # the Go fixture (tests/test_go.py)
[ -d /usr/share/gocode/src/golang.org/x/sys/unix ] || need+=(golang-golang-x-sys-dev)  # its x/sys/unix.Mmap

if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    step "updating the package lists (apt-get update)"
    run_logged '^(Hit|Get|Err|W:|E:)' $SUDO apt-get update
    for i in "${!need[@]}"; do
        if [ "${need[$i]}" = @tcmalloc ]; then
            need[$i]=libgoogle-perftools4
            apt-cache show libgoogle-perftools4t64 >/dev/null 2>&1 && need[$i]=libgoogle-perftools4t64
        fi
    done
    step "installing ${#need[@]} Debian package(s) and their dependencies: ${need[*]}"
    DEBIAN_FRONTEND=noninteractive run_logged '^(Get:|Setting up |E:)' \
        $SUDO apt-get install -y --no-install-recommends -o Dpkg::Use-Pty=0 "${need[@]}"
fi

if [ ! -x .venv/bin/python ]; then
    step "creating .venv ($(python3 --version))"
    python3 -m venv .venv
fi
stamp=.venv/.sysbreak-installed
if [ ! -e "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    step "upgrading pip in .venv"
    run_logged '^(Successfully|Requirement already satisfied: pip)' .venv/bin/python -m pip install --progress-bar off --upgrade pip
    step "installing sysbreak (editable) with its test extras into .venv"
    run_logged '^(Collecting|Downloading|Processing|Installing collected|Successfully|ERROR)' \
        .venv/bin/python -m pip install --progress-bar off -e '.[test]'
    touch "$stamp"
fi
step "building the test fixtures (make -C fixtures)"
make -s -C fixtures
link_cli "$PWD/.venv/bin/sysbreak"
step "ready (gdb: $(gdb --version | head -n1))"
