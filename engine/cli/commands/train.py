"""``neurolens train --data SUBJECT --preset NAME | --config FILE --out RUN_DIR``: train a brain encoder."""

from __future__ import annotations

import sys

from engine.safe_yaml import safe_load

NAME = "train"
HELP = "train a brain encoder (ridge, MLP, masked brain model, Mixture-of-Experts) into a run folder"
DESCRIPTION = (HELP + ". Exit status: 0 done, 2 bad input, 3 cancelled (Ctrl-C saves a checkpoint first; continue "
               "with 'neurolens resume RUN_DIR'). Several processes: torchrun --nproc_per_node N "
               "$(which neurolens) train ...")
ORDER = 30


def add_arguments(p) -> None:
    p.add_argument("--data", metavar="SUBJECT", help="subject folder or dataset (any format 'inspect' reads), or demo / demo:N for the built-in demo subject")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", metavar="NAME", help="a named config (see --list-presets)")
    src.add_argument("--config", metavar="FILE", help="a TrainConfig YAML file (e.g. a run's config.yaml)")
    p.add_argument("--out", metavar="RUN_DIR", help="new run folder")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (see the device list in --list-presets)")
    p.add_argument("--epochs", type=int, help="override epochs")
    p.add_argument("--batch-size", type=int, help="override batch_size")
    p.add_argument("--lr", type=float, help="override optim.lr")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="override precision (CUDA autocast)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, dotted, YAML value (e.g. --set model.params.hidden=256); repeatable")
    p.add_argument("--json-events", action="store_true", help="print one JSON event per line on stdout")
    p.add_argument("--list-presets", action="store_true", help="list presets and devices, then exit")


def parse_overrides(args) -> dict:
    """The command line's config overrides as dotted keys."""
    import yaml

    from engine.errors import ConfigError

    out = {}
    for flag, key in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "optim.lr"), ("seed", "seed"),
                      ("precision", "precision"), ("device", "device")):
        v = getattr(args, flag, None)
        if v is not None:
            out[key] = v
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = safe_load(v)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from None
    return out


def run(args) -> int:
    from engine.errors import ConfigError

    if args.list_presets:
        from engine.train.device import list_devices
        from engine.train.presets import describe_preset, list_presets

        for name in list_presets():
            print(f"{name:12s} {describe_preset(name)}")
        print("\ndevices: " + ", ".join(f"{d.id} ({d.name})" for d in list_devices()))
        return 0
    missing = [f for f, v in (("--data", args.data), ("--out", args.out)) if not v]
    if not (args.preset or args.config):
        missing.append("--preset or --config")
    if missing:
        raise ConfigError(f"neurolens train: missing {', '.join(missing)}")

    from engine.cli.output import run_job
    from engine.data import open_subject
    from engine.train.config import TrainConfig
    from engine.train.trainer import train_job

    subject = open_subject(args.data)
    if args.preset:
        from engine.train.presets import get_preset

        config = get_preset(args.preset, subject)
    else:
        config = TrainConfig.load(args.config)
    config = config.with_overrides(parse_overrides(args)).validate()
    result = run_job(lambda cancel: quiet_unless_main(train_job(config, subject, args.out, cancel=cancel)),
                     json_events=args.json_events)
    if not args.json_events and not _quiet():
        metrics = "  ".join(f"{k}={v:.4f}" for k, v in result.metrics.items())
        print(f"done in {result.elapsed_s:.1f} s, {result.step} steps  {metrics}\nmodel: {result.model_dir}",
              file=sys.stderr)
        print_tensorboard_hint(result.run_dir)
    return 0


def print_tensorboard_hint(run_dir) -> None:
    from engine.train.tensorboard import open_hint

    hint = open_hint(run_dir)
    if hint:
        print(hint, file=sys.stderr)


def _quiet() -> bool:
    """Only rank 0 of a multi-process run prints."""
    import os

    return int(os.environ.get("RANK", "0") or 0) != 0


def quiet_unless_main(job):
    """The job itself on rank 0; on other ranks of a multi-process run, the same job with its events swallowed."""
    if not _quiet():
        return (yield from job)
    while True:
        try:
            next(job)
        except StopIteration as stop:
            return stop.value
