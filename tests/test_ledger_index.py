"""The ledger's sorted index of starts (two bisected lists, merged now and then) and its compact origin records."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sysbreak.analysis.ledger import PAGE, Ledger, _pack, _unpack

P = PAGE
BASE = 0x10000000

ledger_ops = st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(1, 8), st.integers(1, 3)), max_size=60)


@settings(max_examples=150, deadline=None)
@given(ledger_ops, st.sampled_from([0, 1, 3]), st.sampled_from([0, 1, 64]))
def test_ledger_index_merges_fresh_starts(ops: list[tuple[bool, int, int, int]], fresh: int, compact: int) -> None:
    # assign/remove with the starts added since the last rebuild merged into the sorted index every few additions
    # (fresh_min 0 and 1: at almost every one): invariants, pages and every floor query against a plain search

    class Small(Ledger):
        __slots__ = ()
        compact_min = compact
        fresh_min = fresh

    led = Small()
    pages: dict[int, int] = {}
    for put, a, n, o in ops:
        start, end = BASE + a * P, BASE + (a + n) * P
        if put:
            led.assign(start, end, o)
            pages.update((p, o) for p in range(a, a + n))
        else:
            led.remove(start, end)
            for p in range(a, a + n):
                pages.pop(p, None)
        led.check()
        have = {p: ow for s, e, ow in led for p in range((s - BASE) // P, (e - BASE) // P)}
        assert have == pages
        starts = [s for s, _e, _o in led]
        for x in (BASE - 1, start, end - 1, BASE + 60 * P):
            assert led._floor(x) == max((s for s in starts if s <= x), default=None)


@given(st.one_of(st.none(), st.integers(-3, 1 << 70)), st.one_of(st.none(), st.integers(-3, 1 << 40)),
       st.integers(0, 1 << 64))  # fmt: skip
def test_origin_packing_round_trips(seq: int | None, tid: int | None, length: int) -> None:
    assert _unpack(_pack(seq, tid, length)) == (seq, tid, length)
