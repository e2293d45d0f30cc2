"""The terminal report: headline, ranked stacks, the top stacks' frames, and an annotated ``pmap -x`` view."""

from __future__ import annotations

import io
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from sysbreak.analysis.model import Analysis, Region, StackStats
from sysbreak.report._common import (
    candidates,
    headline,
    human_bytes,
    human_duration,
    human_rate,
    idle_line,
    interesting,
    libraries_line,
    module_offset,
    plural,
    pmap_mode,
    py_location,
    region_kind,
    sort_title,
    source_location,
    stack_label,
    text_console,
)

DEFAULT_TOP = 10
FRAMES_OF = 3  # stacks whose frames are listed under the table
MAX_FRAMES = 32  # frames listed per stack; the JSON and HTML reports hold them all
MAX_OWNERS = 5  # owners listed per region

_STATUS_STYLE = {"new": "bold red", "grew": "yellow", "shrank": "green", "gone": "dim", "same": ""}


def by_syscall_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def change_text(region: Region) -> str:
    growth = region.growth
    if region.status == "new":
        return f"new {human_bytes(region.size, signed=True)}"
    if region.status == "gone":
        return f"gone {human_bytes(-region.first_size, signed=True)}"
    if growth:
        return f"{region.status} {human_bytes(growth, signed=True)}"
    return "" if region.status == "same" else region.status


def _kb(value: int | None) -> str:
    return "-" if value is None else str(value // 1024)


def _signed(n: int) -> str:
    return human_bytes(n, signed=True) if n else "-"


def _rss_growth_cell(stack: StackStats) -> str:
    text = _signed(stack.rss_growth_bytes)
    if stack.after_last_bytes:
        text += f" (+{human_bytes(stack.after_last_bytes)} late)"
    return text


def pids_text(pids: tuple[int, ...], limit: int = 4) -> str:
    """``4242, 4250`` or ``4242, 4250, 4251, 4252 +3``: the processes a stack was seen in."""
    shown = ", ".join(str(p) for p in pids[:limit])
    return shown + (f" +{len(pids) - limit}" if len(pids) > limit else "")


def processes_text(processes: list[dict[str, Any]]) -> str:
    """One line per process of the tree: pid, parent, command line."""
    lines = []
    for p in processes:
        argv = " ".join(str(a) for a in (p.get("argv") or [])) or "?"
        parent = f" (child of {p['ppid']})" if p.get("ppid") and any(q["pid"] == p["ppid"] for q in processes) else ""
        lines.append(f"{p['pid']}{parent}: {argv[:100]}")
    return "\n          ".join(lines)


def _stacks_table(analysis: Analysis, stacks: list[StackStats], width: int) -> Table:
    """The ranked stacks; on a narrow terminal without virtual/rate/mapped, so that the labels stay readable."""
    wide = width >= 130
    rates = any(stack.rss_growth_per_min for stack in stacks)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("#", justify="right")
    longest = max((len(stack_label(stack)) for stack in stacks), default=5)
    table.add_column("stack", overflow="fold", min_width=min(longest, 36 if wide else 28))
    table.add_column("RSS growth", justify="right", no_wrap=True)
    table.add_column("RSS", justify="right", no_wrap=True)
    table.add_column("live", justify="right", no_wrap=True)
    table.add_column("peak", justify="right", no_wrap=True)
    if wide:
        table.add_column("virtual only", justify="right", no_wrap=True)
        if rates:
            table.add_column("RSS/min", justify="right", no_wrap=True)
        table.add_column("mapped", justify="right", no_wrap=True)
    table.add_column("events", overflow="fold")
    several = len(analysis.processes) > 1
    if several:
        table.add_column("pids", overflow="fold")  # which processes of the tree made it
    for rank, stack in enumerate(stacks, start=1):
        cells = [
            str(rank),
            stack_label(stack),
            _rss_growth_cell(stack),
            human_bytes(stack.rss_bytes),
            human_bytes(stack.live_bytes),
            human_bytes(stack.peak_bytes),
        ]
        if wide:
            cells.append(human_bytes(stack.virtual_bytes) if stack.virtual_bytes else "-")
            if rates:
                cells.append(human_rate(stack.rss_growth_per_min))
            cells.append(human_bytes(stack.mapped_bytes))
        cells.append(by_syscall_text(stack.by_syscall) or str(stack.events))
        if several:
            cells.append(pids_text(stack.pids))
        table.add_row(*cells)
    return table


def _frames_table(stack: StackStats) -> Table:
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 1, 0, 0))
    table.add_column("n", justify="right", style="dim")
    table.add_column("function", overflow="fold")
    table.add_column("where", overflow="fold", style="cyan")
    table.add_column("source", overflow="fold", style="dim")
    for index, frame in enumerate(stack.frames[:MAX_FRAMES]):
        function = frame.function or "??"
        table.add_row(f"  {index}", function, module_offset(frame), source_location(frame.file, frame.line))
    if len(stack.frames) > MAX_FRAMES:
        more = len(stack.frames) - MAX_FRAMES
        table.add_row("", Text(f"... {plural(more, 'more frame')} (all in --format json or html)", style="dim"), "", "")
    if stack.python:
        table.add_row("", Text("Python, innermost first:", style="bold"), "", "")
        for index, pyframe in enumerate(stack.python[:MAX_FRAMES]):
            table.add_row(f"py{index}", pyframe.function, py_location(pyframe), "")
        if len(stack.python) > MAX_FRAMES:
            more = len(stack.python) - MAX_FRAMES
            table.add_row("", Text(f"... {plural(more, 'more Python frame')}", style="dim"), "", "")
    return table


def _owner_lines(region: Region, by_id: dict[int, StackStats], shown: dict[int, int]) -> list[tuple[str, str]]:
    """(text, style) lines of the "Owned by" cell: the owning stacks that are listed above (by rank), biggest first;
    the others as one line per kind (never a rank that is not shown); then the unexplained bytes."""
    out: list[tuple[str, str]] = []
    owners = sorted(region.owners, key=lambda o: (-o.bytes, shown.get(o.stack_id, 1 << 30)))
    listed = [o for o in owners if o.stack_id in shown]
    for owner in listed[:MAX_OWNERS]:
        stack = by_id[owner.stack_id]
        out.append((f"#{shown[owner.stack_id]} {stack_label(stack)} {human_bytes(owner.bytes)}", "bold"))
    rest = listed[MAX_OWNERS:]
    if rest:
        out.append((f"... {plural(len(rest), 'more stack')}, {human_bytes(sum(o.bytes for o in rest))}", "dim"))
    libs = [o for o in owners if o.stack_id not in shown and getattr(by_id.get(o.stack_id), "kind", "") == "library"]
    others = [o for o in owners if o.stack_id not in shown and o not in libs]
    if libs:
        out.append((f"libraries loaded {human_bytes(sum(o.bytes for o in libs))}", "dim"))
    if others:
        more = f"{plural(len(others), 'stack')} not listed above, {human_bytes(sum(o.bytes for o in others))}"
        out.append((more, "dim"))
    if region.unexplained_bytes:
        out.append((f"unexplained {human_bytes(region.unexplained_bytes)}", "magenta"))
    return out


def rss_growth_of(region: Region) -> int:
    if region.status == "gone":
        return -(region.first_rss or 0)
    return (region.rss or 0) - (region.first_rss or 0)


def region_order(analysis: Analysis, all_regions: bool) -> tuple[list[Region], list[Region]]:
    """(regions to list, library segments folded into one line). By default: the changed anonymous regions first,
    biggest resident growth first, then the other regions worth showing in address order; the segments of
    executables and libraries that changed are folded. ``all_regions``: every region, in address order."""
    if all_regions:
        return list(analysis.regions), []
    exe = analysis.exe
    shown = [r for r in analysis.regions if interesting(r)]
    anon = [r for r in shown if region_kind(r, exe) == "anon" and (r.status != "same" or rss_growth_of(r))]
    anon.sort(key=lambda r: (-rss_growth_of(r), -r.growth, r.start))
    picked = {id(r) for r in anon}
    libs = [r for r in shown if id(r) not in picked and region_kind(r, exe) == "library"]
    picked |= {id(r) for r in libs}
    rest = [r for r in shown if id(r) not in picked]
    return anon + rest, libs


def _library_fold(libs: list[Region]) -> str:
    files = {r.path for r in libs}
    new = sum(1 for r in libs if r.status == "new")
    size = sum(r.size for r in libs)
    rss = sum(r.rss or 0 for r in libs)
    what = plural(len(files), "executable or library", "executables and libraries")
    head = f"... {plural(len(libs), 'segment')} of {what} ({new} new)"
    return f"{head}: {size // 1024} kB, RSS {rss // 1024} kB; --all-regions lists them"


MAPPING_WIDTH = 48  # a longer mapping name pushes the rest of its own line only


def _regions_view(analysis: Analysis, regions: list[Region], shown: dict[int, int]) -> list[tuple[str, str]]:
    """The regions as ``pmap -x`` prints them, plus Change and Owned by columns, as (text, style) segments.

    Aligned by hand rather than with a rich Table: a process can have tens of thousands of regions.
    """
    by_id = {stack.id: stack for stack in analysis.stacks}
    head = ("Address", "Kbytes", "RSS", "Mode", "Mapping", "Change")
    rows: list[tuple[tuple[str, str, str, str, str, str], Region]] = []
    for region in regions:
        cols = (
            f"{region.start:016x}",
            _kb(region.size if region.status != "gone" else region.first_size),
            _kb(region.rss),
            pmap_mode(region.perms),
            region.path,
            change_text(region),
        )
        rows.append((cols, region))
    live = [r for r in analysis.regions if r.status != "gone"]
    total_size = str(sum(r.size for r in live) // 1024)
    total_rss = str(sum(r.rss or 0 for r in live) // 1024) if any(r.rss is not None for r in live) else "-"
    widths = [len(h) for h in head]
    for cols, _ in rows:
        for i in range(6):
            widths[i] = max(widths[i], len(cols[i]))
    widths[0] = max(widths[0], len("total kB"))
    widths[1] = max(widths[1], len(total_size))
    widths[2] = max(widths[2], len(total_rss))
    widths[4] = min(widths[4], MAPPING_WIDTH)
    sep = "  "

    def cells(values: tuple[str, ...]) -> str:
        addr, kb, rss, mode, path, change = values
        return sep.join(
            (
                addr.ljust(widths[0]),
                kb.rjust(widths[1]),
                rss.rjust(widths[2]),
                mode.ljust(widths[3]),
                path.ljust(widths[4]),
                change.ljust(widths[5]),
            )
        )

    indent = " " * (sum(widths) + len(sep) * 6)
    out: list[tuple[str, str]] = [(cells(head) + sep + "Owned by", "bold"), ("\n", "")]
    for (addr, kb, rss, mode, path, change), region in rows:
        left = sep.join((addr.ljust(widths[0]), kb.rjust(widths[1]), rss.rjust(widths[2]), mode.ljust(widths[3])))
        out.append((left + sep + path.ljust(widths[4]) + sep, ""))
        out.append((change, _STATUS_STYLE.get(region.status, "")))
        out.append((" " * (widths[5] - len(change)), ""))
        for index, (line, style) in enumerate(_owner_lines(region, by_id, shown)):
            out.append((sep if index == 0 else "\n" + indent, ""))
            out.append((line, style))
        out.append(("\n", ""))
    total = sep.join(("total kB".ljust(widths[0]), total_size.rjust(widths[1]), total_rss.rjust(widths[2])))
    out.append((total, "bold"))
    out.append(("\n", ""))
    return out


def render_text(
    analysis: Analysis,
    *,
    top: int | None = None,
    color: bool = False,
    width: int | None = None,
    all_regions: bool = False,
) -> str:
    """The terminal report as a string; ``color`` adds ANSI styles (only for a terminal)."""
    top = DEFAULT_TOP if top is None else top
    out = io.StringIO()
    console = text_console(out, color=color, width=width)
    console.print(Text(headline(analysis), style="bold"), soft_wrap=True)
    console.print()

    where = analysis.source
    who = [f"pid {analysis.pid}" if analysis.pid is not None else "", analysis.exe or ""]
    if any(who):
        where += f" ({', '.join(part for part in who if part)})"
    console.print(Text.assemble(("Source    ", "bold"), where), soft_wrap=True)
    capture = [human_duration(analysis.duration) if analysis.duration > 0 else "", plural(analysis.events, "event")]
    if analysis.by_syscall:
        capture[-1] += f" ({by_syscall_text(analysis.by_syscall)})"
    capture.append(plural(analysis.snapshots, "snapshot"))
    rss = [sample.rss_bytes for sample in analysis.timeline if sample.rss_bytes is not None]
    if len(rss) >= 2:
        capture.append(f"RSS {human_bytes(rss[0])} -> {human_bytes(rss[-1])}")
    console.print(Text.assemble(("Capture   ", "bold"), ", ".join(part for part in capture if part)), soft_wrap=True)
    if len(analysis.processes) > 1:
        console.print(Text.assemble(("Processes ", "bold"), processes_text(analysis.processes)), soft_wrap=True)
    console.print()

    cands = candidates(analysis)
    shown = cands[:top]
    shown_ids = {stack.id: rank for rank, stack in enumerate(shown, start=1)}
    if analysis.stacks:
        title = f"Stacks {sort_title(analysis)}"
        title += f" ({len(shown)} of {plural(len(cands), 'stack')} holding memory"
        title += "; --sort rss|live|peak|growth|rate|events orders them otherwise)"
        console.print(Text(title, style="bold underline"), soft_wrap=True)
        if shown:
            console.print(_stacks_table(analysis, shown, console.width))
        folded = []
        if len(cands) > len(shown):
            rest = cands[len(shown) :]
            folded.append(
                f"... {plural(len(rest), 'more stack')} holding {human_bytes(sum(x.live_bytes for x in rest))} live, "
                f"{human_bytes(sum(x.rss_bytes for x in rest))} resident (--top {len(cands)} lists them)"
            )
        folded += [line for line in (idle_line(analysis), libraries_line(analysis)) if line]
        for line in folded:
            console.print(Text("  " + line, style="dim"), soft_wrap=True)
        console.print()
        if analysis.hints:
            console.print(Text("Hints", style="bold underline"))
            for hint in analysis.hints:
                ranks_of = sorted(shown_ids[i] for i in hint.stack_ids if i in shown_ids)
                where = f"stack{'s' if len(ranks_of) > 1 else ''} {', '.join(f'#{r}' for r in ranks_of)}"
                if not ranks_of:
                    where = plural(len(hint.stack_ids), "stack")
                console.print(
                    Text.assemble((f"  {where}: ", "bold"), hint.text, (f" ({hint.doc})", "dim")),
                    soft_wrap=True,
                )
            console.print()
        for rank, stack in enumerate(shown[:FRAMES_OF], start=1):
            head = Text(f"#{rank} {stack_label(stack)}", style="bold")
            head.append(
                f"  {human_bytes(stack.rss_growth_bytes, signed=True)} RSS, {human_bytes(stack.live_bytes)} live, "
                f"peak {human_bytes(stack.peak_bytes)}, {plural(stack.events, 'event')}, "
                f"{plural(len(stack.frames), 'frame')} innermost first",
                style="",
            )
            console.print(head, soft_wrap=True)
            console.print(_frames_table(stack))
            console.print()
    elif analysis.events or analysis.syscalls:
        console.print(Text("No call stack was captured.", style="bold"))
        console.print()

    if analysis.regions:
        regions, libs = region_order(analysis, all_regions)
        title = "Regions, as pmap -x shows them"
        if not all_regions:
            title += (
                f" ({len(regions)} of {len(analysis.regions)}: changed anonymous regions first, then the others that"
                " changed or hold captured mappings; --all-regions lists every one in address order)"
            )
        console.print(Text(title, style="bold underline"), soft_wrap=True)
        segments = _regions_view(analysis, regions, shown_ids)
        if libs:
            segments.insert(-2, (_library_fold(libs) + "\n", "dim"))
        if color:
            console.print(Text.assemble(*segments[:-1]), soft_wrap=True)
        else:  # plain text: straight to the output, in order (the console writes each print as it happens)
            out.write("".join(text for text, _ in segments))
    else:
        console.print(
            Text("No memory map snapshots: capture with `sysbreak run`/`attach`, or pass --maps files, to see regions.")
        )

    for warning in analysis.warnings:
        console.print(Text.assemble(("warning: ", "bold yellow"), warning), soft_wrap=True)
    spots = getattr(analysis, "blind_spots", None)
    if spots is not None and not spots.unexplained_growth_bytes:
        console.print(Text.assemble(("blind spots: ", "bold"), spots.summary), soft_wrap=True)
    text = out.getvalue()
    # Table cells are padded to the column width; trailing blanks only get in the way of diff and grep.
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"
