"""The pure work queue (issue 10 item 1): one entry per key, never handed out twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from predictive_scaler.workqueue import WorkQueue

T0 = datetime(2026, 12, 7, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_keys_come_out_by_due_time_and_only_when_due() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("b", at(20))
    q.add("a", at(10))
    q.add("c", at(30))
    assert q.pop_due(at(5)) == []
    assert q.pop_due(at(25)) == [("a", at(10)), ("b", at(20))]
    assert q.next_due() == at(30)
    assert q.pop_due(at(30), limit=5) == [("c", at(30))]
    assert q.next_due() is None


def test_a_key_is_queued_once_and_the_earlier_due_time_wins() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a", at(30))
    q.add("a", at(10))
    q.add("a", at(50))
    assert q.queued() == 1
    assert q.pop_due(at(100)) == [("a", at(10))]
    assert q.pop_due(at(100)) == []


def test_a_key_in_flight_is_not_handed_out_again_until_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a", at(0))
    assert q.pop_due(at(0)) == [("a", at(0))]
    q.add("a", at(1))  # due again while its cycle still runs
    assert q.pop_due(at(100)) == []
    assert q.is_active("a")
    q.done("a", at(60))
    assert q.pop_due(at(100)) == [("a", at(1))]  # the earlier of the re-add and next due


def test_done_queues_the_next_due_time() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a", at(0))
    q.pop_due(at(0))
    q.done("a", at(30))
    assert q.pop_due(at(29)) == []
    assert q.pop_due(at(30)) == [("a", at(30))]


def test_a_discarded_key_is_never_handed_out_nor_requeued_by_its_done() -> None:
    q: WorkQueue[str] = WorkQueue()
    q.add("a", at(0))
    q.add("b", at(0))
    q.pop_due(at(0), limit=1)  # a is in flight
    q.discard("a")
    q.discard("b")
    q.done("a", at(30))
    assert q.pop_due(at(1000)) == []
    assert "a" not in q and "b" not in q
    q.add("a", at(5))  # configured again
    assert q.pop_due(at(5)) == [("a", at(5))]


def test_the_limit_bounds_a_wave_and_the_rest_stays_queued() -> None:
    q: WorkQueue[int] = WorkQueue()
    for i in range(450):
        q.add(i, at(i % 7))
    sizes = []
    while popped := q.pop_due(at(10), limit=200):
        sizes.append(len(popped))
    assert sizes == [200, 200, 50]


def test_many_re_adds_do_not_grow_the_heap_without_bound() -> None:
    q: WorkQueue[str] = WorkQueue()
    for i in range(10_000):
        q.add("a", at(10_000 - i))
    assert len(q._heap) <= 2 * q.queued() + 65
    assert q.pop_due(at(10_000)) == [("a", at(1))]
