# Functions of scripts/setup.sh (sourced; tests/test_setup.py runs them on their own).

# step MESSAGE: one progress line
step() { echo "setup: $*"; }

# run_logged FILTER CMD...: run CMD, showing as they come the lines of its output that match the extended
# regex FILTER (one per package downloaded / set up), each as "setup:   LINE"; on failure, the last 40 lines
# of everything it printed, then exit with its status.  Nothing is hidden for minutes behind -qq or -q.
run_logged() {
    local filter=$1
    shift
    local log rc
    log=$(mktemp "${TMPDIR:-/tmp}/sysbreak-setup.XXXXXX")
    set +e
    "$@" 2>&1 | tee "$log" | grep --line-buffered -E "$filter" | sed -u 's/^/setup:   /'
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -ne 0 ]; then
        step "FAILED (exit status $rc): $*"
        echo "setup: its last 40 lines of output:"
        tail -n 40 "$log"
        rm -f "$log"
        exit "$rc"
    fi
    rm -f "$log"
}

# link_cli TARGET: put a `sysbreak` command on PATH for this user: a symlink to TARGET in the first writable
# directory of $SYSBREAK_LINK_DIRS (default: /usr/local/bin, then ~/.local/bin), never over a file that is not
# a symlink.  SYSBREAK_NO_LINK=1 skips it.  Says what it did, or how to run TARGET without it.
link_cli() {
    local target=$1 dir dirs
    if [ "${SYSBREAK_NO_LINK:-}" = 1 ]; then
        step "not linking sysbreak into PATH (SYSBREAK_NO_LINK=1); run it as $target"
        return 0
    fi
    dirs=${SYSBREAK_LINK_DIRS:-"/usr/local/bin $HOME/.local/bin"}
    for dir in $dirs; do
        if [ "$dir" = "$HOME/.local/bin" ] && [ ! -d "$dir" ] && [ -w "$HOME" ]; then
            mkdir -p "$dir"
        fi
        [ -d "$dir" ] && [ -w "$dir" ] || continue
        if [ -e "$dir/sysbreak" ] && [ ! -L "$dir/sysbreak" ]; then
            step "not replacing $dir/sysbreak (a file, not a link from an earlier setup)"
            continue
        fi
        ln -sfn "$target" "$dir/sysbreak"
        step "linked $dir/sysbreak -> $target"
        case ":$PATH:" in
        *":$dir:"*) step "type \`sysbreak\` to run it" ;;
        *) step "note: $dir is not on your PATH: add it (export PATH=\"$dir:\$PATH\"), or run $target" ;;
        esac
        return 0
    done
    step "could not link sysbreak into $dirs (not writable): run it as $target, or export PATH=\"$(dirname "$target"):\$PATH\""
}
