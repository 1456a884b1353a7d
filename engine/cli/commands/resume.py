"""``neurolens resume RUN_DIR``: continue a cancelled or interrupted training run from its latest checkpoint."""

from __future__ import annotations

import sys

NAME = "resume"
HELP = "continue a training run from its latest checkpoint (same config, same result as an uninterrupted run)"
ORDER = 31


def add_arguments(p) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder made by 'neurolens train'")
    p.add_argument("--data", metavar="SUBJECT", help="the subject, if it moved since the run started")
    p.add_argument("--json-events", action="store_true", help="print one JSON event per line on stdout")


def run(args) -> int:
    from engine.cli.commands.train import _quiet, print_tensorboard_hint, quiet_unless_main
    from engine.cli.output import run_job
    from engine.train.trainer import resume_job

    result = run_job(lambda cancel: quiet_unless_main(resume_job(args.run_dir, cancel, subject=args.data)),
                     json_events=args.json_events)
    if not args.json_events and not _quiet():
        metrics = "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
        print(f"done, {result.step} steps  {metrics}\nmodel: {result.model_dir}", file=sys.stderr)
        print_tensorboard_hint(result.run_dir)
    return 0
