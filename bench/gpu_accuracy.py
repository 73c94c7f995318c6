"""The full-size accuracy table on one GPU in one call: `bench_accuracy.py` jobs run side by side.

A lent GPU machine gives this project a few minutes, not hours, so the paper-size runs are split
into independent `bench_accuracy.py` processes that share the GPU (each trains a ~105 M-parameter
DRCNN at batch 32), all on the same split seeds, all stopped by one wall-clock deadline (a job
still running `--grace` seconds later is killed). Each job rewrites its own `results.json` under
`<work>/parts/<job>` after every (split, method) unit, so whatever finished is kept; at the end
the whole work folder (logs, parts, figures, GPU utilisation) is packed into one
`$OUT/gpu_accuracy.tgz`, because a device call returns at most 8 files, 2 folders deep.
`bench_accuracy.py --merge` then combines the parts into one table (run locally, see
docs/accuracy.md). No network access is needed: the subsets come as the `.npz` cache built by
`bench_accuracy.py` (`--cache`), and matplotlib, if the machine lacks it, from a folder of
wheels that are unpacked onto `sys.path` (no pip needed).

    # on the GPU machine (see docs/accuracy.md for how the cache and wheels travel)
    python3 bench/gpu_accuracy.py --cache .gpu/cache --wheels .gpu/wheels --deadline 420
    # the same plan in miniature on a CPU (a few classes, width/16, 2 epochs)
    python bench/gpu_accuracy.py --smoke --work /tmp/gpu_smoke --out /tmp/gpu_smoke_out
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "bench_accuracy.py"
D1, D2 = "dataset_1", "dataset_2"


def job(
    subset: str, methods: str, random: int = 0, grouped: int = 0, openset: str = ""
) -> list[str]:
    """bench_accuracy.py arguments: `random` + `grouped` splits of `subset` with `methods` (and
    the adapted search and fitted mixes beside the derivative ones: `with_library_variants`),
    and the open-set experiment with network `openset` (none when empty)."""
    args = ["--subsets", subset, "--n-splits", str(random), "--n-grouped", str(grouped)]
    args += ["--openset-method", openset] if openset else ["--no-openset"]
    return [*args, "--methods", with_library_variants(methods)]


def with_library_variants(methods: str) -> str:
    """`methods` with `adapted` after `derivative`, and after `<net>+derivative` the mixes
    `<net>+adapted`, `<net>+derivative_fit` and `<net>+adapted_fit` (the weight chosen on
    validation): on a lease the library searches and mixes cost seconds beside a network's
    training, so every job that measures the derivative search measures these too."""
    out = []
    for m in methods.split(","):
        out.append(m)
        if m == "derivative":
            out.append("adapted")
        elif m.endswith("+derivative"):
            net = m.removesuffix("derivative")
            out += [f"{net}adapted", f"{m}_fit", f"{net}adapted_fit"]
    return ",".join(out)


# job name -> bench_accuracy.py arguments. Every job includes `cosine` so that each network is
# compared with the library search on exactly the splits it ran on. Most important units first:
# a job stops at the deadline, keeping what it finished.
PLAN: dict[str, list[str]] = {
    "d1_random_drcnn": job(
        D1, "cosine,correlation,derivative,drcnn,drcnn+lib,drcnn+derivative,drcnn+tta", random=30
    ),
    "d1_random_rs_liu": job(D1, "cosine,derivative,drcnn_rs,liu,drcnn_rs+derivative", random=30),
    "d1_grouped": job(
        D1, "cosine,derivative,drcnn,drcnn+derivative,drcnn_rs,drcnn_rs+derivative,liu", grouped=5
    ),
    "d1_openset": job(D1, "cosine", openset="drcnn"),
    "d2_random_drcnn": job(
        D2, "cosine,correlation,derivative,drcnn,drcnn+lib,drcnn+derivative", random=30
    ),
    "d2_grouped": job(
        D2, "cosine,derivative,drcnn,drcnn+derivative,drcnn_rs,drcnn_rs+derivative", grouped=5
    ),
    "d2_random_dx_rs": job(
        D2,
        "cosine,derivative,drcnn_dx,drcnn_dx+derivative,drcnn_rs,drcnn_rs+derivative",
        random=30,
    ),
    "d2_random_liu_aug": job(D2, "cosine,derivative,liu,drcnn_aug,drcnn_aug+derivative", random=30),
    # one split each, so a paper-size training can reach the paper's stopping rule (patience 30)
    # within a lease instead of being cut: the DRCNN, and beside it the recursive supervision,
    # which converged within ~40 epochs on dataset_1 and so frees the card early
    "d2_converge_drcnn": job(D2, "cosine,derivative,drcnn,drcnn+lib,drcnn+derivative", random=1),
    "d2_converge_rs": job(D2, "cosine,derivative,drcnn_rs,drcnn_rs+derivative", random=1),
}
# What fits a lease. Measured on an H200 (docs/accuracy.md): a paper-size dataset_1 training
# takes ~1-2 min with 3 jobs sharing the card, a dataset_2 one 3-7 min of the card (~2 s an
# epoch); 8 jobs saturate it. A 15-minute lease fits one or two dataset_2 trainings, cut short:
# run "d2" again with --first-seed moved on to add splits; "d2converge" lets one split finish.
PLANS = {
    "d2": ["d2_random_drcnn", "d2_grouped", "d2_random_dx_rs"],
    "d2converge": ["d2_converge_drcnn", "d2_converge_rs"],
    "d1": ["d1_random_drcnn", "d1_random_rs_liu", "d1_grouped", "d1_openset"],
    "all": list(PLAN),
}
SMOKE_ARGS = ["--width-div", "16", "--epochs", "2", "--patience", "2", "--max-classes", "6",
              "--train-reserve", "2", "--min-train", "5"]  # fmt: skip

# module -> wheel name prefix, for what bench_accuracy.py imports beyond numpy and torch
WHEELS = {
    "matplotlib": "matplotlib",
    "contourpy": "contourpy",
    "cycler": "cycler",
    "fontTools": "fonttools",
    "kiwisolver": "kiwisolver",
    "packaging": "packaging",
    "PIL": "pillow",
    "pyparsing": "pyparsing",
    "dateutil": "python_dateutil",
    "six": "six",
}


def unpack_missing(wheels: Path, site: Path) -> list[str]:
    """Unpack the wheel of every module in WHEELS that this Python cannot import; returns the
    wheels unpacked (a wheel is a zip laid out for site-packages, so no pip is needed)."""
    done = []
    for module, prefix in WHEELS.items():
        if importlib.util.find_spec(module) is not None:
            continue
        found = sorted(wheels.glob(f"{prefix}-*.whl"))
        if not found:
            raise SystemExit(f"{module} is missing and no {prefix}-*.whl is in {wheels}")
        with zipfile.ZipFile(found[-1]) as z:
            z.extractall(site)
        done.append(found[-1].name)
    return done


def launch(
    name: str, args: list[str], opts: argparse.Namespace, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start one bench job; its stdout and stderr go to logs/<name>.log."""
    out = opts.work / "parts" / name
    cmd = [sys.executable, str(BENCH), *args, "--out", str(out), "--cache", str(opts.cache)]
    cmd += ["--deadline", str(opts.deadline), "--threads", str(opts.threads)]
    cmd += ["--device", opts.device, "--rruff", str(opts.rruff), "--seed", str(opts.first_seed)]
    if opts.smoke:
        cmd += SMOKE_ARGS
    log = (opts.work / "logs" / f"{name}.log").open("w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)


def gpu_monitor(out: Path) -> subprocess.Popen[bytes] | None:
    """nvidia-smi utilisation and memory every 5 s into gpu_util.csv (when there is a GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    query = "timestamp,name,utilization.gpu,memory.used,memory.total,power.draw"
    f = (out / "gpu_util.csv").open("w")
    return subprocess.Popen(
        [smi, f"--query-gpu={query}", "--format=csv", "-l", "5"], stdout=f, stderr=f
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "bench/out/gpu")))
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_accuracy"), help="jobs' folder")
    p.add_argument("--cache", type=Path, default=REPO / "bench" / "cache")
    p.add_argument("--wheels", type=Path, default=None, help="wheels for missing modules")
    p.add_argument("--rruff", type=Path, default=Path("excellent_unoriented.zip"))
    p.add_argument("--deadline", type=float, default=420.0, help="seconds for every job")
    p.add_argument("--grace", type=float, default=60.0, help="then running jobs are killed")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per job")
    p.add_argument("--device", default="auto")
    p.add_argument("--plan", default="d2", choices=sorted(PLANS), help="named set of jobs")
    p.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first split seed of every job: a later lease starts where the last one stopped",
    )
    p.add_argument("--jobs", default=None, help="comma-separated jobs of PLAN (overrides --plan)")
    p.add_argument("--smoke", action="store_true", help="the plan in miniature (CPU check)")
    return p.parse_args(argv)


def wait_all(procs: dict[str, subprocess.Popen[bytes]], until: float) -> dict[str, int | None]:
    """Exit codes once every job ended or `until` (time.time()) passed; late jobs are killed
    (None): their finished units are already on disk."""
    codes: dict[str, int | None] = {}
    for name, p in procs.items():
        try:
            codes[name] = p.wait(timeout=max(until - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            codes[name] = None
    return codes


def pack(work: Path, out: Path) -> Path:
    """The work folder (checkpoints left out) as one tarball in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_accuracy.tgz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(work, arcname=work.name, filter=lambda i: None if i.name.endswith(".pt") else i)
    return path


def main(argv: list[str] | None = None) -> int:
    """Run the plan in --work (plan.json, logs/, parts/, gpu_util.csv, summary.json), then pack
    it into --out/gpu_accuracy.tgz."""
    opts = parse_args(argv)
    start = time.time()
    if opts.work.exists() and any(opts.work.iterdir()):
        raise SystemExit(f"{opts.work} is not empty: pass a new --work folder")
    (opts.work / "logs").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(opts.threads), MPLBACKEND="Agg")
    paths = [str(REPO)]
    unpacked: list[str] = []
    if opts.wheels is not None:
        site = Path("/tmp/gpu_accuracy_site")
        unpacked = unpack_missing(opts.wheels, site)
        paths.append(str(site))
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    names = opts.jobs.split(",") if opts.jobs else PLANS[opts.plan]
    unknown = [n for n in names if n not in PLAN]
    if unknown:
        raise SystemExit(f"unknown job(s) {', '.join(unknown)}; choose from {', '.join(PLAN)}")
    jobs = {n: PLAN[n] for n in names if n}
    plan = {
        "jobs": jobs,
        "first_seed": opts.first_seed,
        "deadline_s": opts.deadline,
        "smoke": opts.smoke,
        "unpacked": unpacked,
    }
    (opts.work / "plan.json").write_text(json.dumps(plan, indent=1) + "\n")
    monitor = gpu_monitor(opts.work)
    procs = {name: launch(name, args, opts, env) for name, args in jobs.items()}
    codes = wait_all(procs, start + opts.deadline + opts.grace)
    if monitor is not None:
        monitor.terminate()
    summary = {"exit_codes": codes, "wall_seconds": round(time.time() - start, 1)}
    (opts.work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary), "->", pack(opts.work, opts.out))
    return 0 if all(c == 0 for c in codes.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
