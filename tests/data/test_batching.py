"""Length-bucketed token-budget batches: budget kept, every example once, order fixed by the seed."""

import numpy as np
import torch

from bigseq.data.batching import PairSet, collate, encode_pairs, make_batches, padded_widths, round_length
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


def test_length_grid_rounds_lengths_and_keeps_the_budget():
    src, tgt = _lengths()
    batches = make_batches(src, tgt, 600, np.random.default_rng(1), length_grid=4)
    assert sorted(np.concatenate(batches).tolist()) == list(range(500))
    data = PairSet(src=[[5] * n for n in src], tgt=[[BOS, *[9] * (n - 2), EOS] for n in tgt])
    widths = set()
    for idx in batches:
        b = collate(data, idx, length_grid=4)
        s_w, t_w = b.src.shape[1], b.tgt_in.shape[1]
        longest_s, longest_t = max(src[i] for i in idx), max(tgt[i] for i in idx) - 1
        assert s_w == round_length(longest_s, 4) and t_w == round_length(longest_t, 4)
        assert longest_s <= s_w <= longest_s * 1.25 and longest_t <= t_w <= longest_t * 1.25
        # nothing cut, padding masked and ignored as usual
        assert b.n_target_tokens == sum(tgt[i] - 1 for i in idx)
        assert int(b.src_mask.sum()) == sum(src[i] for i in idx)
        assert len(idx) * (s_w + t_w + 1) <= 600 or len(idx) == 1
        widths.add((s_w, t_w))
    unrounded = make_batches(src, tgt, 600, np.random.default_rng(1))
    plain = {(b.src.shape[1], b.tgt_in.shape[1]) for b in (collate(data, i) for i in unrounded)}
    assert len(widths) < len(plain)  # the point: fewer distinct shapes


def test_round_length_grid():
    got = [round_length(n, 8) for n in (1, 9, 16, 17, 19, 33, 64, 65, 100, 128, 129, 257)]
    assert got == [1, 9, 16, 18, 20, 36, 64, 72, 104, 128, 144, 288]
    assert round_length(np.array([17, 65]), 8).tolist() == [18, 72] and round_length(17, 0) == 17
    # at most 1/grid of padding, at most grid distinct lengths per doubling
    lengths = np.arange(1, 1025)
    rounded = round_length(lengths, 8)
    assert (rounded >= lengths).all() and (rounded <= lengths * 1.125).all()
    assert len(set(rounded[(lengths > 512)].tolist())) == 8
    # a 1-token label (BOS label EOS: decoder length 2) keeps its width
    assert padded_widths(17, 3, 8) == (18, 3) and padded_widths(17, 3, 0) == (17, 3)
    # never past the model's positions (37 -> 40 would not fit in 38); a length already past them is kept
    assert round_length(37, 8, max_width=38) == 38 and round_length(np.array([37, 45]), 8, 38).tolist() == [
        38,
        45,
    ]
    assert padded_widths(37, 38, 8, max_width=38) == (38, 39)  # decoder length 37 -> 38 positions, + EOS
    data = PairSet(src=[[5] * 37, [5] * 30], tgt=[[1, *[6] * 36, 2], [1, 6, 2]])
    b = collate(data, [0, 1], length_grid=8, max_width=38)
    assert b.src.shape[1] == 38 and b.tgt_in.shape[1] == 38


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


def test_batches_are_shuffled_not_run_shortest_first():
    """Bucketed batches come in a random order (a sorted order trains each epoch short to long), and two
    epochs' orders differ. make_batches is checked against itself elsewhere; this looks at the lengths."""
    src, tgt = _lengths()
    orders = [make_batches(src, tgt, 600, np.random.default_rng([7, e])) for e in (0, 1)]
    for batches in orders:
        widths = [max(src[i] for i in b) for b in batches]
        assert widths != sorted(widths) and widths != sorted(widths, reverse=True)
    assert [b.tolist() for b in orders[0]] != [b.tolist() for b in orders[1]]
    fixed = make_batches(src, tgt, 600, None)  # evaluation's order: by length
    widths = [max(src[i] for i in b) for b in fixed]
    assert widths == sorted(widths)


def test_validation_pairs_use_the_first_reference_only():
    examples = [Example("ab", ("ba", "b a", "bb"), 1), Example("cd", ("dc",), 2)]
    toks = build_tokenizers(["ab", "cd"], ["ba", "b a", "bb", "dc"], "char", "char", 100, True)
    assert len(encode_pairs(examples, toks, 10, 10)) == 4  # training: each reference is a pair
    first = encode_pairs(examples, toks, 10, 10, all_references=False)
    assert len(first) == 2 and toks.tgt.decode(first.tgt[0]) == "ba"
