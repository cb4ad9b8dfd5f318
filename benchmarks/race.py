"""Time to accuracy on Fashion-MNIST, side by side in one invocation: Keras (TensorFlow), a bare
PyTorch loop of the same nets, and cnnlab's default recipe.

Each contestant runs in a fresh process, one after the other; the clock starts when the process is
started (imports, data loading and model building included) and stops at the end of the first
epoch whose *test* accuracy reaches the target: 90 % for the CNN, 88 % for the dense net. (This is
a benchmark, not model selection: every contestant is scored on the test set after every epoch,
and that evaluation is inside the clock for all of them.)

The nets: Keras' reference CNN (Conv32-pool-Conv64-pool-Dense128, valid padding, 225k params) and
dense net (Dense128, 102k params), Adam 1e-3, batch 128; the bare PyTorch loop trains the very same
nets the same way; cnnlab runs `cnnlab train --data fashion-mnist [--model mlp]` with its
defaults (its default net, cnn-bn, for the CNN race, and its own recipe: that is what is being
measured).

Usage:
  python benchmarks/race.py [--only cnn|dense] [--seeds 0,1,2] [--busy-core] [--keras-python PATH]
                            [--max-epochs 30] [--skip torch] [--set train.batch_size=256]

Keras needs TensorFlow: in this interpreter, or in the one given by --keras-python (default: the
project's .venv-tf/bin/python when it exists; `make race-env` makes it). Without it the Keras rows
say so and the ratios are left out. --busy-core repeats Keras's and cnnlab's rows with a busy-loop
process pinned to one core, to show how each holds up on a shared machine. With several --seeds,
each contestant runs once per seed and the ratios are of the median times (a seed that never
reaches the target counts as infinitely slow).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FMNIST = Path("/usr/share/datasets/fashion-mnist")
ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"cnn": 0.90, "dense": 0.88}


def load_idx(kind: str):
    import numpy as np

    with gzip.open(FMNIST / f"{kind}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FMNIST / f"{kind}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return x, y


def report(epoch: int, acc: float, t0: float) -> None:
    print(json.dumps({"epoch": epoch, "test_acc": acc, "seconds": time.time() - t0}), flush=True)


# ---------------------------------------------------------------------------------------------- contestants
def keras_child(net: str, target: float, max_epochs: int, t0: float, seed: int = 0) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    xtr, ytr = load_idx("train")
    xte, yte = load_idx("t10k")
    xtr, xte = (xtr[..., None] / 255.0).astype("float32"), (xte[..., None] / 255.0).astype("float32")
    L = keras.layers
    if net == "cnn":
        layers = [
            L.Conv2D(32, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Conv2D(64, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dense(10),
        ]
    else:
        layers = [L.Flatten(), L.Dense(128, activation="relu"), L.Dense(10)]
    model = keras.Sequential([keras.Input((28, 28, 1)), *layers])
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    print(json.dumps({"params": model.count_params(), "threads": "tf default"}), flush=True)
    for epoch in range(1, max_epochs + 1):
        model.fit(xtr, ytr, batch_size=128, epochs=1, verbose=0, shuffle=True)
        acc = float(model.evaluate(xte, yte, batch_size=1024, verbose=0)[1])
        report(epoch, acc, t0)
        if acc >= target:
            return


def torch_child(net: str, target: float, max_epochs: int, t0: float, seed: int = 0) -> None:
    import torch
    from torch import nn

    torch.manual_seed(seed)
    xtr, ytr = load_idx("train")
    xte, yte = load_idx("t10k")
    xtr = torch.from_numpy(xtr).float().div_(255).unsqueeze(1)
    xte = torch.from_numpy(xte).float().div_(255).unsqueeze(1)
    ytr, yte = torch.from_numpy(ytr), torch.from_numpy(yte)
    if net == "cnn":  # the Keras reference, layer for layer
        model = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1600, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    print(
        json.dumps({"params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads()}),
        flush=True,
    )
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, max_epochs + 1):
        model.train()
        for idx in torch.randperm(len(xtr)).split(128):
            opt.zero_grad()
            loss_fn(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((torch.cat([model(b).argmax(1) for b in xte.split(1024)]) == yte).float().mean())
        report(epoch, acc, t0)
        if acc >= target:
            return


def cnnlab_child(
    net: str, target: float, max_epochs: int, t0: float, seed: int = 0, overrides: dict | None = None
) -> None:
    import torch

    from cnnlab import api
    from cnnlab.data.loaders import split_loader
    from cnnlab.models.ops import predict_logits
    from cnnlab.runs.data import load_run_data
    from cnnlab.runs.store import RunFolder
    from cnnlab.train.callbacks import Callback
    from cnnlab.workflows.resolve import build_config

    out = Path(tempfile.mkdtemp(prefix="race-cnnlab-")) / "run"
    cfg = build_config(
        None,
        {
            "data.source": "fashion-mnist",
            **({} if net == "cnn" else {"model.name": "mlp"}),  # the CNN: cnnlab's default net
            "run.out": str(out),
            "run.report": False,
            "train.seed": seed,
            **(overrides or {}),
        },
    )

    class Probe(Callback):
        """Test accuracy after every epoch (the race's clock), stopping at the target."""

        test = None

        def on_epoch_end(self, loop, epoch, logs):
            if self.test is None:
                data = load_run_data(RunFolder(out), cfg, False)
                self.test = split_loader(data, "test", 1024, torch.device("cpu"), channels_last=True)
            logits, y = predict_logits(loop.model, self.test)
            acc = float((logits.argmax(1) == y).float().mean())
            report(epoch, acc, t0)
            if acc >= target or epoch >= max_epochs:
                loop.stop(f"the race's target (test accuracy {target:.0%}) reached or {max_epochs} epochs run")

    api.train(cfg, callbacks=[Probe()], progress=False)
    done = RunFolder(out).read_config()  # the recipe as resolved by the run (the default one when none is set)
    print(
        json.dumps(
            {
                "recipe": {
                    "model": done.model.name,
                    "epochs": done.train.epochs,
                    "schedule": done.train.schedule,
                    "lr": done.optim.lr,
                    "batch_size": done.train.batch_size,
                }
            }
        ),
        flush=True,
    )


CHILDREN = {"keras": keras_child, "torch": torch_child, "cnnlab": cnnlab_child}


# ---------------------------------------------------------------------------------------------- parent
def keras_python(given: str | None) -> str | None:
    candidates = [given] if given else [sys.executable, str(ROOT / ".venv-tf" / "bin" / "python")]
    for py in candidates:
        if (
            py
            and Path(py).exists()
            and subprocess.run([py, "-c", "import tensorflow, keras"], capture_output=True).returncode == 0
        ):
            return py
    return None


def contest(python: str, who: str, net: str, max_epochs: int, seed: int, busy: bool = False, sets=()) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    spinner = None
    if busy:  # one core held by a busy loop for the whole contest
        spinner = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
        time.sleep(1)
    t0 = time.time()
    cmd = [python, __file__, "--child", who, "--net", net, "--max-epochs", str(max_epochs), "--t0", repr(t0),
           "--seeds", str(seed), *[a for kv in sets for a in ("--set", kv)]]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    wall = time.time() - t0
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    epochs = [r for r in rows if "epoch" in r]
    info = {k: v for r in rows if "epoch" not in r for k, v in r.items()}
    name = who + ("+busy" if busy else "")
    if proc.returncode != 0:
        return {"who": name, "seed": seed, "error": proc.stderr.strip().splitlines()[-1:] or ["failed"], "wall": wall}
    hit = next((r for r in epochs if r["test_acc"] >= TARGETS[net]), None)
    return {
        "who": name,
        "seed": seed,
        "epochs": epochs,
        "info": info,
        "wall": wall,
        "time_to_target": hit["seconds"] if hit else None,
        "epoch_hit": hit["epoch"] if hit else None,
        "best": max((r["test_acc"] for r in epochs), default=0.0),
    }


def median_time(results: list[dict], who: str) -> float | None:
    """The median time to the target over seeds (a seed that never reached it counts as infinite)."""
    times = [r.get("time_to_target") or math.inf for r in results if r["who"] == who]
    return statistics.median(times) if times else None


def print_rows(results: list[dict]) -> None:
    for r in results:
        head = f"{r['who']:<12} seed {r['seed']}"
        if "error" in r:
            print(f"{head}: failed: {r['error'][0]}")
            continue
        accs = " ".join(f"{e['test_acc']:.3f}" for e in r["epochs"])
        t = (
            f"{r['time_to_target']:7.1f} s (epoch {r['epoch_hit']})"
            if r["time_to_target"]
            else f"not reached in {len(r['epochs'])} epochs"
        )
        print(f"{head}: {t}; test acc per epoch {accs}; {json.dumps(r['info'])}")


def print_verdict(results: list[dict], net: str, n_seeds: int) -> None:
    med = {w: median_time(results, w) for w in {r["who"] for r in results}}
    print(f"median over {n_seeds} seed(s): " + ", ".join(f"{w} {t:.1f} s" for w, t in sorted(med.items()) if t))
    c = med.get("cnnlab")
    for other in ("keras", "torch"):
        if c and med.get(other):
            print(f"cnnlab / {other} ({net}, median time to {TARGETS[net]:.0%}): {c / med[other]:.2f}×")
    for who in ("cnnlab", "keras"):
        q, b = med.get(who), med.get(who + "+busy")
        if q and b:
            print(f"{who} busy / quiet: {b / q:.2f}×")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["cnn", "dense"])
    ap.add_argument("--seeds", default="0", help="comma-separated seeds: each contestant runs once per seed")
    ap.add_argument(
        "--busy-core", action="store_true", help="also run Keras and cnnlab with one core held by a busy loop"
    )
    ap.add_argument("--keras-python", help="a Python with TensorFlow (default: this one, or .venv-tf/bin/python)")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--skip", default="", help="comma-separated contestants to leave out (keras,torch,cnnlab)")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a config override for cnnlab's runs (to try another recipe), repeatable",
    )
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--net", choices=["cnn", "dense"], help=argparse.SUPPRESS)
    ap.add_argument("--t0", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    if args.child:
        if args.child == "cnnlab":
            import yaml

            sets = {k: yaml.safe_load(v) for k, _, v in (kv.partition("=") for kv in args.set)}
            cnnlab_child(args.net, TARGETS[args.net], args.max_epochs, args.t0, seeds[0], sets)
        else:
            CHILDREN[args.child](args.net, TARGETS[args.net], args.max_epochs, args.t0, seeds[0])
        return
    if not (FMNIST / "train-images-idx3-ubyte.gz").is_file():
        sys.exit(f"Fashion-MNIST's IDX files are not in {FMNIST} (Debian: apt-get install dataset-fashion-mnist)")
    kpy = keras_python(args.keras_python)
    skip = set(filter(None, args.skip.split(",")))
    print(
        f"{os.cpu_count()} CPU cores; clock from process start to the end of the first epoch at the target "
        f"test accuracy (cnn {TARGETS['cnn']:.0%}, dense {TARGETS['dense']:.0%}); seeds {seeds}"
    )
    if "keras" not in skip and kpy is None:
        print("keras: TensorFlow is not installed here (make race-env, or --keras-python PATH)")
        skip.add("keras")
    for net in [args.only] if args.only else ["cnn", "dense"]:
        print(f"\n== {net} (target {TARGETS[net]:.0%}) ==")
        results = []
        for seed in seeds:
            for who in ("keras", "torch", "cnnlab"):
                if who in skip:
                    continue
                py, sets = (kpy if who == "keras" else sys.executable), (args.set if who == "cnnlab" else ())
                results.append(contest(py, who, net, args.max_epochs, seed, sets=sets))
                if args.busy_core and who != "torch":
                    results.append(contest(py, who, net, args.max_epochs, seed, busy=True, sets=sets))
        print_rows(results)
        print_verdict(results, net, len(seeds))


if __name__ == "__main__":
    main()
