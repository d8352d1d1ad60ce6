"""Robustness report: attack success, clean quality and detection, per attack, with and without defence.

    python evaluate.py robust --clean runs/robust/clean/.../last.ckpt \\
        --runs runs/robust/*/version_0/checkpoints/last.ckpt [--split test] [--out DIR]

Every checkpoint's model is one scorer of the report every evaluation writes
(``genrec.evaluation.runner``), ranked on the clean split; the robustness section adds the targets'
T-HR@50 / T-NDCG@50 (``genrec.robust.metrics``) and the defence's detection metrics. What it
checks, writes and plots: docs/robust.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from genrec.data import SequenceDataModule
from genrec.data.datamodule import data_protocol, rebuild_options
from genrec.evaluation.report import UserRanks, per_user_frame, report_paths, write_report
from genrec.evaluation.runner import report_header, score
from genrec.evaluation.runs import Run, load_run
from genrec.evaluation.uncertainty import Bootstrap
from genrec.outputs import check_outputs, record_outputs
from genrec.robust.attacks import AttackConfig
from genrec.robust.callback import saved_signal_scores
from genrec.robust.detector import detection_metrics, max_percentiles, percentiles
from genrec.robust.metrics import target_metrics

K = 50


def saved_state(ckpt: dict, suffix: str) -> dict | None:
    """The state a checkpoint saved for the data module or callback whose name ends with ``suffix``."""
    for key, value in ckpt.items():
        if key.endswith(suffix) and isinstance(value, dict):
            return value
    for key, value in ckpt.get("callbacks", {}).items():
        if suffix in key:
            return value
    return None


def describe(path: str) -> dict[str, Any]:
    """What a checkpoint says about its attack and defence, and its ``Run``."""
    run = load_run(path)
    ckpt = run.ckpt
    fakes = (saved_state(ckpt, "AttackedDataModule") or {}).get("fakes")
    attack = None if fakes is None else AttackConfig.from_dict(fakes["config"])
    return {"path": str(path), "run": run, "data": dict(ckpt.get("datamodule_hyper_parameters") or {}),
            "attack": attack and attack.label(), "attack_config": attack and attack.to_dict(),
            "targets": fakes and fakes["targets"], "num_fakes": len(fakes["sequences"]) if fakes else 0,
            "defence": saved_state(ckpt, "FraudsterReweighting")}


def clean_datamodule(data_hp: dict[str, Any]) -> SequenceDataModule:
    dm = SequenceDataModule(**rebuild_options(SequenceDataModule, data_hp))
    dm.setup("test")
    return dm


def per_target_sets(target_sets: dict[str, list[int]]) -> dict[str, list[int]]:
    """The attacks' target sets plus one single-item set per target, keyed ``<attack> / <item>``."""
    return {**target_sets, **{f"{a} / {t}": [t] for a, targets in target_sets.items() for t in targets}}


def target_sets_metrics(run: Run, dm: SequenceDataModule, split: str, target_sets: dict[str, list[int]]) -> dict[str, Any]:
    """T-HR@K and T-NDCG@K of ``run``'s model for each named set of target items."""
    loader = dm.test_dataloader if split == "test" else dm.val_dataloader
    return {name: target_metrics(run.model, loader(), dm.data, np.asarray(targets), K) for name, targets in target_sets.items()}


def detection(info: dict[str, Any], num_real: int) -> dict[str, dict[str, float]]:
    """Detection metrics of a defended attacked run's saved scores against the true fake-user labels."""
    state = info["defence"]
    out = {name: detection_metrics(np.asarray(state[key]), np.arange(len(state[key])) >= num_real)
           for name, key in (("lm", "lm_scores"), ("calibrated", "scores")) if state.get(key) is not None}
    signals = saved_signal_scores(state)
    if signals:  # flagged: the top flag_fraction, as the update counts them
        num = len(next(iter(signals.values())))
        labels, top = np.arange(num) >= num_real, 1 - state["flag_fraction"]
        for name, scores in signals.items():
            out[name] = detection_metrics(percentiles(torch.as_tensor(np.asarray(scores))).numpy(), labels, top)
        # The update's own ranking (checkpoints before ``update.combine`` saved none: the largest percentile).
        ranked = state.get("update_scores")
        ranked = np.asarray(ranked) if ranked is not None else max_percentiles(state["scores"], *signals.values())
        out["update"] = detection_metrics(ranked, labels, top)
    return out


def check_inputs(clean: dict[str, Any], infos: list[dict[str, Any]]) -> None:
    """Refuse inputs whose attack state or data settings make the report's comparisons wrong."""
    if clean["attack"] or clean["defence"]:
        what = (f"an attack ({clean['attack']}, {clean['num_fakes']} fake users)" if clean["attack"]
                else "FraudsterReweighting state (a defence)")
        raise ValueError(f"--clean {clean['path']} holds {what}: the clean reference must be trained on clean data "
                         "without defence (no data.attack, no FraudsterReweighting); pass such a run's checkpoint")
    for info in infos:
        ours, theirs = data_protocol(clean["data"]), data_protocol(info["data"])
        for key in ours:
            if key in theirs and ours[key] != theirs[key]:
                raise ValueError(f"{info['path']} was trained with data.{key} {theirs[key]!r}, the clean run "
                                 f"{clean['path']} with {ours[key]!r}: every run must share the clean run's "
                                 "data settings (apart from the attack)")
    first: dict[str, dict[str, Any]] = {}
    for info in infos:
        if not info["attack"]:
            continue
        known = first.setdefault(info["attack"], info)
        a, b = known["attack_config"], info["attack_config"]
        differ = ", ".join(f"attack.{k} {a.get(k)!r} vs {v!r}" for k, v in b.items() if a.get(k) != v)
        if differ:
            raise ValueError(f"two {info['attack']} runs hold different attacks ({differ}; {known['path']} and "
                             f"{info['path']}): the undefended and the defended run of one attack must be trained "
                             "with the same attack options, seed included")


def build_report(clean: str, runs: list[str], split: str = "test", root: str | None = None
                 ) -> tuple[dict[str, Any], dict[str, UserRanks], SequenceDataModule]:
    """The report, every scorer's per-user ranks and the clean data module; ``root``: the data folder,
    instead of the one the clean checkpoint names."""
    clean_info = describe(clean)
    infos = [describe(r) for r in runs]
    check_inputs(clean_info, infos)
    attacked = [i for i in infos if i["attack"]]
    defended_clean = [i for i in infos if not i["attack"] and i["defence"]]
    if not attacked and not defended_clean:
        raise ValueError("none of --runs holds an attack or a defence: pass checkpoints trained with "
                         "genrec.robust.AttackedDataModule and data.attack set, or with FraudsterReweighting")
    dm = clean_datamodule({**clean_info["data"], **({"root": root} if root else {})})
    # One target set per attack kind; runs of one kind must share it to be compared.
    target_sets: dict[str, list[int]] = {}
    for info in attacked:
        known = target_sets.setdefault(info["attack"], info["targets"])
        if known != info["targets"]:
            raise ValueError(f"two {info['attack']} runs attack different targets ({known} vs {info['targets']}); "
                             "use the same attack seed for the undefended and the defended run")
    # Every run's model ranks the clean split as one scorer of one report, named by its attack and side.
    names = {"clean": clean_info}
    for info in attacked:
        side = "defended" if info["defence"] else "undefended"
        name = f"{info['attack']} {side}"
        if name in names:
            raise ValueError(f"two {side} runs of the attack {info['attack']!r}: {names[name]['path']} and {info['path']}; "
                             "report them in separate evaluate.py robust calls")
        names[name] = info
    names |= {"no attack (defended)" + (f" {n + 1}" if len(defended_clean) > 1 else ""): i for n, i in enumerate(defended_clean)}
    for info in names.values():
        info["run"].check_catalogue(dm)
    report = report_header("evaluate.py robust", f"clean {clean}; runs {' '.join(runs)}", dm, split, (10,), (10,))
    records = score(report, {name: info["run"].model for name, info in names.items()}, dm, mrr=False)
    clean_metrics = target_sets_metrics(clean_info["run"], dm, split, per_target_sets(target_sets))
    report |= {"k": K, "clean": clean, "attacks": {}, "clean_metrics": {
        **report["metrics"]["clean"], **{k: v for k, v in clean_metrics.items() if " / " not in k}}}
    num_real = dm.data.num_users
    for name, info in names.items():
        if not info["attack"]:  # the price of the defence when nobody attacks: how it treats real users
            if info["defence"]:
                price = {"checkpoint": info["path"], **report["metrics"][name],
                         "real_weights": real_weights(info, num_real)}
                report.setdefault("defended_without_attack", []).append(price)
            continue
        entry = report["attacks"].setdefault(info["attack"], {"targets": info["targets"], "fakes": info["num_fakes"]})
        entry.setdefault("per_target", {"clean": [clean_metrics[f"{info['attack']} / {t}"]["t_hr@50"] for t in info["targets"]]})
        side = "defended" if info["defence"] else "undefended"
        metrics = target_sets_metrics(info["run"], dm, split, per_target_sets({info["attack"]: info["targets"]}))
        entry[side] = {"checkpoint": info["path"], **report["metrics"][name],
                       **{k: v for k, v in metrics[info["attack"]].items() if k != "pairs"}}
        entry["per_target"][side] = [metrics[f"{info['attack']} / {t}"]["t_hr@50"] for t in info["targets"]]
        if info["defence"]:
            entry["detection"] = detection(info, num_real)
            entry["weights"] = final_weights(info, num_real)
            entry["real_weights"] = real_weights(info, num_real)
            entry["weights_over_updates"] = [{k: h[k] for k in ("epoch", "weight_fake", "weight_real") if k in h}
                                             for h in info["defence"].get("history", [])]
    return report, records, dm


def _weights(state: dict[str, Any]) -> np.ndarray:
    """Each user's final loss weight, σ(w) / σ(w0)."""
    return (torch.sigmoid(torch.as_tensor(state["w"]).float()) / torch.sigmoid(torch.tensor(float(state["w0"])))).numpy()


def real_weights(info: dict[str, Any], num_real: int) -> dict[str, float]:
    """How many real users the defence down-weighted, and by how much (their final loss weights;
    users ranked below the mean gain a little, so weights can exceed 1)."""
    w = _weights(info["defence"])[:num_real]
    return {"users": num_real, "below_0.5": int((w < 0.5).sum()), "below_0.9": int((w < 0.9).sum()),
            "mean": float(w.mean()), "min": float(w.min()), "lost_weight": float((1 - np.minimum(w, 1)).sum())}


def final_weights(info: dict[str, Any], num_real: int) -> dict[str, list[float]]:
    """Deciles (0, 10, ..., 100th percentile) of the final loss weights of real and of fake users."""
    w = _weights(info["defence"])
    groups = {"real": w[:num_real], "fake": w[num_real:num_real + info["num_fakes"]]}
    return {name: np.quantile(v, np.linspace(0, 1, 11)).tolist() for name, v in groups.items() if len(v)}


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """``robust_weights.png`` (when a run is defended) and ``robust_targets.png`` in ``out``."""
    from matplotlib.figure import Figure  # no pyplot: no display backend

    written = []
    defended = [(n, e) for n, e in report["attacks"].items() if e.get("weights")]
    if defended:
        fig = Figure(figsize=(10, 3.2 * len(defended)), layout="constrained")
        axes = fig.subplots(len(defended), 2, squeeze=False)
        for (name, e), (over, final) in zip(defended, axes):
            history = e["weights_over_updates"]
            for group in ("fake", "real"):
                over.plot(range(1, len(history) + 1), [h.get(f"weight_{group}", np.nan) for h in history], marker="o", label=group)
                final.plot(np.linspace(0, 100, 11), e["weights"].get(group, [np.nan] * 11), marker=".", label=group)
            over.set(title=f"{name}: mean weight after each update", xlabel="update", ylabel="loss weight")
            over.set_xticks(range(1, len(history) + 1))
            final.set(title="final weights (percentiles)", xlabel="percentile of users", ylabel="loss weight")
            over.legend(fontsize=8)
        fig.savefig(out / "robust_weights.png", dpi=100)
        written.append(out / "robust_weights.png")
    attacks = list(report["attacks"].items())
    if not attacks:  # defended runs without an attack only: no targets to plot
        return written
    fig = Figure(figsize=(10, 3 * len(attacks)), layout="constrained")
    for ax, (name, e) in zip(np.atleast_1d(fig.subplots(len(attacks), 1, squeeze=False)[:, 0]), attacks):
        sides = [s for s in ("clean", "undefended", "defended") if s in e["per_target"]]
        x = np.arange(len(e["targets"]))
        for i, side in enumerate(sides):
            ax.bar(x + (i - (len(sides) - 1) / 2) * 0.8 / len(sides), e["per_target"][side], 0.8 / len(sides), label=side)
        ax.set_xticks(x, [f"item {t}" for t in e["targets"]], fontsize=8)
        ax.set(title=f"{name}: T-HR@{report['k']} per target", ylabel=f"T-HR@{report['k']}")
        ax.legend(fontsize=8)
    fig.savefig(out / "robust_targets.png", dpi=100)
    return written + [out / "robust_targets.png"]


def markdown(report: dict[str, Any]) -> str:
    c = report["clean_metrics"]
    lines = [
        "## Robustness",
        "",
        f"Clean model `{report['clean']}`: HR@10 {c['hr@10']:.4f}, NDCG@10 {c['ndcg@10']:.4f}. "
        f"T-HR@{report['k']} / T-NDCG@{report['k']} over real users who never interacted with the target.",
        "",
        "| attack | fakes | clean T-HR@50 (hits) | T-HR@50 | lift | T-NDCG@50 | HR@10 | NDCG@10 | defended T-HR@50 | "
        "vs undefended | T-NDCG@50 | HR@10 | NDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    fmt = lambda d, k: f"{d[k]:.4f}" if d and k in d else "–"
    ratio = lambda a, b: f"{a / b:.1f}x" if b else ("–" if not a else "inf")
    for name, e in report["attacks"].items():
        u, d, base = e.get("undefended"), e.get("defended"), c[name]["t_hr@50"]
        hits = round(base * c[name]["pairs"])  # a lift over a handful of clean hits is mostly noise
        cells = [f"{base:.4f} ({hits} hits)", fmt(u, "t_hr@50"), ratio(u["t_hr@50"], base) if u else "–",
                 *(fmt(u, k) for k in ("t_ndcg@50", "hr@10", "ndcg@10")), fmt(d, "t_hr@50"),
                 f"{d['t_hr@50'] / u['t_hr@50'] - 1:+.0%}" if d and u and u["t_hr@50"] else "–",
                 *(fmt(d, k) for k in ("t_ndcg@50", "hr@10", "ndcg@10"))]
        lines.append(f"| {name} | {e['fakes']} | " + " | ".join(cells) + " |")
    det = [(n, e["detection"]) for n, e in report["attacks"].items() if e.get("detection")]
    if det:
        lines += ["", "| attack | scores | precision | recall | F1 | ROC-AUC | flagged |", "|---|---|---|---|---|---|---|"]
        for name, d in det:
            for which, m in d.items():
                lines.append(f"| {name} | {which} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['auc']:.3f} | {m['flagged']} |")
    price = [(f"{n} (defended)", e["defended"], e["real_weights"]) for n, e in report["attacks"].items() if e.get("real_weights")]
    price += [("no attack (defended)", e, e["real_weights"]) for e in report.get("defended_without_attack", [])]
    if price:
        lines += ["", "Real users' final loss weights under the defence (1 = untouched):", "",
                  "| run | HR@10 (vs clean) | real users | weight < .9 | weight < .5 | mean | min |", "|---|---|---|---|---|---|---|"]
        for name, m, w in price:
            lines.append(f"| {name} | {m['hr@10']:.4f} ({m['hr@10'] / c['hr@10'] - 1:+.1%}) | {w['users']:,} | "
                         f"{w['below_0.9']:,} | {w['below_0.5']:,} | {w['mean']:.3f} | {w['min']:.3f} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: Any) -> None:
    """``evaluate.py robust``'s options, added to its jsonargparse ``parser``."""
    parser.add_argument("--clean", type=str, required=True, help="checkpoint trained without attack")
    parser.add_argument("--runs", type=str, nargs="+", required=True,
                        help="attacked checkpoints, with and without FraudsterReweighting")
    parser.add_argument("--split", type=Literal["test", "val"], default="test", help="the evaluated split")
    parser.add_argument("--root", "--data.root", type=Optional[str], default=None,
                        help="data folder (unset: the one the clean checkpoint names)")
    parser.add_argument("--out", type=str, default="runs/robust/report", help="report folder (robust_metrics.json, robust_report.md, ...)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace report files in --out even when other checkpoints or another program wrote them")


def run(args: Any) -> dict[str, Any]:
    out = Path(args.out)
    owner = {"command": "evaluate.py robust", "clean": str(Path(args.clean).resolve()),
             "runs": [str(Path(r).resolve()) for r in args.runs], "split": args.split, "root": args.root}
    plot_files = [out / "robust_weights.png", out / "robust_targets.png"]
    check_outputs([*report_paths(out, "robust"), *plot_files], owner, args.overwrite)  # before any checkpoint is evaluated
    report, records, dm = build_report(args.clean, args.runs, args.split, args.root)
    out.mkdir(parents=True, exist_ok=True)
    written = plots(report, out)
    note = "\n" + markdown(report) + "".join(f"\n![{p.stem}]({p.name})\n" for p in written)
    write_report(report, per_user_frame(records, dm, args.split), out, "robust", Bootstrap(), note, overwrite=args.overwrite,
                 owned_by=owner)
    record_outputs(written, owner)
    return report
