from __future__ import annotations

import itertools
import uuid
from collections import deque
from enum import StrEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from facteur.domain.ideas import IdeaState
from facteur.domain.lifecycle import (
    DEFAULT_PIPELINE,
    IDEA_TRANSITIONS,
    REFUSED_EVENT,
    RUN_TRANSITIONS,
    TASK_TRANSITIONS,
    IdeaAdvance,
    IllegalTransition,
    InvalidPipeline,
    Machine,
    Pipeline,
    PipelineStage,
    Transition,
    TransitionTable,
    next_idea_state,
    pipeline_for,
    refusal_event,
    transition,
)
from facteur.domain.runs import RunStatus
from facteur.domain.tasks import TaskState
from facteur.errors import ConfigError, FacteurError

TABLES: dict[Machine, TransitionTable[Any]] = {
    "idea": IDEA_TRANSITIONS,
    "task": TASK_TRANSITIONS,
    "run": RUN_TRANSITIONS,
}
KINDS: tuple[Machine, ...] = ("idea", "task", "run")
ALL_MOVES = [(kind, move) for kind in KINDS for move in TABLES[kind].transitions]

#: the terminal states, written out so that a table losing or gaining an exit fails the test
TERMINAL: dict[Machine, frozenset[StrEnum]] = {
    "idea": frozenset({IdeaState.COMPLETED, IdeaState.FAILED, IdeaState.CANCELLED}),
    "task": frozenset({TaskState.SUCCEEDED, TaskState.CANCELLED}),
    "run": frozenset(
        {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT, RunStatus.LOST}
    ),
}
#: the state each machine should be able to end in from anywhere that is not terminal
HAPPY_END: dict[Machine, StrEnum] = {
    "idea": IdeaState.COMPLETED,
    "task": TaskState.SUCCEEDED,
    "run": RunStatus.SUCCEEDED,
}


def pairs(table: TransitionTable[Any]) -> set[tuple[StrEnum, StrEnum]]:
    return {(move.source, move.target) for move in table.transitions}


def successors(table: TransitionTable[Any], *, ordinary_only: bool = False) -> dict[StrEnum, set[StrEnum]]:
    graph: dict[StrEnum, set[StrEnum]] = {state: set() for state in table.states}
    for move in table.transitions:
        if not (ordinary_only and move.skips):
            graph[move.source].add(move.target)
    return graph


def reachable(graph: dict[StrEnum, set[StrEnum]], start: StrEnum) -> set[StrEnum]:
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in graph[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def move_id(item: tuple[Machine, Transition[Any]]) -> str:
    kind, move = item
    return f"{kind}:{move.source.value}->{move.target.value}:{move.trigger}"


# --- the tables ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", ALL_MOVES, ids=[move_id(item) for item in ALL_MOVES])
def test_every_legal_transition_is_accepted(item: tuple[Machine, Transition[Any]]) -> None:
    kind, move = item
    assert transition(kind, move.source, move.target, move.trigger) is move
    # without a trigger, the first move listed between the two states
    first = next(m for m in TABLES[kind].transitions if (m.source, m.target) == (move.source, move.target))
    assert transition(kind, move.source, move.target) is first
    # by name, as the store gives states
    assert transition(kind, move.source.value, move.target.value, move.trigger) is move


@pytest.mark.parametrize("kind", KINDS)
def test_every_move_missing_from_the_table_is_refused(kind: Machine) -> None:
    table = TABLES[kind]
    legal = pairs(table)
    refused = 0
    for source, target in itertools.product(table.states, repeat=2):
        if (source, target) in legal:
            continue
        with pytest.raises(IllegalTransition):
            transition(kind, source, target)
        refused += 1
    assert refused > 0


@pytest.mark.parametrize(
    ("kind", "current", "target", "trigger", "expected"),
    [
        (
            "task",
            TaskState.FAILED,
            TaskState.RUNNING,
            "started",
            "illegal task transition from failed to running (trigger started): "
            "allowed from failed: ready (retry), cancelled (cancel)",
        ),
        (
            "task",
            TaskState.SUCCEEDED,
            TaskState.READY,
            None,
            "illegal task transition from succeeded to ready: "
            "succeeded is terminal: nothing is allowed from it",
        ),
        (
            "idea",
            IdeaState.REGISTERED,
            IdeaState.RUNNING_TASKS,
            None,
            "illegal idea transition from registered to running_tasks: allowed from registered: "
            "planning (planning_started), plan_ready (plan_provided), failed (failed), cancelled (cancel)",
        ),
        (
            "idea",
            IdeaState.COMPLETED,
            IdeaState.REMEDIATION,
            "regression_detected",
            "illegal idea transition from completed to remediation (trigger regression_detected): "
            "completed is terminal: nothing is allowed from it",
        ),
        (
            "run",
            RunStatus.RUNNING,
            RunStatus.QUEUED,
            "retry",
            "illegal run transition from running to queued (trigger retry): allowed from running: "
            "succeeded (completed), failed (failed), cancelled (cancel), timed_out (timed_out), lost (lost)",
        ),
    ],
)
def test_an_illegal_transition_names_the_states_the_trigger_and_what_is_allowed(
    kind: Machine, current: Any, target: Any, trigger: str | None, expected: str
) -> None:
    with pytest.raises(IllegalTransition) as caught:
        transition(kind, current, target, trigger)
    err = caught.value
    assert isinstance(err, FacteurError)
    assert err.message == expected
    assert (err.kind, err.current, err.target, err.trigger) == (kind, current.value, target.value, trigger)
    assert err.allowed == tuple(sorted(state.value for state in TABLES[kind].targets(current)))


def test_a_legal_move_by_the_wrong_trigger_is_refused() -> None:
    with pytest.raises(IllegalTransition, match="ready is reached from failed by retry only") as caught:
        transition("task", TaskState.FAILED, TaskState.READY, "unblocked")
    assert caught.value.trigger == "unblocked"


def test_states_of_another_machine_are_taken_by_name_and_unknown_names_refused() -> None:
    # same name in both enums: the task state is meant
    assert transition("task", TaskState.RUNNING, IdeaState.FAILED).target is TaskState.FAILED
    with pytest.raises(IllegalTransition, match="'planning' is not a task state; allowed from ready"):
        transition("task", TaskState.READY, IdeaState.PLANNING)
    with pytest.raises(IllegalTransition, match="from bogus to ready: 'bogus' is not a task state"):
        transition("task", "bogus", TaskState.READY)


@pytest.mark.parametrize("kind", KINDS)
def test_terminal_states_have_no_exits(kind: Machine) -> None:
    table = TABLES[kind]
    assert table.terminal_states == TERMINAL[kind]
    for state in table.states:
        assert table.is_terminal(state) is (state in TERMINAL[kind])
        if state in TERMINAL[kind]:
            assert not [move for move in table.transitions if move.source is state]


def test_the_run_status_enum_agrees_with_the_run_table() -> None:
    assert {state for state in RunStatus if state.terminal} == TERMINAL["run"]


@pytest.mark.parametrize("kind", KINDS)
def test_every_state_is_reachable_from_the_initial_state(kind: Machine) -> None:
    table = TABLES[kind]
    assert table.initial in table.entry_states
    assert reachable(successors(table), table.initial) == set(table.states)


@pytest.mark.parametrize("kind", KINDS)
def test_every_state_that_is_not_terminal_can_reach_a_terminal_one_and_the_happy_end(kind: Machine) -> None:
    table = TABLES[kind]
    graph = successors(table)
    for state in table.states:
        if state in TERMINAL[kind]:
            continue
        found = reachable(graph, state)
        assert found & TERMINAL[kind], f"{kind} {state} cannot finish"
        assert HAPPY_END[kind] in found, f"{kind} {state} cannot reach {HAPPY_END[kind]}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_state_that_is_not_terminal_can_be_failed_or_cancelled(kind: Machine) -> None:
    table = TABLES[kind]
    cancelled = table.state_type("cancelled")
    for state in table.states:
        if state not in TERMINAL[kind]:
            assert table.allows(state, cancelled, "cancel"), f"{kind} {state} cannot be cancelled"
    if kind == "idea":
        for state in table.states:
            if state not in TERMINAL[kind]:
                assert table.allows(state, IdeaState.FAILED, "failed")


@pytest.mark.parametrize("kind", KINDS)
def test_every_skip_stands_for_a_path_of_ordinary_moves_through_the_skipped_states(kind: Machine) -> None:
    table = TABLES[kind]
    ordinary = successors(table, ordinary_only=True)
    for move in table.transitions:
        if not move.skips:
            continue
        path = [move.source, *move.skips, move.target]
        for here, there in itertools.pairwise(path):
            assert there in ordinary[here], f"{kind} skip {move} has no ordinary move {here} -> {there}"


def test_the_idea_main_path_is_made_of_ordinary_moves() -> None:
    path = [
        IdeaState.REGISTERED,
        IdeaState.PLANNING,
        IdeaState.PLAN_READY,
        IdeaState.AWAITING_APPROVAL,
        IdeaState.AWAITING_DEPENDENCIES,
        IdeaState.RUNNING_TASKS,
        IdeaState.QA_REVIEW,
        IdeaState.INTEGRATION,
        IdeaState.DEPLOYMENT,
        IdeaState.MONITORING,
        IdeaState.COMPLETED,
    ]
    for here, there in itertools.pairwise(path):
        move = IDEA_TRANSITIONS.find(here, there)
        assert move is not None
        assert move.skips == ()
    remediation = [IdeaState.MONITORING, IdeaState.REMEDIATION, IdeaState.RUNNING_TASKS]
    assert IDEA_TRANSITIONS.triggers(*remediation[:2]) == {"regression_detected"}
    assert IDEA_TRANSITIONS.triggers(*remediation[1:]) == {"remediation_planned"}


def test_retries_and_lost_runs() -> None:
    # a failed task is retried; a running task whose run is lost fails first (an attempt is spent)
    assert TASK_TRANSITIONS.triggers(TaskState.FAILED, TaskState.READY) == {"retry"}
    assert not TASK_TRANSITIONS.allows(TaskState.RUNNING, TaskState.READY)
    # a claim that lapsed before any run started costs nothing
    assert TASK_TRANSITIONS.triggers(TaskState.QUEUED, TaskState.READY) == {"claim_expired"}
    assert TASK_TRANSITIONS.targets(TaskState.BLOCKED) == {
        TaskState.READY,
        TaskState.PENDING,
        TaskState.CANCELLED,
    }
    # a run is never retried in place: a retry is a new run
    assert not any(RUN_TRANSITIONS.targets(state) for state in RunStatus if state.terminal)


def test_an_unknown_machine_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown state machine 'plan'"):
        transition("plan", "a", "b")  # type: ignore[call-overload]


def test_a_broken_table_is_refused_when_built() -> None:
    with pytest.raises(TypeError, match="mixes states"):
        TransitionTable(
            "task",
            TaskState,
            [Transition(TaskState.READY, RunStatus.QUEUED, "x")],
            initial=TaskState.PENDING,
        )
    with pytest.raises(ValueError, match="goes nowhere"):
        TransitionTable(
            "task", TaskState, [Transition(TaskState.READY, TaskState.READY, "x")], initial=TaskState.PENDING
        )
    twice = Transition(TaskState.READY, TaskState.QUEUED, "x")
    with pytest.raises(ValueError, match="listed twice"):
        TransitionTable("task", TaskState, [twice, twice], initial=TaskState.PENDING)


def test_the_refusal_event() -> None:
    idea_id, task_id = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(IllegalTransition) as caught:
        transition("task", TaskState.SUCCEEDED, TaskState.RUNNING, "started")
    event = refusal_event(caught.value, actor="scheduler", idea_id=idea_id, task_id=task_id)
    assert event.kind == REFUSED_EVENT == "transition.refused"
    assert (event.actor, event.idea_id, event.task_id, event.run_id) == ("scheduler", idea_id, task_id, None)
    assert event.payload == {
        "machine": "task",
        "from": "succeeded",
        "to": "running",
        "trigger": "started",
        "allowed": [],
        "message": caught.value.message,
    }


# --- properties ------------------------------------------------------------------------------------------


@st.composite
def walks(draw: st.DrawFn) -> tuple[Machine, StrEnum, list[int]]:
    kind = draw(st.sampled_from(KINDS))
    table = TABLES[kind]
    start = draw(st.sampled_from(sorted(table.entry_states, key=list(table.states).index)))
    choices = draw(st.lists(st.integers(min_value=0, max_value=1000), max_size=40))
    return kind, start, choices


@given(walks())
def test_random_walks_follow_the_table_and_stop_at_terminal_states(
    walk: tuple[Machine, StrEnum, list[int]],
) -> None:
    kind, state, choices = walk
    table = TABLES[kind]
    for choice in choices:
        moves = [move for move in table.transitions if move.source is state]
        if not moves:
            assert state in TERMINAL[kind]
            for target in table.states:
                with pytest.raises(IllegalTransition):
                    transition(kind, state, target)
            return
        move = moves[choice % len(moves)]
        state = transition(kind, state, move.target, move.trigger).target
        assert isinstance(state, table.state_type)


TRIGGERS = [*sorted({move.trigger for _, move in ALL_MOVES}), "bogus"]


@given(
    kind=st.sampled_from(KINDS),
    data=st.data(),
    trigger=st.none() | st.sampled_from(TRIGGERS),
)
def test_transition_agrees_with_the_table(kind: Machine, data: st.DataObject, trigger: str | None) -> None:
    table = TABLES[kind]
    source = data.draw(st.sampled_from(list(table.states)))
    target = data.draw(st.sampled_from(list(table.states)))
    legal = any(
        move.source is source and move.target is target and trigger in (None, move.trigger)
        for move in table.transitions
    )
    if legal:
        found = transition(kind, source, target, trigger)
        assert (found.source, found.target) == (source, target)
        assert trigger in (None, found.trigger)
    else:
        with pytest.raises(IllegalTransition) as caught:
            transition(kind, source, target, trigger)
        assert caught.value.current == source.value
        assert caught.value.target == target.value
        assert set(caught.value.allowed) == {
            move.target.value for move in table.transitions if move.source is source
        }


# --- pipelines -------------------------------------------------------------------------------------------


def walk_idea(
    pipeline: Pipeline, *, approval_required: bool = False
) -> tuple[list[IdeaState], list[IdeaState]]:
    """Every state an idea visits from registered to completed, and every state it skips."""
    state = IdeaState.REGISTERED
    visited: list[IdeaState] = [state]
    skipped: list[IdeaState] = []
    while not IDEA_TRANSITIONS.is_terminal(state):
        advance = next_idea_state(state, pipeline, approval_required=approval_required)
        move = IDEA_TRANSITIONS.find(state, advance.state)
        assert move is not None, f"{state} -> {advance.state} is not in the table"
        assert move.skips == advance.skipped
        assert transition("idea", state, advance.state, move.trigger) is move
        state = advance.state
        visited.append(state)
        skipped.extend(advance.skipped)
    return visited, skipped


def test_the_default_pipeline_goes_from_the_tasks_to_completed() -> None:
    assert DEFAULT_PIPELINE.stages == ()
    assert DEFAULT_PIPELINE.describe() == "planning -> running_tasks -> completed"
    assert next_idea_state(IdeaState.RUNNING_TASKS, DEFAULT_PIPELINE) == IdeaAdvance(
        IdeaState.COMPLETED,
        (IdeaState.QA_REVIEW, IdeaState.INTEGRATION, IdeaState.DEPLOYMENT, IdeaState.MONITORING),
    )


@pytest.mark.parametrize(
    ("names", "visited_after_tasks", "skipped"),
    [
        ([], [], ["awaiting_approval", "qa_review", "integration", "deployment", "monitoring"]),
        (["review"], ["qa_review"], ["awaiting_approval", "integration", "deployment", "monitoring"]),
        (
            ["qa_review", "deployment"],
            ["qa_review", "deployment"],
            ["awaiting_approval", "integration", "monitoring"],
        ),
        (
            ["integration", "monitoring"],
            ["integration", "monitoring"],
            ["awaiting_approval", "qa_review", "deployment"],
        ),
        (
            ["planning", "implementation", "review", "integration", "deployment", "monitoring"],
            ["qa_review", "integration", "deployment", "monitoring"],
            ["awaiting_approval"],
        ),
    ],
)
def test_pipelines_visit_their_stages_and_record_the_skipped_ones(
    names: list[str], visited_after_tasks: list[str], skipped: list[str]
) -> None:
    pipeline = Pipeline.parse(names)
    visited, skips = walk_idea(pipeline)
    after_tasks = visited[visited.index(IdeaState.RUNNING_TASKS) + 1 : -1]
    assert [state.value for state in after_tasks] == visited_after_tasks
    assert [state.value for state in skips] == skipped
    assert visited[-1] is IdeaState.COMPLETED


def test_approval_is_visited_when_required() -> None:
    visited, skipped = walk_idea(DEFAULT_PIPELINE, approval_required=True)
    assert visited[:6] == [
        IdeaState.REGISTERED,
        IdeaState.PLANNING,
        IdeaState.PLAN_READY,
        IdeaState.AWAITING_APPROVAL,
        IdeaState.AWAITING_DEPENDENCIES,
        IdeaState.RUNNING_TASKS,
    ]
    assert IdeaState.AWAITING_APPROVAL not in skipped


def test_remediation_goes_back_to_the_tasks_and_the_pipeline_runs_again() -> None:
    pipeline = Pipeline((PipelineStage.DEPLOYMENT, PipelineStage.MONITORING))
    assert next_idea_state(IdeaState.REMEDIATION, pipeline) == IdeaAdvance(IdeaState.RUNNING_TASKS, ())
    assert next_idea_state(IdeaState.RUNNING_TASKS, pipeline) == IdeaAdvance(
        IdeaState.DEPLOYMENT, (IdeaState.QA_REVIEW, IdeaState.INTEGRATION)
    )
    assert next_idea_state(IdeaState.MONITORING, pipeline) == IdeaAdvance(IdeaState.COMPLETED, ())


def test_an_idea_in_a_stage_its_pipeline_lost_still_moves_on() -> None:
    # the settings changed while the idea was in integration
    assert next_idea_state(IdeaState.INTEGRATION, DEFAULT_PIPELINE) == IdeaAdvance(
        IdeaState.COMPLETED, (IdeaState.DEPLOYMENT, IdeaState.MONITORING)
    )


@pytest.mark.parametrize("state", sorted(TERMINAL["idea"]))
def test_a_terminal_idea_has_no_next_state(state: IdeaState) -> None:
    with pytest.raises(IllegalTransition, match=f"from {state.value}: {state.value} is terminal") as caught:
        next_idea_state(state, DEFAULT_PIPELINE)
    assert caught.value.target is None


@given(st.sets(st.sampled_from(list(PipelineStage))), st.booleans())
def test_every_pipeline_reaches_completed_through_its_stages_only(
    chosen: set[PipelineStage], approval_required: bool
) -> None:
    stages = tuple(stage for stage in PipelineStage if stage in chosen)
    visited, skipped = walk_idea(Pipeline(stages), approval_required=approval_required)
    after_tasks = visited[visited.index(IdeaState.RUNNING_TASKS) + 1 : -1]
    assert after_tasks == [stage.idea_state for stage in stages]
    assert [state for state in skipped if state is not IdeaState.AWAITING_APPROVAL] == [
        stage.idea_state for stage in PipelineStage if stage not in chosen
    ]
    assert (IdeaState.AWAITING_APPROVAL in visited) is approval_required
    assert set(visited).isdisjoint(skipped)


def test_pipeline_for_finds_the_repository_or_falls_back_to_the_default() -> None:
    pipelines = {"Acme/Rockets": ["review", "deployment"], "acme/other": []}
    expected = Pipeline((PipelineStage.QA_REVIEW, PipelineStage.DEPLOYMENT))
    assert pipeline_for("Acme/Rockets", pipelines, DEFAULT_PIPELINE) == expected
    assert pipeline_for("acme/rockets", pipelines, DEFAULT_PIPELINE) == expected
    assert pipeline_for("acme/other", pipelines, expected) == DEFAULT_PIPELINE
    assert pipeline_for("acme/unlisted", pipelines, expected) is expected
    assert pipeline_for("acme/unlisted", {}) is DEFAULT_PIPELINE


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (
            ["review", "deploy"],
            "pipelines.acme/rockets.stages: unknown stage 'deploy': "
            "expected some of qa_review (or review), integration, deployment, monitoring",
        ),
        (["remediation"], "pipelines.acme/rockets.stages: unknown stage 'remediation'"),
        (["review", "qa_review"], "pipelines.acme/rockets.stages: stage qa_review is listed twice"),
        (
            ["monitoring", "deployment"],
            "pipelines.acme/rockets.stages: stage deployment is listed after monitoring: "
            "stages run in the order qa_review, integration, deployment, monitoring",
        ),
        ("review", "pipelines.acme/rockets.stages: expected a list of stages, got 'review'"),
    ],
)
def test_bad_pipelines_are_rejected_naming_the_setting_and_the_stage(names: Any, message: str) -> None:
    with pytest.raises(InvalidPipeline) as caught:
        pipeline_for("acme/rockets", {"acme/rockets": names}, DEFAULT_PIPELINE)
    assert caught.value.message.startswith(message)
    # a configuration error, and a ValueError for pydantic validators
    assert isinstance(caught.value, ConfigError)
    assert isinstance(caught.value, ValueError)


def test_pipeline_names_are_read_without_regard_to_case_or_spaces() -> None:
    assert Pipeline.parse([" Review ", "MONITORING"]).stages == (
        PipelineStage.QA_REVIEW,
        PipelineStage.MONITORING,
    )
    assert Pipeline.parse(["planning", "running_tasks", "implementation"]) == DEFAULT_PIPELINE


def test_a_pipeline_built_directly_is_checked() -> None:
    with pytest.raises(InvalidPipeline, match="'qa_review' is not a pipeline stage"):
        Pipeline(("qa_review",))  # type: ignore[arg-type]
    pipeline = Pipeline((PipelineStage.QA_REVIEW, PipelineStage.MONITORING))
    assert pipeline.idea_states == (IdeaState.QA_REVIEW, IdeaState.MONITORING)
    assert pipeline.includes(IdeaState.MONITORING)
    assert not pipeline.includes(IdeaState.DEPLOYMENT)
    assert pipeline.describe() == "planning -> running_tasks -> qa_review -> monitoring -> completed"
