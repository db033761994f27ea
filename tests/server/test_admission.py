"""Admission by cost (server/admission.py), without a server: estimates, the delay target, fairness between
methods, pushback, and what it learns from."""

from __future__ import annotations

import random

import pytest

from server import admission as admission_module
from server.admission import QUIET_GAP_S, Admission, AdmissionPolicy, Overloaded, Work

HEAVY = Work.of("ScoreRelevance", title=1000)
CHEAP = Work.of("ClassifyIntent")


def admission(target_s: float = 0.1, share: float = 0.5) -> Admission:
    a = Admission(AdmissionPolicy(target_s, frozenset({"ScoreRelevance"}), share), random.Random(0))
    # Seconds as if measured alone: 10 us + 50 us per title, and 1 ms per ClassifyIntent.
    a.calibrate(
        [
            (Work.of("ScoreRelevance", title=1), 60e-6),
            (Work.of("ScoreRelevance", title=100), 5.01e-3),
            (CHEAP, 1e-3),
        ]
    )
    return a


def test_work_names_its_kinds() -> None:
    assert Work.of("ScoreRelevance", title=3, id=0).parts == (("ScoreRelevance/title", 3),)
    assert Work.of("ClassifyIntent").parts == (("ClassifyIntent", 1),)


def test_estimates_follow_the_calibrated_cost_per_row() -> None:
    a = admission()
    assert a.estimate(HEAVY) == pytest.approx(0.05001, rel=1e-3)
    assert a.estimate(CHEAP) == pytest.approx(1e-3)
    assert a.estimate(Work.of("Search", default=1)) == 0.0  # never measured


def test_heavy_calls_are_shed_first_and_cheap_ones_keep_their_room() -> None:
    a = admission(target_s=0.12)
    tickets = [a.admit(HEAVY), a.admit(HEAVY)]  # the first on an idle worker; the second within 60 ms
    with pytest.raises(Overloaded) as refused:
        a.admit(HEAVY)  # 100 ms queued: over the heavy share (60 ms) of the 120 ms target
    assert refused.value.pushback_ms > 0
    assert "grpc-retry-pushback-ms" in str(refused.value) and "shed first" in str(refused.value)
    tickets += [a.admit(CHEAP) for _ in range(20)]  # while under 120 ms queued, the whole target
    with pytest.raises(Overloaded):
        a.admit(CHEAP)  # 120.02 ms queued is over it
    for ticket in tickets:
        a.done(ticket, learn=False)
    assert a.queued_seconds == 0.0
    a.done(a.admit(HEAVY), learn=False)  # room again once the work is done


def test_a_share_of_one_treats_every_method_alike() -> None:
    a = admission(target_s=0.12, share=1.0)
    for _ in range(3):
        a.admit(HEAVY)
    with pytest.raises(Overloaded):
        a.admit(HEAVY)


def test_an_idle_worker_admits_any_call_and_a_zero_target_admits_everything() -> None:
    a = admission(target_s=0.001)
    a.admit(Work.of("ScoreRelevance", title=100_000))
    off = admission(target_s=0.0)
    for _ in range(100):
        off.admit(HEAVY)


def test_only_calls_that_ran_alone_teach_their_cost() -> None:
    a = admission()
    before = a.estimate(CHEAP)
    first, second = a.admit(CHEAP), a.admit(CHEAP)  # they overlapped: neither ran alone
    a.done(first)
    a.done(second)
    assert a.estimate(CHEAP) == before
    a.observe(CHEAP, 3e-3)  # a run alone moves the estimate toward it
    assert before < a.estimate(CHEAP) < 3e-3


def test_a_call_that_saw_refusals_beside_it_did_not_run_alone() -> None:
    """Under a retry storm the loop serves refusals while an admitted call runs; its wall time is not its
    own work, so it must not teach the estimate (else the estimate grows and admission sheds ever more)."""
    a = admission(target_s=0.001)
    before = a.estimate(HEAVY)
    ticket = a.admit(HEAVY)  # alone on an idle worker
    with pytest.raises(Overloaded):
        a.admit(HEAVY)
    a.done(ticket)
    assert a.estimate(HEAVY) == before


def pooled(target_s: float = 0.12, workers: int = 1, offload_rows: int = 0) -> Admission:
    """Admission of a server whose heavy calls run in `workers` processes (server/heavy_worker.py), those of
    `offload_rows` titles' worth or more (0: all of them)."""
    policy = AdmissionPolicy(target_s, frozenset({"ScoreRelevance"}), 0.5, workers, offload_rows)
    a = Admission(policy, random.Random(0))
    a.calibrate(
        [(Work.of("ScoreRelevance", title=1), 60e-6), (Work.of("ScoreRelevance", title=100), 5.01e-3)]
    )
    a.calibrate([(CHEAP, 1e-3)])
    return a


def test_heavy_work_in_worker_processes_queues_apart_from_the_event_loops() -> None:
    a = pooled()
    heavy = [a.admit(HEAVY), a.admit(HEAVY)]  # 100 ms queued in the heavy lane, over its 60 ms share
    with pytest.raises(Overloaded):
        a.admit(HEAVY)
    cheap = [a.admit(CHEAP) for _ in range(100)]  # the loop's lane is empty: its whole 120 ms is free
    assert a.refusal("ClassifyIntent") is None
    for ticket in [*heavy, *cheap]:
        a.done(ticket, learn=False)
    assert a.queued_seconds == 0.0
    # The same calls in one lane (no worker processes): the heavy work ahead refuses the cheap calls sooner.
    one = admission(target_s=0.12)
    one.admit(HEAVY)
    one.admit(HEAVY)
    admitted = 0
    with pytest.raises(Overloaded):
        for _ in range(100):
            one.admit(CHEAP)
            admitted += 1
    assert admitted == 20  # 100 ms of heavy work + 20 x 1 ms reach the 120 ms target


def test_a_score_relevance_too_small_to_hand_over_queues_in_the_event_loops_lane() -> None:
    """With --offload-rows 64, a ScoreRelevance of 100 ids or 10 titles runs on the event loop: it is admitted
    while the workers' lane is full, and its work counts against the loop's lane, where the cheap calls wait
    behind it. The early refusal, before the request says its size, still goes by the workers' lane."""
    a = pooled(offload_rows=64)
    a.calibrate([(Work.of("ScoreRelevance", id=100), 30e-3)])
    heavy = [a.admit(HEAVY), a.admit(HEAVY)]  # 100 titles each: the workers' lane is over its share
    with pytest.raises(Overloaded):
        a.admit(HEAVY)
    assert a.refusal("ScoreRelevance") is not None
    small = [a.admit(Work.of("ScoreRelevance", id=100)), a.admit(Work.of("ScoreRelevance", title=10))]
    assert a.delay("ClassifyIntent") == pytest.approx(30e-3 + 10 * 60e-6 + 0.5e-3, rel=0.05)
    for ticket in [*heavy, *small]:
        a.done(ticket, learn=False)
    assert a.queued_seconds == 0.0
    # 512 ids (8 per title: 64 titles' worth) reach the workers, as the router sends them (to_workers).
    assert a.policy.lane_of(Work.of("ScoreRelevance", id=512)) == a.policy.lane("ScoreRelevance")
    assert a.policy.lane_of(Work.of("ScoreRelevance", id=511)) != a.policy.lane("ScoreRelevance")


def test_a_heavy_workers_time_holding_a_call_teaches_its_cost_under_a_storm() -> None:
    """A heavy worker serves one call at a time, so the time it held a call is that call's own work, however
    many refusals the loop served meanwhile: the heavy lane learns the time calls take on the cores the
    worker now gets, and then admits no more than drains within its share. A failed call teaches nothing."""
    a = pooled()  # 60 ms share of the heavy lane; 1,000 titles estimated at 50 ms
    first = a.admit(HEAVY)
    assert a.refusal("ScoreRelevance") is None  # 50 ms ahead: a second call is admitted
    a.done(first, learn=False)
    for _ in range(30):
        ticket = a.admit(HEAVY)
        a.refusal("ClassifyIntent")
        a.refusal("ScoreRelevance")  # a retry storm beside it: the call did not run alone
        admission_module.served(0.15)  # slowed by the storm's refusals on the same cores
        a.done(ticket)
        assert ticket.served == 0.15
    assert a.estimate(HEAVY) == pytest.approx(0.15, rel=0.1)
    failed = a.admit(HEAVY)
    assert a.refusal("ScoreRelevance") is not None  # one such call in flight fills the share
    before = a.estimate(HEAVY)
    admission_module.served(1.0)
    a.done(failed, learn=False)
    assert a.estimate(HEAVY) == before


def test_two_workers_drain_the_heavy_lane_twice_as_fast() -> None:
    one, two = pooled(workers=1), pooled(workers=2)
    for a in (one, two):
        a.admit(HEAVY)
        a.admit(HEAVY)
    assert two.delay("ScoreRelevance") == pytest.approx(one.delay("ScoreRelevance") / 2)
    assert one.refusal("ScoreRelevance") is not None
    assert two.refusal("ScoreRelevance") is None


def test_refusal_before_the_request_is_read_matches_admit() -> None:
    """What the early refusal (before parsing) decides is what admit() would: refused with a pushback and
    counted, or None, whatever the call's own size."""
    a = pooled()
    assert a.refusal("ScoreRelevance") is None  # an idle lane admits anything
    tickets = [a.admit(HEAVY), a.admit(HEAVY)]
    early = a.refusal("ScoreRelevance")
    assert isinstance(early, Overloaded) and early.pushback_ms > 0
    assert "shed first" in str(early) and "grpc-retry-pushback-ms" in str(early)
    for size in (1, 1000):
        with pytest.raises(Overloaded):
            a.admit(Work.of("ScoreRelevance", title=size))
    for ticket in tickets:
        a.done(ticket, learn=False)
    assert a.refusal("ScoreRelevance") is None


def test_only_admitted_calls_of_methods_not_heavy_count_as_cheap_calls_about() -> None:
    a = admission(target_s=0.12)
    assert not a.cheap_within(1.0)
    a.done(a.admit(HEAVY), learn=False)
    assert not a.cheap_within(1.0)  # heavy calls never make the heavy workers yield
    tickets = [a.admit(HEAVY), a.admit(HEAVY)]
    with pytest.raises(Overloaded):
        a.admit(HEAVY)
    assert not a.cheap_within(1.0)
    a.admit(CHEAP)
    assert a.cheap_within(1.0) and not a.cheap_within(-1.0)
    for ticket in tickets:
        a.done(ticket, learn=False)


def test_the_loop_is_shared_while_calls_overlap_or_arrive_without_a_quiet_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(admission_module.time, "perf_counter", lambda: now[0])
    a = pooled(offload_rows=64)
    assert not a.loop_shared()
    in_workers = a.admit(HEAVY)  # scored by a worker process: not the loop's
    first = a.admit(CHEAP)
    assert not a.loop_shared()  # the first call of all, on an empty loop
    second = a.admit(Work.of("ScoreRelevance", id=100))
    assert a.loop_shared()
    now[0] += 1e-3
    a.done(first, learn=False)
    assert a.loop_shared()  # the second arrived while the first was in flight
    a.done(second, learn=False)
    now[0] += QUIET_GAP_S / 2
    third = a.admit(CHEAP)
    assert a.loop_shared()  # taken at once after the loop emptied: more are likely waiting in gRPC core
    a.done(third, learn=False)
    now[0] += QUIET_GAP_S
    fourth = a.admit(CHEAP)
    assert not a.loop_shared()  # after a client's round trip of quiet
    for ticket in (in_workers, fourth):
        a.done(ticket, learn=False)
    # With cost admission off (a zero target), calls in flight still count.
    off = admission(target_s=0.0)
    tickets = [off.admit(CHEAP), off.admit(CHEAP)]
    assert off.loop_shared()
    for ticket in tickets:
        off.done(ticket)
