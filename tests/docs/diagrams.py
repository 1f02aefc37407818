"""The state diagram of docs/concepts.md, generated from the core itself.

Nothing here is a second description of the machine. The states are the members of
:class:`~eightyeightpay.tokens.Freshness` (with the docstrings of their definitions), the
decisions are whatever :meth:`TokenMachine.decide_and_start` returns when probed in each state, the
effects are the members of the ``Effect`` union in order of their first appearance while the
fleet protocol is actually run against a small in-memory store, and each effect's store
method and result record come from :func:`eightyeightpay.fleet.store_call` and
:func:`~eightyeightpay.fleet.store_result`.

``python -m tests.docs.diagrams`` rewrites the generated part of docs/concepts.md;
tests/docs/test_diagrams.py fails when the page differs from what this module generates.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import random
import re
import sys
import typing
from collections.abc import Callable, Generator
from pathlib import Path

import attrs

from eightyeightpay import Credentials, Freshness, Policy, Token, TokenMachine
from eightyeightpay.credentials import CacheKey
from eightyeightpay.fleet import (
    BudgetRequest,
    Done,
    FleetEffect,
    Purpose,
    Sleep,
    StoredToken,
    StoreFault,
    store_call,
    store_result,
)
from eightyeightpay.machine import Effect, Exchange, Flight, Result, SendTokenRequest, Settled
from eightyeightpay.plugins.sandbox import (
    DEFAULT_API_KEY,
    DEFAULT_MERCHANT_ID,
    FakeClock,
    Fault,
    Sandbox,
    SandboxTransport,
)
from eightyeightpay.policy import call_deadline

PAGE = Path(__file__).resolve().parents[2] / "docs" / "concepts.md"
END = "<!-- END generated -->"

CREDENTIALS = Credentials(DEFAULT_API_KEY, DEFAULT_MERCHANT_ID)


def markdown(text: str) -> str:
    """reStructuredText roles and literals of a docstring as Markdown code spans."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")


def first_line(cls: type) -> str:
    """The first line of a class's docstring, in Markdown, without an ``Effect:`` prefix."""
    line = inspect.cleandoc(cls.__doc__ or "").splitlines()[0]
    return markdown(line.removeprefix("Effect: "))


def member_docs(enum: type) -> dict[str, str]:
    """The docstring written under each member of ``enum`` in its source."""
    tree = ast.parse(inspect.getsource(sys.modules[enum.__module__]))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == enum.__name__:
            body = node.body
            for statement, following in itertools.pairwise(body):
                if (
                    isinstance(statement, ast.Assign)
                    and isinstance(statement.targets[0], ast.Name)
                    and isinstance(following, ast.Expr)
                    and isinstance(following.value, ast.Constant)
                ):
                    found[statement.targets[0].id] = markdown(str(following.value.value))
    return found


# --------------------------------------------------------------------------- decisions


@attrs.frozen
class Probe:
    """One question put to ``TokenMachine.decide_and_start`` and its answer."""

    state: str
    """The token's freshness (or ``no token``)."""
    condition: str
    """What else holds at that moment."""
    decision: type
    """The class of the decision the machine returned."""


def _machine() -> TokenMachine:
    return TokenMachine(CREDENTIALS, Policy(), random.Random(0))


def _token(machine: TokenMachine) -> Token:
    return Token.issue(
        "header.payload.signature",
        "sess_diagram",
        sent_at=0.0,
        lifetime=machine.policy.expected_lifetime,
        merchant_id=CREDENTIALS.merchant_id,
        policy=machine.policy,
    )


def probes() -> list[Probe]:
    """Ask the machine what a caller does in each state, under each condition that matters."""
    results: list[Probe] = []

    def ask(
        state: str, condition: str, setup: Callable[[TokenMachine], float], wait: float = 0.0
    ) -> None:
        machine = _machine()
        now = setup(machine)
        if machine.token is not None:
            assert machine.token.freshness(now).name == state
        results.append(
            Probe(
                state,
                condition,
                type(machine.decide_and_start(now, call_deadline(machine.policy, now, wait))),
            )
        )

    def with_token(
        at: Callable[[Token], float], *, flight: bool = False, spent: bool = False
    ) -> Callable[[TokenMachine], float]:
        def setup(machine: TokenMachine) -> float:
            token = machine.token = _token(machine)
            now = at(token)
            if flight:  # another caller started a refresh a moment ago
                machine.flight = Flight(1, now - 0.1, background=True)
            if spent:
                for _ in range(machine.policy.per_minute):
                    machine.window = machine.window.record(now - 1.0)
            return now

        return setup

    def fresh(token: Token) -> float:
        return token.sent_at

    def stale(token: Token) -> float:
        return token.fresh_until

    def expired(token: Token) -> float:
        return token.usable_until

    ask("FRESH", "", with_token(fresh))
    ask("STALE", "no refresh in flight", with_token(stale))
    ask("STALE", "a refresh is already in flight", with_token(stale, flight=True))
    ask("STALE", "the rate windows allow no request now", with_token(stale, spent=True))
    ask("EXPIRED", "no refresh in flight", with_token(expired))
    ask("EXPIRED", "a refresh is in flight", with_token(expired, flight=True))
    ask(
        "EXPIRED",
        "the rate windows (or a backoff) allow no request before the caller's deadline",
        with_token(expired, spent=True),
    )
    ask(
        "EXPIRED",
        "the rate windows (or a transient failure's backoff) allow a request by the deadline",
        with_token(expired, spent=True),
        wait=120.0,
    )
    return results


def freshness_edges() -> list[tuple[str, str, str]]:
    """The time transitions between states, checked against ``Token.freshness``."""
    machine = _machine()
    token = _token(machine)
    edges: list[tuple[str, str, str]] = []
    for attribute in ("fresh_until", "usable_until"):
        moment = getattr(token, attribute)
        before, after = token.freshness(moment - 1e-6), token.freshness(moment)
        assert before is not after
        edges.append((before.name, after.name, f"{attribute} passes"))
    return edges


# --------------------------------------------------------------------------- the fleet protocol


class DictStore:
    """Just enough of a fleet store to run the protocol: one process's view of it."""

    def __init__(self) -> None:
        self.token: StoredToken | None = None
        self.ttl = 0.0
        self.lock: str | None = None
        self.cooldown = 0.0
        self.down = False

    def read(self, key: CacheKey) -> tuple[StoredToken | None, float, float]:
        if self.down:
            raise ConnectionError("store down")
        return self.token, self.ttl, self.cooldown

    def extend(self, key: CacheKey, owner: str, ttl: float) -> bool:
        return self.lock == owner

    def acquire(self, key: CacheKey, owner: str, ttl: float) -> bool:
        if self.lock is not None:
            return False
        self.lock = owner
        return True

    def reserve(self, key: CacheKey, request: BudgetRequest) -> tuple[float, str]:
        return 0.0, request.epoch  # always allowed, and never lost

    def join(self, key: CacheKey, member: str, ttl: float) -> int:
        return 1

    def spent(
        self, key: CacheKey, purpose: Purpose, minute_span: float, hour_span: float
    ) -> tuple[int, int]:
        return 0, 0

    def write(self, key: CacheKey, token: StoredToken, ttl: float) -> None:
        self.token, self.ttl = token, ttl

    def cool_down(self, key: CacheKey, seconds: float) -> None:
        self.cooldown = seconds

    def release(self, key: CacheKey, owner: str) -> None:
        if self.lock == owner:
            self.lock = None


@attrs.frozen
class Step:
    """One effect the protocol yielded, who performed it, and the result sent back."""

    effect: type
    method: str
    result: type


def run_fleet(
    store: DictStore, sandbox: Sandbox, during_sleep: Callable[[], None] = lambda: None
) -> tuple[list[Step], Settled]:
    """Run one fleet refresh, performing its effects on ``store`` and the emulator."""
    clock = FakeClock()
    transport = SandboxTransport(sandbox, clock)
    machine = TokenMachine(CREDENTIALS, Policy(), random.Random(0), fleet=True, instance="doc")
    decision = machine.decide_and_start(clock())
    flight = decision.flight  # type: ignore[union-attr]
    protocol: Generator[Effect, Result, Settled] = machine.refresh(flight)
    steps: list[Step] = []
    result: Result | None = None
    while True:
        try:
            effect = next(protocol) if result is None else protocol.send(result)
        except StopIteration as stop:
            return steps, stop.value
        if isinstance(effect, SendTokenRequest):
            response = transport.send(effect.request, timeout=effect.timeout)
            result = Exchange(response, None, clock())
            method = f"POST {effect.request.path}"
        elif isinstance(effect, Sleep):
            during_sleep()
            clock.advance(effect.seconds)
            result = Done(clock())
            method = "sleep"
        else:
            store_effect: FleetEffect = effect
            method, args = store_call(store_effect)
            try:
                value = getattr(store, method)(*args)
            except ConnectionError as error:
                result = StoreFault(str(error), clock())
            else:
                result = store_result(store_effect, value, clock())
        steps.append(Step(type(effect), method, type(result)))


@attrs.frozen
class Scenario:
    """A fleet refresh run under one condition, and what it did."""

    title: str
    steps: list[Step]
    outcome: str


def scenarios() -> list[Scenario]:
    """The fleet protocol under the conditions its effects exist for."""
    found: list[Scenario] = []

    def outcome(settled: Settled) -> str:
        if settled.token is not None:
            return "Settled with a token"
        return f"Settled with {type(settled.error).__name__}"

    store = DictStore()
    steps, settled = run_fleet(store, Sandbox())
    found.append(Scenario("this process takes the lock and sends", steps, outcome(settled)))

    written = store.token
    busy = DictStore()
    busy.lock = "another-process:1"

    def the_holder_writes() -> None:
        busy.token, busy.ttl, busy.lock = written, 55.0, None

    steps, settled = run_fleet(busy, Sandbox(), during_sleep=the_holder_writes)
    found.append(Scenario("another process holds the lock", steps, outcome(settled)))

    limited = Sandbox()
    limited.inject(Fault.status(429))
    steps, settled = run_fleet(DictStore(), limited)
    found.append(Scenario("88Pay answers 429", steps, outcome(settled)))

    down = DictStore()
    down.down = True
    steps, settled = run_fleet(down, Sandbox())
    found.append(Scenario("the store is unreachable", steps, outcome(settled)))
    return found


def dot_text(text: str) -> str:
    """``text`` as a double-quoted Graphviz string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def graphviz_block(alt: str, lines: list[str]) -> list[str]:
    """A MyST ``{graphviz}`` block: Sphinx draws it with ``dot`` when the docs are built."""
    return ["```{graphviz}", f":alt: {alt}", "", *lines, "```", ""]


# --------------------------------------------------------------------------- rendering


def _effects_in_order(runs: list[Scenario]) -> list[type]:
    declared = list(typing.get_args(Effect))
    seen: list[type] = []
    for run in runs:
        for step in run.steps:
            if step.effect not in seen:
                seen.append(step.effect)
    missing = [effect.__name__ for effect in declared if effect not in seen]
    assert not missing, f"effects the scenarios never reach: {missing}"
    return seen


def state_graph(asked: list[Probe]) -> list[str]:
    """The freshness states, the time that moves a token on, and each state's decisions."""
    states = [member.name for member in Freshness]
    lines = [
        "digraph freshness {",
        "    rankdir=LR; nodesep=0.5;",
        '    node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontsize=11];',
        "    edge [fontsize=10];",
        '    start [shape=point, width=0.12, label=""];',
        f'    start -> {states[-1]} [label=" no token yet"];',
    ]
    for source, target, label in freshness_edges():
        lines.append(f"    {source} -> {target} [label={dot_text(' ' + label)}];")
    for state in states:
        decisions = list(
            dict.fromkeys(probe.decision.__name__ for probe in asked if probe.state == state)
        )
        lines.append(f"    {state} -> {state} [label={dot_text(' / '.join(decisions))}];")
    for state in states[1:]:
        lines.append(
            f"    {state} -> {states[0]} [style=dashed, "
            f"label={dot_text(' the refresh settles with a token')}];"
        )
    lines.append("}")
    return lines


PERFORMERS = {"fleet store": "#dbe9f6", "88Pay": "#fbe3c8", "the driver": "#eeeeee"}
"""Who performs an effect, and the colour of its steps in the picture."""


def performer(effect: type) -> str:
    """Who performs ``effect``: the fleet store, 88Pay (over the transport) or the driver."""
    if effect is SendTokenRequest:
        return "88Pay"
    return "the driver" if effect is Sleep else "fleet store"


def protocol_graph(runs: list[Scenario]) -> list[str]:
    """One column per scenario: the effects the protocol yielded, in order, each arrow
    labelled with the result the driver sent back, and how the flight settled."""
    lines = [
        "digraph protocol {",
        "    rankdir=TB; nodesep=0.25; ranksep=0.3; newrank=true;",
        '    node [shape=box, style="rounded,filled", fontsize=10, width=1.6];',
        "    edge [fontsize=9];",
    ]
    for index, run in enumerate(runs):
        lines += [
            f"    subgraph cluster_{index} {{ label={dot_text(run.title)}; fontsize=10;",
            '        style="rounded"; color="#888888";',
        ]
        previous, result = "", ""
        for number, step in enumerate(run.steps):
            name = f"s{index}_{number}"
            how = f"store {step.method}" if performer(step.effect) == "fleet store" else step.method
            label = dot_text(f"{step.effect.__name__}\n{how}")
            colour = PERFORMERS[performer(step.effect)]
            lines.append(f'        {name} [label={label}, fillcolor="{colour}"];')
            if previous:
                lines.append(f"        {previous} -> {name} [label={dot_text(' ' + result)}];")
            previous, result = name, step.result.__name__
        lines.append(
            f'        end{index} [label={dot_text(run.outcome)}, shape=oval, fillcolor="white"];'
        )
        lines.append(f"        {previous} -> end{index} [label={dot_text(' ' + result)}];")
        lines.append("    }")
    legend = " ".join(
        f'<td bgcolor="{colour}">&nbsp;{who}&nbsp;</td>' for who, colour in PERFORMERS.items()
    )
    lines += [
        '    legend [shape=plaintext, style="", label=<<table border="0" cellspacing="4">'
        f"<tr><td>performed by:</td>{legend}</tr></table>>];",
        "    { rank=min; legend; }",
        *(f"    legend -> s{index}_0 [style=invis];" for index in range(len(runs))),
        "}",
    ]
    return lines


def render() -> str:
    """The generated Markdown of the machine: both diagrams and their tables."""
    states = [member.name for member in Freshness]
    docs = member_docs(Freshness)
    asked = probes()
    lines = graphviz_block(
        "FRESH, STALE and EXPIRED, and what decide_and_start returns in each", state_graph(asked)
    )
    lines += ["| state | meaning (`Freshness`) |", "|---|---|"]
    lines += [f"| {state} | {docs[state]} |" for state in states]
    lines += [
        "",
        "| state | when | `decide_and_start(now, until)` returns | which means |",
        "|---|---|---|---|",
    ]
    for probe in asked:
        lines.append(
            f"| {probe.state} | {probe.condition or 'always'} | `{probe.decision.__name__}` "
            f"| {first_line(probe.decision)} |"
        )
    runs = scenarios()
    lines += [""]
    lines += graphviz_block(
        "The fleet refresh protocol: its effects and their results", protocol_graph(runs)
    )
    lines += ["| scenario | effects, in order | outcome |", "|---|---|---|"]
    for run in runs:
        order = " → ".join(f"`{step.effect.__name__}`" for step in run.steps)
        lines.append(f"| {run.title} | {order} | {run.outcome} |")
    lines += [
        "",
        "| effect | performed as | result sent back | what it asks for |",
        "|---|---|---|---|",
    ]
    for effect in _effects_in_order(runs):
        steps = [step for run in runs for step in run.steps if step.effect is effect]
        how = f"store `{steps[0].method}`"
        if effect is Sleep:
            how = "the driver sleeps"
        elif effect is SendTokenRequest:
            how = f"`{steps[0].method}`"
        result = steps[0].result.__name__
        lines.append(f"| `{effect.__name__}` | {how} | `{result}` | {first_line(effect)} |")
    return "\n".join(lines) + "\n"


REGIONS: dict[str, Callable[[], str]] = {"machine": render}
"""Each generated part of docs/concepts.md, by the name in its markers."""


def begin(region: str) -> str:
    """The opening marker of one generated part."""
    return (
        f"<!-- BEGIN generated by tests/docs/diagrams.py ({region}); "
        "run `python -m tests.docs.diagrams` -->"
    )


def page_with(text: str, region: str, generated: str) -> str:
    """``text`` with the generated part ``region`` replaced by ``generated``."""
    head, rest = text.split(begin(region), 1)
    _, tail = rest.split(END, 1)
    return f"{head}{begin(region)}\n{generated}{END}{tail}"


def current_page(text: str) -> str:
    """``text`` with every generated part regenerated from the code."""
    for region, generate in REGIONS.items():
        text = page_with(text, region, generate())
    return text


if __name__ == "__main__":
    PAGE.write_text(current_page(PAGE.read_text(encoding="utf-8")), encoding="utf-8")
