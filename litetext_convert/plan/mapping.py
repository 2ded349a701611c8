"""Compile configs/mapping.toml into a conversion plan, and prove the plan total and injective.

The plan is computed from key names and shapes alone (meta or mmap tensors), so it is cheap on a
full-size checkpoint and can be checked before a single byte is written.
"""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from litetext_convert.errors import MappingError
from litetext_convert.paths import configs_dir
from litetext_convert.plan import ops

_PLACEHOLDER = re.compile(r"\{(?P<group>[A-Za-z_]\w*)(?P<offset>[+-]\d+)?\}")


@dataclass(frozen=True)
class Rule:
    index: int
    source: re.Pattern
    targets: tuple[str, ...]
    ops: tuple[str, ...]
    rename: dict[str, dict[str, str]]
    note: str
    gather: str = ""  # many-to-one: sources differing only in this group form one step, in its numeric order

    def targets_for(self, match: re.Match) -> list[str]:
        groups = {name: self.rename.get(name, {}).get(value, value) for name, value in match.groupdict().items()}

        def fill(placeholder: re.Match) -> str:
            value = groups[placeholder.group("group")]
            offset = placeholder.group("offset")
            return str(int(value) + int(offset)) if offset else value

        return [_PLACEHOLDER.sub(fill, template) for template in self.targets]


@dataclass(frozen=True)
class Drop:
    source: re.Pattern
    reason: str


@dataclass(frozen=True)
class ExpectedMissing:
    target: re.Pattern
    reason: str


@dataclass(frozen=True)
class MappingTable:
    rules: tuple[Rule, ...]
    drops: tuple[Drop, ...]
    expected_missing: tuple[ExpectedMissing, ...]
    path: Path
    base: Path | None = None  # a composed table: the table whose rules it reuses (see `[compose]`)


@dataclass(frozen=True)
class Step:
    """One source tensor becoming one or more target tensors (or, for a gathering rule, several
    source tensors becoming one: `gathered` lists them in order and `source` is the first)."""

    source: str
    targets: tuple[str, ...]
    ops: tuple[str, ...]
    rule: int
    gathered: tuple[str, ...] = ()

    @property
    def sources(self) -> tuple[str, ...]:
        return self.gathered or (self.source,)


@dataclass
class Plan:
    steps: list[Step]
    dropped: dict[str, str]  # source key -> reason
    target_shapes: dict[str, tuple[int, ...]]
    target_dtypes: dict[str, torch.dtype]
    step_of_target: dict[str, Step] = field(default_factory=dict)

    def __post_init__(self):
        self.step_of_target = {target: step for step in self.steps for target in step.targets}

    @property
    def mapped_sources(self) -> int:
        return sum(len(step.sources) for step in self.steps)

    def drops_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for reason in self.dropped.values():
            counts[reason] += 1
        return dict(counts)


def default_table_path() -> Path:
    return configs_dir() / "mapping.toml"


def load_table(path: Path | None = None) -> MappingTable:
    """Read and validate the table: regexes compile, templates only use groups the regex captures."""
    path = path or default_table_path()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MappingError(f"cannot read mapping table {path}: {exc}") from None
    problems: list[str] = []
    rules = tuple(_compile_rule(i, entry, problems) for i, entry in enumerate(data.get("rule", [])))
    drops = tuple(_compile_drop(entry, problems) for entry in data.get("drop", []))
    missing = tuple(_compile_expected_missing(entry, problems) for entry in data.get("expected_missing", []))
    unknown_sections = set(data) - {"rule", "drop", "expected_missing", "compose"}
    if unknown_sections:
        problems.append(f"unknown sections: {sorted(unknown_sections)}")
    base = None
    if "compose" in data and not problems:
        base, rules, drops, missing = _compose(path, data["compose"], rules, drops, missing, problems)
    if problems:
        raise MappingError(f"mapping table {path} is invalid ({len(problems)} problems)", problems)
    return MappingTable(rules, drops, missing, path, base)


def _compose(path: Path, compose: dict, rules, drops, missing, problems: list[str]):
    """`[compose]`: reuse another table's rules under a target prefix, minus the drops this table
    supersedes (named by their exact regex, so a base drop never disappears by accident)."""
    unknown = set(compose) - {"base", "target_prefix", "supersedes"}
    if unknown or not compose.get("base"):
        problems.append(f"[compose] needs 'base' (and may have target_prefix, supersedes); unknown fields {sorted(unknown)}")
        return None, rules, drops, missing
    base = load_table(path.parent / compose["base"])
    prefix = compose.get("target_prefix", "")
    superseded = set(compose.get("supersedes", []))
    absent = superseded - {drop.source.pattern for drop in base.drops}
    if absent:
        problems.append(f"[compose] supersedes drops the base table does not have: {sorted(absent)}")
    shift = len(base.rules)
    prefixed = tuple(
        Rule(r.index, r.source, tuple(prefix + t for t in r.targets), r.ops, r.rename, r.note, r.gather) for r in base.rules
    )
    own = tuple(Rule(r.index + shift, r.source, r.targets, r.ops, r.rename, r.note, r.gather) for r in rules)
    kept_drops = tuple(d for d in base.drops if d.source.pattern not in superseded)
    base_missing = tuple(ExpectedMissing(re.compile(re.escape(prefix) + m.target.pattern), m.reason) for m in base.expected_missing)
    return base.path, prefixed + own, kept_drops + drops, base_missing + missing


def _compile(pattern: str, where: str, problems: list[str]) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        problems.append(f"{where}: bad regex {pattern!r}: {exc}")
        return re.compile(r"(?!)")


def _compile_rule(index: int, entry: dict, problems: list[str]) -> Rule:
    where = f"rule {index + 1} ({entry.get('source', '?')})"
    for required in ("source", "target", "note"):
        if not entry.get(required):
            problems.append(f"{where}: missing '{required}'")
    source = _compile(entry.get("source", "(?!)"), where, problems)
    targets = entry.get("target", [])
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    op_names = tuple(entry.get("ops", []))
    for name in op_names:
        if name not in ops.OPERATIONS:
            problems.append(f"{where}: unknown operation {name!r}")
    if all(name in ops.OPERATIONS for name in op_names) and len(targets) != ops.fan_out(list(op_names)):
        problems.append(f"{where}: operations produce {ops.fan_out(list(op_names))} tensors but {len(targets)} targets are named")
    groups = set(source.groupindex)
    for template in targets:
        for placeholder in _PLACEHOLDER.finditer(template):
            if placeholder.group("group") not in groups:
                problems.append(f"{where}: target {template!r} uses {{{placeholder.group('group')}}}, not captured by the source")
    rename = entry.get("rename", {})
    for group in rename:
        if group not in groups:
            problems.append(f"{where}: rename of {group!r}, not captured by the source")
    gather = entry.get("gather", "")
    if gather:
        if gather not in groups:
            problems.append(f"{where}: gathers over {gather!r}, not captured by the source")
        if any(p.group("group") == gather for t in targets for p in _PLACEHOLDER.finditer(t)):
            problems.append(f"{where}: target names the gathered group {{{gather}}}")
        if not op_names or op_names[0] not in ops.OPERATIONS or not ops.OPERATIONS[op_names[0]].gathers:
            problems.append(f"{where}: a gathering rule must start with a gathering operation")
    elif any(ops.OPERATIONS[n].gathers for n in op_names if n in ops.OPERATIONS):
        problems.append(f"{where}: a gathering operation needs 'gather' (the group that numbers the sources)")
    unknown = set(entry) - {"source", "target", "ops", "rename", "note", "gather"}
    if unknown:
        problems.append(f"{where}: unknown fields {sorted(unknown)}")
    return Rule(index, source, targets, op_names, rename, entry.get("note", ""), gather)


def _compile_drop(entry: dict, problems: list[str]) -> Drop:
    where = f"drop ({entry.get('source', '?')})"
    if not entry.get("reason"):
        problems.append(f"{where}: every drop needs a reason")
    return Drop(_compile(entry.get("source", "(?!)"), where, problems), entry.get("reason", ""))


def _compile_expected_missing(entry: dict, problems: list[str]) -> ExpectedMissing:
    where = f"expected_missing ({entry.get('target', '?')})"
    if not entry.get("reason"):
        problems.append(f"{where}: every expected-missing entry needs a reason")
    return ExpectedMissing(_compile(entry.get("target", "(?!)"), where, problems), entry.get("reason", ""))


def build_plan(
    table: MappingTable,
    source_tensors: dict[str, torch.Tensor],
    expected_targets: dict[str, torch.Tensor],
    ctx: ops.OpContext,
) -> Plan:
    """Match every source key, apply the operations to shapes only, and check the result against
    the target model's parameters and buffers. Collects every problem before failing."""
    problems: list[str] = []
    steps: list[Step] = []
    dropped: dict[str, str] = {}
    for key in source_tensors:
        matches = [rule for rule in table.rules if rule.source.fullmatch(key)]
        drop_matches = [drop for drop in table.drops if drop.source.fullmatch(key)]
        if len(matches) + len(drop_matches) == 0:
            problems.append(f"unmapped source key: {key}")
        elif len(matches) + len(drop_matches) > 1:
            names = [f"rule {r.index + 1}" for r in matches] + [f"drop '{d.reason[:40]}'" for d in drop_matches]
            problems.append(f"ambiguous source key: {key} matches {', '.join(names)}")
        elif drop_matches:
            dropped[key] = drop_matches[0].reason
        else:
            rule = matches[0]
            steps.append(Step(key, tuple(rule.targets_for(rule.source.fullmatch(key))), rule.ops, rule.index))
    steps = _gather_steps(table, steps, problems)

    target_shapes: dict[str, tuple[int, ...]] = {}
    target_dtypes: dict[str, torch.dtype] = {}
    producers: dict[str, str] = {}
    for step in steps:
        metas = [torch.empty(source_tensors[s].shape, dtype=source_tensors[s].dtype, device="meta") for s in step.sources]
        try:
            outputs = ops.apply_gathered(list(step.ops), metas, ctx)
        except MappingError as exc:
            problems.append(f"{step.source}: {exc.message}")
            continue
        for target, output in zip(step.targets, outputs):
            if target in producers:
                problems.append(f"target collision: {target} produced by both {producers[target]} and {step.source}")
                continue
            producers[target] = step.source
            target_shapes[target] = tuple(output.shape)
            target_dtypes[target] = output.dtype

    for target, shape in target_shapes.items():
        expected = expected_targets.get(target)
        if expected is None:
            problems.append(f"unexpected target: {target} (from {producers[target]}) is not in the transformers model")
        elif tuple(expected.shape) != shape:
            problems.append(
                f"shape mismatch: {target} from {producers[target]} is {list(shape)}, the model expects {list(expected.shape)}"
            )
    for target in expected_targets:
        if target not in target_shapes and not any(m.target.fullmatch(target) for m in table.expected_missing):
            problems.append(f"missing target: {target} is produced by no source key")

    if problems:
        raise MappingError(
            f"the mapping does not cover this checkpoint ({len(problems)} problem{'s' if len(problems) > 1 else ''})",
            problems,
            hint="configs/mapping.toml declares every rule and drop; --json lists every problem",
        )
    return Plan(steps, dropped, target_shapes, target_dtypes)


def _gather_steps(table: MappingTable, steps: list[Step], problems: list[str]) -> list[Step]:
    """Merge the one-source steps of each gathering rule into one step per target, its sources
    ordered by the gathered group, which must number them 0..N-1 with no gap."""
    gathering = {rule.index: rule for rule in table.rules if rule.gather}
    if not gathering:
        return steps
    merged: dict[tuple[int, tuple[str, ...]], list[tuple[int, str]]] = {}
    out: list[Step] = []
    for step in steps:
        rule = gathering.get(step.rule)
        if rule is None:
            out.append(step)
            continue
        group = merged.setdefault((step.rule, step.targets), [])
        if not group:
            out.append(Step(step.source, step.targets, step.ops, step.rule))  # placeholder, filled below
        group.append((int(rule.source.fullmatch(step.source).group(rule.gather)), step.source))
    for position, step in enumerate(out):
        group = merged.get((step.rule, step.targets)) if step.rule in gathering else None
        if group is None:
            continue
        group.sort()
        numbers = [n for n, _ in group]
        if numbers != list(range(len(numbers))):
            problems.append(f"rule {step.rule + 1} gathers {{{gathering[step.rule].gather}}} = {numbers}, expected 0..{len(numbers) - 1}")
        sources = tuple(key for _, key in group)
        out[position] = Step(sources[0], step.targets, step.ops, step.rule, sources)
    return out
