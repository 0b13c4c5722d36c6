"""The README's result tables are generated from recorded runs (scripts/results_tables.py): they
must match the JSON files they name, so a figure cannot be edited by hand or left behind."""

import re
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
results_tables = runpy.run_path(str(ROOT / "scripts" / "results_tables.py"))


def test_readme_tables_match_their_json():
    readme = (ROOT / "README.md").read_text()
    section = readme.split(results_tables["BEGIN"], 1)[1].split(results_tables["END"], 1)[0].lstrip("\n")
    sources = re.findall(r"\]\((docs/[^)]+\.json)\)", section)
    assert sources, "the README's results section names no JSON file"
    paths = [Path(s) for s in sources]
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)  # the links are relative to the checkout
    try:
        generated = results_tables["tables"](paths)
    finally:
        os.chdir(cwd)
    assert section == generated, "README.md is stale: run scripts/results_tables.py --update README.md " + " ".join(sources)
