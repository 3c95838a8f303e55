"""Speed options keep the model's answers: int8 logits stay close to fp32 and greedy outputs mostly agree;
compiled training computes the eager losses and weights; compiled decoding finds the eager outputs.

No timing is asserted. Tolerances (int8): max |int8 - fp32| logit difference at most 0.25 x the standard
deviation of the fp32 logits (measured: 0.08-0.09 on these tiny models, 0.08 on a trained GRU g2p run), and
greedy outputs identical for at least 90% of a 32-input batch (measured: 100% Transformer, 97% GRU).
"""

import json
import sys
import warnings

import pytest
import torch
from torch import nn

import bigseq
from bigseq.api import train
from bigseq.config import Config, apply_overrides, apply_preset
from bigseq.errors import ConfigError
from bigseq.models.base import build_model
from bigseq.search import generate
from bigseq.speed import compile_for_inference, cxx_compiler, quantize
from bigseq.tokenizer import BOS, PAD
from helpers import tiny_model, write_reverse_task

ARCHS = ["transformer", "gru"]
LOGIT_TOLERANCE = 0.25  # x std of the fp32 logits
GREEDY_AGREEMENT = 0.9

needs_compiler = pytest.mark.skipif(
    cxx_compiler() is None, reason="torch.compile's CPU backend (inductor) needs a C++ compiler (g++ or $CXX)"
)


def _batch(b: int = 32, s: int = 9, t: int = 8, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 23, (b, s), generator=g)
    src[::3, 6:] = PAD  # every third source is shorter
    tgt = torch.randint(4, 19, (b, t), generator=g)
    tgt[:, 0] = BOS
    return src, src != PAD, tgt


def _close(a: torch.Tensor, ref: torch.Tensor) -> None:
    diff, scale = (a - ref).abs().max().item(), ref.std().item()
    assert diff <= LOGIT_TOLERANCE * scale, f"max diff {diff:.4f} > {LOGIT_TOLERANCE} x std {scale:.4f}"


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_logits_are_close_and_greedy_outputs_agree(arch):
    model = tiny_model(arch)
    q = quantize(model, "int8")
    kinds = {type(m) for m in q.modules()}
    assert nn.Linear not in kinds and nn.GRU not in kinds  # every linear and GRU layer was quantised
    src, mask, tgt = _batch()
    with torch.no_grad():
        _close(q(src, mask, tgt), model(src, mask, tgt))
    max_lens = torch.full((src.shape[0],), 12)
    ref = [h[0].tokens for h in generate(model, src, mask, max_lens)]
    out = [h[0].tokens for h in generate(q, src, mask, max_lens)]
    assert sum(len(r) for r in ref) > 2 * len(ref)  # the outputs are not all (nearly) empty
    agree = sum(a == b for a, b in zip(out, ref, strict=True)) / len(ref)
    assert agree >= GREEDY_AGREEMENT, agree


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_weights_keep_the_logits_close_and_greedy_outputs_agree(arch):
    """bf16 keeps 8 bits of mantissa: the int8 tolerances hold (measured: max logit difference 0.04 x std
    Transformer, 0.02 GRU; greedy and beam 3 outputs 100% identical)."""
    model = tiny_model(arch)
    b16 = quantize(model, "bf16")
    assert {p.dtype for p in b16.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # the float model is left alone
    src, mask, tgt = _batch()
    with torch.no_grad():
        _close(b16(src, mask, tgt).float(), model(src, mask, tgt))
    max_lens = torch.full((src.shape[0],), 12)
    for beam in (1, 3):
        ref = [h[0].tokens for h in generate(model, src, mask, max_lens, beam=beam)]
        out = [h[0].tokens for h in generate(b16, src, mask, max_lens, beam=beam)]
        assert sum(len(r) for r in ref) > 2 * len(ref)
        agree = sum(a == b for a, b in zip(out, ref, strict=True)) / len(ref)
        assert agree >= GREEDY_AGREEMENT, (beam, agree)


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_incremental_decoding_matches_full_forward(arch):
    """Within the int8 tolerance only: activations are quantised with a scale taken over each call's input,
    which differs between one pass over the target and one token at a time."""
    q = quantize(tiny_model(arch), "int8")
    src, mask, tgt = _batch()
    with torch.no_grad():
        full = q(src, mask, tgt)
        memory, cache, steps = q.encode(src, mask), None, []
        for i in range(tgt.shape[1]):
            logits, cache = q.decode(tgt[:, i : i + 1], memory, cache)
            steps.append(logits)
    _close(torch.cat(steps, dim=1), full)


@pytest.mark.parametrize("arch", ARCHS)
def test_int8_leaves_the_float_model_and_its_tied_head_alone(arch):
    model = tiny_model(arch)
    src, mask, tgt = _batch()
    before = model(src, mask, tgt)
    assert quantize(model, "none") is model
    quantize(model, "int8")
    assert model.lm_head.weight is model.tgt_embed.weight
    assert type(model.lm_head) is nn.Linear
    torch.testing.assert_close(model(src, mask, tgt), before, atol=0, rtol=0)
    with pytest.raises(ConfigError, match="int8"):
        quantize(model, "int4")


class _Lines:
    def __init__(self, lines):
        self.lines = lines

    def __iter__(self):
        return iter(line + "\n" for line in self.lines)


def test_load_and_cli_quantize_int8_and_bf16(tmp_path, capsys, monkeypatch):
    from bigseq.cli import main

    tr, va = write_reverse_task(tmp_path, 200, 20)
    cfg = apply_preset(Config(), "tiny")
    apply_overrides(cfg, ["data.src_tokenizer=char", "data.tgt_tokenizer=char", "train.max_steps=2",
                          "train.eval_every=2", "train.eval_examples=5"])  # fmt: skip
    run_dir = tmp_path / "run"
    train(cfg.validate(), tr, va, run_dir, progress=False, log=lambda *a: None)
    run = bigseq.load(run_dir, quantize="int8")
    assert len(run.generate(["abc", "hgfe"])) == 2
    with pytest.raises(ConfigError, match="do not combine"):
        bigseq.load(run_dir, quantize="int8", compile=True)
    # on a machine with CUDA, device auto means the CPU for int8 (it was refused; CUDA faked here)
    with monkeypatch.context() as m:
        m.setattr(torch.cuda, "is_available", lambda: True)
        assert bigseq.load(run_dir, quantize="int8", device="auto").generate(["abc"]) == run.generate(["abc"])
        with pytest.raises(ConfigError, match="quantize=int8 runs on the CPU only; got device='cuda'"):
            bigseq.load(run_dir, quantize="int8", device="cuda")
    monkeypatch.setattr(sys, "stdin", _Lines(["abc", "", "hgfe"]))
    capsys.readouterr()
    assert main(["generate", str(run_dir), "--quantize", "int8", "--beam", "2"]) == 0
    assert len(capsys.readouterr().out.split("\n")) == 4
    assert main(["evaluate", str(run_dir), "--data", str(va), "--quantize", "int8"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 20
    # bf16 through the same doors: the evaluation (loss, label scoring, decoding) runs in bf16
    assert bigseq.load(run_dir, quantize="bf16").model.lm_head.weight.dtype == torch.bfloat16
    assert main(["evaluate", str(run_dir), "--data", str(va), "--quantize", "bf16"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 20


def test_train_compile_is_transformer_only():
    cfg = apply_preset(Config(), "tiny")
    apply_overrides(cfg, ["model.arch=gru", "train.compile=true"])
    with pytest.raises(ConfigError, match="transformer only"):
        cfg.validate()


def _smallest(*overrides):
    """The smallest Transformer the loop trains: compilation time grows with the number of kernels."""
    cfg = Config()
    apply_overrides(
        cfg,
        ["model.d_model=16", "model.n_heads=2", "model.enc_layers=1", "model.dec_layers=1", "model.d_ff=32",
         "model.dropout=0", "data.src_tokenizer=char", "data.tgt_tokenizer=char", "train.batch_tokens=400",
         "train.warmup_steps=2", "train.max_steps=3", "train.eval_every=3", "train.eval_examples=5",
         *overrides],
    )  # fmt: skip
    return cfg.validate()


@needs_compiler
def test_compiled_training_matches_eager(tmp_path, capsys):
    """Three steps over batches of different shapes (dropout off: compiled code draws other random masks).

    Losses are compared, not weights: Adam turns the float noise of a gradient that is zero in exact
    arithmetic (e.g. the key bias, which softmax ignores) into a full-size step of either sign."""
    tr, va = write_reverse_task(tmp_path, 200, 20)
    records = {}
    for name, flag in (("eager", "false"), ("compiled", "true")):
        train(
            _smallest(f"train.compile={flag}"), tr, va, tmp_path / name, progress=False, log=lambda *a: None
        )
        records[name] = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
    assert "torch.compile: first step took" in capsys.readouterr().err
    for key in ("train_loss", "valid_loss"):
        assert records["compiled"][key] == pytest.approx(records["eager"][key], rel=1e-4), key


@needs_compiler
def test_compiled_decoding_finds_the_eager_outputs():
    cfg = _smallest().model
    cfg.src_vocab_size, cfg.tgt_vocab_size, cfg.shared_vocab = 23, 19, False
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    compiled = build_model(cfg).eval()
    compiled.load_state_dict(model.state_dict())
    compile_for_inference(compiled)
    src, mask, _ = _batch(b=6)
    max_lens = torch.full((6,), 10)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for beam in (1, 3):
        ref = generate(model, src, mask, max_lens, beam=beam)
        out = generate(compiled, src, mask, max_lens, beam=beam)
        assert [h[0].tokens for h in out] == [h[0].tokens for h in ref], beam
        assert [h[0].score for h in out] == pytest.approx([h[0].score for h in ref], abs=1e-4)
    # encode, then decode without and with a cache for greedy and again for beams (which read the memory
    # in groups): at most 5 graphs, none per step (beam search once fed the model a strided last-token view,
    # and it recompiled for the new stride at steps 2 and 3)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs <= 5


def test_decode_layout_keeps_the_values_and_the_outputs(tmp_path):
    """The decoding layout changes strides only: the same weights (a tied head still tied), the same logits
    to float rounding, and weights saved from it load into a plain model unchanged."""
    import copy

    from bigseq.speed import decode_layout
    from bigseq.train.checkpoint import load_weights, save_weights

    plain = tiny_model("transformer")
    fast = decode_layout(copy.deepcopy(plain))
    linears = [m for m in fast.modules() if isinstance(m, nn.Linear)]
    assert linears and all(not m.weight.is_contiguous() and m.weight.t().is_contiguous() for m in linears)
    assert fast.lm_head.weight is fast.tgt_embed.weight
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    src, mask, tgt = _batch()
    with torch.no_grad():
        torch.testing.assert_close(fast(src, mask, tgt), plain(src, mask, tgt), rtol=1e-5, atol=1e-5)
    save_weights(fast, tmp_path / "w.safetensors")
    again = tiny_model("transformer")
    with torch.no_grad():
        for w in again.parameters():
            w.zero_()
    load_weights(again, tmp_path / "w.safetensors")
    for (name, a), b in zip(plain.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_bf16_on_a_cpu_without_bf16_units_warns(monkeypatch):
    """bf16 is emulated on CPUs without AMX (about 18x slower than fp32 in a training step, measured on an
    AVX2-only AMD EPYC): asking for it there warns; with AMX, or on a GPU, it does not."""
    from bigseq import speed

    monkeypatch.setattr(speed, "cpu_bf16_pays", lambda: False)
    with pytest.warns(UserWarning, match="train.precision=bf16 on a CPU without bf16 matrix units"):
        speed.warn_if_bf16_is_emulated("train.precision=bf16", torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        speed.warn_if_bf16_is_emulated("quantize=bf16", torch.device("cuda", 0))  # a GPU: no warning
        monkeypatch.setattr(speed, "cpu_bf16_pays", lambda: True)
        speed.warn_if_bf16_is_emulated("quantize=bf16", torch.device("cpu"))
