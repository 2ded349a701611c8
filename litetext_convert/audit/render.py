"""The audit report: findings (what, affects, cost, cause, fix), tensor classes, behaviour per stage."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from litetext_convert.audit.findings import AuditResult
from litetext_convert.terminal import literal, markup_safe, shown

COST_STAGES = ("features (detector-facing)", "pooled (CLIP-style)")


def render_audit(console: Console, result: AuditResult, debug: bool = False) -> None:
    _render_header(console, result)
    _render_findings(console, result)
    if result.behaviour:
        _render_behaviour(console, result.behaviour, debug)
    if result.detector:
        _render_detector(console, result.detector, debug)
    for note in result.notes:
        console.print(f"note: {shown(note)}", markup=False, highlight=False, soft_wrap=True)
    deviations = len(result.deviations)
    if result.passed:
        console.print("[green]PASS[/green]: the folder computes what the original computes")
    else:
        console.print(f"[red]FAIL[/red]: {deviations} finding{'s' if deviations != 1 else ''} change what the folder computes")


def _render_header(console: Console, result: AuditResult) -> None:
    console.print(f"[bold]audit[/bold] {markup_safe(result.target)}  against  {markup_safe(result.checkpoint)}", highlight=False)
    console.print(f"original: text {result.original.get('text', '?')}, {result.original.get('num_heads')} heads "
                  f"({result.original.get('num_heads_source')}), context {result.context_length}", highlight=False)
    classes = ", ".join(f"{name} {count}" for name, count in sorted(result.tensors["classes"].items()))
    console.print(f"tensors: {result.tensors['in_folder']} in the folder, {result.tensors['expected']} expected: {classes}",
                  highlight=False)
    for part in result.tensors["dropped_source_parts"]:
        console.print(f"  not in the image model (original's {part['keys']} keys, e.g. {markup_safe(part['example'])}): {markup_safe(part['reason'])}",
                      highlight=False, soft_wrap=True)


def _render_findings(console: Console, result: AuditResult) -> None:
    # Subjects are code (`Sam3LiteTextModel.forward(attention_mask=...)`): below 120 columns they leave
    # the table for the lines under it, so that no word is cut in two.
    wide = console.width >= 120
    table = Table(title="findings (✗ changes what the folder computes)")
    for column in ("#", "level", "finding", *(("subject",) if wide else ()), "cost: features / pooled"):
        table.add_column(column, overflow="fold")
    for number, finding in enumerate(result.findings, 1):
        marker = "[red]✗[/red] " if finding.deviates else "[dim]·[/dim] "
        cost = " / ".join(_fmt(finding.cost.get(stage)) for stage in COST_STAGES) if finding.cost else ""
        if "vision FPN (relative)" in finding.cost:
            cost = f"FPN {_fmt(finding.cost['vision FPN (max abs)'])} ({_fmt(finding.cost['vision FPN (relative)'])} rel)"
        subject = (literal(finding.subject),) if wide else ()
        table.add_row(str(number), finding.level, marker + markup_safe(finding.kind), *subject, cost)
    console.print(table)
    for number, finding in enumerate(result.findings, 1):
        console.print(f"[bold]{number}. {markup_safe(finding.kind)}[/bold] ({finding.level})", highlight=False)
        if not wide:
            console.print(f"   subject: {shown(finding.subject)}", markup=False, highlight=False, soft_wrap=True)
        if finding.detail:
            console.print(f"   {shown(finding.detail)}", markup=False, highlight=False, soft_wrap=True)
        for label, text in (("affects", finding.affects), ("cause", finding.cause), ("fix", finding.fix)):
            console.print(f"   {label}: {shown(text)}", markup=False, highlight=False, soft_wrap=True)


def _render_behaviour(console: Console, behaviour: dict, debug: bool) -> None:
    runs = behaviour["runs"]
    stage_table = Table(title=f"text behaviour against the original ({behaviour['dtype']}, "
                        f"{len(behaviour['prompts'])} prompts, real tokens only): max abs")
    stage_table.add_column("stage")
    for name in runs:
        stage_table.add_column(name, justify="right")
    names = [stage["name"] for stage in next(iter(runs.values()))]
    visible = names if debug else [n for n in names if not n.startswith("layer.")]
    for index, name in enumerate(names):
        if name not in visible:
            continue
        cells = []
        for stages in runs.values():
            stage = stages[index]
            cells.append(_mark(stage["max_abs"], stage["passed"]))
        stage_table.add_row(literal(name), *cells)
    console.print(stage_table)
    if not behaviour["recipe_passed"]:
        console.print("[yellow]the recipe alone does not reproduce the original: re-convert[/yellow]")


def _render_detector(console: Console, detector: dict, debug: bool) -> None:
    from litetext_convert.audit.detector import summary_rows

    det = Table(title=f"whole detector against {detector['as_stored']['original']} "
                f"({detector['as_stored']['dtype']}): max abs")
    for column in ("stage", "as stored", "with the recipe"):
        det.add_column(column, justify="right" if column != "stage" else "left")
    for name, stored, stored_ok, fixed, fixed_ok in summary_rows(detector):
        if not debug and name.startswith("detr.decoder.layer"):
            continue
        det.add_row(name, _mark(stored, stored_ok), _mark(fixed, fixed_ok))
    console.print(det)


def _mark(value, passed: bool) -> str:
    return _fmt(value) if passed else f"[red]{_fmt(value)} ✗[/red]"


def _fmt(value) -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.3g}"
