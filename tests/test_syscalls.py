"""The x86-64 syscall table and the parsing of what users type for syscalls."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sysbreak import syscalls
from sysbreak.errors import SysbreakError


@pytest.mark.parametrize(
    ("name", "nr"),
    [
        ("read", 0),
        ("write", 1),
        ("mmap", 9),
        ("mprotect", 10),
        ("munmap", 11),
        ("brk", 12),
        ("mremap", 25),
        ("madvise", 28),
        ("shmat", 30),
        ("getpid", 39),
        ("clone", 56),
        ("exit", 60),
        ("shmdt", 67),
        ("getppid", 110),
        ("gettid", 186),
        ("futex", 202),
        ("exit_group", 231),
        ("openat", 257),
        ("getrandom", 318),
        ("memfd_create", 319),
        ("rseq", 334),
        ("uretprobe", 335),
        ("pidfd_send_signal", 424),
        ("io_uring_setup", 425),
        ("clone3", 435),
        ("set_mempolicy_home_node", 450),
        ("cachestat", 451),
        ("map_shadow_stack", 453),
        ("mseal", 462),
        ("file_setattr", 469),
    ],
)
def test_spot_checks(name: str, nr: int) -> None:
    assert syscalls.X86_64[name] == nr
    assert syscalls.number(name) == nr
    assert syscalls.name(nr) == name


def test_table_is_a_bijection_without_x32_numbers() -> None:
    numbers = list(syscalls.X86_64.values())
    assert len(numbers) == len(set(numbers))
    assert set(range(0, 336)) <= set(numbers)  # 0..335 have no gaps on x86-64
    assert set(range(424, 463)) <= set(numbers)
    assert not set(range(336, 424)) & set(numbers)  # unused on x86-64
    assert max(numbers) < 512  # the x32 numbers are not x86-64 syscalls


def test_agrees_with_the_kernel_header_when_there_is_one() -> None:
    header = Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
    if not header.exists():
        pytest.skip("no <asm/unistd_64.h> here")
    pairs = re.findall(r"#define __NR_(\w+)\s+(\d+)", header.read_text())
    assert pairs
    for name, nr in pairs:
        assert syscalls.X86_64.get(name) == int(nr), name


@pytest.mark.parametrize("spec", ["mmap", "9", "0x9", " mmap ", "SYS_mmap", "__NR_mmap", "sys_mmap", "MMAP"])
def test_number_accepts_the_usual_spellings(spec: str) -> None:
    assert syscalls.number(spec) == 9


def test_number_accepts_numbers_the_table_does_not_name() -> None:
    assert syscalls.number("999") == 999
    assert syscalls.name(999) == "syscall_999"


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("mmapp", "did you mean mmap"),
        ("munmmap", "munmap"),
        ("SYS_mremapp", "mremap"),
        ("zzzzzz", "give a name such as mmap"),
        ("", "empty syscall name"),
        ("-1", "out of range"),
        ("99999999999", "out of range"),
    ],
)
def test_number_errors_are_one_line_with_suggestions(spec: str, needle: str) -> None:
    with pytest.raises(SysbreakError) as info:
        syscalls.number(spec)
    message = str(info.value)
    assert "\n" not in message
    assert needle in message
    assert info.value.exit_code == 2


def test_parse_list() -> None:
    assert syscalls.parse_list([]) == [9, 11, 25, 12]
    assert syscalls.parse_list(["", " , "]) == [9, 11, 25, 12]
    assert syscalls.parse_list(["mmap,munmap", "9", "brk"]) == [9, 11, 12]
    assert syscalls.parse_list(["getppid", "SYS_mmap,110"]) == [110, 9]
    assert syscalls.DEFAULT_SYSCALLS == ("mmap", "munmap", "mremap", "brk")
    with pytest.raises(SysbreakError, match="unknown x86-64 syscall 'nope'"):
        syscalls.parse_list(["mmap,nope"])
