"""Do ensembles pay? Combining finished runs' image scores on the real photographs.

``label_free_real.py --keep-scores DIR`` leaves, per photograph and variant, the
test image scores, the good validation image scores and the label-free set
(``val_synthetic.npz``). An ensemble as the select issue describes it standardises
each member's image scores on the good validation images (mean and standard
deviation) and combines them by their mean or their maximum; the same combination
applied to the label-free set gives the ensemble's own label-free figure, so an
ensemble can join the candidates of ``anomaly select`` on equal terms.

For every photograph this script scores every subset of two or more variants under
both rules, and compares, over the photographs:

- each variant alone, and each ensemble as a fixed choice (real test image AUROC);
- selection among the single variants by the label-free figure (what ``anomaly
  select`` does now) against selection among singles and ensembles together.

Rows (one per photograph x candidate) go to ``--out``; the summary is printed.

    PYTHONPATH=src python benchmarks/ensemble_real.py DIR --out benchmarks/results/ensemble_real.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def _member(folder: Path) -> dict:
    """One run's standardised scores: test (with labels), label-free good and defect."""
    test = pd.read_csv(folder / "test_images.csv").sort_values("image_id")
    val = pd.read_csv(folder / "val_images.csv")
    good = val.loc[val["label"] == 0, "score"].to_numpy(float)
    mean, std = good.mean(), max(good.std(), 1e-12)
    with np.load(folder / "val_synthetic.npz") as stored:
        lf_good, lf_defect = stored["good_scores"], stored["defect_scores"]
    return {
        "ids": test["image_id"].to_numpy(),
        "labels": (test["label"].to_numpy() != 0).astype(int),
        "test": (test["score"].to_numpy(float) - mean) / std,
        "lf_good": (lf_good - mean) / std,
        "lf_defect": (lf_defect - mean) / std,
    }


def _auroc(good: np.ndarray, bad: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.zeros(len(good)), np.ones(len(bad))], np.r_[good, bad]))


def candidates(photo_dir: Path, max_members: int) -> list[dict]:
    """Every single variant and every ensemble of 2..max_members of them, both rules."""
    members = {d.name: _member(d) for d in sorted(photo_dir.iterdir()) if d.is_dir()}
    first = next(iter(members.values()))
    for name, m in members.items():
        if not np.array_equal(m["ids"], first["ids"]):
            raise SystemExit(f"{photo_dir / name}: test images differ from the other runs'")
    rows = []
    names = sorted(members)
    for count in range(1, max_members + 1):
        for combo in itertools.combinations(names, count):
            for rule in ("mean", "max") if count > 1 else ("single",):
                reduce = np.max if rule == "max" else np.mean
                test = reduce([members[n]["test"] for n in combo], axis=0)
                lf_good = reduce([members[n]["lf_good"] for n in combo], axis=0)
                lf_bad = reduce([members[n]["lf_defect"] for n in combo], axis=0)
                labels = first["labels"]
                rows.append(
                    {
                        "dataset": photo_dir.name,
                        "members": list(combo),
                        "rule": rule,
                        "image.auroc": _auroc(test[labels == 0], test[labels == 1]),
                        "val_synthetic.image.auroc": _auroc(lf_good, lf_bad),
                    }
                )
    return rows


def summary_text(rows: list[dict]) -> str:
    """Markdown: the best fixed candidates, then selection by the label-free figure among
    singles and among singles plus ensembles (regret against the best single)."""
    frame = pd.DataFrame(rows)
    frame["name"] = frame.apply(
        lambda r: " + ".join(r["members"]) + ("" if r["rule"] == "single" else f" ({r['rule']})"),
        axis=1,
    )
    table = frame.pivot(index="name", columns="dataset", values="image.auroc")
    table["mean"] = table.mean(axis=1)
    best = table.sort_values("mean", ascending=False).head(8)
    datasets = [c for c in table.columns if c != "mean"]
    out = [
        "| candidate, as a fixed choice | " + " | ".join(datasets) + " | mean |",
        "|---|" + "---|" * (len(datasets) + 1),
    ]
    out += [
        f"| {name} | " + " | ".join(f"{best.loc[name, d]:.3f}" for d in [*datasets, "mean"]) + " |"
        for name in best.index
    ]
    singles = frame[frame["rule"] == "single"]
    best_single = singles.groupby("dataset")["image.auroc"].max()
    out.append("")
    for label, pool in (("the single models", singles), ("singles and ensembles", frame)):
        chosen = pool.loc[pool.groupby("dataset")["val_synthetic.image.auroc"].idxmax()]
        chosen = chosen.set_index("dataset")
        regret = best_single - chosen["image.auroc"]
        picks = "; ".join(f"{d}: {row['name']}" for d, row in chosen.iterrows())
        out.append(
            f"- Selecting among {label} by the label-free figure: mean real AUROC "
            f"{chosen['image.auroc'].mean():.3f}, regret against the best single model "
            f"{regret.mean():.3f} (worst {regret.max():.3f}). Picks: {picks}."
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scores", type=Path, help="label_free_real.py --keep-scores folder")
    parser.add_argument("--max-members", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write JSON lines here")
    args = parser.parse_args()
    rows = []
    for photo_dir in sorted(p for p in args.scores.iterdir() if p.is_dir()):
        rows += candidates(photo_dir, args.max_members)
    if args.out is not None:
        args.out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(summary_text(rows))


if __name__ == "__main__":
    main()
