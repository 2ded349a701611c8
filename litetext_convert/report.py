"""Rich rendering of what the stages return. Data in, tables out; no decisions here."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from litetext_convert.folder.records import dtype_label
from litetext_convert.folder.verdict import record_verdict
from litetext_convert.parity.precision import summary_lines as precision_lines
from litetext_convert.terminal import literal, markup_safe


def _count(n: int) -> str:
    return f"{n:,}"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
    return f"{n:.1f} GB"


def render_inspect(console: Console, summary: dict) -> None:
    console.print(f"[bold]{markup_safe(summary['file'])}[/bold]")
    console.print(
        f"format: {summary['format']}  wrapper: {summary['wrapper'] or 'none'}  size: {_bytes(summary['bytes'])}  "
        f"keys: {_count(summary['keys'])}  parameters: {_count(summary['parameters'])}  "
        f"dtypes: {', '.join(f'{k} x{v}' for k, v in summary['dtypes'].items())}"
    )
    if summary.get("family"):
        console.print(f"family: {summary['family']['name']} (converts to transformers {summary['family']['hf_model_class']})")
    if summary["stripped_prefix"]:
        console.print(f"stripped prefix: {markup_safe(repr(summary['stripped_prefix']))} (multi-GPU training)")

    components = Table(title="Components", title_justify="left")
    for column in ("component", "keys", "parameters", "used by Sam3LiteTextModel"):
        components.add_column(column, justify="right" if column in ("keys", "parameters") else "left")
    for name, info in summary["components"].items():
        components.add_row(literal(name), _count(info["keys"]), _count(info["parameters"]), "no (dropped)" if info["extra"] else "yes")
    console.print(components)

    arch = summary["architecture"]
    for section in ("text", "detector"):
        table = Table(title=f"Inferred {section} architecture", title_justify="left")
        table.add_column("field")
        table.add_column("value", justify="right")
        table.add_column("source")
        for field, fact in arch[section].items():
            table.add_row(field, literal(fact["value"]), literal(fact["source"]))
        console.print(table)
    for note in arch["notes"]:
        console.print(f"[yellow]note:[/yellow] {markup_safe(note)}")

    mapping = summary["mapping"]
    console.print(
        f"mapping (target {mapping.get('target', 'image')}): {mapping['mapped']} source keys mapped to {mapping['targets']} targets, "
        f"{sum(mapping['dropped'].values())} dropped; Missing: {mapping['missing']}, Unexpected: {mapping['unexpected']}"
    )
    for reason, count in mapping["dropped"].items():
        console.print(f"  dropped {count:>4}: {markup_safe(reason)}")
    for reason, count in mapping.get("filled", {}).items():
        console.print(f"  filled  {count:>4}: {markup_safe(reason)}")
    non_finite = summary["non_finite"]
    if non_finite is None:
        console.print("NaN/Inf scan: skipped")
    elif not non_finite:
        console.print("NaN/Inf scan: [green]all values finite[/green]")
    else:
        console.print(f"[red]NaN/Inf scan: {len(non_finite)} tensors hold non-finite values[/red]")
        for key, count in list(non_finite.items())[:10]:
            console.print(f"  {markup_safe(key)}: {count}")


def render_convert(console: Console, record: dict, folder: str, seconds: float, shards: list[str]) -> None:
    keys = record["keys"]
    console.print(f"[green]converted[/green] {markup_safe(record['source']['filename'])} -> {markup_safe(folder)} in {seconds:.1f} s")
    console.print(
        f"family {record.get('family', {}).get('name', 'SAM3-LiteText')}, "
        f"target {record.get('target', {}).get('model_class', 'Sam3LiteTextModel')}, "
        f"variant {record['variant']}, context {record['context_length']}, dtype {record['dtype']}, "
        f"{_count(record['parameters'])} parameters in {len(shards)} shard(s)"
    )
    console.print(
        f"keys: {keys['source']} source, {keys['mapped']} mapped -> {keys['target']} targets, "
        f"{sum(keys['dropped'].values())} dropped; Missing: {keys['missing']}, Unexpected: {keys['unexpected']}"
    )
    manifest = record.get("target", {}).get("manifest")
    if manifest:  # what the plan was checked against: the meta model built now, or its cached manifest
        how = "built now" if manifest == "built" else "cached manifest (same transformers files, torch, config)"
        console.print(f"checked against the meta-device {record['target']['model_class']}: {how}")
    for reason, count in keys["dropped"].items():
        console.print(f"  dropped {count:>4}: {markup_safe(reason)}")
    for reason, count in keys.get("filled", {}).items():
        console.print(f"  filled  {count:>4}: {markup_safe(reason)}")
    for note in record["architecture"]["notes"]:
        console.print(f"[yellow]note:[/yellow] {markup_safe(note)}")


def render_convert_all(console: Console, rows: list[dict]) -> None:
    """The checkpoint names stay whole; below 140 columns the counts give way (they are in --json) and
    the reasons for failures follow the table, one line each."""
    wide = console.width >= 140
    table = Table(title="convert-all", title_justify="left")
    table.add_column("checkpoint", no_wrap=True)
    table.add_column("model", no_wrap=True)
    if wide:
        for column in ("parameters", "mapped", "dropped"):
            table.add_column(column, justify="right")
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=not wide, min_width=6)
    pushed = any(row.get("push") for row in rows)
    if pushed:
        table.add_column("push", min_width=6)
    for row in rows:
        ok = row["status"] == "ok"
        status = literal(row["status"] if ok or not wide else f"{row['status']}: {row.get('error', '')}", style="green" if ok else "red")
        model = f"{row['variant']} ctx{row['context']}" if row.get("variant") else "-"
        cells = [literal(row["checkpoint"]), model]
        if wide:
            cells += [
                _count(row["parameters"]) if row.get("parameters") else "-",
                str(row.get("mapped") or "-"),
                str(row.get("dropped") if row.get("dropped") is not None else "-"),
            ]
        cells += [f"{row['seconds']:.1f}", status]
        if pushed:
            cells.append(literal((row.get("push") or "-") if wide else (row.get("push") or "-").split(":")[0]))
        table.add_row(*cells)
    console.print(table)
    if not wide:
        for row in rows:
            if row["status"] != "ok":
                console.print(literal(f"{row['checkpoint']}: {row['status']}: {row.get('error', '')}", style="red"))
            if pushed and row.get("push") and row["push"] != "skipped":
                console.print(literal(f"{row['checkpoint']}: push {row['push']}"))


# What a stage whose values are not features compares (its cosine would read like a failure).
STAGE_MEANING = {
    "padding_mask": "same padded positions (ids == 0); exact",
}


def _meaning(name: str) -> str:
    return next((text for suffix, text in STAGE_MEANING.items() if name.endswith(suffix)), "")


def _cosine_cell(stage: dict) -> str:
    if not stage.get("reference_max") and not stage["max_abs"]:
        return "n/a"  # both sides all zeros: a cosine is undefined, the values are equal
    return f"{stage['cosine']:.9f}"


def _stage_table(title: str, stages: list[dict], first_failure: str | None, width: int = 120) -> Table:
    """Stage names stay whole. Columns are kept in order of use while they fit: result and max abs
    always, then max rel, cosine, mean abs."""
    notes = {s["name"]: "; ".join(filter(None, [_meaning(s["name"]), s.get("note", "")])) for s in stages}
    name_width = max([len("stage")] + [len(s["name"]) for s in stages])
    optional = [("max rel", 9, lambda s: f"{s['max_rel']:.2e}"), ("cosine", 11, _cosine_cell),
                ("mean abs", 9, lambda s: f"{s['mean_abs']:.3e}")]
    used = name_width + 4 + 9 + 7 + 6  # stage, max abs, result, borders and padding
    columns = [("max abs", lambda s: f"{s['max_abs']:.3e}")]
    for label, cell_width, cell in optional:
        if used + cell_width + 3 <= width:
            columns.append((label, cell))
            used += cell_width + 3
    table = Table(title=title, title_justify="left")
    table.add_column("stage", no_wrap=True, min_width=min(name_width, max(width - 30, 10)))
    for label, _ in columns:
        table.add_column(label, justify="right", no_wrap=True)
    table.add_column("result", justify="right", no_wrap=True)
    for stage in stages:
        highlight = "bold red" if stage["name"] == first_failure else ""
        label = literal(stage["name"], style=highlight)
        if notes[stage["name"]]:
            label.append(f"\n  {notes[stage['name']]}" if width < 120 else f"  [{notes[stage['name']]}]", style="dim")
        result = Text("pass", style="green") if stage["passed"] else Text("FAIL", style="bold red")
        table.add_row(label, *[cell(stage) for _, cell in columns], result)
    return table


def render_parity(console: Console, record: dict, *, debug: bool) -> None:
    found = record_verdict(record)  # THE verdict (folder/verdict.py), not a field read on trust
    verdict = Text("PASS", style="bold green") if found.passed else Text("FAIL", style="bold red")
    console.print(Text.assemble("parity: ", verdict, f"  scope {record['scope']}, {dtype_label(record)}, "
                                f"atol {record['atol']:g}, rtol {record['rtol']:g}, {record['seconds']:.1f} s"))
    console.print(f"original: {markup_safe(record['original']['name'])}")
    inputs = record["inputs"]
    console.print(f"inputs: {inputs['kind']}, batch {inputs['batch']}, seed {inputs['seed']}, context {inputs['context_length']}")
    stages = record["stages"]
    worst = max(stages, key=lambda s: s["max_abs"]) if stages else None
    failed = next((s for s in stages if s["name"] == found.first_failure), None)
    if failed:
        console.print(f"[bold red]first diverging stage: {failed['name']}[/bold red] (max abs {failed['max_abs']:.3e})")
    elif found.first_failure:
        console.print(Text(f"first diverging stage: {found.first_failure}", style="bold red"))
    elif worst:
        console.print(f"{len(stages)} text stages within tolerance; largest max abs {worst['max_abs']:.3e} at {worst['name']}")
    if debug or found.first_failure:
        console.print(_stage_table("Text encoder, stage by stage", stages, found.first_failure, console.width))
    tokenizer = record.get("tokenizer")
    if tokenizer:
        state = "[green]equal[/green]" if tokenizer["equal"] else f"[red]{len(tokenizer['differences'])} prompts differ[/red]"
        console.print(f"tokenizer ids ({tokenizer['prompts']} prompts): {state}; original side: {markup_safe(str(tokenizer.get('original', tokenizer.get('upstream'))))}")
        for difference in tokenizer["differences"][:10]:
            console.print(f"  {markup_safe(repr(difference['prompt']))}: {markup_safe(difference['why'])}")
    padded = record.get("padded_prompts")
    if padded:
        console.print(
            f"padded prompts ({padded['prompts_with_padding']} with padding), detector-facing features on real tokens: "
            f"with transformers' attention mask max abs {padded['masked_vs_upstream_real_tokens_max_abs']:.3e}; "
            f"without it (upstream behaviour) {padded['unmasked_vs_upstream_real_tokens_max_abs']:.3e}"
        )
        if padded["tokenizer_mask_vs_upstream_mask_positions"]:
            console.print(
                f"  the tokenizer's attention_mask differs from upstream's padding mask (ids == 0) at "
                f"{padded['tokenizer_mask_vs_upstream_mask_positions']} positions: a literal '!' is id 0, padding to upstream"
            )
        console.print(f"  recipe that reproduces upstream: {padded['recipe']}")
    for line in precision_lines(record.get("precision")):  # dtype, exactness verdict, precision cost
        console.print(f"precision: {line}", markup=False)
    detector = record.get("detector")
    if detector:
        render_detector(console, detector, debug=debug)
    if (record.get("onnx") or {}).get("debug"):
        render_onnx_debug(console, record["onnx"]["debug"])
    if record.get("tracker"):
        render_tracker(console, record["tracker"])
    for note in record.get("notes", []):
        console.print(f"[yellow]note:[/yellow] {markup_safe(note)}")


def render_onnx_debug(console: Console, debug: dict) -> None:
    """An ONNX folder's --debug-intermediates: the debug graphs' rows, named as the transformers folder's."""
    verdict = "[green]PASS[/green]" if debug["passed"] else "[bold red]FAIL[/bold red]"
    console.print(f"ONNX debug graphs (every text and DETR decoder layer, re-exported from the checkpoint): {verdict}")
    console.print(f"  precision: {markup_safe(debug['precision'])}")
    failure = debug["first_failure"]
    if failure:
        console.print(f"  [bold red]first diverging stage of the debug graphs: {markup_safe(failure)}[/bold red]")
    console.print(_stage_table("ONNX debug graphs: text encoder, stage by stage", debug["text"]["stages"], failure, console.width))
    if debug.get("detector"):
        console.print(_stage_table("ONNX debug graphs: whole detector, stage by stage", debug["detector"]["stages"], failure,
                                   console.width))
    tie = debug["same_as_folder"]
    worst = max(tie, key=lambda s: s["max_abs"]) if tie else None
    if worst and all(s["passed"] for s in tie):
        console.print(f"  the debug graphs' outputs equal the folder's graphs' ({len(tie)} outputs, largest max abs "
                      f"{worst['max_abs']:.3e})")
    elif tie:
        console.print(_stage_table("debug graphs against the folder's graphs", tie, failure, console.width))


def render_tracker(console: Console, tracker: dict) -> None:
    """Per prompt: transformers as it is (known differences named) and with the recipes that reproduce Meta."""
    verdict = "[green]PASS[/green]" if tracker["passed"] else "[bold red]FAIL[/bold red]"
    console.print(f"tracker ({tracker['dtype']}): {verdict}  Meta's tracker from the original keys vs Sam3TrackerVideoModel")
    for run in tracker["prompts"]:
        for kind in ("plain", "with_recipe"):
            title = f"{run['prompt']} prompt, " + ("transformers as it is" if kind == "plain" else "with " + " + ".join(run["recipe"]))
            console.print(_stage_table(title, run[kind]["stages"], run[kind]["first_failure"]))
        for name, why in run["known_differences"].items():
            console.print(f"  [yellow]known difference[/yellow] {name}: {why}")


def render_detector(console: Console, detector: dict, *, debug: bool) -> None:
    verdict = "[green]PASS[/green]" if detector["passed"] else "[bold red]FAIL[/bold red]"
    console.print(f"whole detector: {verdict}  original: {detector['original']}")
    stages = detector.get("stages", [])
    failure = next((s["name"] for s in stages if not s["passed"]), None)
    if stages and not failure:
        worst = max(stages, key=lambda s: s["max_rel"])
        console.print(f"  {len(stages)} detector stages within tolerance; largest relative difference {worst['max_rel']:.2e} at {worst['name']}")
    if debug:
        for name, value in (detector.get("facts") or {}).items():
            console.print(f"  {name}: {value}")
    if debug or failure:
        console.print(_stage_table("Whole detector, stage by stage", stages, failure, console.width))
    naive = detector.get("naive_text_only")
    if naive and naive["stages"]:
        worst = max(naive["stages"], key=lambda s: s["max_abs"])
        console.print(f"  for reference, {naive['meaning']}: largest difference {worst['max_abs']:.3e} at {worst['name']}")
        if debug:
            console.print(_stage_table("transformers' text-only call (geometry encoder skipped)", naive["stages"], None, console.width))
    for workaround in detector.get("workarounds", []):
        console.print(f"  CPU workaround on the original side: {workaround}")
