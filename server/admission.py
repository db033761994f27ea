"""Admission by cost: each call carries an estimate of its work, and a worker admits calls while the work
already admitted (its estimated queueing delay) stays under a target; the rest are refused at once with
RESOURCE_EXHAUSTED and a `grpc-retry-pushback-ms` hint saying when to come back.

- **The estimate.** A call's work is `units` of its method: 1 for ClassifyIntent, Search and EmbedQuery
  (a batch call of them counts its items, under the same cost model as the single call), the number of
  candidates for ScoreRelevance (titles and product ids apart: a title is featurized and embedded, an id
  only looked up). Each (method, kind) has the micro-batcher's cost model
  (server/runtime/batcher.py: seconds = a * units + b, least squares with forgetting), fitted on the wall time
  of calls that ran alone (no other call admitted while they ran, so the time is their own work), and
  seeded when a bundle loads by timing each call alone (`calibrate`). Under sustained overload no call runs
  alone and the loop's estimates keep their last fit. A heavy worker serves one call at a time, so the
  time it held a call (`served`) is that call's own work on the cores the worker gets now, whatever else is
  queued: the workers' lane learns from every call. Under a retry storm that time is the call's time on
  cores shared with the refusals, not its time alone, and the lane admits only what it can drain that fast.
- **The queueing delay** of a new call is the estimated work of the calls admitted and not yet finished.
  Refusing above a delay target, instead of above a count of calls, is how Triton's max queue delay and
  CoDel shed: a call of 1,000 titles fills as much of the target as a hundred cheap calls.
- **Fairness.** Methods named as heavy (ScoreRelevance by default) may fill only a share of the target, so
  under overload they are shed first and the cheap calls a search stack makes on every query keep their
  room. A share of 1 treats every method alike.
- **Lanes.** With heavy worker processes, the work they do queues in a lane of its own; everything the event
  loop runs, a ScoreRelevance too small to hand over included, queues in the loop's. A call's lane is known
  once its request is read (its candidates); the early refusal, decided before, uses the heavy method's
  workers' lane, so it can only err towards refusing a small ScoreRelevance.
- **Cheap calls about.** The time of the last admitted call of a method not named heavy, for the heavy
  workers' priority (server/heavy_worker.py): they yield the cores while cheap calls are being served.
- **An idle worker admits anything**, however large, so every call the limits accept can be served.

Refusing costs one dictionary lookup and a few additions before the call's status is sent: no
featurization, no model, no response. The pending-queue bound of gRPC core (--max-pending-requests) stays
behind this as the last line of defence.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field

from server import metrics
from server.errors import ResourceExhausted
from server.runtime.batcher import CostModel

PUSHBACK_KEY = "grpc-retry-pushback-ms"
LOOP_LANE, WORKERS_LANE = 0, 1

QUIET_GAP_S = 200e-6
"""A call that finds the event loop's lane empty, and empty for at least this long, arrived at a quiet loop
(`loop_shared`): a client waiting on each answer leaves a gap of its round trip between calls (the echo
floor's is 0.5 ms or more here: benchmarks/results/offload-min), a loop with calls queued in gRPC core takes
the next one at once."""

ID_COST = 8
"""A ScoreRelevance candidate given by title costs about as much as this many given by id: a title is
featurized and embedded, an id only looked up in arrays computed when the bundle was built."""


def reaches_workers(by_id: bool, candidates: int, rows: int) -> bool:
    """Whether a ScoreRelevance of `candidates` (ids or titles) is scored by the heavy worker processes
    (server/heavy_worker.py): `rows` titles' worth of work or more. Below it the hand-over (the request's
    bytes to a process and back) costs about what the stall it saves would. Routing and admission both ask."""
    return candidates >= rows * (ID_COST if by_id else 1)


class Overloaded(ResourceExhausted):
    """Admission refused the call: the work admitted ahead of it is over the delay target."""

    names_method = True

    def __init__(self, message: str, pushback_ms: int) -> None:
        super().__init__(message)
        self.pushback_ms = pushback_ms


@dataclass(frozen=True, slots=True)
class Work:
    """What one call asks for: units of work per cost kind, e.g. {"ScoreRelevance/title": 1000}."""

    method: str
    parts: tuple[tuple[str, int], ...]

    @classmethod
    def of(cls, method: str, **kinds: int) -> Work:
        """Work of `method`; keyword arguments name kinds within it and their units (zero units dropped)."""
        parts = tuple((f"{method}/{kind}", n) for kind, n in kinds.items() if n > 0)
        return cls(method, parts or ((method, 1),))

    def times(self, n: int) -> Work:
        """The work of `n` such calls answered by one batch call: a batch counts as its size."""
        return Work(self.method, tuple((kind, units * n) for kind, units in self.parts))


@dataclass(slots=True)
class Ticket:
    work: Work
    cost: float  # estimated seconds
    alone: bool  # nothing else in flight in its lane when it was admitted
    epoch: int  # admissions to its lane so far, when it was admitted
    lane: int = 0
    start: float = field(default_factory=time.perf_counter)
    served: float | None = None  # seconds a heavy worker held the call (`served`), where one did


# The ticket of the call the current asyncio task serves, for `served`.
_ticket: ContextVar[Ticket | None] = ContextVar("sift_admission_ticket", default=None)


def served(seconds: float) -> None:
    """Records that a heavy worker held the current call for `seconds` (server/heavy_worker.py): its own
    work, which its admission ticket learns from when the call succeeds (Admission.done)."""
    if (ticket := _ticket.get()) is not None:
        ticket.served = seconds


@dataclass(frozen=True)
class AdmissionPolicy:
    target_s: float
    """Estimated queueing delay above which calls are refused; 0 turns cost admission off."""
    heavy_methods: frozenset[str] = frozenset({"ScoreRelevance"})
    heavy_share: float = 0.5
    """Share of the target heavy methods may fill; 1.0 treats every method alike."""
    heavy_workers: int = 0
    """Processes the heavy methods run in (server/heavy_worker.py): their work then queues in a lane of its
    own, drained that many calls at a time, apart from the event loop's; 0 puts them in the loop's lane."""
    offload_rows: int = 0
    """With heavy workers: a ScoreRelevance of fewer than this many titles' worth runs on the event loop
    (reaches_workers above; --offload-rows), and queues in the loop's lane."""

    def limit(self, method: str) -> float:
        return self.target_s * (self.heavy_share if method in self.heavy_methods else 1.0)

    def lane(self, method: str) -> int:
        """Where a call of `method` runs when its size is not known yet: the heavy workers' lane for the
        methods they serve, else the event loop's."""
        return WORKERS_LANE if self.heavy_workers and method in self.heavy_methods else LOOP_LANE

    def lane_of(self, work: Work) -> int:
        """Where `work` runs: as `lane`, but a ScoreRelevance too small to hand over stays on the loop."""
        lane = self.lane(work.method)
        if lane == WORKERS_LANE and work.method == "ScoreRelevance":
            units = sum(n for _, n in work.parts)
            by_id = any(kind.endswith("/id") for kind, _ in work.parts)
            if not reaches_workers(by_id, units, self.offload_rows):
                return LOOP_LANE
        return lane


class Admission:
    """One worker's admission control. Used from its event loop only (no locks)."""

    def __init__(self, policy: AdmissionPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._models: dict[str, CostModel] = {}
        # (a, b) of each model as Python floats: the hot path never touches numpy.
        self._coefficients: dict[str, tuple[float, float]] = {}
        # Per lane (AdmissionPolicy.lane): estimated seconds of the calls admitted and not finished, their
        # number, and the calls seen so far.
        self._queued = [0.0, 0.0]
        self._in_flight = [0, 0]
        self._epoch = [0, 0]
        self._drain_rate = [1, max(policy.heavy_workers, 1)]  # calls a lane runs at once
        self._rng = rng or random.Random()
        self._cheap_at = -math.inf  # time.monotonic() of the last admitted call of a method not heavy
        self._loop_empty_since = -math.inf  # time.perf_counter() the loop's lane last emptied
        self._loop_quiet = True  # the loop lane's latest call arrived at a quiet loop (QUIET_GAP_S)
        self._refused = {
            method: metrics.ADMISSION_REFUSED.labels(method=method)
            for method in ("ClassifyIntent", "Search", "EmbedQuery", "ScoreRelevance")
        }

    @property
    def enabled(self) -> bool:
        return self.policy.target_s > 0

    @property
    def queued_seconds(self) -> float:
        return sum(self._queued)

    def delay(self, method: str) -> float:
        """Estimated queueing delay of a new call of `method`: the work ahead of it in its lane."""
        return self._delay(self.policy.lane(method))

    def _delay(self, lane: int) -> float:
        return self._queued[lane] / self._drain_rate[lane]

    def refusal(self, method: str) -> Overloaded | None:
        """What admit() would raise for any call of `method` now, or None: a refusal never depends on the
        call's own size, so it can be decided before the request is read (server/app.py does, for heavy
        methods, so that a retry storm of large requests costs no parsing)."""
        lane = self.policy.lane(method)
        if not (self.enabled and self._in_flight[lane]):
            return None
        limit = self.policy.limit(method)
        if self._delay(lane) > limit:
            self._epoch[lane] += 1
            return self._refusal(method, 0.0, limit, lane)
        return None

    def loop_shared(self) -> bool:
        """Whether the event loop has other calls to serve: more than one in flight in its lane, or the
        latest arrived without a quiet gap before it (so more are likely queued in gRPC core, where admission
        cannot see them). A short model run then goes to the model thread after all, so that the loop serves
        the others meanwhile (server/service/heavy.py)."""
        return self._in_flight[LOOP_LANE] > 1 or not self._loop_quiet

    def cheap_within(self, seconds: float) -> bool:
        """Whether a call of a method not named heavy was admitted in the last `seconds`."""
        return time.monotonic() - self._cheap_at <= seconds

    def estimate(self, work: Work) -> float:
        """Estimated seconds of `work`; 0 for a kind never measured."""
        total = 0.0
        for kind, units in work.parts:
            if (ab := self._coefficients.get(kind)) is not None:
                total += ab[0] * units + ab[1]
        return total

    def admit(self, work: Work) -> Ticket:
        """A ticket for `work`, or Overloaded when the estimated delay is over the method's limit."""
        cost = self.estimate(work)
        lane = self.policy.lane_of(work)
        # Every call seen, refused ones too, ends the "alone" of the calls in flight: under a retry storm
        # a call's wall time includes the refusals the loop served meanwhile, which are not its work.
        self._epoch[lane] += 1
        if self.enabled and self._in_flight[lane]:
            limit = self.policy.limit(work.method)
            if self._delay(lane) > limit:
                raise self._refusal(work.method, cost, limit, lane)
        if lane == LOOP_LANE:
            gap = time.perf_counter() - self._loop_empty_since
            self._loop_quiet = not self._in_flight[lane] and gap >= QUIET_GAP_S
        self._in_flight[lane] += 1
        self._queued[lane] += cost
        if work.method not in self.policy.heavy_methods:
            self._cheap_at = time.monotonic()
        ticket = Ticket(work, cost, alone=self._in_flight[lane] == 1, epoch=self._epoch[lane], lane=lane)
        _ticket.set(ticket)
        return ticket

    def done(self, ticket: Ticket, learn: bool = True) -> None:
        """The call is finished; a call that succeeded (`learn`) teaches its cost: a heavy worker's time
        holding it where one did, else its wall time if it ran alone."""
        lane = ticket.lane
        self._in_flight[lane] -= 1
        self._queued[lane] = max(self._queued[lane] - ticket.cost, 0.0) if self._in_flight[lane] else 0.0
        if lane == LOOP_LANE and not self._in_flight[lane]:
            self._loop_empty_since = time.perf_counter()
        if not learn:
            return
        if ticket.served is not None:
            self.observe(ticket.work, ticket.served)
        elif ticket.alone and self._epoch[lane] == ticket.epoch:
            self.observe(ticket.work, time.perf_counter() - ticket.start)

    def observe(self, work: Work, seconds: float) -> None:
        """One measured run of `work` alone. A call of several kinds is split in proportion to the
        estimates (evenly before any)."""
        estimates = [self.estimate(Work(work.method, (part,))) for part in work.parts]
        total = sum(estimates)
        for (kind, units), estimate in zip(work.parts, estimates, strict=True):
            share = estimate / total if total > 0 else 1 / len(work.parts)
            model = self._models.setdefault(kind, CostModel())
            model.observe(units, seconds * share)
            a, b = model.coefficients
            self._coefficients[kind] = (float(a), float(b))

    def calibrate(self, runs: Iterable[tuple[Work, float]]) -> None:
        """Seeds the cost models with runs measured alone (see server/service/calibration.py)."""
        for work, seconds in runs:
            self.observe(work, seconds)

    def _refusal(self, method: str, cost: float, limit: float, lane: int) -> Overloaded:
        # Come back when the work ahead should have drained under the limit, spread over [1x, 2x) of
        # that so that the clients refused together do not all return at the same instant.
        delay = self._delay(lane)
        wait = max(delay - limit, cost, 0.001) * (1.0 + self._rng.random())
        pushback_ms = math.ceil(wait * 1000)
        self._refused[method].inc()
        heavy = " (shed first under overload)" if method in self.policy.heavy_methods else ""
        return Overloaded(
            f"server busy: ~{delay * 1000:.0f} ms of estimated work is queued, over the "
            f"{limit * 1000:.0f} ms admitted for this method{heavy}; retry after {pushback_ms} ms "
            f"({PUSHBACK_KEY} in the trailing metadata) or on another replica",
            pushback_ms,
        )
