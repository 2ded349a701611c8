"""Compile a family's mapping tables (configs/mapping.toml + configs/families/<id>/mapping_<target>.toml,
merged in order) into a conversion plan, and prove the plan total and injective.

The plan is computed from key names and shapes alone (meta or mmap tensors), so it is cheap on a
full-size checkpoint and can be checked before a single byte is written.
"""

from __future__ import annotations

import dataclasses

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import tomllib
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


# How an expected-missing target is written; each fill says what the folder then holds.
FILLS = {"zeros": torch.zeros}


@dataclass(frozen=True)
class ExpectedMissing:
    target: re.Pattern
    reason: str
    fill: str


@dataclass(frozen=True)
class MappingTable:
    rules: tuple[Rule, ...]
    drops: tuple[Drop, ...]
    expected_missing: tuple[ExpectedMissing, ...]
    paths: tuple[Path, ...]  # every file read, in order (a composed table's base files first)
    base: tuple[Path, ...] = ()  # a composed table: the files whose rules it reuses (see `[compose]`)

    @property
    def path(self) -> Path:
        """The first (shared) table."""
        return self.paths[0]

    def to_json(self) -> list[dict]:
        """Every table file and its sha256, for the conversion record."""
        root = configs_dir()
        return [
            {
                "file": str(path.relative_to(root)) if path.is_relative_to(root) else path.name,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
            for path in self.paths
        ]


@dataclass(frozen=True)
class Fill:
    """A target no source key produces, written with a stated fill (an `expected_missing` entry)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    fill: str
    reason: str

    def tensor(self) -> torch.Tensor:
        return FILLS[self.fill](self.shape, dtype=self.dtype)


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
    filled: dict[str, Fill] = field(default_factory=dict)  # expected-missing targets, written with their fill
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

    def fills_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for fill in self.filled.values():
            counts[f"{fill.fill}: {fill.reason}"] += 1
        return dict(counts)


def default_table_path() -> Path:
    """The shared SAM3-detector table (configs/mapping.toml); a family adds its own after it."""
    return configs_dir() / "mapping.toml"


def family_table_paths(family_id: str = "sam3_litetext", target: str = "image") -> list[Path]:
    from litetext_convert.families import family_by_id

    return family_by_id(family_id).table_paths(target)


def load_table(path: Path | list[Path] | None = None) -> MappingTable:
    """Read and validate one table, or several merged in order (default: SAM3-LiteText's image
    tables): regexes compile, templates only use groups the regex captures."""
    paths = family_table_paths() if path is None else [path] if isinstance(path, Path) else list(path)
    problems: list[str] = []
    rules: list[Rule] = []
    drops: list[Drop] = []
    missing: list[ExpectedMissing] = []
    read: list[Path] = []
    base: tuple[Path, ...] = ()
    for table_path in paths:
        try:
            data = tomllib.loads(table_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise MappingError(f"cannot read mapping table {table_path}: {exc}") from None
        if "compose" in data:
            composed = _compose(table_path, data["compose"], len(rules), problems)
            if composed is not None:
                base = composed.paths
                read += composed.paths
                rules += composed.rules
                drops += composed.drops
                missing += composed.expected_missing
        # Rule numbers run on across the merged files, so a problem names one rule unambiguously.
        rules += [_compile_rule(len(rules) + i, entry, problems) for i, entry in enumerate(data.get("rule", []))]
        drops += [_compile_drop(entry, problems) for entry in data.get("drop", [])]
        missing += [_compile_expected_missing(entry, problems) for entry in data.get("expected_missing", [])]
        read.append(table_path)
        unknown_sections = set(data) - {"rule", "drop", "expected_missing", "compose"}
        if unknown_sections:
            problems.append(f"{table_path.name}: unknown sections: {sorted(unknown_sections)}")
    if problems:
        names = " + ".join(str(p) for p in paths)
        raise MappingError(f"mapping table {names} is invalid ({len(problems)} problems)", problems)
    return MappingTable(tuple(rules), tuple(drops), tuple(missing), tuple(read), base)


def _compose(path: Path, compose: dict, first_index: int, problems: list[str]) -> MappingTable | None:
    """`[compose]`: reuse other tables' rules under a target prefix, minus the drops this table
    supersedes (named by their exact regex, so a base drop never disappears by accident).
    `base` is a file or a list of files relative to configs/, merged in order like a family's tables."""
    unknown = set(compose) - {"base", "target_prefix", "supersedes"}
    if unknown or not compose.get("base"):
        problems.append(f"{path.name}: [compose] needs 'base' (and may have target_prefix, supersedes); unknown fields {sorted(unknown)}")
        return None
    names = [compose["base"]] if isinstance(compose["base"], str) else list(compose["base"])
    base = load_table([configs_dir() / name for name in names])
    prefix = compose.get("target_prefix", "")
    superseded = set(compose.get("supersedes", []))
    absent = superseded - {drop.source.pattern for drop in base.drops}
    if absent:
        problems.append(f"{path.name}: [compose] supersedes drops the base table does not have: {sorted(absent)}")
    rules = tuple(
        Rule(first_index + r.index, r.source, tuple(prefix + t for t in r.targets), r.ops, r.rename, r.note, r.gather)
        for r in base.rules
    )
    drops = tuple(d for d in base.drops if d.source.pattern not in superseded)
    missing = tuple(
        ExpectedMissing(re.compile(re.escape(prefix) + m.target.pattern), m.reason, m.fill) for m in base.expected_missing
    )
    return MappingTable(rules, drops, missing, base.paths)


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
    if entry.get("fill") not in FILLS:
        problems.append(f"{where}: fill must be one of {sorted(FILLS)}, got {entry.get('fill')!r}")
    unknown = set(entry) - {"target", "reason", "fill"}
    if unknown:
        problems.append(f"{where}: unknown fields {sorted(unknown)}")
    return ExpectedMissing(_compile(entry.get("target", "(?!)"), where, problems), entry.get("reason", ""), entry.get("fill", ""))


@dataclass
class DraftPlan:
    """The plan from the table and the source shapes alone, not yet checked against the model
    (conversion writes from it while transformers' modeling code is still importing)."""

    plan: Plan
    producers: dict[str, str]  # target -> the source key that first produced it
    problems: list[str]


def build_plan(
    table: MappingTable,
    source_tensors: dict[str, torch.Tensor],
    expected_targets: dict[str, torch.Tensor],
    ctx: ops.OpContext,
) -> Plan:
    """Match every source key, apply the operations to shapes only, and check the result against
    the target model's parameters and buffers. Collects every problem before failing."""
    return check_plan(draft_plan(table, source_tensors, ctx), expected_targets, table)


def draft_plan(table: MappingTable, source_tensors: dict[str, torch.Tensor], ctx: ops.OpContext) -> DraftPlan:
    """The table's half of `build_plan`: match every source key and apply the operations to shapes
    only. Its problems are kept, not raised, so that `check_plan` reports them with the model's."""
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

    return DraftPlan(Plan(steps, dropped, target_shapes, target_dtypes), producers, problems)


def check_plan(draft: DraftPlan, expected_targets: dict[str, torch.Tensor], table: MappingTable) -> Plan:
    """The model's half of `build_plan`: every target is a parameter or buffer of the model with the
    model's shape, and every one of those is produced (or expected missing). Raises with every
    problem of both halves."""
    problems = list(draft.problems)
    producers, target_shapes = draft.producers, draft.plan.target_shapes
    for target, shape in target_shapes.items():
        expected = expected_targets.get(target)
        if expected is None:
            problems.append(f"unexpected target: {target} (from {producers[target]}) is not in the transformers model")
        elif tuple(expected.shape) != shape:
            problems.append(
                f"shape mismatch: {target} from {producers[target]} is {list(shape)}, the model expects {list(expected.shape)}"
            )
    filled: dict[str, Fill] = {}
    for target, expected in expected_targets.items():
        if target in target_shapes:
            continue
        declared = next((m for m in table.expected_missing if m.target.fullmatch(target)), None)
        if declared is None:
            problems.append(f"missing target: {target} is produced by no source key")
        else:
            filled[target] = Fill(tuple(expected.shape), expected.dtype, declared.fill, declared.reason)

    if problems:
        raise MappingError(
            f"the mapping does not cover this checkpoint ({len(problems)} problem{'s' if len(problems) > 1 else ''})",
            problems,
            hint=f"{' + '.join(p.name for p in table.paths)} declare every rule and drop; --json lists every problem",
        )
    return dataclasses.replace(draft.plan, filled=filled)


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
