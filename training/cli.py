"""`python -m training` / `raman-train`: from an RRUFF zip to a validated ONNX model.

raman-train dataset  --rruff RRUFF.zip --preset dataset_2 --out runs/ds2.npz
raman-train train    --data runs/ds2.npz --out runs/drcnn [--width-div 8] [--split grouped]
raman-train evaluate --run runs/drcnn
raman-train export   --run runs/drcnn --store models --name rruff-minerals
raman-train all      --rruff RRUFF.zip --preset dataset_2 --out runs/drcnn --store models ...
raman-train recalibrate --base models/rruff-minerals/6 --rruff RRUFF.zip --store models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from spectra.errors import SpectrumError
from spectra.grid import Grid
from training.datasets import PRESETS, SubsetRule, build_dataset


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--rruff",
        type=Path,
        required=True,
        help="RRUFF zip (as rruff.info serves it) or folder of .txt files",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="dataset_2",
        help="the paper's subset rule (default: %(default)s)",
    )
    p.add_argument(
        "--grid",
        type=float,
        nargs=3,
        metavar=("START", "STOP", "POINTS"),
        help="override the preset's grid (cm-1, cm-1, points)",
    )


def _train_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=["drcnn", "liu2017"], default="drcnn")
    g.add_argument(
        "--width-div",
        type=int,
        default=1,
        help="divide every width by this (8 trains on a CPU); 1 = paper sizes",
    )
    g.add_argument(
        "--dense-width-div",
        type=int,
        default=None,
        help="divide the dense widths by this instead (default: --width-div)",
    )
    g.add_argument(
        "--rec-channels",
        type=int,
        default=1024,
        help="reconstruction conv channels before --width-div (paper: 1024)",
    )
    g.add_argument("--depth", type=int, default=9, help="recursions D (paper: 9)")
    g.add_argument(
        "--recursive-supervision",
        action="store_true",
        help="supervise every recursion (Kim et al. 2016)",
    )
    g.add_argument(
        "--input-transform",
        choices=["none", "derivative"],
        default="none",
        help="derivative: a fixed first layer feeds the network the derivative library search's "
        "features (square root, Savitzky-Golay first derivative); part of the ONNX graph",
    )
    g.add_argument(
        "--head",
        choices=["linear", "cosine"],  # training.model.HEADS (torch-free import)
        default="linear",
        help="output layer: the paper's dense layer, or cosine: a learned scale times the cosine "
        "between the last hidden layer and each class's weights (ours; see docs/accuracy.md)",
    )
    g = p.add_argument_group("training (defaults: the paper's section 2.3)")
    g.add_argument(
        "--split",
        choices=["random", "grouped"],
        default="random",
        help="random stratified 56:14:30 (paper) or grouped by RRUFF sample",
    )
    g.add_argument("--split-seed", type=int, default=0)
    g.add_argument("--seed", type=int, default=0, help="initialisation and batch-order seed")
    g.add_argument("--epochs", type=int, default=200)
    g.add_argument("--patience", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--lr", type=float, default=1e-4)
    g.add_argument(
        "--lr-schedule",
        choices=["constant", "cosine"],  # training.train.LR_SCHEDULES (torch-free import)
        default="constant",
        help="constant (paper) or cosine: lr annealed to 1 %% of --lr over --epochs",
    )
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument(
        "--grad-clip",
        type=float,
        default=0.0,
        help="clip the gradient's L2 norm to this before each step (0 = off, the paper)",
    )
    g.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="decoupled (AdamW) weight decay of the convolution and dense weights (0 = the paper)",
    )
    g.add_argument(
        "--swa-start",
        type=int,
        default=0,
        help="average the weights of every epoch from this one on and keep the average as the "
        "model (stochastic weight averaging; 0 = off, the paper)",
    )
    g.add_argument(
        "--aux-weight",
        type=float,
        default=0.5,
        help="weight of the per-recursion losses with --recursive-supervision",
    )
    g.add_argument("--augment-shift", type=float, default=0.0, help="random shift, +- grid points")
    g.add_argument(
        "--augment-gain",
        type=float,
        default=0.0,
        help="random smooth gain: log gain linear + quadratic over the grid, coefficients +- this",
    )
    g.add_argument("--augment-noise", type=float, default=0.0, help="Gaussian noise sigma")
    g.add_argument(
        "--augment-baseline", type=float, default=0.0, help="random quadratic baseline amplitude"
    )
    g.add_argument(
        "--augment-scale", type=float, default=0.0, help="random intensity scale +- fraction"
    )
    g.add_argument(
        "--mixup",
        type=float,
        default=0.0,
        help="mixup: train on mixtures of two spectra, weight ~ Beta(a, a) (0 = off, the paper)",
    )
    g.add_argument(
        "--top-up",
        type=int,
        default=None,
        help="copy training spectra of small classes up to N (Dataset_3)",
    )
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def _export_args(p: argparse.ArgumentParser, name: str | None = "rruff-minerals") -> None:
    p.add_argument(
        "--store", type=Path, default=Path("models"), help="model store root (default: %(default)s)"
    )
    shown = name or "the base version's"
    p.add_argument("--name", default=name, help=f"model name (default: {shown})")
    p.add_argument("--version", default=None, help="version label (default: next integer)")
    p.add_argument(
        "--max-false-accept",
        type=_share,
        default=None,
        metavar="SHARE",
        help="raise the no-match rule's min_similarity to what about this share (e.g. 0.1) of "
        "minerals missing from the library would pass (default: the accuracy-chosen rule only)",
    )


def _share(text: str) -> float:
    """A number in (0, 1), for argparse."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    ap = argparse.ArgumentParser(
        prog="raman-train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dataset", help="build a paper subset from RRUFF and print its counts")
    _dataset_args(p)
    p.add_argument("--out", type=Path, help="write the preprocessed data set (.npz)")
    p = sub.add_parser("train", help="train a network on a built data set")
    p.add_argument("--data", type=Path, required=True, help=".npz written by `dataset`")
    p.add_argument("--out", type=Path, required=True, help="run directory")
    _train_args(p)
    p = sub.add_parser("evaluate", help="test metrics, confusion matrix (PNG + counts)")
    p.add_argument("--run", type=Path, required=True)
    p = sub.add_parser("export", help="calibrate and export a run to the model store")
    p.add_argument("--run", type=Path, required=True)
    _export_args(p)
    p = sub.add_parser("all", help="dataset + train + evaluate + export in one go")
    _dataset_args(p)
    p.add_argument(
        "--out", type=Path, required=True, help="run directory (the data set is written inside)"
    )
    _train_args(p)
    _export_args(p)
    p = sub.add_parser(
        "recalibrate",
        help="publish an exported version's network again with the current calibration code",
    )
    p.add_argument("--base", type=Path, required=True, help="the version directory to start from")
    p.add_argument(
        "--rruff", type=Path, required=True, help="the RRUFF zip or folder the base was built from"
    )
    _export_args(p, name=None)
    return ap


def cmd_dataset(args: argparse.Namespace) -> Path | None:
    """Build, print counts, optionally save."""
    rule = PRESETS[args.preset]
    if args.grid:
        rule = SubsetRule(
            rule.name,
            rule.min_per_class,
            rule.max_per_class,
            Grid(args.grid[0], args.grid[1], int(args.grid[2])),
            rule.top_up_to,
        )
    ds, report = build_dataset(args.rruff, rule)
    ds.info["source"] = str(args.rruff)
    print(
        json.dumps(
            {
                "subset": rule.name,
                "grid": rule.grid.to_dict(),
                "counts": ds.info["counts"],
                "files": report.to_dict(),
            },
            indent=2,
        )
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        ds.save(args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    return args.out


def _spec(args: argparse.Namespace, data: Path):
    from training.pipeline import RunSpec

    model: dict[str, Any] = {"width_div": args.width_div}
    if args.arch == "drcnn":
        model.update(
            depth=args.depth,
            recursive_supervision=args.recursive_supervision,
            input_transform=args.input_transform,
            head=args.head,
            dense_width_div=args.dense_width_div,
            rec_channels=args.rec_channels,
        )
    train = {
        "epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "lr_schedule": args.lr_schedule,
        "seed": args.seed,
        "device": args.device,
        "progress": not args.no_progress,
        "label_smoothing": args.label_smoothing,
        "grad_clip": args.grad_clip,
        "weight_decay": args.weight_decay,
        "swa_start": args.swa_start,
        "aux_weight": args.aux_weight if args.recursive_supervision else 0.0,
        "mixup": args.mixup,
        "augment": {
            "shift": args.augment_shift,
            "gain": args.augment_gain,
            "noise": args.augment_noise,
            "baseline": args.augment_baseline,
            "scale": args.augment_scale,
        },
    }
    return RunSpec(str(data), args.split, args.split_seed, args.arch, model, train, args.top_up)


def cmd_train(args: argparse.Namespace) -> None:
    """Train and evaluate one run."""
    from training.pipeline import train_run
    from training.train import epoch_logger

    # one line per epoch on stderr: tqdm's per-batch bars vanish and leave a log file empty
    log = epoch_logger(args.out.name, args.epochs)
    res = train_run(_spec(args, args.data), args.out, resume=args.resume, on_epoch=log)
    print(
        f"best val acc {res.best_val_acc:.4f} at epoch {res.best_epoch} "
        f"({res.epochs_run} epochs, {res.stopped}, {res.seconds:.0f} s)"
    )
    print((args.out / "metrics.md").read_text())


def cmd_evaluate(args: argparse.Namespace) -> None:
    """Evaluate a finished run."""
    from training.pipeline import evaluate_run

    evaluate_run(args.run)
    print((args.run / "metrics.md").read_text())


def cmd_export(args: argparse.Namespace) -> None:
    """Export a run to the store."""
    from training.card_markdown import write
    from training.pipeline import export_run

    strict = args.max_false_accept
    target = export_run(args.run, args.store, args.name, args.version, strict)
    write(target, command=reproduce_command(args.run, args.store, args.name, target.name, strict))
    print(f"exported {target}")


def cmd_recalibrate(args: argparse.Namespace) -> None:
    """Publish a base version's network recalibrated on its own split."""
    from spectra.card import CardError
    from training.card_markdown import write
    from training.recalibrate import RecalibrateError, recalibrate_version

    strict = args.max_false_accept
    try:
        target = recalibrate_version(
            args.base, args.rruff, args.store, args.name, args.version, strict
        )
    except (CardError, RecalibrateError, FileNotFoundError) as exc:
        sys.exit(f"raman-train recalibrate: {exc}")
    parts = [
        f"raman-train recalibrate --base {args.base} --rruff {args.rruff}",
        f"--store {args.store} --name {target.parent.name} --version {target.name}",
        *([f"--max-false-accept {strict:g}"] if strict is not None else []),
    ]
    write(target, command=recalibrated_command(args.base, " \\\n    ".join(parts)))
    print(f"exported {target}")


def recalibrated_command(base: Path, recalibrate: str) -> str:
    """The Reproduce text of a recalibrated version: the base's own commands first (copied
    from its card, so that the new card stands alone once the base is deleted), then
    `recalibrate`."""
    from training.card_markdown import reproduce_block

    base_command = reproduce_block(base)
    if base_command is None:
        return f"# the network of {base} (its card says how it was trained), recalibrated:\n" + (
            recalibrate
        )
    return (
        f"# 1. the base version {base}, as its card gives it:\n{base_command}\n"
        f"# 2. its network recalibrated (--base: the version that step 1 exported):\n" + recalibrate
    )


def reproduce_command(
    run: Path, store: Path, name: str, version: str, max_false_accept: float | None = None
) -> str:
    """The single `raman-train all` command that rebuilds this run and exports it."""
    from training.datasets import Dataset
    from training.pipeline import RunSpec

    spec = RunSpec.load(run)
    info = Dataset.load(Path(spec.data)).info
    grid, model, train = info["rule"]["grid"], spec.model or {}, spec.train or {}
    aug = train.get("augment", {})
    parts = [
        f"OMP_NUM_THREADS=1 raman-train all --rruff {info.get('source', 'RRUFF.zip')}",
        f"--preset {info['rule']['name']}",
        f"--grid {grid['start']:g} {grid['stop']:g} {grid['points']}",
        f"--arch {spec.arch} --width-div {model.get('width_div', 1)}",
        *([f"--dense-width-div {d}"] if (d := model.get("dense_width_div")) else []),
        *([f"--rec-channels {model['rec_channels']}"] if "rec_channels" in model else []),
        *([f"--depth {model['depth']}"] if "depth" in model else []),
        *(
            [f"--input-transform {t}"]
            if (t := model.get("input_transform", "none")) != "none"
            else []
        ),
        *([f"--head {h}"] if (h := model.get("head", "linear")) != "linear" else []),
        *(
            ["--recursive-supervision", f"--aux-weight {train.get('aux_weight', 0.0):g}"]
            if model.get("recursive_supervision")
            else []
        ),
        f"--split {spec.split} --split-seed {spec.split_seed} --seed {train.get('seed', 0)}",
        f"--epochs {train.get('epochs')} --patience {train.get('patience')}",
        f"--batch-size {train.get('batch_size')} --lr {train.get('lr')}",
        *(
            [f"--lr-schedule {sch}"]
            if (sch := train.get("lr_schedule", "constant")) != "constant"
            else []
        ),
        *([f"--label-smoothing {ls:g}"] if (ls := train.get("label_smoothing")) else []),
        *([f"--grad-clip {gc:g}"] if (gc := train.get("grad_clip")) else []),
        *([f"--weight-decay {wd:g}"] if (wd := train.get("weight_decay")) else []),
        *([f"--swa-start {sw}"] if (sw := train.get("swa_start")) else []),
        *[f"--augment-{k} {v}" for k, v in aug.items() if k != "p" and v],
        *([f"--mixup {mx:g}"] if (mx := train.get("mixup")) else []),
        *([f"--top-up {spec.top_up_to}"] if spec.top_up_to else []),
        f"--out {run} --store {store} --name {name} --version {version}",
        *([f"--max-false-accept {max_false_accept:g}"] if max_false_accept is not None else []),
    ]
    return " \\\n    ".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `raman-train`: an unreadable input (no such file, not an RRUFF zip) is
    one line on stderr and exit status 1, not a traceback."""
    args = parser().parse_args(argv)
    try:
        run(args)
    except (SpectrumError, FileNotFoundError) as exc:
        sys.exit(f"raman-train {args.command}: {exc}")
    return 0


def run(args: argparse.Namespace) -> None:
    """Run the parsed command."""
    if args.command == "dataset":
        cmd_dataset(args)
    elif args.command == "train":
        cmd_train(args)
    elif args.command == "evaluate":
        cmd_evaluate(args)
    elif args.command == "export":
        cmd_export(args)
    elif args.command == "recalibrate":
        cmd_recalibrate(args)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        rruff_out, args.out = args.out, args.out / "dataset.npz"
        args.data = cmd_dataset(args)
        args.out = rruff_out
        cmd_train(args)
        args.run = args.out
        cmd_export(args)
