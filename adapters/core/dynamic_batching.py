"""Dynamic batching: calls made to one loaded model at the same time share its forward passes.

Every `predict` of a loaded model (the server's requests, the platform's concurrent executions, dtlpy's own
threads) hands the rows it prepared to the model's one `DynamicBatcher`, which runs them together with the rows
of the other calls made at the same time, as inference servers do (text-embeddings-inference's token budget,
Triton's `max_queue_delay`, Ray Serve's `@serve.batch`, TorchServe's `max_batch_delay`), but planned by this
package's length-sorted planner, which knows each row's cost:

- Gathering. Calls queue their rows in arrival order. When the model is free, the oldest call's rows run with
  those of the calls queued behind it that run the same way (an equal `Recipe.key`: the same configuration, so
  per-request labels or generation settings never mix), whole calls, up to GATHERED_MICRO_BATCHES micro-batches'
  worth of rows and tokens, planned together (length-sorted, least padding). A gather starts at once when its
  rows fill a micro-batch (`max_rows` rows or `max_tokens` tokens) or when no other call is on its way (every
  call inside `calling()` has queued its rows); otherwise it waits for those calls, at most `wait_seconds` after
  the oldest rows arrived. A lone call never waits. While a gather runs, new calls queue for the next one.
- Answers. Each call gets the outputs of its own rows, in its own order, as soon as the last of them has run (not
  at the end of the gather); everything else (reading items, reports, skips, annotations) stays in the call.
- Failures. A micro-batch that fails with the rows of one call fails that call. With rows of several calls, each
  call's rows run again alone: only a call whose own rows fail gets the error; the others are answered.
- Threads. No thread of its own: the callers' threads take turns leading (one runs the model at a time; the
  others sleep on an event), and a leader hands over as soon as its own call is answered.
- A call that must not share forward passes (sampling with a fixed seed, whose draws depend on every row of the
  batch; a streamed answer, whose tokens go out as they are made) takes a key of its own (`object()`): it waits
  its turn in the queue and runs alone.
- A call whose client has gone (`abandoned_when`) is dropped when its turn comes, before any of its rows run.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterator, Sequence

Row = dict[str, list[int]]

# A gather takes up to this many micro-batches' worth of rows, which the planner sorts by length together.
# Measured on the benchmark's texts (4 to 120 words): 256 texts planned 32 at a time pad to 28% more tokens than
# all 256 planned at once; 64 at a time 12% more; 128 at a time 4% more.
GATHERED_MICRO_BATCHES = 4

_ABANDONED: ContextVar[Callable[[], bool] | None] = ContextVar("hf_adapters_call_abandoned", default=None)


class CallAbandoned(RuntimeError):
    """The call's client went away before its turn came; none of its rows ran."""


@contextlib.contextmanager
def abandoned_when(check: Callable[[], bool] | None) -> Iterator[None]:
    """Within the block, this thread's calls are dropped unrun (CallAbandoned) once `check()` is true."""
    token = _ABANDONED.set(check)
    try:
        yield
    finally:
        _ABANDONED.reset(token)


@dataclass(frozen=True)
class Recipe:
    """How a call's rows run. Calls whose recipes have equal `key` run the same way, so they may share batches.

    `plan(lengths)` groups rows (by their lengths) into micro-batches of indices, and `run(rows)` runs one
    micro-batch, returning one output per row; `max_rows` and `max_tokens` are one micro-batch's budget (tokens
    in the unit of the costs `DynamicBatcher.run` is given), `wait_seconds` the longest rows wait for others.
    """

    key: Hashable
    max_rows: int
    max_tokens: int
    wait_seconds: float
    plan: Callable[[list[int]], list[list[int]]]
    run: Callable[[list[Row]], list[Any]]


@dataclass(eq=False)
class _Call:
    rows: Sequence[Row]
    costs: Sequence[int]
    recipe: Recipe
    counted: bool  # made inside `calling()`: counted among the calls on their way until its rows are queued
    abandoned: Callable[[], bool] | None
    arrived: float = field(default_factory=time.monotonic)
    outputs: list[Any] = field(default_factory=list)
    left: int = 0  # rows still to run
    error: BaseException | None = None
    finished: bool = False
    wake: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.outputs = [None] * len(self.rows)
        self.left = len(self.rows)


@dataclass(eq=False)
class _Gather:
    recipe: Recipe
    slots: list[tuple[_Call, int]]  # (call, index of the row in the call) of every row gathered
    micro_batches: deque[list[int]]  # indices into `slots`, in the order they run


class DynamicBatcher:
    """The one queue in front of a loaded model; see the module's docstring. Safe to call from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a call queued, or a call left `calling()`
        self._queue: deque[_Call] = deque()
        self._gather: _Gather | None = None
        self._leading = False  # some thread runs (or is about to run) the model
        self._inside = 0  # calls inside `calling()`
        self._queued_inside = 0  # of those, calls whose rows are queued or running
        self._depth = threading.local()

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """Mark this thread's call to the model as on its way: a gather may wait a little for its rows."""
        outermost = getattr(self._depth, "value", 0) == 0
        self._depth.value = getattr(self._depth, "value", 0) + 1
        if outermost:
            with self._lock:
                self._inside += 1
        try:
            yield
        finally:
            self._depth.value -= 1
            if outermost:
                with self._lock:
                    self._inside -= 1
                    self._changed.notify()

    def run(self, rows: Sequence[Row], costs: Sequence[int], recipe: Recipe) -> list[Any]:
        """The outputs of `rows` (one per row, in order), run with the rows of concurrent calls; `costs` are the
        rows' costs in the unit of `recipe.max_tokens`. Raises what running this call's own rows raised."""
        if not rows:
            return []
        call = _Call(rows, costs, recipe, counted=getattr(self._depth, "value", 0) > 0, abandoned=_ABANDONED.get())
        with self._lock:
            self._queue.append(call)
            self._queued_inside += call.counted
            self._changed.notify()
            lead = not self._leading
            self._leading = True
        if not lead:
            try:
                call.wake.wait()  # set when the call is finished, or when the previous leader hands over to it
            except BaseException:  # interrupted while waiting: withdraw, and pass on the lead if it was handed over
                with self._lock:
                    if not call.finished:
                        handed_over = call.wake.is_set()
                        self._finish(call, CallAbandoned("interrupted while waiting for its turn"))
                        if handed_over:
                            self._hand_over()
                raise
        if not call.finished:
            self._lead(call)
        if call.error is not None:
            raise call.error
        return call.outputs

    # ----- the leader's side -----
    def _lead(self, own: _Call) -> None:
        """Run micro-batches until `own` is finished, then hand the model over to a waiting call's thread."""
        try:
            while True:
                with self._lock:
                    if own.finished:
                        self._hand_over()
                        return
                    step = self._next_micro_batch()
                if step is not None:
                    self._run_micro_batch(*step)
        except BaseException as error:  # an interrupt in this thread: the others must not wait forever
            with self._lock:
                gathered = self._gather.slots if self._gather else []
                for call in {id(c): c for c, _ in gathered}.values():
                    if not call.finished and call is not own:
                        self._finish(call, RuntimeError(f"the thread running this call's batch stopped: {error!r}"))
                self._gather = None
                if not own.finished:
                    self._finish(own, error)
                self._hand_over()
            raise

    def _next_micro_batch(self) -> tuple[_Gather, list[int]] | None:
        """The next micro-batch to run (lock held): from the running gather, else from a new one."""
        if self._gather is not None and self._gather.micro_batches:
            return self._gather, self._gather.micro_batches.popleft()
        if self._gather is not None:  # every call of a finished gather is answered, even by a plan that lost rows
            for call, _ in self._gather.slots:
                if not call.finished:
                    self._finish(call, RuntimeError("the micro-batch plan left some of this call's rows unrun"))
        self._gather = None
        first = self._oldest()
        if first is None:
            return None
        deadline = first.arrived + first.recipe.wait_seconds
        while not self._ready(first):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._changed.wait(remaining)
        gathered = self._take(first)
        if not gathered:
            return None
        slots = [(call, index) for call in gathered for index in range(len(call.rows))]
        try:
            plan = first.recipe.plan([len(call.rows[index]["input_ids"]) for call, index in slots])
        except Exception as error:  # noqa: BLE001 - the calls' own planning failed: they get the error
            for call in gathered:
                self._finish(call, RuntimeError(f"could not plan the micro-batches: {error!r}"))
            return None
        self._gather = _Gather(first.recipe, slots, deque(plan))
        return self._next_micro_batch() if self._gather.micro_batches else None

    def _oldest(self) -> _Call | None:
        """The oldest queued call whose client is still there; calls of departed clients are finished unrun."""
        while self._queue:
            call = self._queue[0]
            if not call.finished and (call.abandoned is None or not call.abandoned()):
                return call
            self._queue.popleft()
            self._finish(call, CallAbandoned("the client left before this call's turn; nothing of it ran"))
        return None

    def _ready(self, first: _Call) -> bool:
        """Whether `first`'s gather should start now: its rows fill a micro-batch, or no call is on its way."""
        key = first.recipe.key
        rows = tokens = 0
        for call in self._queue:
            if call.recipe.key == key and not call.finished:
                rows += len(call.rows)
                tokens += sum(call.costs)
        if rows >= first.recipe.max_rows or tokens >= first.recipe.max_tokens:
            return True
        return self._inside <= self._queued_inside

    def _take(self, first: _Call) -> list[_Call]:
        """Dequeue `first` and the calls behind it with its key, in arrival order, within the gather's budget."""
        recipe = first.recipe
        max_rows, max_tokens = GATHERED_MICRO_BATCHES * recipe.max_rows, GATHERED_MICRO_BATCHES * recipe.max_tokens
        taken: list[_Call] = []
        kept: deque[_Call] = deque()
        rows = tokens = 0
        full = False
        for call in self._queue:
            if call.finished:  # withdrawn while it waited
                continue
            if full or call.recipe.key != recipe.key:
                kept.append(call)
                continue
            if call.abandoned is not None and call.abandoned():
                self._finish(call, CallAbandoned("the client left before this call's turn; nothing of it ran"))
                continue
            cost = sum(call.costs)
            if taken and (rows + len(call.rows) > max_rows or tokens + cost > max_tokens):
                full = True  # first come, first served: no later call passes this one
                kept.append(call)
                continue
            taken.append(call)
            rows, tokens = rows + len(call.rows), tokens + cost
        self._queue = kept
        return taken

    def _run_micro_batch(self, gather: _Gather, indices: list[int]) -> None:
        """Run one micro-batch (lock not held) and give each call its outputs; on failure, isolate the calls."""
        slots = [gather.slots[i] for i in indices if not gather.slots[i][0].finished]
        if not slots:
            return
        try:
            outputs = _outputs(gather.recipe, [call.rows[index] for call, index in slots])
        except Exception as error:  # noqa: BLE001 - routed to the calls whose rows it concerns
            shared_error = error
        else:
            self._store(slots, outputs)
            return
        calls = list({id(call): call for call, _ in slots}.values())
        if len(calls) == 1:
            with self._lock:
                self._finish(calls[0], shared_error)
            return
        for call in calls:  # each call's rows alone: a failure reaches only the call whose rows fail
            own = [slot for slot in slots if slot[0] is call]
            try:
                outputs = _outputs(gather.recipe, [call.rows[index] for _, index in own])
            except Exception as error:  # noqa: BLE001 - this call's own rows fail: it gets the error
                with self._lock:
                    self._finish(call, error)
                continue
            self._store(own, outputs)

    def _store(self, slots: list[tuple[_Call, int]], outputs: list[Any]) -> None:
        with self._lock:
            for (call, index), output in zip(slots, outputs):
                call.outputs[index] = output
                call.left -= 1
                if call.left == 0 and not call.finished:
                    self._finish(call)

    def _finish(self, call: _Call, error: BaseException | None = None) -> None:
        """Give `call` its outputs or its error and wake its thread (lock held)."""
        if call.finished:
            return
        call.error, call.finished = error, True
        self._queued_inside -= call.counted
        call.wake.set()

    def _hand_over(self) -> None:
        """Make the thread of a call still waiting the leader (lock held), preferring the running gather's."""
        waiting = [c for c, _ in self._gather.slots] if self._gather and self._gather.micro_batches else []
        successor = next((c for c in [*waiting, *self._queue] if not c.finished), None)
        if successor is None:
            self._leading = False
        else:
            successor.wake.set()


def _outputs(recipe: Recipe, rows: list[Row]) -> list[Any]:
    """`recipe.run(rows)`, checked to give one output per row."""
    outputs = recipe.run(rows)
    if len(outputs) != len(rows):
        raise RuntimeError(f"a micro-batch of {len(rows)} rows returned {len(outputs)} outputs")
    return outputs
