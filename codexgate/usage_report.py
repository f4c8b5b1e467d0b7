"""`codexgate usage`: spend, requests and tokens from the accounting log, grouped and totalled."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

GROUPS = {"key": "key", "team": "team", "org": "org", "model": "model", "provider": "provider", "session": "session_id"}
_SINCE = re.compile(r"^([0-9]+)([mhdw])$")
_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(text: str, now: float) -> float:
    match = _SINCE.match(text)
    if not match:
        raise ValueError(f"--since {text!r}: use a count and m, h, d or w (e.g. 7d)")
    return now - int(match.group(1)) * _SECONDS[match.group(2)]


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last line after a crash
            if isinstance(record, dict):
                yield record


def accounting_paths(data_dir: Path) -> list[Path]:
    """The single gateway's log and each worker's (`codexgate up --workers N`)."""
    return [data_dir / "accounting.jsonl", *sorted(data_dir.glob("accounting-*.jsonl"))]


def all_records(data_dir: Path) -> Iterator[dict[str, Any]]:
    for path in accounting_paths(data_dir):
        yield from read_records(path)


def aggregate(records: Iterable[dict[str, Any]], by: str, since: float) -> list[dict[str, Any]]:
    field = GROUPS[by]
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("ts", 0) < since or record.get("endpoint") not in ("responses", "chat"):
            continue
        name = record.get(field) or "-"
        row = rows.setdefault(
            name,
            {by: name, "requests": 0, "refused": 0, "input_tokens": 0, "cached_tokens": 0, "output_tokens": 0,
             "reasoning_tokens": 0, "cost_usd": 0.0},
        )  # fmt: skip
        row["requests"] += 1
        if record.get("decision") not in ("forwarded", "answered", "client_disconnected"):
            row["refused"] += 1
        for kind, value in (record.get("usage") or {}).items():
            if kind in row:
                row[kind] += int(value or 0)
        row["cost_usd"] += float(record.get("cost_usd") or 0.0)
    return sorted(rows.values(), key=lambda row: (-row["cost_usd"], -row["requests"], str(row[by])))


def render(rows: list[dict[str, Any]], by: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=2)
    columns = [
        by,
        "requests",
        "refused",
        "input_tokens",
        "cached_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cost_usd",
    ]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "cost_usd": f"{row['cost_usd']:.6f}"})
        return buffer.getvalue()
    titles = [by, "requests", "refused", "input", "cached", "output", "reasoning", "cost USD"]
    table = [[str(row[by]), *(f"{row[c]:,}" for c in columns[1:7]), f"{row['cost_usd']:,.4f}"] for row in rows]
    total = [
        "TOTAL",
        *(f"{sum(row[c] for row in rows):,}" for c in columns[1:7]),
        f"{sum(r['cost_usd'] for r in rows):,.4f}",
    ]
    widths = [max(len(line[i]) for line in [titles, *table, total]) for i in range(len(titles))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(titles), rule, *(line(r) for r in table), rule, line(total)])


def report(data_dir: Path, by: str, since: str, fmt: str, now: float | None = None) -> str:
    start = parse_since(since, now if now is not None else time.time())
    return render(aggregate(all_records(data_dir), by, start), by, fmt)
