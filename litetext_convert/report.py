"""Rich rendering of what the stages return. Data in, tables out; no decisions here."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text


def _count(n: int) -> str:
    return f"{n:,}"


def _bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1000
    return f"{n:.1f} GB"


def render_inspect(console: Console, summary: dict) -> None:
    console.print(f"[bold]{summary['file']}[/bold]")
    console.print(
        f"format: {summary['format']}  wrapper: {summary['wrapper'] or 'none'}  size: {_bytes(summary['bytes'])}  "
        f"keys: {_count(summary['keys'])}  parameters: {_count(summary['parameters'])}  "
        f"dtypes: {', '.join(f'{k} x{v}' for k, v in summary['dtypes'].items())}"
    )
    if summary["stripped_prefix"]:
        console.print(f"stripped prefix: {summary['stripped_prefix']!r} (multi-GPU training)")

    components = Table(title="Components", title_justify="left")
    for column in ("component", "keys", "parameters", "used by Sam3LiteTextModel"):
        components.add_column(column, justify="right" if column in ("keys", "parameters") else "left")
    for name, info in summary["components"].items():
        components.add_row(name, _count(info["keys"]), _count(info["parameters"]), "no (dropped)" if info["extra"] else "yes")
    console.print(components)

    arch = summary["architecture"]
    for section in ("text", "detector"):
        table = Table(title=f"Inferred {section} architecture", title_justify="left")
        table.add_column("field")
        table.add_column("value", justify="right")
        table.add_column("source")
        for field, fact in arch[section].items():
            table.add_row(field, str(fact["value"]), fact["source"])
        console.print(table)
    for note in arch["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")

    mapping = summary["mapping"]
    console.print(
        f"mapping: {mapping['mapped']} source keys mapped to {mapping['targets']} targets, "
        f"{sum(mapping['dropped'].values())} dropped; Missing: {mapping['missing']}, Unexpected: {mapping['unexpected']}"
    )
    for reason, count in mapping["dropped"].items():
        console.print(f"  dropped {count:>4}: {reason}")
    non_finite = summary["non_finite"]
    if non_finite is None:
        console.print("NaN/Inf scan: skipped")
    elif not non_finite:
        console.print("NaN/Inf scan: [green]all values finite[/green]")
    else:
        console.print(f"[red]NaN/Inf scan: {len(non_finite)} tensors hold non-finite values[/red]")
        for key, count in list(non_finite.items())[:10]:
            console.print(f"  {key}: {count}")


def render_convert(console: Console, record: dict, folder: str, seconds: float, shards: list[str]) -> None:
    keys = record["keys"]
    console.print(f"[green]converted[/green] {record['source']['filename']} -> {folder} in {seconds:.1f} s")
    console.print(
        f"variant {record['variant']}, context {record['context_length']}, dtype {record['dtype']}, "
        f"{_count(record['parameters'])} parameters in {len(shards)} shard(s)"
    )
    console.print(
        f"keys: {keys['source']} source, {keys['mapped']} mapped -> {keys['target']} targets, "
        f"{sum(keys['dropped'].values())} dropped; Missing: {keys['missing']}, Unexpected: {keys['unexpected']}"
    )
    for reason, count in keys["dropped"].items():
        console.print(f"  dropped {count:>4}: {reason}")
    for note in record["architecture"]["notes"]:
        console.print(f"[yellow]note:[/yellow] {note}")


def render_convert_all(console: Console, rows: list[dict]) -> None:
    table = Table(title="convert-all", title_justify="left")
    for column in ("checkpoint", "variant", "context", "parameters", "mapped", "dropped", "seconds", "status", "push"):
        table.add_column(column)
    for row in rows:
        status = Text(row["status"], style="green" if row["status"] == "ok" else "red")
        table.add_row(
            row["checkpoint"],
            str(row.get("variant") or "-"),
            str(row.get("context") or "-"),
            _count(row["parameters"]) if row.get("parameters") else "-",
            str(row.get("mapped") or "-"),
            str(row.get("dropped") if row.get("dropped") is not None else "-"),
            f"{row['seconds']:.1f}",
            status if row["status"] == "ok" else Text(f"{row['status']}: {row.get('error', '')}", style="red"),
            row.get("push") or "-",
        )
    console.print(table)
