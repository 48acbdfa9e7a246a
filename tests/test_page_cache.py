"""The shared page: one build per round and second, however many ask."""

from __future__ import annotations

import threading

from agent.surfaces.page_cache import RecentPage


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_page_is_reused_within_its_age_and_round_and_rebuilt_otherwise() -> None:
    clock = Clock()
    page: RecentPage[str] = RecentPage(max_age=1.0, clock=clock)
    first, second = object(), object()
    made = iter(f"page {i}" for i in range(10))
    assert page.get(first, lambda: next(made)) == "page 0"
    clock.now += 0.9
    assert page.get(first, lambda: next(made)) == "page 0"  # same round, young
    assert page.get(second, lambda: next(made)) == "page 1"  # a new round shows at once
    clock.now += 1.0
    assert page.get(second, lambda: next(made)) == "page 2"  # old: the "ago" text moves on
    assert page.builds == 3


def test_callers_wait_for_the_build_in_progress_instead_of_starting_their_own() -> None:
    page: RecentPage[int] = RecentPage(max_age=60.0)
    round_ = object()
    inside = threading.Event()
    release = threading.Event()

    def slow_build() -> int:
        inside.set()
        release.wait(10)
        return 7

    got: list[int] = []
    first = threading.Thread(target=lambda: got.append(page.get(round_, slow_build)))
    first.start()
    assert inside.wait(10)
    others = [
        threading.Thread(target=lambda: got.append(page.get(round_, lambda: -1))) for _ in range(5)
    ]
    for t in others:
        t.start()
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert got == [7] * 6 and page.builds == 1
