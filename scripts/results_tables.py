"""The README's result tables, generated from `gemmlab bench --json` and `gemmlab bench-train --json`
output, so the figures in the README are always those of a recorded run.

    python scripts/results_tables.py docs/bench-native-path.json docs/bench-train.json            # print
    python scripts/results_tables.py --update README.md docs/bench-native-path.json docs/bench-train.json

--update replaces what stands between the README's `<!-- results:begin -->` and
`<!-- results:end -->` lines. tests/test_results_tables.py checks that the README matches the JSON
files in docs/.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
PEERS = ("torch @", "numpy @")


def _time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale or unit == "us":
            value = seconds / scale
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")


def _machine(m: dict) -> str:
    return (f"{m['cpu']} ({m['capability']}), {m['threads']} threads, torch {m['torch']} with {m['torch_blas']}, "
            f"NumPy's BLAS: {m['numpy_blas']}")


def _product(r: dict) -> str:
    shape = f"{r['m']}x{r['k']} @ {r['k']}x{r['n']}"
    return shape if r["batch"] == 1 else f"{r['batch']} x {shape}"


def _table(rows: list[str], columns: list[str], cells: dict[tuple[str, str], str], corner: str) -> list[str]:
    lines = [f"| {corner} | " + " | ".join(f"`{c}`" for c in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    lines += [f"| {row} | " + " | ".join(cells.get((row, c), "-") for c in columns) + " |" for row in rows]
    return lines


def bench_table(data: dict) -> list[str]:
    """Products x backends: median time per call and, in brackets, speed over the best peer's."""
    rows, columns, cells = [], [], {}
    for r in data["results"]:
        row = f"{_product(r)} ({r['dtype']})"
        rows += [row] if row not in rows else []
        columns += [r["backend"]] if r["backend"] not in columns else []
        cells[row, r["backend"]] = f"{_time(r['seconds'])} ({r['ratio_to_best_peer']:.2f})"
    columns = [c for c in PEERS if c in columns] + [c for c in columns if c not in PEERS]
    head = [f"{data['machine']['date']}, {_machine(data['machine'])}. Median time per call; in brackets, speed "
            "over the faster peer's (`torch @` or `numpy @`, each timed in its own block in the same run; "
            "above 1: faster).", ""]
    return head + _table(rows, columns, cells, "product")


def train_table(data: dict) -> list[str]:
    """Work x layers: median time and, in brackets, time over torch.nn.Linear's."""
    rows, columns, cells = [], [], {}
    for r in data["results"]:
        rows += [r["work"]] if r["work"] not in rows else []
        columns += [r["layer"]] if r["layer"] not in columns else []
        cells[r["work"], r["layer"]] = f"{_time(r['seconds'])} ({r['time_vs_torch']:.2f})"
    rounds = data.get("rounds", 1)
    median = f"Median of {rounds} interleaved rounds' medians" if rounds > 1 else "Median time"
    head = [f"{data['machine']['date']}, {_machine(data['machine'])}. {median}; in brackets, time over "
            "`torch.nn.Linear`'s in the same run (above 1: slower).", ""]
    return head + _table(rows, columns, cells, "work")


def tables(paths: list[Path]) -> str:
    parts = []
    for path in paths:
        data = json.loads(path.read_text())
        kind = "bench-train" if "rtol" in data else "bench"
        lines = train_table(data) if kind == "bench-train" else bench_table(data)
        parts.append("\n".join([f"`gemmlab {kind}` ([{path.name}]({path.as_posix()})): " + lines[0], *lines[1:]]))
    return "\n\n".join(parts) + "\n"


def update(readme: Path, generated: str) -> None:
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} section to replace")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{generated}{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", type=Path, help="output of gemmlab bench --json or bench-train --json")
    parser.add_argument("--update", type=Path, metavar="README", help="rewrite the README's results section")
    args = parser.parse_args(argv)
    generated = tables(args.json)
    if args.update:
        update(args.update, generated)
    else:
        sys.stdout.write(generated)


if __name__ == "__main__":
    main()
