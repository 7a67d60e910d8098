"""Lifecycles: the transition tables of ideas, tasks and runs, and the pipeline of an idea's stages.

Each state machine has one table (:data:`IDEA_TRANSITIONS`, :data:`TASK_TRANSITIONS`,
:data:`RUN_TRANSITIONS`), the single source of truth for which moves are legal. A move is a
:class:`Transition`: a source state, a target state, the trigger that causes it (a short name written into
audit events) and, for the moves that jump over states, the states it skips. :func:`transition` checks a
move against its table and either returns the :class:`Transition` it found (the caller records its skips)
or raises :class:`IllegalTransition`; it changes nothing itself, and callers record a refusal with
:func:`refusal_event`.

A :class:`Pipeline` says which of the stages after the tasks (``qa_review``, ``integration``,
``deployment``, ``monitoring``) a repository goes through; :func:`next_idea_state` gives the next state of
an idea that finished its current one, with the stages it skips, so that a skipped stage is recorded rather
than faked. See docs/lifecycle.md.

Pure: no I/O, no driver.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, Literal, NamedTuple, TypeVar, overload

from facteur.domain.events import NewEvent
from facteur.domain.ideas import IdeaState
from facteur.domain.runs import RunStatus
from facteur.domain.tasks import TaskState
from facteur.errors import ConfigError, FacteurError

S = TypeVar("S", bound=StrEnum)

#: which state machine: an idea's, a task's or a run's
Machine = Literal["idea", "task", "run"]

REFUSED_EVENT = "transition.refused"


@dataclass(frozen=True, slots=True)
class Transition(Generic[S]):
    """One legal move of a state machine."""

    source: S
    target: S
    #: what causes the move, as written in audit events (``approved``, ``retry``, ``cancel``, …)
    trigger: str
    #: the states this move jumps over, in order; empty for an ordinary move
    skips: tuple[S, ...] = ()


class TransitionTable(Generic[S]):
    """The legal moves of one state machine, looked up by source state."""

    __slots__ = ("_by_source", "entry_states", "initial", "kind", "state_type", "transitions")

    def __init__(
        self,
        kind: Machine,
        state_type: type[S],
        transitions: Iterable[Transition[S]],
        *,
        initial: S,
        entry_states: Iterable[S] = (),
    ) -> None:
        self.kind: Machine = kind
        self.state_type: type[S] = state_type
        self.transitions: tuple[Transition[S], ...] = tuple(transitions)
        #: the state a new record starts in
        self.initial: S = initial
        #: every state a record may be created in (the initial state and a few shortcuts)
        self.entry_states: frozenset[S] = frozenset({initial, *entry_states})
        by_source: dict[S, list[Transition[S]]] = {state: [] for state in state_type}
        seen: set[tuple[S, S, str]] = set()
        for move in self.transitions:
            states = (move.source, move.target, *move.skips)
            if not all(isinstance(state, state_type) for state in states):
                raise TypeError(f"{kind} transition {move} mixes states of another machine")
            if move.source is move.target:
                raise ValueError(f"{kind} transition {move} goes nowhere")
            key = (move.source, move.target, move.trigger)
            if key in seen:
                raise ValueError(f"{kind} transition {move} is listed twice")
            seen.add(key)
            by_source[move.source].append(move)
        self._by_source: dict[S, tuple[Transition[S], ...]] = {
            state: tuple(moves) for state, moves in by_source.items()
        }

    @property
    def states(self) -> tuple[S, ...]:
        return tuple(self.state_type)

    @property
    def terminal_states(self) -> frozenset[S]:
        """The states nothing leaves."""
        return frozenset(state for state, moves in self._by_source.items() if not moves)

    def coerce(self, value: str) -> S:
        """``value`` as a state of this machine (a state of another machine, by its name)."""
        return self.state_type(str(value))

    def targets(self, state: S) -> frozenset[S]:
        """The states reachable from ``state`` in one move."""
        return frozenset(move.target for move in self._by_source[state])

    def triggers(self, source: S, target: S) -> frozenset[str]:
        """The triggers that move ``source`` to ``target``; empty when the move is illegal."""
        return frozenset(move.trigger for move in self._by_source[source] if move.target is target)

    def find(self, source: S, target: S, trigger: str | None = None) -> Transition[S] | None:
        """The move from ``source`` to ``target`` (by ``trigger`` when given), or None when it is illegal."""
        for move in self._by_source[source]:
            if move.target is target and (trigger is None or move.trigger == trigger):
                return move
        return None

    def allows(self, source: S, target: S, trigger: str | None = None) -> bool:
        return self.find(source, target, trigger) is not None

    def is_terminal(self, state: S) -> bool:
        return not self._by_source[state]

    def describe_allowed(self, state: S) -> str:
        """``ready (retry), cancelled (cancel)``: the moves out of ``state``, for messages."""
        by_target: dict[S, list[str]] = {}
        for move in self._by_source[state]:
            by_target.setdefault(move.target, []).append(move.trigger)
        ordered = [target for target in self.state_type if target in by_target]
        return ", ".join(f"{target.value} ({' | '.join(by_target[target])})" for target in ordered)


def _to_each(sources: Iterable[S], target: S, trigger: str) -> list[Transition[S]]:
    return [Transition(source, target, trigger) for source in sources]


# --- ideas -----------------------------------------------------------------------------------------------

_I = IdeaState

#: the states an idea leaves for ``failed`` or ``cancelled``
_IDEA_LIVE = tuple(state for state in IdeaState if state not in {_I.COMPLETED, _I.FAILED, _I.CANCELLED})

IDEA_TRANSITIONS: TransitionTable[IdeaState] = TransitionTable(
    "idea",
    IdeaState,
    [
        # planning
        Transition(_I.REGISTERED, _I.PLANNING, "planning_started"),
        Transition(_I.REGISTERED, _I.PLAN_READY, "plan_provided", skips=(_I.PLANNING,)),
        Transition(_I.PLANNING, _I.PLAN_READY, "plan_received"),
        # approval, when policy asks for it
        Transition(_I.PLAN_READY, _I.AWAITING_APPROVAL, "approval_requested"),
        Transition(
            _I.PLAN_READY, _I.AWAITING_DEPENDENCIES, "approval_not_required", skips=(_I.AWAITING_APPROVAL,)
        ),
        Transition(_I.AWAITING_APPROVAL, _I.AWAITING_DEPENDENCIES, "approved"),
        Transition(_I.AWAITING_APPROVAL, _I.PLANNING, "changes_requested"),
        Transition(_I.AWAITING_APPROVAL, _I.CANCELLED, "rejected"),
        # tasks
        Transition(_I.AWAITING_DEPENDENCIES, _I.RUNNING_TASKS, "dependencies_met"),
        # the stages after the tasks, each skippable by the repository's pipeline
        Transition(_I.RUNNING_TASKS, _I.QA_REVIEW, "tasks_succeeded"),
        Transition(_I.RUNNING_TASKS, _I.INTEGRATION, "tasks_succeeded", skips=(_I.QA_REVIEW,)),
        Transition(_I.RUNNING_TASKS, _I.DEPLOYMENT, "tasks_succeeded", skips=(_I.QA_REVIEW, _I.INTEGRATION)),
        Transition(
            _I.RUNNING_TASKS,
            _I.MONITORING,
            "tasks_succeeded",
            skips=(_I.QA_REVIEW, _I.INTEGRATION, _I.DEPLOYMENT),
        ),
        Transition(
            _I.RUNNING_TASKS,
            _I.COMPLETED,
            "tasks_succeeded",
            skips=(_I.QA_REVIEW, _I.INTEGRATION, _I.DEPLOYMENT, _I.MONITORING),
        ),
        Transition(_I.QA_REVIEW, _I.INTEGRATION, "review_passed"),
        Transition(_I.QA_REVIEW, _I.DEPLOYMENT, "review_passed", skips=(_I.INTEGRATION,)),
        Transition(_I.QA_REVIEW, _I.MONITORING, "review_passed", skips=(_I.INTEGRATION, _I.DEPLOYMENT)),
        Transition(
            _I.QA_REVIEW, _I.COMPLETED, "review_passed", skips=(_I.INTEGRATION, _I.DEPLOYMENT, _I.MONITORING)
        ),
        Transition(_I.QA_REVIEW, _I.RUNNING_TASKS, "changes_requested"),
        Transition(_I.INTEGRATION, _I.DEPLOYMENT, "integrated"),
        Transition(_I.INTEGRATION, _I.MONITORING, "integrated", skips=(_I.DEPLOYMENT,)),
        Transition(_I.INTEGRATION, _I.COMPLETED, "integrated", skips=(_I.DEPLOYMENT, _I.MONITORING)),
        Transition(_I.DEPLOYMENT, _I.MONITORING, "deployed"),
        Transition(_I.DEPLOYMENT, _I.COMPLETED, "deployed", skips=(_I.MONITORING,)),
        Transition(_I.MONITORING, _I.COMPLETED, "monitoring_passed"),
        # remediation
        Transition(_I.MONITORING, _I.REMEDIATION, "regression_detected"),
        Transition(_I.REMEDIATION, _I.RUNNING_TASKS, "remediation_planned"),
        # the way out of every state that is not terminal
        *_to_each(_IDEA_LIVE, _I.FAILED, "failed"),
        *_to_each(_IDEA_LIVE, _I.CANCELLED, "cancel"),
    ],
    initial=_I.REGISTERED,
)

# --- tasks -----------------------------------------------------------------------------------------------

_T = TaskState

TASK_TRANSITIONS: TransitionTable[TaskState] = TransitionTable(
    "task",
    TaskState,
    [
        Transition(_T.PENDING, _T.READY, "dependencies_met"),
        Transition(_T.READY, _T.QUEUED, "claimed"),
        # the claim lapsed before a run started (the scheduler died, the run was never submitted): no attempt
        Transition(_T.QUEUED, _T.READY, "claim_expired"),
        Transition(_T.QUEUED, _T.RUNNING, "started"),
        # the executor reported the end before the start was seen
        Transition(_T.QUEUED, _T.SUCCEEDED, "completed"),
        Transition(_T.QUEUED, _T.FAILED, "failed"),
        Transition(_T.RUNNING, _T.SUCCEEDED, "completed"),
        # a run that failed, timed out or was lost: one attempt spent
        Transition(_T.RUNNING, _T.FAILED, "failed"),
        # back-off, while attempts remain (or an operator's retry after the limit)
        Transition(_T.FAILED, _T.READY, "retry"),
        # policy: a rule refused the task, or a dependency will not finish
        *_to_each((_T.PENDING, _T.READY, _T.QUEUED, _T.RUNNING), _T.BLOCKED, "blocked"),
        Transition(_T.BLOCKED, _T.READY, "unblocked"),
        Transition(_T.BLOCKED, _T.PENDING, "unblocked"),
        *_to_each(
            (_T.PENDING, _T.READY, _T.QUEUED, _T.RUNNING, _T.FAILED, _T.BLOCKED), _T.CANCELLED, "cancel"
        ),
    ],
    initial=_T.PENDING,
    # a task without dependencies is created ready, or queued when it is dispatched at once (codex intake)
    entry_states=(_T.READY, _T.QUEUED),
)

# --- runs ------------------------------------------------------------------------------------------------

_R = RunStatus

RUN_TRANSITIONS: TransitionTable[RunStatus] = TransitionTable(
    "run",
    RunStatus,
    [
        Transition(_R.QUEUED, _R.SUBMITTED, "submitted"),
        # the executor may report a start, or an end, before the submission is recorded
        *_to_each((_R.QUEUED, _R.SUBMITTED), _R.RUNNING, "started"),
        *_to_each((_R.QUEUED, _R.SUBMITTED, _R.RUNNING), _R.SUCCEEDED, "completed"),
        *_to_each((_R.QUEUED, _R.SUBMITTED, _R.RUNNING), _R.FAILED, "failed"),
        *_to_each((_R.QUEUED, _R.SUBMITTED, _R.RUNNING), _R.CANCELLED, "cancel"),
        *_to_each((_R.QUEUED, _R.SUBMITTED, _R.RUNNING), _R.TIMED_OUT, "timed_out"),
        *_to_each((_R.QUEUED, _R.SUBMITTED, _R.RUNNING), _R.LOST, "lost"),
    ],
    initial=_R.QUEUED,
)

_TABLES: dict[str, TransitionTable[Any]] = {
    "idea": IDEA_TRANSITIONS,
    "task": TASK_TRANSITIONS,
    "run": RUN_TRANSITIONS,
}


def _table(kind: str) -> TransitionTable[Any]:
    try:
        return _TABLES[kind]
    except KeyError:
        raise ValueError(f"unknown state machine {kind!r}: expected idea, task or run") from None


# --- checking moves --------------------------------------------------------------------------------------


class IllegalTransition(FacteurError):
    """A state machine was asked for a move its transition table does not have."""

    def __init__(
        self,
        kind: Machine,
        current: str,
        target: str | None,
        trigger: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        self.kind: Machine = kind
        self.current: str = str(current)
        #: None when no target was asked for (the next state of a terminal idea)
        self.target: str | None = None if target is None else str(target)
        self.trigger: str | None = trigger
        self.allowed: tuple[str, ...] = ()
        table = _table(kind)
        try:
            state = table.coerce(self.current)
        except ValueError:
            described = f"{self.current!r} is not {_article(kind)} {kind} state"
        else:
            self.allowed = tuple(sorted(target.value for target in table.targets(state)))
            described = (
                f"allowed from {state.value}: {table.describe_allowed(state)}"
                if self.allowed
                else f"{state.value} is terminal: nothing is allowed from it"
            )
        move = f"from {self.current}" + ("" if self.target is None else f" to {self.target}")
        by = "" if trigger is None else f" (trigger {trigger})"
        why = "" if reason is None else f"{reason}; "
        super().__init__(f"illegal {kind} transition {move}{by}: {why}{described}")


def _article(kind: str) -> str:
    return "an" if kind[0] in "aeiou" else "a"


@overload
def transition(
    kind: Literal["idea"], current: IdeaState, target: IdeaState, trigger: str | None = None
) -> Transition[IdeaState]: ...
@overload
def transition(
    kind: Literal["task"], current: TaskState, target: TaskState, trigger: str | None = None
) -> Transition[TaskState]: ...
@overload
def transition(
    kind: Literal["run"], current: RunStatus, target: RunStatus, trigger: str | None = None
) -> Transition[RunStatus]: ...
@overload
def transition(kind: Machine, current: str, target: str, trigger: str | None = None) -> Transition[Any]: ...
def transition(kind: Machine, current: str, target: str, trigger: str | None = None) -> Transition[Any]:
    """The move of the table of ``kind`` from ``current`` to ``target`` (by ``trigger`` when given; the
    first one listed otherwise), with the states it skips.

    Raises :class:`IllegalTransition` when the table has no such move, naming the states, the trigger and
    the moves allowed from ``current``. Changes nothing: the caller applies the move (recording
    ``move.skips``), or records the refusal (:func:`refusal_event`). States may be given by name
    (``"failed"``); the move holds states of ``kind``.
    """
    table = _table(kind)
    try:
        source: StrEnum = table.coerce(current)
    except ValueError:
        raise IllegalTransition(kind, current, target, trigger) from None
    try:
        destination: StrEnum = table.coerce(target)
    except ValueError:
        raise IllegalTransition(
            kind, current, target, trigger, reason=f"{str(target)!r} is not {_article(kind)} {kind} state"
        ) from None
    move = table.find(source, destination, trigger)
    if move is not None:
        return move
    reason = None
    known = table.triggers(source, destination)
    if known:  # the move exists, by another trigger
        reason = f"{destination.value} is reached from {source.value} by {' | '.join(sorted(known))} only"
    raise IllegalTransition(kind, source, destination, trigger, reason=reason)


def refusal_event(
    err: IllegalTransition,
    *,
    actor: str,
    idea_id: uuid.UUID | None = None,
    task_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
) -> NewEvent:
    """The ``transition.refused`` audit event of a refused move."""
    return NewEvent(
        kind=REFUSED_EVENT,
        actor=actor,
        payload={
            "machine": err.kind,
            "from": err.current,
            "to": err.target,
            "trigger": err.trigger,
            "allowed": list(err.allowed),
            "message": err.message,
        },
        idea_id=idea_id,
        task_id=task_id,
        run_id=run_id,
    )


# --- pipelines -------------------------------------------------------------------------------------------


class PipelineStage(StrEnum):
    """The idea stages after the tasks that a repository's pipeline may include, in the order they run."""

    QA_REVIEW = "qa_review"
    INTEGRATION = "integration"
    DEPLOYMENT = "deployment"
    MONITORING = "monitoring"

    @property
    def idea_state(self) -> IdeaState:
        return IdeaState(self.value)


#: other names accepted in settings for a pipeline stage: the name of the run stage that does it
STAGE_ALIASES: Mapping[str, PipelineStage] = {"review": PipelineStage.QA_REVIEW}
#: names accepted in settings for the stages every pipeline has; they change nothing
ALWAYS_PRESENT: frozenset[str] = frozenset({"planning", "implementation", "running_tasks"})


class InvalidPipeline(ConfigError, ValueError):
    """A pipeline names an unknown stage, names one twice, or lists them out of order.

    Also a :class:`ValueError`, so that a pydantic validator raising it reports the setting.
    """


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The stages after the tasks that ideas of a repository go through; planning and tasks always run."""

    stages: tuple[PipelineStage, ...] = ()

    def __post_init__(self) -> None:
        order = list(PipelineStage)
        for stage in self.stages:
            if not isinstance(stage, PipelineStage):
                raise InvalidPipeline(f"{stage!r} is not a pipeline stage")
        if len(set(self.stages)) != len(self.stages):
            twice = next(stage for stage in self.stages if self.stages.count(stage) > 1)
            raise InvalidPipeline(f"stage {twice.value} is listed twice")
        for earlier, later in zip(self.stages, self.stages[1:], strict=False):
            if order.index(earlier) > order.index(later):
                raise InvalidPipeline(
                    f"stage {later.value} is listed after {earlier.value}: stages run in the order "
                    + ", ".join(stage.value for stage in order)
                )

    @classmethod
    def parse(cls, names: Iterable[str]) -> Pipeline:
        """A pipeline from setting names: the stage names, ``review`` for ``qa_review``.

        ``planning``, ``implementation`` and ``running_tasks`` are accepted and change nothing.
        """
        stages: list[PipelineStage] = []
        for raw in names:
            name = raw.strip().lower()
            if name in ALWAYS_PRESENT:
                continue
            stage = STAGE_ALIASES.get(name)
            if stage is None:
                try:
                    stage = PipelineStage(name)
                except ValueError:
                    raise InvalidPipeline(
                        f"unknown stage {raw!r}: expected some of {', '.join(_accepted_names())}"
                    ) from None
            stages.append(stage)
        return cls(tuple(stages))

    @property
    def idea_states(self) -> tuple[IdeaState, ...]:
        return tuple(stage.idea_state for stage in self.stages)

    def includes(self, state: IdeaState) -> bool:
        return state.value in {stage.value for stage in self.stages}

    def describe(self) -> str:
        """``planning -> running_tasks -> qa_review -> completed``."""
        return " -> ".join(
            ["planning", "running_tasks", *(stage.value for stage in self.stages), "completed"]
        )


def _accepted_names() -> list[str]:
    aliases = {stage: name for name, stage in STAGE_ALIASES.items()}
    return [
        f"{stage.value} (or {aliases[stage]})" if stage in aliases else stage.value for stage in PipelineStage
    ]


#: the stages that exist today: none. Review runs answer ``@codex review`` comments on pull requests, but
#: nothing yet feeds their verdict back to the idea, so ``qa_review`` is included only when a pipeline lists
#: it (``review`` or ``qa_review``); integration, deployment and monitoring come with later issues.
DEFAULT_PIPELINE = Pipeline(())


def pipeline_for(
    repository: str, pipelines: Mapping[str, Sequence[str]], default: Pipeline = DEFAULT_PIPELINE
) -> Pipeline:
    """The pipeline of ``repository`` (``owner/repo``, matched without regard to case), else ``default``.

    Raises :class:`InvalidPipeline` naming the setting and the unknown stage.
    """
    names = pipelines.get(repository)
    key = repository
    if names is None:
        wanted = repository.casefold()
        match = next((candidate for candidate in pipelines if candidate.casefold() == wanted), None)
        if match is None:
            return default
        key, names = match, pipelines[match]
    if isinstance(names, str):
        raise InvalidPipeline(f"pipelines.{key}.stages: expected a list of stages, got {names!r}")
    try:
        return Pipeline.parse(names)
    except InvalidPipeline as exc:
        raise InvalidPipeline(f"pipelines.{key}.stages: {exc.message}") from None


class IdeaAdvance(NamedTuple):
    """Where an idea goes when its current state is done, and the states it skips on the way."""

    state: IdeaState
    skipped: tuple[IdeaState, ...]


_FORWARD: Mapping[IdeaState, IdeaState] = {
    _I.REGISTERED: _I.PLANNING,
    _I.PLANNING: _I.PLAN_READY,
    _I.AWAITING_APPROVAL: _I.AWAITING_DEPENDENCIES,
    _I.AWAITING_DEPENDENCIES: _I.RUNNING_TASKS,
    _I.REMEDIATION: _I.RUNNING_TASKS,
}

#: running_tasks, then the pipeline stages, then completed
_AFTER_TASKS: tuple[IdeaState, ...] = (
    _I.RUNNING_TASKS,
    *(stage.idea_state for stage in PipelineStage),
    _I.COMPLETED,
)


def next_idea_state(
    current: IdeaState, pipeline: Pipeline, *, approval_required: bool = False
) -> IdeaAdvance:
    """The next state of an idea whose ``current`` state is done, following ``pipeline``.

    A plan needs approval only when ``approval_required``; otherwise ``awaiting_approval`` is skipped. After
    the tasks, the stages the pipeline leaves out are skipped, in order. The driver records every skipped
    state (``stage.skipped``), so that a skipped stage is recorded, never faked. Raises
    :class:`IllegalTransition` for a terminal state.
    """
    current = IDEA_TRANSITIONS.coerce(current)
    if IDEA_TRANSITIONS.is_terminal(current):
        raise IllegalTransition("idea", current, None)
    if current is _I.PLAN_READY:
        if approval_required:
            return IdeaAdvance(_I.AWAITING_APPROVAL, ())
        return IdeaAdvance(_I.AWAITING_DEPENDENCIES, (_I.AWAITING_APPROVAL,))
    forward = _FORWARD.get(current)
    if forward is not None:
        return IdeaAdvance(forward, ())
    position = _AFTER_TASKS.index(current)
    skipped: list[IdeaState] = []
    for state in _AFTER_TASKS[position + 1 :]:
        if state is _I.COMPLETED or pipeline.includes(state):
            return IdeaAdvance(state, tuple(skipped))
        skipped.append(state)
    raise AssertionError(f"no state after {current.value}")  # pragma: no cover - completed ends _AFTER_TASKS
