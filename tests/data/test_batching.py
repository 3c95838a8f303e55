"""Length-bucketed token-budget batches: budget kept, every example once, order fixed by the seed."""

import numpy as np
import torch

from bigseq.data.batching import PairSet, collate, encode_pairs, make_batches
from bigseq.data.readers import Example
from bigseq.tokenizer import BOS, EOS, PAD, build_tokenizers


def _lengths(n=500, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 40, n).tolist(), rng.integers(3, 40, n).tolist()


def test_every_example_once_and_budget_kept():
    src, tgt = _lengths()
    batches = make_batches(src, tgt, 600, np.random.default_rng(1))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(500))
    for b in batches:
        width = max(src[i] for i in b) + max(tgt[i] for i in b)
        assert len(b) * width <= 600 or len(b) == 1


def test_batches_group_similar_lengths():
    # real pairs have correlated lengths: target = source length + a little
    src, noise = _lengths()
    tgt = [s + n % 4 for s, n in zip(src, noise, strict=True)]
    batches = make_batches(src, tgt, 600, np.random.default_rng(1))
    padded = sum(len(b) * (max(src[i] for i in b) + max(tgt[i] for i in b)) for b in batches)
    assert sum(src) + sum(tgt) > 0.85 * padded  # under 15% padding


def test_order_is_a_function_of_the_seed():
    src, tgt = _lengths()
    a = make_batches(src, tgt, 600, np.random.default_rng([7, 0]))
    b = make_batches(src, tgt, 600, np.random.default_rng([7, 0]))
    c = make_batches(src, tgt, 600, np.random.default_rng([7, 1]))
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert len(a) != len(c) or any(len(x) != len(y) or (x != y).any() for x, y in zip(a, c, strict=True))


def test_collate_shifts_targets_and_masks_padding():
    data = PairSet(src=[[5, 6, 7], [8]], tgt=[[BOS, 9, 10, EOS], [BOS, 11, EOS]])
    b = collate(data, [0, 1])
    assert b.src.tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert b.src_mask.tolist() == [[True, True, True], [True, False, False]]
    assert b.tgt_in.tolist() == [[BOS, 9, 10], [BOS, 11, EOS]]
    assert b.tgt_out.tolist() == [[9, 10, EOS], [11, EOS, PAD]]
    assert b.n_target_tokens == 5 and b.n_tokens == 9
    assert b.src.dtype == torch.long


def test_too_long_pairs_truncated_or_dropped_and_counted():
    # the second reference of "abc" is too long on the target side only; "abcdefg" on the source side
    examples = [
        Example("ab", ("xy",), 1),
        Example("abc", ("xyz", "xyzxyzx"), 2),
        Example("abcdefg", ("x",), 3),
    ]
    toks = build_tokenizers(["abcdefg"], ["xyz"], "char", "char", 100, shared=True)
    cut = encode_pairs(examples, toks, max_src_len=4, max_tgt_len=5)
    assert (len(cut), cut.truncated, cut.dropped) == (4, 2, 0)
    assert max(map(len, cut.src)) == 4 and max(map(len, cut.tgt)) == 5 + 2  # + BOS / EOS
    kept = encode_pairs(examples, toks, max_src_len=4, max_tgt_len=5, too_long="drop")
    assert (len(kept), kept.truncated, kept.dropped) == (2, 0, 2)
    assert [toks.src.decode(s) for s in kept.src] == ["ab", "abc"]
    assert [toks.tgt.decode(t[1:-1]) for t in kept.tgt] == ["xy", "xyz"]
