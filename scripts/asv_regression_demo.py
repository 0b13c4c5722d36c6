#!/usr/bin/env python
"""See `asv continuous` judge two pairs of commits: one with no change, one with a deliberate slowdown.

In a temporary clone of this repository's HEAD it makes two commits on top of HEAD:

  A  "README only": one line appended to README.md, no code changed;
  B  "slowdown": benchmarks/slowdown.cfg committed with BACKEND:FACTOR (default cpp:1.25), which the
     asv suite reads at the commit it measures and which makes that backend's benchmarks take
     FACTOR times as long (benchmarks/common.py).

then runs `asv continuous -f 1.1 HEAD A` (should flag nothing) and `asv continuous -f 1.1 A B`
(should flag BACKEND's benchmarks as slower, and nothing else), --runs times each, and prints asv's
table and verdict for every run and a summary. Exit status 0 when every verdict is the expected one.

Run it on a quiet machine: it builds three commits (minutes each) in asv's virtualenv, created in the
clone on first use, and benchmarks each pair. --no-asv only makes the clone and the commits.
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLOWDOWN_FILE = "benchmarks/slowdown.cfg"  # benchmarks/common.py reads it at the measured commit
VERDICTS = ("PERFORMANCE DECREASED.", "PERFORMANCE INCREASED.", "BENCHMARKS NOT SIGNIFICANTLY CHANGED.")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_commits(clone: Path, backend: str, factor: float) -> tuple[str, str, str]:
    """Clone REPO's HEAD into `clone` and commit A (README only) and B (the slowdown) on branch main.
    Returns the hashes of HEAD, A and B."""
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], check=True)
    git(clone, "checkout", "--quiet", "-B", "main")  # asv.conf.json's branch
    git(clone, "config", "user.name", "asv regression demo")
    git(clone, "config", "user.email", "asv-demo@localhost")
    base = git(clone, "rev-parse", "HEAD")
    with open(clone / "README.md", "a") as f:
        f.write("\n<!-- asv regression demo: a README-only commit -->\n")
    git(clone, "commit", "--quiet", "-am", "demo: README only (no code change)")
    readme_only = git(clone, "rev-parse", "HEAD")
    (clone / SLOWDOWN_FILE).write_text(f"# deliberate slowdown, made by scripts/asv_regression_demo.py\n{backend}:{factor}\n")
    git(clone, "add", SLOWDOWN_FILE)
    git(clone, "commit", "--quiet", "-m", f"demo: {backend}'s benchmarks take {factor}x as long")
    return base, readme_only, git(clone, "rev-parse", "HEAD")


def verdict(output: str) -> str:
    """asv continuous's verdict line, or 'no verdict' (a failed run)."""
    return next((v for v in VERDICTS if v in output), "no verdict (asv failed?)")


def flagged_rows(output: str) -> list[str]:
    """The table rows asv marked as changed ('+' slower, '-' faster, '!' newly failing)."""
    return [line for line in output.splitlines() if line.startswith(("| +", "| -", "| !"))]


def continuous(clone: Path, base: str, head: str, factor: float, bench: str | None, aslr: bool) -> str:
    # setarch -R: asv's benchmark processes inherit "no address-space randomisation", one source of
    # per-process speed modes on the microsecond products (docs/asv.md, "Recorded runs": not the
    # only one; other modes remain with it).
    cmd = [] if aslr or not shutil.which("setarch") else ["setarch", platform.machine(), "-R"]
    cmd += [sys.executable, "-m", "asv", "continuous", "-f", str(factor), base, head]
    if bench:
        cmd += ["--bench", bench]
    print("$", " ".join(cmd), flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GEMMLAB_ASV_")}  # the default selection
    out = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True)
    print(out.stdout[-6000:], out.stderr[-2000:], sep="\n", flush=True)
    return out.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="cpp", help="the backend to slow down (default cpp)")
    parser.add_argument("--slowdown", type=float, default=1.25, help="its factor (default 1.25: 25%% slower)")
    parser.add_argument("--factor", type=float, default=1.1, help="asv continuous -f (default 1.1)")
    parser.add_argument("--runs", type=int, default=1, help="asv continuous runs per pair (the target: 3)")
    parser.add_argument("--bench", help="asv --bench regex (default: the whole default selection)")
    parser.add_argument("--aslr", action="store_true", help="leave address-space randomisation on (default: "
                        "asv runs under `setarch -R`, where setarch exists)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone (its .asv has the results)")
    parser.add_argument("--no-asv", action="store_true", help="only make the clone and the two commits")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="gemmlab-asv-demo-"))
    clone = workdir / "gemmlab"
    try:
        base, readme_only, slowed = make_commits(clone, args.backend, args.slowdown)
        print(f"clone {clone}: base {base[:8]}, README-only {readme_only[:8]}, slowdown {slowed[:8]}")
        if args.no_asv:
            return 0
        subprocess.run([sys.executable, "-m", "asv", "machine", "--yes"], cwd=clone, check=True, capture_output=True)
        summary, ok = [], True
        for run in range(1, args.runs + 1):
            for label, a, b, expect_slower in (("no change", base, readme_only, False), ("slowdown", readme_only, slowed, True)):
                out = continuous(clone, a, b, args.factor, args.bench, args.aslr)
                rows = flagged_rows(out)
                # Expected: nothing flagged for "no change"; for "slowdown", rows flagged, every one of
                # them the slowed backend's and slower.
                good = bool(rows) and all(r.startswith("| +") and f"'{args.backend}'" in r for r in rows) if expect_slower else not rows
                ok &= good
                summary.append(f"run {run} {label:9s} {a[:8]}..{b[:8]}: {verdict(out)} {len(rows)} flagged  "
                               f"{'as expected' if good else 'NOT AS EXPECTED'}")
        print("\n".join(["", "Summary:", *summary]))
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
