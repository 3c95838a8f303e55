"""Does pretraining help? Fine-tune from the pretrained run and from random initialisation, same budget.

Usage::

    python recipes/shakespeare/ablation.py --init recipes/shakespeare/runs/pretrain \\
        --out recipes/shakespeare/runs/ablation --seeds 1 2 3 --steps 400

For every task (genre, next line), seed and arm (``pretrained``: ``bigseq finetune --init RUN``;
``scratch``: ``--from-scratch``, the same tokenizer and architecture with random weights) it fine-tunes with
the task's YAML (genre.yaml / nextline.yaml), the given seed and exactly ``--steps`` optimizer steps, then
evaluates the weights the run publishes on the held-out plays (``train.keep`` in the task's YAML: genre keeps
the final weights, next line the best on valid loss; genre mixes them with the pretrained weights,
``train.wise_alpha``, which the scratch arm has none of: it runs unmixed). Both arms share every other setting
and the same steps, so they also take the same wall time per step (reported). The seed sets the model
initialisation of the scratch arm, the batch order and dropout of both.

Finished runs are skipped, so the script can be stopped and started again; a finished run asked for
again with other steps, overrides, ``--init`` or ``--data`` stops the script (it would report the old run). It writes
``OUT/results.json`` (every run, and per arm mean / standard deviation over seeds, and the per-seed margin
pretrained - scratch) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import bigseq
from bigseq.config import build_config

HERE = Path(__file__).parent
TASKS = {
    # task: (fine-tuning config, metrics reported on test)
    "genre": ("genre.yaml", ["accuracy", "macro_f1"]),
    "nextline": ("nextline.yaml", ["perplexity", "chrf", "bleu"]),
}
LOWER_IS_BETTER = {"perplexity", "loss"}


def run_one(task: str, arm: str, seed: int, args: argparse.Namespace) -> dict:
    out = args.out / f"{task}-{arm}-s{seed}"
    result_file = out / "test.json"
    asked = {"max_steps": args.steps[task], "overrides": args.set, "init": str(Path(args.init).resolve()),
             "data": str(Path(args.data).resolve())}  # fmt: skip
    if result_file.is_file():
        done = json.loads(result_file.read_text())
        # A finished run is reused only for the same request (results of older versions lack some keys).
        made = {k: done.get(k, v) for k, v in asked.items()}
        if made != asked:
            raise SystemExit(
                f"{result_file} was made with {made}, not {asked}: give another --out, or delete "
                f"{out} to run it again"
            )
        return done
    if out.exists():  # an unfinished run from an earlier attempt: start it again
        import shutil

        shutil.rmtree(out)
    config, _ = TASKS[task]
    overrides = [*args.set, f"train.seed={seed}", f"train.max_steps={args.steps[task]}"]
    if arm == "scratch":  # WiSE-FT mixes in the init run's weights; random ones are no starting point to keep
        overrides.append("train.wise_alpha=1")
    cfg = build_config(HERE / config, overrides=overrides)
    cfg.validate()
    print(f"\n=== {task} / {arm} / seed {seed}: {args.steps[task]} steps ===", flush=True)
    summary = bigseq.finetune(
        cfg, args.init, args.data / f"{task}_train.jsonl", args.data / f"{task}_valid.jsonl", out,
        from_scratch=arm == "scratch", progress=not args.quiet,
    )  # fmt: skip
    t0 = time.perf_counter()
    test = bigseq.load(out).evaluate(args.data / f"{task}_test.jsonl")
    result = {
        "task": task,
        "arm": arm,
        "seed": seed,
        "steps": summary.steps,
        **asked,
        "train_seconds": round(summary.seconds, 1),
        "best_step": summary.best_step,
        "test": test,
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }
    tmp = result_file.with_name(".test.json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, result_file)
    print(f"test: {json.dumps(test)}", flush=True)
    return result


def mean_sd(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "values": values,
    }


def summarise(runs: list[dict]) -> dict:
    out: dict = {}
    for task, (_, metrics) in TASKS.items():
        task_runs = [r for r in runs if r["task"] == task]
        if not task_runs:
            continue
        seeds = sorted({r["seed"] for r in task_runs})
        by = {(r["arm"], r["seed"]): r for r in task_runs}
        t: dict = {"seeds": seeds}
        for m in metrics:
            arms = {
                arm: [by[arm, s]["test"][m] for s in seeds if (arm, s) in by]
                for arm in ("pretrained", "scratch")
            }
            paired = [by["pretrained", s]["test"][m] - by["scratch", s]["test"][m] for s in seeds
                      if ("pretrained", s) in by and ("scratch", s) in by]  # fmt: skip
            t[m] = {arm: mean_sd(v) for arm, v in arms.items() if v}
            if paired:
                t[m]["margin"] = mean_sd(paired)
                better = [(d < 0) if m in LOWER_IS_BETTER else (d > 0) for d in paired]
                t[m]["pretrained_better_in"] = f"{sum(better)}/{len(better)} seeds"
        seconds = {
            arm: [by[arm, s]["train_seconds"] for s in seeds if (arm, s) in by]
            for arm in ("pretrained", "scratch")
        }
        t["train_seconds"] = {
            arm: mean_sd(v) for arm, v in seconds.items() if v
        }  # an arm may not have run yet
        out[task] = t
    return out


def _fmt(x: dict, metric: str) -> str:
    """mean ± sd; accuracy and macro-F1 in percent."""
    scale, unit = (100.0, " %") if metric in ("accuracy", "macro_f1") else (1.0, "")
    return f"{x['mean'] * scale:.2f} ± {x['sd'] * scale:.2f}{unit}"


def markdown(summary: dict) -> str:
    rows = [
        "| task | metric | pretrained (mean ± sd) | scratch (mean ± sd) | margin (pretrained − scratch) | better |",
        "|---|---|---|---|---|---|",
    ]
    for task, t in summary.items():
        for m in TASKS[task][1]:
            r = t[m]
            margin = _fmt(r["margin"], m) if "margin" in r else "-"
            arms = [_fmt(r[arm], m) if arm in r else "-" for arm in ("pretrained", "scratch")]
            rows.append(
                f"| {task} | {m} | {arms[0]} | {arms[1]} | {margin} | {r.get('pretrained_better_in', '-')} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--init", type=Path, required=True, help="the pretrained run directory")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="prepare.py output")
    parser.add_argument("--out", type=Path, default=HERE / "runs" / "ablation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--steps", type=int, default=400, help="fine-tuning steps per run (every task)")
    parser.add_argument("--genre-steps", type=int, help="override --steps for genre")
    parser.add_argument("--nextline-steps", type=int, help="override --steps for next line")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="config override for every run of both arms (e.g. train.precision=bf16 on CPUs with AMX)",
    )  # fmt: skip
    parser.add_argument(
        "--arms", nargs="+", choices=["pretrained", "scratch"], default=["pretrained", "scratch"],
        help="run only these arms (e.g. a second pretrained run against an ablation's scratch arm)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.steps = {
        "genre": args.genre_steps or args.steps,
        "nextline": args.nextline_steps or args.steps,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    runs = []
    for task in args.tasks:
        for seed in args.seeds:
            for arm in args.arms:
                runs.append(run_one(task, arm, seed, args))
                summary = summarise(runs)
                tmp = args.out / ".results.json.tmp"
                tmp.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n")
                os.replace(tmp, args.out / "results.json")
    print("\n" + markdown(summarise(runs)))


if __name__ == "__main__":
    main()
