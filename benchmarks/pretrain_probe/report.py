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
    fractions = sorted(next(iter(summary.values())), key=float, reverse=True)
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


def _header(r: dict[str, Any]) -> list[str]:
    """Label checks, pre-training losses, timing (wall, CPU, load)."""
    lines = ["Label checks (test AUC; logistic regression on train + tune):", ""]
    for k, v in r.get("texture_oracle", {}).items():
        if isinstance(v, float):
            lines.append(f"- texture oracle, {k} of the central 5³ voxels: {v:.3f}")
        else:
            lines.append(f"- {k.replace('mean_hu', 'mean (HU + 1024)')}: {v[0]:.1f} / {v[1]:.1f}")
    lines.append(
        f"- density only (patch mean, centre mean, generated HU): {r['density_only_baseline']['test_auc']:.3f}"
    )
    lines += ["", "Pre-training (loss first → last step):", ""]
    for k, v in r["pretrain"].items():
        lines.append(f"- {k}: {v['first_loss']:.2f} → {v['last_loss']:.2f} in {v['steps']} steps, {v['seconds']:.0f} s")
    cpu, wall = r["cpu_s"], r["seconds"]
    loads = [x[0] for x in r["load_average_1_5_15"]]
    lines += ["", f"Wall time {wall / 60:.1f} min; CPU time (user + sys, process and children) "
              f"{cpu['total'] / 60:.1f} CPU-min (budget 120 = 60 min × 2 cores); 1-min load average "
              f"{min(loads):.1f}–{max(loads):.1f}; stages (wall s): "
              + ", ".join(f"{k} {v:.0f}" for k, v in r["timings_s"].items())
              + f"; fine-tuned fractions: {r.get('finetune_fractions_done', 'all')}.", ""]  # fmt: skip
    return lines


def main(path: Path) -> None:
    r = json.loads(path.read_text())
    print("\n".join(_header(r)))
    print("Linear probe, test AUC (mean ± SD over draws):\n")
    print("\n".join(_table(r["probe_summary"], r["probe_tests"])))
    print("\nFine-tuning, test AUC (mean ± SD over draws):\n")
    ft_summary = r["finetune_summary"]
    n_train = {f: v["n_train"] for f, v in r["probe_summary"]["random init"].items()}
    for arm in ft_summary.values():
        for f, v in arm.items():
            v["n_train"] = n_train.get(f)
    print("\n".join(_table(ft_summary, r["finetune_tests"])) if ft_summary else "(no fine-tuning fraction finished)")
    for name, tests in (("probe", r["probe_tests"]), ("fine-tuning", r["finetune_tests"])):
        rows = [(k, v) for k, v in tests.items() if k.startswith("pretrained (authors' loss) vs pretrained (our loss)")]
        if rows:
            print(f"\nLoss ablation ({name}; authors' loss − our loss):\n")
        for k, v in rows:
            print(f"- {k.split(' @ ')[1]}: mean ΔAUC {v['mean_auc_difference']:+.3f}, p = {v['p_value']:.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
