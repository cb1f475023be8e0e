"""velocast benchmarks: `make bench` -> bench/results/latest.json and latest.md.

    python bench/run.py                       # everything (about 20 minutes on 2 cores)
    python bench/run.py --only accuracy,api   # some sections; the others keep their last results
    python bench/run.py --only accuracy --trials 0 --accuracy-models 'lgbm, day-ahead'   # one model's rows again
    python bench/run.py --only batch          # lifecycle's batch-prediction figures alone (no weekly cycle)
    python bench/run.py --only growth --growth-scales 1,2,4,8,16   # growth up to 16x the real counters
    python bench/run.py --only growth --growth-scales 1 --results /tmp/bench   # a trial run, elsewhere
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench.report import render  # noqa: E402

SECTIONS = ("accuracy", "lifecycle", "batch", "api", "commands", "growth", "dask")  # batch: lifecycle's batch figures only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated among {', '.join(SECTIONS)}")
    parser.add_argument("--trials", type=int, default=20, help="Optuna trials of the tuned lgbm")
    parser.add_argument("--accuracy-models", default=None,
                        help="accuracy: only these models, ';'-separated labels (e.g. 'lgbm, day-ahead;lgbm, calendar'); "
                             "the other rows keep their last results")
    parser.add_argument("--reference", default=None, help="an older commit to re-measure on the same rows "
                        "(accuracy before/after), e.g. 2ded31d")
    parser.add_argument("--api-seconds", type=float, default=60.0, help="duration of each API load phase")
    parser.add_argument("--api-workers", type=int, default=2, help="velocast serve --workers of the API section")
    parser.add_argument("--no-demo", action="store_true", help="skip timing `velocast demo`")
    parser.add_argument("--growth-scales", default=None,
                        help="comma-separated sizes of the growth section, in times the real counters "
                             "(default: 1,2,4; 1,2,4,8,16 takes about an hour, up to ~17 GiB at once for 16x on Dask)")
    parser.add_argument("--growth-memory-gib", type=float, default=None,
                        help="growth: skip a step whose process (the Dask fit: client and workers together) "
                             "would need more than this (estimated; default 20)")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"folder of latest.json and latest.md (default {common.RESULTS})")
    args = parser.parse_args()
    if args.results is not None:
        common.RESULTS = args.results.resolve()  # read by load_results / save_results at call time
    scales = None
    if args.growth_scales:
        try:
            scales = tuple(dict.fromkeys(int(s) for s in args.growth_scales.split(",") if s.strip()))
        except ValueError:
            sys.exit(f"--growth-scales {args.growth_scales!r}: expected comma-separated whole numbers, e.g. 1,2,4,8,16")
        if not scales or min(scales) < 1:
            sys.exit(f"--growth-scales {args.growth_scales!r}: expected whole numbers >= 1")
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
            models = [m.strip() for m in args.accuracy_models.split(";") if m.strip()] if args.accuracy_models else None
            results["accuracy"] = accuracy.run(args.trials, args.reference, models, results.get("accuracy"))
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
        elif section == "dask":
            from bench import dask_parity
            results["dask_parity"] = dask_parity.run()
        elif section == "growth":
            from bench import growth
            options: dict = {} if args.growth_memory_gib is None else {"memory_limit_gib": args.growth_memory_gib}
            results["growth"] = growth.run(scales or growth.SCALES, **options)
        results.setdefault("measured", {})[section] = common.machine()["date"]
        common.save_results(results)
        (common.RESULTS / "latest.md").write_text(render(results))
    print((common.RESULTS / "latest.md").read_text())


if __name__ == "__main__":
    main()
