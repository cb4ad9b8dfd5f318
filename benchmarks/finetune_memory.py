"""Issue 26's transfer benchmark: fine-tuning at 224 px on a laptop — peak memory and images/s of
the unfrozen phase, cnnlab against timm's train.py and a Keras fine-tune, on the same folder.

    python benchmarks/finetune_memory.py DIR [--only cnnlab,cnnlab-whole,timm,keras] [--timm-train PATH]

DIR: a class-per-folder image set of >= 1,500 images (e.g. `python examples/seed002_standin.py D
--per-class 160` and DIR = D/photos). Each contestant runs in its own process, one after the
other; peak RSS is that process tree's (os.wait4), images/s the unfrozen (whole-net) training
throughput at batch 128 and 224 px:

- cnnlab: `cnnlab train --data DIR --model efficientnet-lite0 --fine-tune auto --input-size 224`
  (its defaults, ImageNet weights; the unfrozen epochs' images per second of the epoch time);
- cnnlab-whole: the same, but one unfrozen epoch with `--set train.micro_batch=128` (the whole
  batch in one pass: what cnnlab did before slicing);
- timm: its train.py (given by --timm-train; not shipped with the timm package) training
  tf_efficientnet_lite0 for one epoch, randomly initialised (throughput does not depend on the
  weights), its own logged images/s;
- keras: EfficientNetB0 (`weights=None`, similar multiply-adds: 0.39 G against Lite0's 0.41 G)
  fitted one epoch in the interpreter of --keras-python (default .venv-tf/bin/python, `make
  race-env`), images/s from the batch times after the first.
Timings on 2 cores drift 20-50 % from run to run: compare rows of one invocation.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERAS = """
import sys, time, tensorflow as tf
folder, size, bs = sys.argv[1], 224, 128
ds = tf.keras.utils.image_dataset_from_directory(folder, image_size=(size, size), batch_size=bs, seed=0)
classes = len(ds.class_names)
model = tf.keras.applications.EfficientNetB0(weights=None, input_shape=(size, size, 3), classes=classes)
model.compile(optimizer=tf.keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
times = []
class Clock(tf.keras.callbacks.Callback):
    def on_train_batch_begin(self, batch, logs=None): self.t = time.perf_counter()
    def on_train_batch_end(self, batch, logs=None): times.append(time.perf_counter() - self.t)
n = sum(1 for _ in ds.unbatch())
model.fit(ds, epochs=1, callbacks=[Clock()], verbose=0)
steady = times[1:-1] or times
print("IMAGES_PER_S", bs * len(steady) / sum(steady), "IMAGES", n)
"""


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[str, float, float]:
    """stdout+stderr, wall seconds and peak RSS (GB) of the process tree."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    if p.returncode:
        sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{text[-3000:]}")
    return text, time.perf_counter() - start, usage.ru_maxrss / 2**20


def unfrozen_rate(run_dir: Path, images: int) -> tuple[float, dict]:
    """Training images per second over the unfrozen epochs of a cnnlab run (history.csv)."""
    info = json.loads((run_dir / "run.json").read_text())
    phases = info["parameters"]["phases"]
    first = int(phases[-1]["epochs"].split("-")[0])
    rows = [r for r in csv.DictReader((run_dir / "history.csv").open()) if int(r["epoch"]) >= first]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return images * len(rows) / sum(float(r["seconds"]) for r in rows), {
        "test_accuracy": metrics["accuracy"],
        "micro_batch": info.get("micro_batch"),
        "unfrozen_epochs": len(rows),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--only", default="cnnlab,cnnlab-whole,timm,keras")
    ap.add_argument("--timm-train", type=Path, help="timm's train.py (from its repository)")
    ap.add_argument("--keras-python", default=str(ROOT / ".venv-tf" / "bin" / "python"))
    ap.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="ftbench-")))
    a = ap.parse_args()
    files = [f for f in a.data.rglob("*") if f.suffix.lower() in {".png", ".jpg", ".jpeg"}]
    print(f"{a.data}: {len(files)} images; work in {a.out}")
    cnnlab = [sys.executable, "-m", "cnnlab", "train", "--data", str(a.data), "--model", "efficientnet-lite0",
              "--input-size", "224", "--seed", "0", "-q", "--no-report"]  # fmt: skip
    rows = []
    for who in a.only.split(","):
        if who == "cnnlab":
            run_dir = a.out / "cnnlab"
            _, wall, rss = run([*cnnlab, "--fine-tune", "auto", "--out", str(run_dir), "--overwrite"])
            train_n = json.loads((run_dir / "dataset.json").read_text())["split_sizes"]["train"]
            rate, extra = unfrozen_rate(run_dir, train_n)
            rows.append({"who": "cnnlab --fine-tune auto (defaults)", "images_per_s": rate, "peak_rss_gb": rss,
                         "wall_s": wall, **extra})  # fmt: skip
        elif who == "cnnlab-whole":
            run_dir = a.out / "cnnlab-whole"
            _, wall, rss = run([*cnnlab, "--fine-tune", "1,1", "--set", "train.micro_batch=128", "--out",
                                str(run_dir), "--overwrite"])  # fmt: skip
            train_n = json.loads((run_dir / "dataset.json").read_text())["split_sizes"]["train"]
            rate, extra = unfrozen_rate(run_dir, train_n)
            rows.append({"who": "cnnlab, whole batch per pass (before)", "images_per_s": rate, "peak_rss_gb": rss,
                         "wall_s": wall, **extra})  # fmt: skip
        elif who == "timm":
            if not a.timm_train or not a.timm_train.is_file():
                rows.append({"who": "timm train.py", "note": "no --timm-train given"})
                continue
            split = a.out / "timm-data"
            for f in files:  # timm's ImageFolder wants DIR/train and DIR/validation
                part = "validation" if zlib.crc32(f.name.encode()) % 10 == 0 else "train"
                dest = split / part / f.parent.name / f.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    dest.symlink_to(f.resolve())
            classes = len({f.parent.name for f in files})
            text, wall, rss = run([sys.executable, str(a.timm_train), str(split), "--model", "tf_efficientnet_lite0",
                                   "--num-classes", str(classes), "--img-size", "224", "-b", "128", "--epochs", "1",
                                   "--opt", "adam", "--lr", "1e-4", "--device", "cpu", "--no-prefetcher",
                                   "--workers", "2", "--log-interval", "1", "--output", str(a.out / "timm-out")],
                                  cwd=a.out)  # fmt: skip
            rates = [float(x) for x in re.findall(r"\(\d+\.\d+s,\s+([\d.]+)/s\)", text)]
            rows.append({"who": "timm train.py (tf_efficientnet_lite0)", "images_per_s": rates[-1] if rates else None,
                         "peak_rss_gb": rss, "wall_s": wall})  # fmt: skip
        elif who == "keras":
            if not Path(a.keras_python).is_file():
                rows.append({"who": "Keras EfficientNetB0", "note": f"no {a.keras_python} (make race-env)"})
                continue
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
            text, wall, rss = run([a.keras_python, "-c", KERAS, str(a.data)], env=env)
            m = re.search(r"IMAGES_PER_S ([\d.]+)", text)
            rows.append({"who": "Keras EfficientNetB0 (weights=None)", "images_per_s": float(m.group(1)) if m else None,
                         "peak_rss_gb": rss, "wall_s": wall})  # fmt: skip
        print(json.dumps(rows[-1]))
    print(f"\n{'contestant':<42} {'images/s':>9} {'peak RSS GB':>12} {'wall s':>8}  other")
    for r in rows:
        ips = f"{r['images_per_s']:.1f}" if r.get("images_per_s") else "-"
        rss = f"{r['peak_rss_gb']:.2f}" if r.get("peak_rss_gb") else "-"
        wall = f"{r['wall_s']:.0f}" if r.get("wall_s") else "-"
        other = {k: v for k, v in r.items() if k not in {"who", "images_per_s", "peak_rss_gb", "wall_s"}}
        print(f"{r['who']:<42} {ips:>9} {rss:>12} {wall:>8}  {other or ''}")


if __name__ == "__main__":
    main()
