"""velocast benchmarks: `make bench` -> bench/results/latest.json and latest.md.

    python bench/run.py                       # everything (about 20 minutes on 2 cores)
    python bench/run.py --only accuracy,api   # some sections; the others keep their last results
    python bench/run.py --only batch          # lifecycle's batch-prediction figures alone (no weekly cycle)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.report import render  # noqa: E402

SECTIONS = ("accuracy", "lifecycle", "batch", "api", "commands", "growth")  # batch: lifecycle's batch figures only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated among {', '.join(SECTIONS)}")
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials of the tuned lgbm")
    parser.add_argument("--reference", default=None, help="an older commit to re-measure on the same rows "
                        "(accuracy before/after), e.g. 2ded31d")
    parser.add_argument("--api-seconds", type=float, default=60.0, help="duration of each API load phase")
    parser.add_argument("--api-workers", type=int, default=2, help="velocast serve --workers of the API section")
    parser.add_argument("--no-demo", action="store_true", help="skip timing `velocast demo`")
    args = parser.parse_args()
    if not common.REAL_COUNTS.exists():
        sys.exit(f"the real data is missing: {common.REAL_COUNTS}")
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        sys.exit(f"unknown sections {sorted(unknown)}; choose among {SECTIONS}")
    results = common.load_results()
    results["machine"] = common.machine()
    for section in chosen:
        print(f"== {section}", flush=True)
        if section == "accuracy":
            from bench import accuracy
            results["accuracy"] = accuracy.run(args.trials, args.reference)
        elif section == "lifecycle":
            from bench import lifecycle
            results["lifecycle"] = lifecycle.run()
        elif section == "batch":
            from bench import lifecycle
            results.setdefault("lifecycle", {})["batch_prediction"] = lifecycle.run_batch()
        elif section == "api":
            from bench import api_load
            results["api"] = api_load.run(args.api_seconds, args.api_workers)
        elif section == "commands":
            from bench import commands
            results["commands"] = commands.run(with_demo=not args.no_demo)
        elif section == "growth":
            from bench import growth
            results["growth"] = growth.run()
        results.setdefault("measured", {})[section] = common.machine()["date"]
        common.save_results(results)
        (common.RESULTS / "latest.md").write_text(render(results))
    print((common.RESULTS / "latest.md").read_text())


if __name__ == "__main__":
    main()
