import numpy as np
import pytest

from bigseq.data.objectives import (
    MASK,
    MIN_LENGTH,
    PRETRAIN_SPECIAL_TOKENS,
    SENTINELS,
    Objective,
    check_window,
    prefix_lm,
    span_corruption,
    text_infilling,
)
from bigseq.errors import ConfigError
from bigseq.tokenizer import Tokenizer

SENT = list(range(1000, 1100))  # sentinel ids, disjoint from the text ids below
MASK_ID = 999


def text_ids(rng: np.random.Generator, n: int) -> list[int]:
    return rng.integers(10, 500, size=n).tolist()


def reconstruct(source: list[int], target: list[int]) -> list[int]:
    """Put each sentinel's span from the target back in place of the sentinel in the source."""
    spans: dict[int, list[int]] = {}
    current = None
    for t in target:
        if t in SENT:
            assert t not in spans, "sentinel repeated in target"
            current = spans[t] = []
        else:
            assert current is not None, "target must start with a sentinel"
            current.append(t)
    out: list[int] = []
    for s in source:
        out += spans.pop(s) if s in SENT else [s]
    assert not spans, "target has sentinels the source lacks"
    return out


# --- span corruption -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 7, 20, 64, 113, 512])
def test_span_corruption_round_trips_and_masks_exact_count(n):
    rng = np.random.default_rng(n)
    for _ in range(50):
        ids = text_ids(rng, n)
        source, target = span_corruption(ids, rng, SENT)
        assert reconstruct(source, target) == ids
        sentinels_src = [t for t in source if t in SENT]
        sentinels_tgt = [t for t in target if t in SENT]
        # Sentinels are used in order 0, 1, 2, ... on both sides.
        assert sentinels_src == sentinels_tgt == SENT[: len(sentinels_src)]
        num_noise = len(target) - len(sentinels_tgt)
        assert num_noise == min(max(round(n * 0.15), 1), n - 1)
        assert target[0] == SENT[0] and all(t not in SENT for t in source[: source.index(SENT[0])])
        # No two sentinels are adjacent on either side: every span is non-empty and so is the text between.
        assert all(not (a in SENT and b in SENT) for a, b in zip(target, target[1:], strict=False))
        assert all(not (a in SENT and b in SENT) for a, b in zip(source, source[1:], strict=False))


def test_span_corruption_fraction_and_span_count():
    rng = np.random.default_rng(0)
    n, density, mean = 200, 0.15, 3.0
    spans, lengths = [], []
    for _ in range(300):
        source, target = span_corruption(text_ids(rng, n), rng, SENT, density, mean)
        k = sum(t in SENT for t in target)
        spans.append(k)
        lengths.append((len(target) - k) / k)
        assert len(target) - k == 30  # round(200 * 0.15)
    assert all(k == round(30 / mean) for k in spans)
    assert np.mean(lengths) == pytest.approx(mean, rel=0.01)
    # Over varied lengths the masked fraction is close to the density.
    masked = total = 0
    for _ in range(300):
        n = int(rng.integers(20, 300))
        source, target = span_corruption(text_ids(rng, n), rng, SENT, 0.3, 2.0)
        masked += len(target) - sum(t in SENT for t in target)
        total += n
    assert masked / total == pytest.approx(0.3, abs=0.01)


def test_span_corruption_spans_are_random_and_deterministic_per_seed():
    ids = list(range(10, 110))
    a = span_corruption(ids, np.random.default_rng(1), SENT)
    b = span_corruption(ids, np.random.default_rng(1), SENT)
    c = span_corruption(ids, np.random.default_rng(2), SENT)
    assert a == b and a != c
    # Accepts an ndarray (a shard segment) as well as a list.
    assert span_corruption(np.asarray(ids, dtype=np.uint16), np.random.default_rng(1), SENT) == a


def test_span_corruption_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="sentinels"):
        span_corruption(list(range(10, 110)), rng, SENT[:2])
    with pytest.raises(ValueError, match=f"at least {MIN_LENGTH}"):
        span_corruption([5], rng, SENT)
    with pytest.raises(ValueError, match="noise_density"):
        span_corruption([5, 6, 7], rng, SENT, noise_density=1.0)


def test_windows_needing_more_sentinels_than_there_are_are_refused_before_any_work(tmp_path):
    """2,048-token windows at the default density make 102 spans for 100 sentinels: a ConfigError from
    ``pretrain`` before the run directory, the tokenizer or the shards exist (it used to fail at the first
    batch). The largest window that fits still works."""
    import bigseq.api
    from bigseq.config import Config, apply_overrides

    with pytest.raises(ConfigError, match="makes 102 spans, one sentinel each, but there are 100"):
        check_window("span", 2048, 0.15, 3.0)
    check_window("infill", 2048, 0.15, 3.0)  # one mask token serves every span
    ids = list(range(2000))  # the longest window check_window accepts makes no more spans than sentinels
    span_corruption(ids, np.random.default_rng(0), SENT, 0.15, 3.0)
    check_window("span", len(ids), 0.15, 3.0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a few words\n", encoding="utf-8")
    cfg = Config()
    apply_overrides(cfg, ["pretrain.window_tokens=2048", "model.max_positions=4096"])
    with pytest.raises(ConfigError, match="makes 102 spans"):
        bigseq.api.pretrain(cfg, [corpus], tmp_path / "run", progress=False, log=lambda *a: None)
    assert not (tmp_path / "run").exists()
    # a --tokenizer with only 3 sentinels: 128-token windows need 6 (and a char one without a newline token
    # would run a document's lines together): refused, naming the file, before the run directory is made
    texts = ["the cat sat", "on the mat", "and slept"] * 20
    few, no_newline = tmp_path / "few.json", tmp_path / "chars.json"
    Tokenizer.train(texts, "bpe", 300, extra_special_tokens=SENTINELS[:3]).save(few)
    Tokenizer.train(texts, "char", extra_special_tokens=PRETRAIN_SPECIAL_TOKENS).save(no_newline)
    cfg = Config()
    apply_overrides(cfg, ["pretrain.window_tokens=128"])
    for tok, message in (
        (few, "makes 6 spans, one sentinel each, but there are 3"),
        (no_newline, "no newline token"),
    ):
        with pytest.raises(ConfigError, match=f"{tok}: .*{message}"):
            bigseq.api.pretrain(
                cfg, [corpus], tmp_path / "run", progress=False, log=lambda *a: None, tokenizer=tok
            )
        assert not (tmp_path / "run").exists()
    # the window may fill max_positions but for BOS (the decoder reads BOS + a whole window at most)
    cfg = Config()
    apply_overrides(
        cfg,
        ["pretrain.window_tokens=64", "model.max_positions=64", "data.max_src_len=64", "data.max_tgt_len=63"],
    )
    with pytest.raises(ConfigError, match=r"window_tokens \(64\) \+ BOS exceeds model.max_positions \(64\)"):
        bigseq.api.pretrain(cfg, [corpus], tmp_path / "run", progress=False, log=lambda *a: None)


# --- text infilling ------------------------------------------------------------------------------


def infill_alignment(source: list[int], target: list[int]) -> list[int] | None:
    """Match the source against the target, each mask standing for a (possibly empty) contiguous run.
    Returns the length each mask stands for, or None if the source does not fit the target."""
    # best[i][j]: the mask lengths that match source[:i] to target[:j] (dynamic programming)
    best: dict[tuple[int, int], list[int]] = {(0, 0): []}
    for i, s in enumerate(source):
        for j in range(len(target) + 1):
            if (i, j) not in best:
                continue
            path = best[(i, j)]
            if s == MASK_ID:
                for k in range(j, len(target) + 1):
                    best.setdefault((i + 1, k), [*path, k - j])
            elif j < len(target) and target[j] == s:
                best.setdefault((i + 1, j + 1), path)
    return best.get((len(source), len(target)))


@pytest.mark.parametrize("n", [2, 5, 16, 60])
def test_infilling_masks_contiguous_spans_of_the_target(n):
    rng = np.random.default_rng(n)
    for _ in range(40):
        ids = text_ids(rng, n)
        source, target = text_infilling(ids, rng, MASK_ID)
        assert target == ids
        assert MASK_ID in source
        # Masks never touch, so each one stands for its own run of the target.
        assert all(not (a == b == MASK_ID) for a, b in zip(source, source[1:], strict=False))
        kept = [t for t in source if t != MASK_ID]
        assert len(ids) - len(kept) == min(max(round(n * 0.3), 1), n - 1)
        assert infill_alignment(source, target) is not None


def test_infilling_fraction_span_lengths_and_insertions():
    rng = np.random.default_rng(0)
    masked = total = masks = inserts = 0
    for _ in range(400):
        n = int(rng.integers(30, 200))
        ids = text_ids(rng, n)
        source, target = text_infilling(ids, rng, MASK_ID, mask_ratio=0.3, poisson_lambda=3.0)
        lengths = infill_alignment(source, target)
        assert lengths is not None
        masked += sum(lengths)
        total += n
        masks += len(lengths)
        inserts += lengths.count(0)
    assert masked / total == pytest.approx(0.3, abs=0.01)
    # Poisson(3): about 5% of spans are empty (insertions); the mean span is close to lambda
    # (a little under it, as the last span of each text is trimmed to the exact count).
    assert 0.02 < inserts / masks < 0.09
    assert 2.4 < masked / masks < 3.2


def test_infilling_with_more_spans_than_gaps_still_fits():
    rng = np.random.default_rng(0)
    for _ in range(200):
        # 0.9 masked with short spans: many spans for few kept tokens, so spans get merged.
        source, target = text_infilling(text_ids(rng, 10), rng, MASK_ID, mask_ratio=0.9, poisson_lambda=0.5)
        assert infill_alignment(source, target) is not None
        assert sum(t != MASK_ID for t in source) == 1


def test_infilling_source_is_never_longer_than_the_text():
    """Many empty spans (small lambda) each add a mask: the source (kept tokens + masks) could outgrow the
    window, which the model's positions were sized for. Masks are capped at the masked-token count."""
    rng = np.random.default_rng(1)
    for n in (5, 126):
        for _ in range(200):
            source, target = text_infilling(
                text_ids(rng, n), rng, MASK_ID, mask_ratio=0.3, poisson_lambda=0.2
            )
            assert len(source) <= n and infill_alignment(source, target) is not None


# --- prefix LM -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 10, 101])
def test_prefix_lm_splits_into_two_non_empty_parts(n):
    rng = np.random.default_rng(n)
    cuts = set()
    for _ in range(100):
        ids = text_ids(rng, n)
        source, target = prefix_lm(ids, rng)
        assert source + target == ids
        assert source and target
        cuts.add(len(source))
        if n >= 10:
            assert 0.2 * n <= len(source) <= 0.8 * n
    if n == 101:
        assert len(cuts) > 30  # the cut point varies


# --- Objective -----------------------------------------------------------------------------------


def test_objective_dispatch_and_validation():
    ids = list(range(10, 60))
    rng = np.random.default_rng(3)
    assert Objective("span", sentinel_ids=SENT).apply(ids, np.random.default_rng(3)) == span_corruption(
        ids, rng, SENT
    )
    assert Objective("infill", mask_id=MASK_ID, mask_ratio=0.5).apply(
        ids, np.random.default_rng(4)
    ) == text_infilling(ids, np.random.default_rng(4), MASK_ID, 0.5)
    assert Objective("prefix").apply(ids, np.random.default_rng(5)) == prefix_lm(
        ids, np.random.default_rng(5)
    )

    with pytest.raises(ConfigError, match="span, infill, prefix"):
        Objective("mlm")
    with pytest.raises(ConfigError, match="sentinel_ids"):
        Objective("span")
    with pytest.raises(ConfigError, match="mask_id"):
        Objective("infill")
    with pytest.raises(ConfigError, match="noise_density"):
        Objective("span", sentinel_ids=SENT, noise_density=0.0)
    with pytest.raises(ConfigError, match="prefix_frac"):
        Objective("prefix", min_prefix_frac=0.9, max_prefix_frac=0.1)


def test_objective_for_tokenizer_uses_the_special_token_ids():
    assert len(SENTINELS) == 100 and SENTINELS[0] == "<extra_id_0>" and PRETRAIN_SPECIAL_TOKENS[-1] == MASK
    tok = Tokenizer.train(
        ["a tiny corpus", "of two lines"], mode="char", extra_special_tokens=PRETRAIN_SPECIAL_TOKENS
    )
    span = Objective.for_tokenizer("span", tok, noise_density=0.2)
    assert span.sentinel_ids == tuple(range(4, 104)) and span.noise_density == 0.2
    assert Objective.for_tokenizer("infill", tok).mask_id == 104
    plain = Tokenizer.train(["a tiny corpus"], mode="char")
    with pytest.raises(ConfigError, match="extra_special_tokens"):
        Objective.for_tokenizer("span", plain)
    with pytest.raises(ConfigError, match="extra_special_tokens"):
        Objective.for_tokenizer("infill", plain)
    assert Objective.for_tokenizer("prefix", plain).name == "prefix"


def test_objective_parameters_reach_the_objective():
    """Non-default parameters are passed on (the dispatch test above uses defaults only, where a dropped
    parameter falls back to the same value)."""
    ids = list(range(10, 90))
    span = Objective("span", sentinel_ids=SENT, noise_density=0.5, mean_span_length=2.0)
    assert span.apply(ids, np.random.default_rng(3)) == span_corruption(
        ids, np.random.default_rng(3), SENT, 0.5, 2.0
    )
    assert span.apply(ids, np.random.default_rng(3)) != span_corruption(ids, np.random.default_rng(3), SENT)
    infill = Objective("infill", mask_id=MASK_ID, mask_ratio=0.5, poisson_lambda=1.0)
    assert infill.apply(ids, np.random.default_rng(4)) == text_infilling(
        ids, np.random.default_rng(4), MASK_ID, 0.5, 1.0
    )
    prefix = Objective("prefix", min_prefix_frac=0.7, max_prefix_frac=0.9)
    lengths = {len(prefix.apply(ids, np.random.default_rng(seed))[0]) for seed in range(40)}
    assert min(lengths) >= 56 and max(lengths) <= 72 and len(lengths) > 5  # ceil(0.7 * 80), floor(0.9 * 80)
