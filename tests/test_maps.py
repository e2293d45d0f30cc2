"""maps/smaps/pmap parsers (sysbreak.maps): real outputs saved in fixtures/procfs/ (see save.sh) and odd lines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sysbreak.errors import SysbreakError
from sysbreak.maps import parse_maps_file, read_maps, read_smaps, sniff

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "procfs"
KIB = 1024


def fixture(name: str) -> Path:
    return FIX / name


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ucm_leak.maps", "maps"),
        ("ucm_leak.smaps", "smaps"),
        ("ucm_leak.pmap-x", "pmap-x"),
        ("ucm_leak.pmap", "pmap-x"),
        ("ucm_leak.pmap-X", "pmap-X"),
        ("ucm_leak.pmap-XX", "pmap-X"),
        ("python_odd.maps", "maps"),
        ("python_odd.smaps", "smaps"),
        ("python_odd.pmap-x", "pmap-x"),
        ("python_odd.pmap-X", "pmap-X"),
        ("python_odd.pmap-XX", "pmap-X"),
    ],
)
def test_sniff_and_parse_every_fixture(name: str, kind: str) -> None:
    snap = parse_maps_file(fixture(name))
    assert snap.kind == kind
    assert snap.warnings == []
    assert len(snap.vmas) > 10
    starts = [v.start for v in snap.vmas]
    assert starts == sorted(starts)
    assert all(v.end > v.start for v in snap.vmas)
    assert snap.vmas[-1].start == 0xFFFFFFFFFF600000  # [vsyscall], even where pmap calls it [ anon ]


@pytest.mark.parametrize("prefix", ["ucm_leak", "python_odd"])
def test_the_four_formats_agree(prefix: str) -> None:
    maps = parse_maps_file(fixture(f"{prefix}.maps"))
    smaps = parse_maps_file(fixture(f"{prefix}.smaps"))
    px = parse_maps_file(fixture(f"{prefix}.pmap-x"))
    pX = parse_maps_file(fixture(f"{prefix}.pmap-X"))  # noqa: N806
    pXX = parse_maps_file(fixture(f"{prefix}.pmap-XX"))  # noqa: N806
    # ucm_leak sat idle while saved: identical ranges. The python process's heap grew while it wrote its files.
    still = prefix == "ucm_leak"
    ranges = [(v.start, v.end if still else 0, v.perms) for v in smaps.vmas]
    for other in (maps, px, pX, pXX):
        assert [(v.start, v.end if still else 0, v.perms) for v in other.vmas] == ranges
    if still:
        assert px.rss == pX.rss == pXX.rss == smaps.rss
    assert maps.rss is None and smaps.rss is not None
    assert px.pid is not None and px.pid == pX.pid
    # pmap prints base names; the kernel prints paths.
    for a, b in zip(smaps.vmas, pX.vmas, strict=True):
        assert a.inode == b.inode and a.offset == b.offset and a.dev == b.dev
        if a.path.startswith("/"):
            assert os.path.basename(a.name) == b.name
        else:
            assert a.path == b.path


def test_pmap_x_totals_match_footer() -> None:
    text = fixture("ucm_leak.pmap-x").read_text()
    footer = [ln for ln in text.splitlines() if ln.startswith("total kB")][0].split()
    snap = parse_maps_file(text)
    assert snap.size == int(footer[2]) * KIB
    assert snap.rss == int(footer[3]) * KIB
    assert sum(v.dirty or 0 for v in snap.vmas) == int(footer[4]) * KIB


def test_smaps_fields_in_bytes_and_vmflags() -> None:
    snap = parse_maps_file(fixture("ucm_leak.smaps"))
    heap = [v for v in snap.vmas if v.path == "[heap]"][0]
    assert heap.fields["Size"] == heap.size
    assert heap.rss is not None and heap.rss % 4096 == 0
    assert heap.fields["KernelPageSize"] == 4 * KIB
    assert heap.fields["THPeligible"] in (0, 1)  # no unit: kept as a number
    assert heap.vm_flags is not None and "rd" in heap.vm_flags and "wr" in heap.vm_flags
    assert heap.anonymous == heap.rss
    assert heap.dirty == heap.fields["Shared_Dirty"] + heap.fields["Private_Dirty"]
    assert heap.is_anonymous
    libc = [v for v in snap.vmas if v.name.endswith("/libc.so.6")]
    assert libc and not libc[0].is_anonymous and libc[0].inode


def test_odd_names_are_real() -> None:
    for name in ("python_odd.maps", "python_odd.smaps"):
        snap = parse_maps_file(fixture(name))
        by_name = {os.path.basename(v.name): v for v in snap.vmas}
        spaced = by_name["file with spaces.bin"]
        assert spaced.size == 3 * 4096 and spaced.perms == "rw-s" and not spaced.deleted
        gone = by_name["deleted file.bin"]
        assert gone.deleted and gone.path.endswith("deleted file.bin (deleted)") and gone.size == 2 * 4096
        paths = {v.path for v in snap.vmas}
        assert {"[vdso]", "[vvar]", "[vsyscall]", "[heap]", "[stack]"} <= paths
        assert "" in paths
    for name in ("python_odd.pmap-x", "python_odd.pmap-X", "python_odd.pmap-XX"):
        snap = parse_maps_file(fixture(name))
        names = {v.path for v in snap.vmas}
        assert "file with spaces.bin" in names
        assert "deleted file.bin (deleted)" in names


def test_pmap_x_anon_and_stack_spellings() -> None:
    snap = parse_maps_file(fixture("ucm_leak.pmap-x"))
    assert "[stack]" in {v.path for v in snap.vmas}
    anon = [v for v in snap.vmas if v.path == ""]
    assert anon and all(v.display_path == "[anon]" for v in anon)
    assert all(v.offset is None and v.inode is None and v.swap is None for v in snap.vmas)


NAMED_ANON_SMAPS = """\
7f0000000000-7f0000010000 rw-p 00000000 00:00 0                          [anon:sysbreak test]
Size:                 64 kB
Rss:                   8 kB
Pss:                   8 kB
Private_Dirty:         8 kB
Shared_Dirty:          0 kB
Swap:                  4 kB
VmFlags: rd wr mr mw me ac
7f0000010000-7f0000011000 rw-p 00000000 fe:00 12                         /tmp/x kB
Size:                  4 kB
Rss:                   4 kB
"""


def test_named_anon_and_a_path_ending_in_kb() -> None:
    # This kernel refuses PR_SET_VMA_ANON_NAME (see save.sh), so the [anon:name] line is hand-made.
    snap = parse_maps_file(NAMED_ANON_SMAPS)
    assert snap.kind == "smaps"
    a, b = snap.vmas
    assert a.path == "[anon:sysbreak test]" and a.is_anonymous
    assert a.rss == 8 * KIB and a.swap == 4 * KIB and a.private_dirty == 8 * KIB and a.dirty == 8 * KIB
    assert b.path == "/tmp/x kB" and b.rss == 4 * KIB


def test_truncated_last_line_is_dropped_with_a_warning() -> None:
    text = fixture("ucm_leak.smaps").read_text()
    cut = text[: len(text) // 2]
    cut = cut[: cut.rindex("\n") + 5]  # a few characters into a line
    snap = parse_maps_file(cut)
    assert snap.truncated and snap.warnings
    assert len(snap.vmas) >= 1


def test_garbage_in_the_middle_is_an_error_naming_the_line() -> None:
    text = fixture("ucm_leak.maps").read_text().splitlines(keepends=True)
    text.insert(3, "this is not a mapping\n")
    with pytest.raises(SysbreakError, match="line 4"):
        parse_maps_file("".join(text))


@pytest.mark.parametrize(
    "text",
    [
        "hello\nworld\n",
        "",
        "\n\n",
        "Rss: 12 kB\nPss: 3 kB\n",  # smaps_rollup without its first line
        "         Address Perm\n",
        "00007f0000000000 rw-p\n",
        "\x00\x01\x02\n",
    ],
)
def test_not_a_maps_text(text: str) -> None:
    with pytest.raises(SysbreakError):
        parse_maps_file(text)


def test_bytes_and_paths(tmp_path: Path) -> None:
    raw = fixture("ucm_leak.pmap-X").read_bytes()
    assert parse_maps_file(raw).kind == "pmap-X"
    p = tmp_path / "my maps.txt"
    p.write_bytes(raw)
    assert parse_maps_file(str(p)).source == str(p)
    with pytest.raises(SysbreakError, match="no such file"):
        parse_maps_file(tmp_path / "missing")
    with pytest.raises(SysbreakError, match="directory"):
        parse_maps_file(tmp_path)


def test_forced_kind() -> None:
    text = fixture("ucm_leak.maps").read_text()
    assert parse_maps_file(text, kind="maps", t=3.5).t == 3.5
    with pytest.raises(SysbreakError):
        parse_maps_file(text, kind="pmap-X")
    with pytest.raises(SysbreakError, match="unknown maps format"):
        parse_maps_file(text, kind="nope")


def test_sniff_single_maps_line() -> None:
    assert sniff("7f0000000000-7f0000001000 r--p 00000000 00:00 0\n") == "maps"


def test_pmap_with_two_processes_is_refused() -> None:
    text = fixture("ucm_leak.pmap-x").read_text()
    with pytest.raises(SysbreakError, match="second process"):
        parse_maps_file(text + text)


def test_live_process() -> None:
    pid = os.getpid()
    smaps = read_smaps(pid)
    maps = read_maps(pid)
    assert smaps.pid == pid and smaps.t is not None and smaps.rss and smaps.rss > 1024 * 1024
    assert any(v.path == "[stack]" for v in maps.vmas)


def test_live_process_missing() -> None:
    with pytest.raises(SysbreakError) as e:
        read_smaps(2**22 + 12345)
    assert e.value.exit_code == 3
    with pytest.raises(SysbreakError):
        read_maps(2**22 + 12345)


def test_sum_rss_kb_is_the_snapshots_rss() -> None:
    # the cheap line sum the snapshot index records agrees with the full parser
    from sysbreak.maps import parse_smaps, sum_rss_kb

    for name in ("ucm_leak.smaps", "python_odd.smaps"):
        text = fixture(name).read_text()
        assert sum_rss_kb(text) * KIB == parse_smaps(text).rss
