"""l2l-plot: pictures of training runs from their metrics.jsonl.

    l2l-plot RUN_DIR_OR_METRICS_JSONL... --out PNG [--title TEXT] [--force]

Six panels over steps, one colour per run (several runs overlay): training
loss with the eval loss as markers; tokens/s; device peak and host EPS memory;
the time split of a step (compute, gather wait, optimizer wait); the learning
rate; the gradient norm. A run resumed from an earlier checkpoint appends the
steps it redoes to the same file: the last record of each step wins, as it is
the one the final weights came from.

Bad input (a missing run, a line that is not JSON, a file with no steps)
prints one line `l2l-plot: ...` naming the file and line, and exits 2; the
picture is written to a temporary file and renamed, and an existing --out is
only replaced with --force.
"""

import argparse
import json
import math
import os
import sys


class Bad(Exception):
    """Bad input: one line on stderr, exit 2."""


def load_run(spec):
    """(label, records sorted by step) of a run directory or a metrics.jsonl."""
    if not os.path.exists(spec):
        raise Bad(f"run {spec} does not exist")
    path = os.path.join(spec, "metrics.jsonl") if os.path.isdir(spec) else spec
    if not os.path.exists(path):
        raise Bad(f"{path} does not exist (is {spec} a run's log.dir?)")
    by_step = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    r = json.loads(line)
                except ValueError as e:
                    raise Bad(f"{path}:{number}: not JSON ({' '.join(str(e).split())})")
                step = r.get("step") if isinstance(r, dict) else None
                if not isinstance(step, int) or isinstance(step, bool):
                    raise Bad(f"{path}:{number}: expected an object with an integer \"step\"")
                by_step[step] = r
    except OSError as e:
        raise Bad(f"cannot read {path}: {e.strerror}")
    except UnicodeDecodeError as e:
        raise Bad(f"{path}: not UTF-8 ({e.reason} at byte {e.start})")
    if not by_step:
        raise Bad(f"{path}: no steps recorded")
    label = os.path.basename(os.path.normpath(spec if os.path.isdir(spec) else os.path.dirname(
        os.path.abspath(spec))))
    return label, [by_step[s] for s in sorted(by_step)]


def series(records, key, scale=1.0):
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            xs.append(r["step"])
            ys.append(v * scale)
    return xs, ys


def plot(runs, out, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    (loss, speed, memory), (split, lr, norm) = axes
    mib = 1.0 / (1 << 20)
    for i, (label, records) in enumerate(runs):
        color = f"C{i % 10}"
        loss.plot(*series(records, "loss"), color=color, lw=1, label=f"{label} train")
        ex, ey = series(records, "eval_loss")
        if ex:
            loss.plot(ex, ey, "o-", color=color, ms=5, mfc="white", lw=1.5, zorder=3,
                      label=f"{label} eval")
        speed.plot(*series(records, "tokens_per_s"), color=color, lw=1, label=label)
        memory.plot(*series(records, "device_peak_bytes", mib), color=color, lw=1.5,
                    label=f"{label} device peak")
        memory.plot(*series(records, "host_eps_bytes", mib), color=color, lw=1, ls="--",
                    label=f"{label} host EPS + stash")
        for key, ls in (("compute_s", "-"), ("gather_wait_s", "--"), ("optimizer_wait_s", ":")):
            split.plot(*series(records, key), color=color, lw=1, ls=ls,
                       label=f"{label} {key[:-2].replace('_', ' ')}")
        lr.plot(*series(records, "lr"), color=color, lw=1, label=label)
        norm.plot(*series(records, "grad_norm"), color=color, lw=1, label=label)
    for ax, name, unit in ((loss, "loss", "nats / token"), (speed, "throughput", "tokens / s"),
                           (memory, "memory (this rank)", "MiB"),
                           (split, "time per step", "seconds"), (lr, "learning rate", ""),
                           (norm, "gradient norm", "before clipping")):
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    tmp = f"{out}.tmp.{os.getpid()}.png"
    try:
        fig.savefig(tmp, dpi=100)
        os.rename(tmp, out)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise Bad(f"cannot write {out}: {e.strerror}")
    finally:
        plt.close(fig)


def main():
    p = argparse.ArgumentParser(prog="l2l-plot", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", metavar="RUN", help="a run's log.dir or its metrics.jsonl")
    p.add_argument("--out", required=True, help="the picture to write (.png)")
    p.add_argument("--title", default="", help="a title above the panels")
    p.add_argument("--force", action="store_true", help="replace an existing --out")

    def error(message):
        raise Bad(message)

    p.error = error
    try:
        args = p.parse_args()
        if not args.runs:
            raise Bad("no runs given (RUN...)")
        if not args.out.endswith(".png"):
            raise Bad(f"--out {args.out}: expected a .png file")
        if os.path.exists(args.out) and not args.force:
            raise Bad(f"{args.out} exists; pass --force to replace it")
        runs = [load_run(r) for r in args.runs]
        plot(runs, args.out, args.title)
    except Bad as e:
        sys.stderr.write(f"l2l-plot: {e}\n")
        sys.exit(2)
    steps = sum(len(r) for _, r in runs)
    print(f"file={args.out}\nruns={len(runs)}\nsteps={steps}")


if __name__ == "__main__":
    main()
