"""Scale-out: a real 2-process torchrun (gloo, CPU) run matches a 1-process run with the same global batch;
bf16 autocast and activation checkpointing keep training correct."""

import json
import os
import subprocess
import sys

import pytest
import torch

import bigseq.api
from bigseq.cli import main
from bigseq.train.distributed import World
from helpers import tiny_model

COMMON = [
    "--preset",
    "tiny",
    "--quiet",
    "--set",
    "data.src_tokenizer=char",
    "--set",
    "data.tgt_tokenizer=char",
]
COMMON += ["--set", "model.dropout=0.0", "--set", "train.threads=1", "--set", "train.batch_tokens=1000"]
COMMON += ["--set", "train.warmup_steps=5", "--set", "train.eval_every=4", "--set", "train.tensorboard=false"]


def records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def torchrun(*args, ok=True):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "bigseq.cli", *args]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert (proc.returncode == 0) == ok, proc.stderr[-3000:]
    return proc


def assert_same_curve(a, b):
    assert [r["step"] for r in a] == [r["step"] for r in b]
    # Same batches per step, same normalisation: only the order of float additions differs.
    for ra, rb in zip(a, b, strict=True):
        assert ra["tokens"] == rb["tokens"]  # every rank's tokens counted once
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], rel=1e-4)
        assert rb["valid_loss"] == pytest.approx(ra["valid_loss"], rel=1e-4)


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, reverse_task):
    train, valid = reverse_task
    data = ["--train", str(train), "--valid", str(valid)]
    one = tmp_path / "one"
    assert (
        main(["train", *data, "--out", str(one), "--max-steps", "12", *COMMON, "--set", "train.grad_accum=2"])
        == 0
    )
    for strategy in ("ddp", "fsdp"):
        two = tmp_path / strategy
        torchrun(
            "train",
            *data,
            "--out",
            str(two),
            "--max-steps",
            "12",
            *COMMON,
            "--set",
            f"train.distributed={strategy}",
        )
        assert [r["step"] for r in records(two)] == [4, 8, 12]
        assert_same_curve(records(one), records(two))
        # Only rank 0 wrote: the same file set as the 1-process run; full (gathered) weights for FSDP too.
        assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
        assert json.loads((two / "summary.json").read_text())["steps"] == 12
        # the ranks' model FLOPs, summed, are the one process's: the same batches ran
        assert [r["flops"] for r in records(two)] == [r["flops"] for r in records(one)]
    # A sharded run resumes from its gathered checkpoint (weights and optimizer state) and stays on the curve.
    args = [*COMMON, "--set", "train.grad_accum=2", "--max-steps", "16", "--resume"]
    assert main(["train", *data, "--out", str(one), *args]) == 0
    torchrun("train", *data, "--out", str(tmp_path / "fsdp"), *COMMON, "--max-steps", "16", "--resume",
             "--set", "train.distributed=fsdp")  # fmt: skip
    assert_same_curve(records(one), records(tmp_path / "fsdp"))
    # A DDP run scaled onto FSDP: its optimizer state, keyed by position, goes into the shards by name.
    torchrun("train", *data, "--out", str(tmp_path / "ddp"), *COMMON, "--max-steps", "16", "--resume",
             "--set", "train.distributed=fsdp")  # fmt: skip
    assert_same_curve(records(one), records(tmp_path / "ddp"))
    # A user error only rank 0 meets (--out holds a run, checked while it prepares the run directory): one
    # line from rank 0, the other rank exits too, without a broken collective's traceback.
    failed = torchrun("train", *data, "--out", str(one), *COMMON, ok=False)
    errors = [x for x in failed.stderr.splitlines() if x.startswith("bigseq train: error:")]
    assert errors == [f"bigseq train: error: {one}: already holds a run; choose a new --out or pass --resume"]
    # torchrun's own ChildFailedError is the one traceback; rank 1 also exited 2
    assert failed.stderr.count("Traceback") == 1 and "RuntimeError" not in failed.stderr, failed.stderr[
        -3000:
    ]
    assert failed.stderr.count("exitcode  : 2") == 2


def test_sigterm_to_torchrun_saves_on_every_rank_and_resumes(tmp_path, reverse_task, capsys):
    """SIGTERM to the launcher (as a scheduler's preemption sends it): torchrun passes it to both workers,
    they agree to stop after the same step, rank 0 saves, nobody hangs; one process can --resume it, and
    says that a step now takes fewer batches."""
    import signal
    import time

    train, valid = reverse_task
    run = tmp_path / "run"
    args = ["train", "--train", str(train), "--valid", str(valid), "--out", str(run), *COMMON]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "bigseq.cli"]  # fmt: skip
    proc = subprocess.Popen(
        [*launcher, *args, "--max-steps", "100000"], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)  # a hang in a collective would time out here
    # torchrun itself reports the signal (its own SignalException); the workers stopped cleanly after saving.
    assert "SIGTERM; checkpoint saved, continue with --resume" in err, err[-3000:]
    state = torch.load(run / "train_state/state.pt", weights_only=True)
    stopped_at = state["progress"]["step"]
    assert 0 < stopped_at < 100000
    # each rank's own generator is saved, and they differ: the ranks draw different dropout masks
    rngs = [r["cpu"] for r in state["rng_by_rank"]]
    assert len(rngs) == 2 and not torch.equal(rngs[0], rngs[1]) and torch.equal(rngs[0], state["rng"])
    capsys.readouterr()
    # one process with grad_accum 2 takes the 2 batches a step took: nothing to say
    assert main([*args, "--max-steps", str(stopped_at + 2), "--resume", "--set", "train.grad_accum=2"]) == 0
    assert "resume: a step now takes" not in capsys.readouterr().err
    assert main([*args, "--max-steps", str(stopped_at + 4), "--resume"]) == 0
    assert ("resume: a step now takes 1 batch(es) of train.batch_tokens (1 process(es) x train.grad_accum 1), "
            "where the run's took 2 (1 x 2)") in capsys.readouterr().err  # fmt: skip
    assert json.loads((run / "summary.json").read_text())["steps"] == stopped_at + 4


def test_world_of_one_is_free():
    w = World()
    assert w.is_main and not w.distributed
    assert w.sum(3.5) == 3.5 and w.any(True, False) == (True, False) and w.share({"a": 1}) == {"a": 1}


def test_activation_checkpointing_gives_the_same_gradients():
    model = tiny_model("transformer", dropout=0.1).train()
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.randint(4, 23, (3, 7), generator=g), torch.randint(4, 19, (3, 6), generator=g)

    def grads(flag):
        model.zero_grad()
        model.grad_checkpointing = flag
        torch.manual_seed(1)  # the same dropout masks: checkpointing replays the RNG in its recompute
        model(src, src != 0, tgt).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain, ckpt = grads(False), grads(True)
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)

    def saved_bytes(flag):
        """Bytes the forward keeps for the backward: checkpointed layers keep their inputs only."""
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        model.grad_checkpointing = flag
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(src, src != 0, tgt).square().mean()
        return total[0]

    assert saved_bytes(True) < 0.5 * saved_bytes(False), "checkpointing did not reduce what the forward keeps"


def test_bf16_and_checkpointing_train_through_the_cli(tmp_path, reverse_task, monkeypatch):
    train, valid = reverse_task
    dtypes = set()  # of the output projection's results in training steps: bf16 under autocast
    build = bigseq.api.build_model

    def build_and_watch(mcfg):
        model = build(mcfg)
        model.lm_head.register_forward_hook(lambda m, a, out: dtypes.add(out.dtype) if m.training else None)
        return model

    monkeypatch.setattr(bigseq.api, "build_model", build_and_watch)
    run = tmp_path / "bf16"
    args = [
        "train",
        "--train",
        str(train),
        "--valid",
        str(valid),
        "--out",
        str(run),
        "--max-steps",
        "8",
        *COMMON,
    ]
    args += ["--set", "train.precision=bf16", "--set", "train.activation_checkpointing=true"]
    assert main(args) == 0
    losses = [r["valid_loss"] for r in records(run)]
    assert all(map(lambda x: x == x and x < 10, losses)) and losses[-1] < losses[0]
    assert dtypes == {torch.bfloat16}


def test_activation_checkpointing_refused_for_the_gru(tmp_path, reverse_task, capsys):
    train, valid = reverse_task
    args = [
        "train",
        "--train",
        str(train),
        "--valid",
        str(valid),
        "--out",
        str(tmp_path / "g"),
        "--arch",
        "gru",
    ]
    assert main([*args, "--max-steps", "2", *COMMON, "--set", "train.activation_checkpointing=true"]) == 2
    assert "activation_checkpointing is not supported by the gru" in capsys.readouterr().err


def test_device_choice():
    from bigseq.errors import ConfigError
    from bigseq.train.distributed import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="device must be one of"):
        resolve_device("tpu")


def test_training_on_an_explicit_cpu_device_and_loading_with_a_device(tmp_path, reverse_task, capsys):
    train, valid = reverse_task
    run = tmp_path / "cpu"
    args = [
        "train",
        "--train",
        str(train),
        "--valid",
        str(valid),
        "--out",
        str(run),
        "--max-steps",
        "4",
        *COMMON,
    ]
    assert main([*args, "--set", "train.device=cpu"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(valid), "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 200
    if not torch.cuda.is_available():
        assert main(["evaluate", str(run), "--data", str(valid), "--device", "cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err


def test_an_epoch_with_an_odd_number_of_batches_trains_each_once(tmp_path):
    """Examples of 3-8 letters in token-budget batches of different sizes, an odd number of them: 2 ranks need
    one round more than half, the last with one rank on a zero-weight step. The tokens counted over those
    rounds are exactly one epoch's: nothing dropped, nothing repeated (batches differ in size, so a repeat
    could not cancel a drop), and the padding step not counted."""
    import numpy as np

    from bigseq.data.batching import make_batches

    rng = __import__("random").Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 8))) for _ in range(55)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"source": w, "target": w[::-1]}) + "\n" for w in words))
    src, tgt = [len(w) for w in words], [len(w) + 2 for w in words]  # char ids; BOS ... EOS
    batches = make_batches(src, tgt, 100, np.random.default_rng([1, 0]), 8)  # train.seed 1, length grid 8
    sizes = {sum(src[i] + tgt[i] - 1 for i in b) for b in batches}
    assert len(batches) % 2 == 1 and len(sizes) > 2, (len(batches), sizes)
    epoch_tokens = sum(src) + sum(tgt) - len(words)  # source + target + EOS (the loop counts real tokens)
    base = ["--train", str(train), "--valid", str(train), *COMMON, "--set", "train.batch_tokens=100"]
    base += ["--set", "metrics=[]", "--set", "train.seed=1"]
    one, two = tmp_path / "one", tmp_path / "two"
    n, rounds = len(batches), (len(batches) + 1) // 2
    assert (
        main(["train", *base, "--out", str(one), "--max-steps", str(n), "--set", f"train.eval_every={n}"])
        == 0
    )
    torchrun(
        "train", *base, "--out", str(two), "--max-steps", str(rounds), "--set", f"train.eval_every={rounds}"
    )
    (a,), (b,) = records(one), records(two)
    assert a["epoch"] == b["epoch"] == 0
    assert a["tokens"] == b["tokens"] == epoch_tokens


def test_cpu_training_on_a_machine_with_gpus_uses_gloo_and_a_plain_ddp(tmp_path):
    """train.device=cpu under torchrun where CUDA is available: gloo, collectives on the CPU, and DDP without
    device_ids (NCCL and device_ids=[local_rank] made DDP of the CPU model fail). A process group of one, in
    a child process, with torch told that CUDA is there."""
    script = tmp_path / "gloo_cpu.py"
    script.write_text(
        "import os, socket, torch, torch.distributed as dist\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK='0', LOCAL_RANK='0',\n"
        "                  WORLD_SIZE='2')\n"
        "torch.cuda.is_available = lambda: True\n"
        "import torch.distributed\n"
        "init = dist.init_process_group\n"
        "dist.init_process_group = lambda backend, **kw: (print('backend', backend),\n"
        "    init('gloo', rank=0, world_size=1, **kw))\n"
        "from bigseq.train.distributed import setup, wrap, _device\n"
        "world = setup('cpu')\n"
        "net = wrap(torch.nn.Linear(2, 2), world, 'ddp')\n"
        "print(type(net).__name__, net.device_ids, _device())\n"
        "dist.destroy_process_group()\n"
    )
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[:2] == ["backend gloo", "DistributedDataParallel None cpu"], res.stdout
