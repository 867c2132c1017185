"""``mhub-fmcib-train evaluate …`` and ``mhub-fmcib-train radiomics`` subcommands.

The training CLI calls :func:`add_evaluate_subcommands` and :func:`add_radiomics_subcommand`
with its ``subparsers``; each registered parser sets ``func`` to a handler taking the parsed
``argparse.Namespace`` and returning an exit status.

Registering the commands needs nothing beyond the base package, so they are listed even
when the ``train`` extra (pandas, scikit-learn, lifelines, matplotlib, pyradiomics) is
missing; running one then fails with the ``pip install`` line (:func:`require_extra`).
"""

from __future__ import annotations

import argparse
import functools
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mhub_fmcib.errors import ConfigError

#: Bootstrap resamples and permutations of the paper (as in ``metrics``; repeated here so
#: that registering the commands imports no optional package).
N_BOOTSTRAP = 9_999
N_PERMUTATIONS = 1_000
#: The pyradiomics settings shipped with the package.
DEFAULT_RADIOMICS_PARAMS = Path(__file__).with_name("radiomics_params.yaml")

#: Modules each command needs (all in the ``train`` extra), by import name.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "evaluate": ("pandas", "scipy", "sklearn", "lifelines", "matplotlib"),
    "radiomics": ("pandas", "radiomics"),
}
INSTALL_HINT = "pip install 'mhub-fmcib[train]'"


def require_extra(command: str) -> None:
    """Raise :class:`ConfigError` naming the missing modules and the ``pip install`` line
    when a module ``command`` needs cannot be imported."""
    missing = []
    for name in EXTRA_MODULES[command]:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(
            f"'{command}' needs the 'train' extra, which is not installed (cannot import {', '.join(missing)}); "
            f"install it with: {INSTALL_HINT}"
        )


def _needs(command: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        @functools.wraps(fn)
        def wrapped(args: argparse.Namespace) -> int:
            require_extra(command)
            return fn(args)

        return wrapped

    return deco


@_needs("evaluate")
def _cmd_report(args: argparse.Namespace) -> int:
    from .metrics import get_protocol
    from .report import read_predictions, write_report

    proto = get_protocol(args.protocol)
    rep = write_report(
        read_predictions(args.predictions),
        args.out,
        args.reference,
        args.n_resamples if args.n_resamples is not None else proto.n_resamples,
        args.n_permutations if args.n_permutations is not None else proto.n_permutations,
        args.seed,
        args.threshold_rule,
        args.time_unit,
        proto.alternative,
    )
    print(f"wrote {len(rep.tables)} tables and {len(rep.figures)} figures to {rep.folder}")
    return 0


@_needs("evaluate")
def _cmd_stability(args: argparse.Namespace) -> int:
    import pandas as pd

    from .stability import feature_agreement, icc_table, test_retest_icc
    from .tables import write_table

    a = pd.read_csv(args.test, index_col=0)
    b = pd.read_csv(args.retest, index_col=0)
    common = [i for i in a.index if i in b.index]
    if len(common) < 3:
        raise ConfigError(f"only {len(common)} case ids are in both {args.test} and {args.retest}")
    a, b = a.loc[common], b.loc[common]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.prediction_column:
        col = args.prediction_column
        ratings = np.column_stack([a[col].to_numpy(float), b[col].to_numpy(float)])
        write_table(
            icc_table(ratings),
            args.out / "icc",
            f"ICC of {col!r}, test vs retest ({len(common)} lesions): {test_retest_icc(ratings).describe()}",
        )
    feats = [c for c in a.columns if c != args.prediction_column and c in b.columns]
    if feats:
        ag = feature_agreement(a[feats].to_numpy(float), b[feats].to_numpy(float))
        ag["feature"] = feats
        write_table(ag, args.out / "feature_agreement", "Test-retest agreement per feature")
    print(f"wrote stability tables to {args.out}")
    return 0


@_needs("evaluate")
def _cmd_tsne(args: argparse.Namespace) -> int:
    import pandas as pd

    from .tsne import plot_tsne, tsne_embedding

    df = pd.read_csv(args.features, index_col=0)
    labels = pd.read_csv(args.labels, index_col=0)[args.label_column].loc[df.index]
    emb = tsne_embedding(df.to_numpy(float), args.perplexity, args.seed)
    plot_tsne(emb, labels.to_numpy(), args.out)
    print(f"wrote {args.out.with_suffix('.png')} and .svg")
    return 0


@_needs("evaluate")
def _cmd_biology(args: argparse.Namespace) -> int:
    import pandas as pd

    from .biology import (
        compare_models,
        enrichment,
        filter_genes,
        gene_correlations,
        read_expression,
        read_gmt,
    )
    from .report import find_models
    from .tables import write_table

    expr = filter_genes(read_expression(args.expression), args.top_n)
    pred = pd.read_csv(args.predictions, dtype={"case_id": str}).set_index("case_id")
    models = [m for m in find_models(pred.reset_index()) if len(m.columns) == 1]
    preds = {m.name: pred[m.columns[0]] for m in models}
    corr = gene_correlations(expr, preds, args.method)
    args.out.mkdir(parents=True, exist_ok=True)
    write_table(corr.reset_index(names="gene"), args.out / "gene_correlations", f"|{args.method}| correlation per gene")
    write_table(
        compare_models(corr, args.min_corr),
        args.out / "model_comparison",
        "Absolute correlations compared between models",
    )
    if args.gmt:
        sets = read_gmt(args.gmt)
        for m in corr.columns:
            sel = set(corr.index[corr[m] > args.min_corr])
            write_table(
                enrichment(sel, set(corr.index), sets),
                args.out / f"enrichment_{m}",
                f"Enrichment of genes with |corr| > {args.min_corr} ({m})",
            )
    print(f"wrote biology tables to {args.out}")
    return 0


@_needs("radiomics")
def _cmd_radiomics(args: argparse.Namespace) -> int:
    from .radiomics_baseline import dicom_radiomics_table, radiomics_table, read_cases

    if (args.cases is None) == (args.dicom is None):
        raise SystemExit("radiomics: give exactly one of --cases CSV or --dicom FOLDER")
    if args.dicom is not None:
        sources = tuple(s.strip().upper() for s in args.sources.split(",") if s.strip())
        table, errors = dicom_radiomics_table(args.dicom, args.params, sources, tuple(args.segments))
        for e in errors:
            print(f"not measured: {e}")
    else:
        table = radiomics_table(read_cases(args.cases), args.params)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    print(f"wrote {table.shape[1] - 1} features for {len(table)} cases to {args.out}")
    return 0


def add_evaluate_subcommands(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``evaluate {report,stability,tsne,biology}``; return the ``evaluate`` parser."""
    ev = subparsers.add_parser(
        "evaluate", help=f"statistics, tables and figures of a study (needs the train extra: {INSTALL_HINT})"
    )
    sub = ev.add_subparsers(dest="evaluate_command", required=True)

    p = sub.add_parser("report", help="metrics with CIs, permutation tests, survival, KM plots")
    p.add_argument(
        "--predictions",
        type=Path,
        required=True,
        help="CSV: case_id, split, label, pred_<model>[__<class>], [time, event]",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--reference", default=None, help="model the others are tested against")
    p.add_argument(
        "--protocol",
        choices=("paper", "authors_code"),
        default="paper",
        help=f"paper: {N_BOOTSTRAP} resamples, {N_PERMUTATIONS} permutations, two-sided p (default); "
        "authors_code: 1000 resamples, 1000 permutations, one-sided p as analysis/utils.py",
    )
    p.add_argument("--n-resamples", type=int, default=None, help="override the protocol's bootstrap resamples")
    p.add_argument("--n-permutations", type=int, default=None, help="override the protocol's permutations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold-rule", choices=("median", "logrank"), default="median")
    p.add_argument("--time-unit", default="days")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("stability", help="test-retest ICC and feature agreement")
    p.add_argument("--test", type=Path, required=True, help="CSV indexed by case id")
    p.add_argument("--retest", type=Path, required=True, help="CSV indexed by case id")
    p.add_argument("--prediction-column", default=None, help="column holding the prediction")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_stability)

    p = sub.add_parser("tsne", help="t-SNE map of features with class density contours")
    p.add_argument("--features", type=Path, required=True, help="CSV: case id then features")
    p.add_argument("--labels", type=Path, required=True, help="CSV: case id, label column")
    p.add_argument("--label-column", default="label")
    p.add_argument("--perplexity", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="figure path stem (.png/.svg)")
    p.set_defaults(func=_cmd_tsne)

    p = sub.add_parser("biology", help="gene filter, correlations, GMT enrichment")
    p.add_argument("--expression", type=Path, required=True, help="CSV genes x samples")
    p.add_argument("--predictions", type=Path, required=True, help="CSV: case_id, pred_<model>")
    p.add_argument("--gmt", type=Path, default=None, help="gene sets (GMT)")
    p.add_argument("--top-n", type=int, default=500)
    p.add_argument("--method", choices=("spearman", "pearson"), default="spearman")
    p.add_argument("--min-corr", type=float, default=0.1)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd_biology)
    return ev


def add_radiomics_subcommand(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``radiomics``: pyradiomics features table from image/mask files."""
    p = subparsers.add_parser(
        "radiomics", help=f"pyradiomics baseline features (needs the train extra: {INSTALL_HINT})"
    )
    p.add_argument("--cases", type=Path, help="CSV: case_id, image, mask[, label]")
    p.add_argument(
        "--dicom", type=Path, help="DICOM folder: CT with SEG/RTSTRUCT (masks as mhub-fmcib run places them)"
    )
    p.add_argument("--sources", default="SEG", help="SEG, RTSTRUCT or SEG,RTSTRUCT (with --dicom)")
    p.add_argument("--segments", action="append", default=[], help="segment numbers/labels or ROI names (--dicom)")
    p.add_argument("--params", type=Path, default=DEFAULT_RADIOMICS_PARAMS, help="pyradiomics YAML")
    p.add_argument("--out", type=Path, required=True, help="features CSV")
    p.set_defaults(func=_cmd_radiomics)
    return p
