"""``mhub-fmcib-train``: pretrain, finetune, probe, synthetic (and evaluation commands).

Every training command takes ``--config FILE.toml`` (one typed file per run) and
``--fraction 0.5|0.2|0.1`` (seeded subsets of train and tune; full test). ``pretrain`` is
meant to be launched with ``torchrun``; it reads torchrun's ``WORLD_SIZE``/``LOCAL_RANK``
here, in the CLI, and nowhere deeper.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from mhub_fmcib.errors import FmcibError

from .config import FRACTIONS, FinetuneConfig, PretrainConfig, ProbeConfig, SyntheticConfig, load_config

T = TypeVar("T")


def _with_overrides(cfg: T, args: argparse.Namespace) -> T:
    data = getattr(cfg, "data", None)
    changes: dict[str, Any] = {}
    if data is not None and getattr(args, "fraction", None) is not None:
        changes["data"] = dataclasses.replace(data, fraction=args.fraction)
    if getattr(args, "output_dir", None) is not None:
        changes["output_dir"] = args.output_dir
    return dataclasses.replace(cfg, **changes) if changes else cfg  # type: ignore[type-var]


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import init_distributed, run_pretrain

    cfg = _with_overrides(load_config(args.config, PretrainConfig), args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    init_distributed(world)
    try:
        res = run_pretrain(cfg, local_rank=local_rank)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(
            f"pretrain: steps {res.start_step} -> {res.end_step} of {res.total_steps}; "
            f"first loss {res.first_loss:.4f}, last loss {res.last_loss:.4f}; "
            f"data wait {100 * res.data_fraction:.1f}% of step time; encoder {res.encoder_path}"
        )
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .finetune import run_finetune

    cfg = _with_overrides(load_config(args.config, FinetuneConfig), args)
    res = run_finetune(cfg)
    print(f"finetune: best epoch {res.best_epoch}, tune {res.metric_name} {res.best_tune_metric:.4f}, "
          f"test {res.metric_name} {res.test_metric:.4f}; checkpoint {res.checkpoint}")  # fmt: skip
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from .probe import run_probe

    cfg = _with_overrides(load_config(args.config, ProbeConfig), args)
    res = run_probe(cfg)
    print(f"probe: C = {res.best_c:.3g}, tune {res.metric_name} {res.tune_metric:.4f}, "
          f"test {res.metric_name} {res.test_metric:.4f}; head {res.head_path}")  # fmt: skip
    return 0


def _cmd_synthetic(args: argparse.Namespace) -> int:
    from .synthetic import generate_cohort

    if args.config is not None:
        cfg = load_config(args.config, SyntheticConfig)
        if args.output_dir is not None:
            cfg = dataclasses.replace(cfg, output_dir=args.output_dir)
    elif args.output_dir is not None:
        cfg = SyntheticConfig(output_dir=args.output_dir)
    else:
        raise FmcibError("synthetic needs --config FILE or --output-dir DIR")
    if args.n_scans is not None:
        cfg = dataclasses.replace(cfg, n_scans=args.n_scans)
    cohort = generate_cohort(cfg)
    print(f"synthetic: {len(cohort.lesions)} lesions in {cfg.n_scans} scans; seeds {cohort.seeds_csv}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mhub-fmcib-train", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = p.add_subparsers(dest="command", required=True)
    for name, fn, helptext in (
        ("pretrain", _cmd_pretrain, "SimCLR pre-training (launch with torchrun)"),
        ("finetune", _cmd_finetune, "fine-tune encoder + MLP head on a label"),
        ("probe", _cmd_probe, "linear probe (logistic regression) on the 4096 features"),
    ):
        sp = sub.add_parser(name, help=helptext)
        sp.add_argument("--config", type=Path, required=True, help="TOML config file")
        sp.add_argument("--fraction", type=float, choices=FRACTIONS, default=None,
                        help="seeded random fraction of train and tune (test stays complete)")  # fmt: skip
        sp.add_argument("--output-dir", type=Path, default=None, help="override output_dir")
        sp.set_defaults(func=fn)
    sp = sub.add_parser("synthetic", help="write a synthetic lesion cohort (NRRD + seeds CSV)")
    sp.add_argument("--config", type=Path, default=None)
    sp.add_argument("--output-dir", type=Path, default=None)
    sp.add_argument("--n-scans", type=int, default=None)
    sp.set_defaults(func=_cmd_synthetic)
    from .evaluation import cli as eval_cli  # needs no optional package to register

    eval_cli.add_evaluate_subcommands(sub)
    eval_cli.add_radiomics_subcommand(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s: %(message)s")  # fmt: skip
    try:
        return int(args.func(args))
    except FmcibError as e:
        print(f"mhub-fmcib-train {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
