"""Markdown tables of a pre-training benchmark result (``results.json`` of run.py).

python benchmarks/pretrain_probe/report.py benchmarks/pretrain_probe/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def _table(summary: dict[str, Any], tests: dict[str, Any], ref: str = "random init") -> list[str]:
    arms = list(summary)
    fractions = list(next(iter(summary.values())))
    head = (
        "| labels (train lesions) | "
        + " | ".join(arms)
        + " | "
        + " | ".join(f"{a} − {ref}: mean ΔAUC, p" for a in arms if a != ref)
        + " |"
    )
    lines = [head, "|" + "---|" * (1 + 2 * len(arms) - 1)]
    for f in fractions:
        n = summary[arms[0]][f].get("n_train")
        cells = [f"{summary[a][f]['mean']:.3f} ± {summary[a][f]['sd']:.3f}" for a in arms]
        for a in arms:
            if a == ref:
                continue
            t = tests.get(f"{a} vs {ref} @ {f}")
            cells.append(f"{t['mean_auc_difference']:+.3f}, p = {t['p_value']:.3f}" if t else "—")
        label = f"{float(f):.0%}" + (f" ({n})" if n else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def main(path: Path) -> None:
    r = json.loads(path.read_text())
    print("Linear probe, test AUC (mean ± SD over draws):\n")
    print("\n".join(_table(r["probe_summary"], r["probe_tests"])))
    print("\nFine-tuning, test AUC (mean ± SD over draws):\n")
    ft_summary = r["finetune_summary"]
    n_train = {f: v["n_train"] for f, v in r["probe_summary"]["random init"].items()}
    for arm in ft_summary.values():
        for f, v in arm.items():
            v["n_train"] = n_train.get(f)
    print("\n".join(_table(ft_summary, r["finetune_tests"])))
    print("\nLoss ablation (probe):\n")
    for k, v in r["probe_tests"].items():
        if k.startswith("pretrained (authors' loss) vs pretrained (our loss)"):
            print(f"- {k.split(' @ ')[1]}: mean ΔAUC {v['mean_auc_difference']:+.3f}, p = {v['p_value']:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
