import pytest
import tokenizers

from bigseq.errors import BigseqError, ConfigError
from bigseq.tokenizer import (
    BOS,
    EOS,
    MODES,
    PAD,
    SPECIALS,
    UNK,
    Tokenizer,
    TokenizerPair,
    build_tokenizers,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning is fun, and  sequence models are  fun too.",
    "机器学习很有趣。",
    "G2P 模型 test",
    "深度学习 and deep learning",
] * 3
PHONES = ["HH AH L OW", "W ER L D", "T EH S T", "M AA D AH L"]


@pytest.fixture(scope="module")
def trained() -> dict[str, Tokenizer]:
    # Train each mode once per module: tokenizer training is the slow part of these tests.
    toks = {mode: Tokenizer.train(CORPUS, mode=mode, vocab_size=300) for mode in ("bpe", "unigram", "char")}
    toks["word"] = Tokenizer.train(PHONES, mode="word")
    return toks


@pytest.mark.parametrize("mode", MODES)
def test_special_ids_fixed(trained, mode):
    tok = trained[mode]
    assert (PAD, BOS, EOS, UNK) == (0, 1, 2, 3)
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert [tok.id_to_token(i) for i in range(4)] == SPECIALS
    assert tok.mode == mode


@pytest.mark.parametrize("mode", ["bpe", "unigram", "char"])
@pytest.mark.parametrize("text", ["The lazy dog is fun.", "机器学习很有趣。", "G2P 模型 test"])
def test_round_trip(trained, mode, text):
    tok = trained[mode]
    ids = tok.encode(text)
    assert ids and all(i >= 4 for i in ids)  # no BOS/EOS added, no <unk> for seen characters
    assert tok.decode(ids) == text


def test_bpe_round_trips_unseen_text_exactly(trained):
    tok = trained["bpe"]
    text = "  Ünïcödé 🚀 zebra\tqua\r\nΩ 日本語  "
    assert tok.decode(tok.encode(text)) == text
    assert UNK not in tok.encode(text)


def test_bpe_first_word_tokenized_as_inside_a_text():
    tok = Tokenizer.train(["And so it goes. And then, and now"] * 20, mode="bpe", vocab_size=300)
    first, inside = tok.encode("And"), tok.encode("so And")[1:]
    assert first == inside and len(first) == 1  # one piece "ĠAnd", not "A" + "nd"
    for text in ("And", " And", "  And  ", "", "\nAnd"):
        assert tok.decode(tok.encode(text)) == text


def test_newline_id_is_the_newline_inside_a_text(trained):
    tok = trained["bpe"]
    nl = tok.newline_id()
    assert nl is not None and nl != UNK
    assert tok.encode("fox\nfun").count(nl) == 1 and nl not in tok.encode("fox fun")
    assert trained["char"].newline_id() is None  # no newline in its training text: it would be <unk>
    char = Tokenizer.train(["a\nb"] * 3, mode="char")
    assert char.newline_id() == char.encode("\n")[0] != UNK


def test_bpe_tokenizer_without_prefix_space_still_loads_and_round_trips(tmp_path):
    # Runs trained before the prefix space was added keep their tokenizer.json: it must decode as before.
    old = tokenizers.Tokenizer(tokenizers.models.BPE())
    old.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    old.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    old.train_from_iterator(CORPUS, trainer)
    old.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.load(tmp_path / "tokenizer.json")
    assert tok.mode == "bpe"
    for text in ("The lazy dog.", " leading space", "机器"):
        assert tok.decode(tok.encode(text)) == text
    assert tok.encode("The") == old.encode("The", add_special_tokens=False).ids


@pytest.mark.parametrize("mode", ["unigram", "char"])
def test_unseen_characters_map_to_unk(trained, mode):
    assert UNK in trained[mode].encode("Z🚀")


def test_char_mode_one_token_per_character_with_spaces(trained):
    tok = trained["char"]
    text = "fun  fox 机器"
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert ids[3] == ids[4] == tok.token_to_id(" ")
    assert tok.decode(ids) == text


def test_word_mode_on_phones(trained):
    tok = trained["word"]
    ids = tok.encode("HH  AH L OW")
    assert [tok.id_to_token(i) for i in ids] == ["HH", "AH", "L", "OW"]
    assert tok.decode(ids) == "HH AH L OW"
    assert tok.encode("HH QQ") == [tok.token_to_id("HH"), UNK]
    assert tok.vocab_size == 4 + len({p for s in PHONES for p in s.split()})


def test_decode_skips_specials_and_batch_matches_single(trained):
    tok = trained["bpe"]
    texts = ["fox", "机器学习很有趣。", "the dog"]
    batch = tok.encode_batch(texts)
    assert batch == [tok.encode(t) for t in texts]
    assert tok.decode([BOS, *batch[0], EOS, PAD, PAD]) == "fox"
    assert tok.decode_batch(batch) == texts


@pytest.mark.parametrize("mode", MODES)
def test_save_load_identical(trained, tmp_path, mode):
    tok = trained[mode]
    path = tmp_path / "tok.json"
    tok.save(path)
    # The file alone is a valid HF tokenizer.
    assert tokenizers.Tokenizer.from_file(str(path)).get_vocab_size() == tok.vocab_size
    loaded = Tokenizer.load(path)
    assert loaded.mode == mode
    assert loaded.vocab_size == tok.vocab_size
    texts = PHONES if mode == "word" else CORPUS[:5] + ["unseen Z🚀"]
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)


def test_load_missing_or_corrupt(tmp_path):
    with pytest.raises(BigseqError, match="nope.json"):
        Tokenizer.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BigseqError, match="bad.json"):
        Tokenizer.load(bad)


@pytest.mark.parametrize("mode", MODES)
def test_extra_special_tokens(mode):
    extras = ["<extra_id_0>", "<extra_id_1>"]
    tok = Tokenizer.train(CORPUS[:5], mode=mode, vocab_size=300, extra_special_tokens=extras)
    assert [tok.token_to_id(t) for t in SPECIALS + extras] == [0, 1, 2, 3, 4, 5]
    ids = tok.encode("fox <extra_id_1> dog")
    assert 5 in ids
    assert "<extra_id" not in tok.decode(ids)


@pytest.mark.parametrize("mode", ["bpe", "unigram"])
def test_a_spelled_sentinel_encodes_as_pretraining_places_it(mode):
    """Span corruption puts a sentinel's id in place of token ids; a prompt spelling the sentinel between
    words must give the same ids, without a stray space token on either side of it."""
    tok = Tokenizer.train(CORPUS, mode=mode, vocab_size=300, extra_special_tokens=["<extra_id_0>"])
    head, hidden, tail = (tok.encode(t) for t in ("The quick brown", "fox", "jumps over"))
    assert tok.encode("The quick brown fox jumps over") == head + hidden + tail  # word-boundary pieces
    for prompt in ("The quick brown <extra_id_0> jumps over", "The quick brown<extra_id_0>jumps over"):
        assert tok.encode(prompt) == head + [4] + tail, prompt
    assert tok.decode(head + [4] + tail) == "The quick brown jumps over"


@pytest.mark.parametrize("mode", MODES)
def test_the_fixed_special_tokens_spelled_in_text_are_text(mode):
    """An HTML ``<s>`` or a literal ``<pad>`` encodes as text (no PAD / BOS / EOS id inside a sequence), in
    encode and encode_batch alike; a sentinel beside one is still the sentinel, with the same ids as when
    no fixed spelling is in the text."""
    corpus = [*CORPUS, "<s> and </s> and <pad> and <unk> as written on a web page <extra_id_0> <x/>"]
    tok = Tokenizer.train(corpus, mode=mode, vocab_size=300, extra_special_tokens=["<extra_id_0>"])
    # spelled as words in the corpus, they kept their ids (word mode gave <pad> another word's id)
    assert [tok.token_to_id(t) for t in [*SPECIALS, "<extra_id_0>"]] == [0, 1, 2, 3, 4]
    text = "a page said <s>old price</s> and <pad> then <unk>"
    ids = tok.encode(text)
    # NFKC (unigram) makes <s> of a full-width ＜s＞ only after the check: its model never picks the piece
    assert not {PAD, BOS, EOS} & set(tok.encode("a ＜s＞ b ＜/s＞ c ﹤pad﹥"))
    assert tok.encode_batch(["fox", text]) == [tok.encode("fox"), ids]
    assert not {PAD, BOS, EOS} & set(ids)
    if mode in ("bpe", "char", "unigram"):  # their characters are in the vocabulary: the text round-trips
        assert tok.decode(ids) == text and UNK not in ids
    prompt = "The quick brown <extra_id_0> jumps over"
    fast = tok.encode(prompt)  # no fixed spelling: the library's own encoding
    assert 4 in fast and tok.encode(prompt + " </s>")[: len(fast)] == fast


def test_invalid_mode_and_settings():
    with pytest.raises(ConfigError, match="bpe, unigram, char, word"):
        Tokenizer.train(CORPUS, mode="sentencepiece")
    with pytest.raises(ConfigError, match="vocab_size"):
        Tokenizer.train(CORPUS, mode="bpe", vocab_size=4)
    with pytest.raises(ConfigError, match="repeat"):
        Tokenizer.train(CORPUS, mode="char", extra_special_tokens=["<s>"])


def test_tokenizer_pair_shared(tmp_path):
    pair = build_tokenizers(["fox dog"], ["狐狸 狗"], "char", "char", vocab_size=100, shared=True)
    assert pair.shared and pair.src is pair.tgt
    assert UNK not in pair.src.encode("狐狸 fox")
    (tmp_path / "tokenizer_target.json").write_text("stale")
    pair.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json"]
    loaded = TokenizerPair.load(tmp_path)
    assert loaded.shared and loaded.src is loaded.tgt
    assert loaded.src.encode("狐狸 fox") == pair.src.encode("狐狸 fox")


def test_tokenizer_pair_separate(tmp_path):
    pair = build_tokenizers(["hello", "world"], PHONES, "bpe", "word", vocab_size=300, shared=False)
    assert not pair.shared and pair.src.mode == "bpe" and pair.tgt.mode == "word"
    pair.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.json", "tokenizer_target.json"]
    loaded = TokenizerPair.load(tmp_path)
    assert not loaded.shared
    assert (loaded.src.mode, loaded.tgt.mode) == ("bpe", "word")
    assert loaded.tgt.encode("HH AH") == pair.tgt.encode("HH AH")


def test_shared_requires_same_mode():
    with pytest.raises(ConfigError, match="same mode"):
        build_tokenizers(["a"], ["b"], "bpe", "word", vocab_size=300, shared=True)


def test_training_texts_are_cut_into_bounded_pieces(monkeypatch):
    """Subword training is quadratic in a word's length: one line of 2M letters (DNA, base64) took more than
    10 minutes. The trainer gets pieces of at most 1,000 characters, cut at a space where there is one."""
    from bigseq import tokenizer as tokenizer_mod

    words = "the quick brown fox " * 120
    pieces = list(tokenizer_mod._training_pieces(words))
    assert "".join(pieces) == words and all(len(p) <= 1000 and p.endswith(" ") for p in pieces)
    dna = "acgt" * 1001
    assert [len(p) for p in tokenizer_mod._training_pieces(dna)] == [1000, 1000, 1000, 1000, 4]
    assert list(tokenizer_mod._training_pieces("short")) == ["short"]
    seen = []
    real = tokenizer_mod._training_pieces
    monkeypatch.setattr(tokenizer_mod, "_training_pieces", lambda t: seen.append(t) or real(t))
    tok = Tokenizer.train([dna, "a b c"], "bpe", vocab_size=300)
    assert seen == [dna, "a b c"]
    assert tok.decode(tok.encode(dna)) == dna  # a text longer than a piece still round-trips
