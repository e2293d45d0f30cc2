"""The ledger and the syscall replay: hand-worked cases, and a page-by-page model checked by Hypothesis."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sysbreak.analysis.ledger import MAP_FIXED, OWNER_SHIFT, PAGE, Ledger, Replay, failed

P = PAGE
A = 0x7F0000000000
MAP_PRIVATE_ANON = 0x22


def owners(led: Ledger) -> list[tuple[int, int, int]]:
    led.check()
    return list(led)


def own(sid: int) -> int:
    return sid << OWNER_SHIFT


def mmap(r: Replay, addr: int, length: int, sid: int, flags: int = MAP_PRIVATE_ANON) -> None:
    r.apply("mmap", [0, length, 3, flags, 2**64 - 1, 0], addr, own(sid))


def munmap(r: Replay, addr: int, length: int, sid: int = 9) -> None:
    r.apply("munmap", [addr, length, 0, 0, 0, 0], 0, own(sid))


def mremap(r: Replay, old: int, old_size: int, new_size: int, flags: int, new_addr: int, ret: int, sid: int) -> None:
    r.apply("mremap", [old, old_size, new_size, flags, new_addr, 0], ret, own(sid))


def test_ledger_merge_split_hole() -> None:
    led = Ledger()
    assert led.assign(0, 10, 1) == []
    assert led.assign(10, 20, 1) == []  # merged with the left neighbour
    assert owners(led) == [(0, 20, 1)]
    assert led.assign(30, 40, 1) == []
    assert led.assign(20, 30, 1) == []  # fills the gap: one range
    assert owners(led) == [(0, 40, 1)]
    assert led.remove(5, 15) == [(5, 15, 1)]  # a hole
    assert owners(led) == [(0, 5, 1), (15, 40, 1)]
    assert led.assign(10, 20, 2) == [(15, 20, 1)]
    assert owners(led) == [(0, 5, 1), (10, 20, 2), (20, 40, 1)]
    assert led.pieces(3, 25) == [(3, 5, 1), (10, 20, 2), (20, 25, 1)]
    assert led.remove(100, 200) == [] and led.remove(5, 10) == []
    assert led.remove(0, 100) == [(0, 5, 1), (10, 20, 2), (20, 40, 1)]
    assert owners(led) == [] and led.live == 0


def test_mmap_munmap_partial() -> None:
    r = Replay()
    mmap(r, A, 10 * P, 1)
    munmap(r, A + 2 * P, 3 * P)  # hole: splits in two
    assert owners(r.ledger) == [(A, A + 2 * P, own(1)), (A + 5 * P, A + 10 * P, own(1))]
    munmap(r, A + 9 * P, 1)  # length rounded up to a page
    munmap(r, A + 50 * P, P)  # not mapped: nothing
    assert r.ledger.live == 6 * P
    assert r.mapped == {1: 10 * P} and r.unmapped == {1: 4 * P}


def test_length_rounded_up_and_failures_ignored() -> None:
    r = Replay()
    mmap(r, A, 100, 1)
    assert owners(r.ledger) == [(A, A + P, own(1))]
    r.apply("mmap", [0, P, 3, 0x22, 0, 0], -12, own(2))
    r.apply("mmap", [0, P, 3, 0x22, 0, 0], 2**64 - 12, own(2))
    r.apply("mmap", [0, P, 3, 0x22, 0, 0], None, own(2))
    r.apply("munmap", [A, P, 0, 0, 0, 0], -22, own(2))
    r.apply("openat", [0, 0, 0, 0, 0, 0], 3, own(2))
    assert owners(r.ledger) == [(A, A + P, own(1))]
    assert failed(-1) and failed(-4095) and not failed(0) and not failed(-4096) and failed(None)


def test_adjacent_same_owner_merge_and_different_owners_do_not() -> None:
    r = Replay()
    mmap(r, A + P, P, 1)
    mmap(r, A, P, 1)  # the kernel maps downward: the new one below
    mmap(r, A + 2 * P, P, 2)
    assert owners(r.ledger) == [(A, A + 2 * P, own(1)), (A + 2 * P, A + 3 * P, own(2))]


def test_fixed_overwrite_takes_the_bytes() -> None:
    r = Replay()
    mmap(r, A, 8 * P, 1)
    mmap(r, A + 2 * P, 2 * P, 2, flags=MAP_FIXED | 0x02)
    assert owners(r.ledger) == [
        (A, A + 2 * P, own(1)),
        (A + 2 * P, A + 4 * P, own(2)),
        (A + 4 * P, A + 8 * P, own(1)),
    ]
    assert r.unmapped == {1: 2 * P} and r.stale_bytes == 0
    mmap(r, A + 6 * P, P, 3)  # not fixed, over a live range: an unmap was missed
    assert r.stale_bytes == P


def test_mremap_grow_in_place_and_shrink() -> None:
    r = Replay()
    mmap(r, A, 4 * P, 1)
    mremap(r, A, 4 * P, 6 * P, 0, 0, A, 2)
    assert owners(r.ledger) == [(A, A + 4 * P, own(1)), (A + 4 * P, A + 6 * P, own(2))]
    mremap(r, A, 6 * P, 3 * P, 0, 0, A, 3)
    assert owners(r.ledger) == [(A, A + 3 * P, own(1))]
    assert r.mapped == {1: 4 * P, 2: 2 * P} and r.unmapped == {1: P, 2: 2 * P}


def test_mremap_move_keeps_original_owner_growth_to_caller() -> None:
    r = Replay()
    mmap(r, A, 4 * P, 1)
    munmap(r, A + P, P)  # a hole inside the moved range: not carried (nothing there)
    B = A + 0x100000
    mremap(r, A, 4 * P, 8 * P, 1, 0, B, 2)
    assert owners(r.ledger) == [
        (B, B + P, own(1)),
        (B + 2 * P, B + 4 * P, own(1)),
        (B + 4 * P, B + 8 * P, own(2)),
    ]
    assert r.mapped == {1: 4 * P, 2: 4 * P} and r.unmapped == {1: P}


def test_mremap_move_shrinking_and_fixed_over_a_mapping() -> None:
    r = Replay()
    mmap(r, A, 4 * P, 1)
    B = A + 0x100000
    mmap(r, B, 8 * P, 3)
    mremap(r, A, 4 * P, 2 * P, 1 | 2, B + P, B + P, 2)  # MAYMOVE|FIXED into the middle of stack 3's mapping
    assert owners(r.ledger) == [
        (B, B + P, own(3)),
        (B + P, B + 3 * P, own(1)),
        (B + 3 * P, B + 8 * P, own(3)),
    ]
    assert r.unmapped == {1: 2 * P, 3: 2 * P} and r.stale_bytes == 0


def test_mremap_dontunmap_keeps_the_old_range() -> None:
    r = Replay()
    mmap(r, A, 2 * P, 1)
    B = A + 0x100000
    mremap(r, A, 2 * P, 2 * P, 1 | 4, 0, B, 2)
    assert owners(r.ledger) == [(A, A + 2 * P, own(1)), (B, B + 2 * P, own(1))]
    assert r.mapped == {1: 4 * P}


def test_mremap_old_size_zero_duplicates() -> None:
    r = Replay()
    mmap(r, A, 2 * P, 1, flags=0x21)
    B = A + 0x100000
    mremap(r, A, 0, 2 * P, 1, 0, B, 2)
    assert owners(r.ledger) == [(A, A + 2 * P, own(1)), (B, B + 2 * P, own(2))]


def test_brk_grow_and_shrink() -> None:
    r = Replay()
    H = 0x555555559000
    r.apply("brk", [0, 0, 0, 0, 0, 0], H + 0x10, own(1))  # first value seen: the start of the heap range
    assert owners(r.ledger) == []
    r.apply("brk", [H + 0x21010, 0, 0, 0, 0, 0], H + 0x21010, own(2))
    assert owners(r.ledger) == [(H + P, H + 0x22000, own(2))]  # page-rounded: the first page was there already
    r.apply("brk", [H + 0x42000, 0, 0, 0, 0, 0], H + 0x21010, own(3))  # failed: brk returns the old break
    r.apply("brk", [H + 0x10000, 0, 0, 0, 0, 0], H + 0x10000, own(4))
    assert owners(r.ledger) == [(H + P, H + 0x10000, own(2))]
    r.apply("brk", [0, 0, 0, 0, 0, 0], H + 0x30000, own(5))  # a query that finds unseen growth
    assert r.brk_unseen_bytes == 0x20000 and owners(r.ledger) == [(H + P, H + 0x10000, own(2))]
    assert r.mapped == {2: 0x21000} and r.unmapped == {2: 0x12000}


def test_bad_arguments_are_counted_not_applied() -> None:
    r = Replay()
    mmap(r, A + 1, P, 1)  # unaligned address
    mmap(r, 2**64 - P, 2 * P, 1)  # beyond the address space
    assert owners(r.ledger) == [] and r.bad_events == 2


# --- a page-by-page model -----------------------------------------------------------------------------------------

N_PAGES = 48
BASE = 0x10000000

op_strategy = st.one_of(
    st.tuples(st.just("mmap"), st.integers(0, N_PAGES - 1), st.integers(1, 8), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("munmap"), st.integers(0, N_PAGES - 1), st.integers(1, 12), st.just(0), st.just(False)),
    st.tuples(st.just("mremap"), st.integers(0, N_PAGES - 1), st.integers(1, 6), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("brk"), st.integers(0, 10), st.just(0), st.integers(1, 4), st.just(False)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op_strategy, max_size=40), st.data())
def test_replay_matches_a_page_model(ops: list[tuple[str, int, int, int, bool]], data: st.DataObject) -> None:
    r = Replay()
    pages: dict[int, int] = {}  # page index -> owner
    mapped: dict[int, int] = {}
    heap_base = N_PAGES + 20
    brk_page: int | None = None
    for name, a, n, sid, flag in ops:
        o = own(sid)
        if name == "mmap":
            n = min(n, N_PAGES - a)
            mmap(r, BASE + a * P, n * P, sid, flags=MAP_FIXED if flag else 0x22)
            for p in range(a, a + n):
                pages[p] = o
            mapped[sid] = mapped.get(sid, 0) + n * P
        elif name == "munmap":
            munmap(r, BASE + a * P, n * P)
            for p in range(a, a + n):
                pages.pop(p, None)
        elif name == "mremap":
            old_n = min(n, N_PAGES - a)
            new_n = data.draw(st.integers(1, 6))
            dest = data.draw(st.integers(0, N_PAGES - new_n)) if flag else a
            if flag and dest < a + old_n and a < dest + new_n:
                continue  # overlapping source and destination: the kernel refuses
            mremap(r, BASE + a * P, old_n * P, new_n * P, 3 if flag else 0, BASE + dest * P, BASE + dest * P, sid)
            moved = {p - a: pages.pop(p) for p in range(a, a + old_n) if p in pages}
            for p in range(dest, dest + new_n):
                pages.pop(p, None)
            for i, ow in moved.items():
                if i < new_n:
                    pages[dest + i] = ow
            for i in range(old_n, new_n):
                pages[dest + i] = o
            if new_n > old_n:
                mapped[sid] = mapped.get(sid, 0) + (new_n - old_n) * P
        else:  # brk, with the heap's pages kept apart from the mmap area
            target = heap_base + a
            r.apply("brk", [BASE + target * P, 0, 0, 0, 0, 0], BASE + target * P, o)
            if brk_page is not None:
                if target > brk_page:
                    for p in range(brk_page, target):
                        pages[p] = o
                    mapped[sid] = mapped.get(sid, 0) + (target - brk_page) * P
                for p in range(target, brk_page):
                    pages.pop(p, None)
            brk_page = target
    led = r.ledger
    led.check()
    expect = {p: ow for p, ow in pages.items()}
    got: dict[int, int] = {}
    for s, e, ow in led:
        for p in range((s - BASE) // P, (e - BASE) // P):
            got[p] = ow
    assert got == expect
    assert {k: v for k, v in r.mapped.items() if v} == {k: v for k, v in mapped.items() if v}
    live: dict[int, int] = {}
    for ow in pages.values():
        live[ow >> OWNER_SHIFT] = live.get(ow >> OWNER_SHIFT, 0) + P
    for sid in set(r.mapped) | set(live):
        assert r.mapped.get(sid, 0) - r.unmapped.get(sid, 0) == live.get(sid, 0)


ledger_ops = st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(1, 8), st.integers(1, 3)), max_size=60)


@settings(max_examples=200, deadline=None)
@given(ledger_ops, st.sampled_from([0, 1, 64]))
def test_ledger_links_and_pages_after_every_change(ops: list[tuple[bool, int, int, int]], compact: int) -> None:
    # assign/remove straight on a Ledger, its invariants (links, index, tombstones, merging, live) checked after
    # every one; ``compact`` 0 and 1 rebuild the sorted index often, 64 keeps tombstones

    class Small(Ledger):
        __slots__ = ()
        compact_min = compact

    led = Small()
    pages: dict[int, int] = {}
    for put, a, n, o in ops:
        start, end = BASE + a * P, BASE + (a + n) * P
        before = dict(pages)
        if put:
            got = led.assign(start, end, o)
            for p in range(a, a + n):
                pages[p] = o
        else:
            got = led.remove(start, end)
            for p in range(a, a + n):
                pages.pop(p, None)
        led.check()
        gone = {p: before[p] for p in range(a, a + n) if p in before}
        assert sum(e - s for s, e, _ in got) == len(gone) * P
        assert all(before[(s - BASE) // P] == ow for s, _, ow in got)
        have = {p: ow for s, e, ow in led for p in range((s - BASE) // P, (e - BASE) // P)}
        assert have == pages
        assert led.pieces(BASE, BASE + 50 * P) == list(led)
