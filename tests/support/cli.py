"""Running the ``sysbreak`` command in tests, and checking its one-line errors (one copy for every test file)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest


def sysbreak_argv() -> list[str]:
    """How to run the ``sysbreak`` command of this checkout: the console script next to this Python."""
    script = Path(sys.executable).with_name("sysbreak")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from sysbreak.cli import main; main()"]


def run_sysbreak(
    *args: object, timeout: float = 120, prefix: list[str] | None = None, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    """Run ``sysbreak ARGS...`` in a new process to completion (stdin closed), capturing its output as text.
    ``prefix`` goes before it (e.g. :data:`AS_NOBODY`); ``kwargs`` go to :func:`subprocess.run` (env, cwd)."""
    argv = [*(prefix or []), *sysbreak_argv(), *(str(a) for a in args)]
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False, **kwargs
    )


def run_in_process(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: object
) -> tuple[int, str, str]:
    """Run the real entry point (``sysbreak.cli.main``) in this process: (exit code, stdout, stderr)."""
    from sysbreak.cli import main

    monkeypatch.setattr(sys, "argv", ["sysbreak", *(str(a) for a in args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def one_error(code: int, err: str, *needles: str, exit_code: int = 2) -> None:
    """The command failed with ``exit_code`` and said exactly one line, ``sysbreak: error: ...``, holding
    every needle; no traceback."""
    assert code == exit_code, err
    assert err.count("\n") == 1 and err.startswith("sysbreak: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def error_line(res: subprocess.CompletedProcess[str]) -> str:
    """The one ``sysbreak: error:`` line of a finished command (other lines, progress or notes, may surround it)."""
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("sysbreak: error:")]
    assert len(lines) == 1, f"expected one error line, got:\n{res.stderr}"
    assert "Traceback" not in res.stderr
    return lines[0]


#: run a command as user nobody (setpriv ships with util-linux)
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]


def wait_for_first_syscall(out: Path, timeout: float = 30) -> None:
    """Wait until the capture directory ``out`` has logged its first syscall record."""
    log = out / "events.jsonl"
    deadline = time.monotonic() + timeout
    while not log.exists() or '"syscall"' not in log.read_text():
        assert time.monotonic() < deadline, "no event caught"
        time.sleep(0.05)
