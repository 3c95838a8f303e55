"""Tokenizers built on the Hugging Face ``tokenizers`` library: train, encode, decode, save, load.

Four modes:

- ``bpe``: byte-level BPE; every string (any script, unseen characters) round-trips exactly, but for the
  spellings of special tokens (below). A space is put
  before every text (and taken off again when decoding), as SentencePiece's dummy prefix does, so that a
  text's first word gets the same tokens as the word inside a text ("And" = ``ĠAnd``, not ``A`` + ``nd``).
- ``unigram``: SentencePiece-style Unigram with NFKC normalization; unseen characters become ``<unk>``.
- ``char``: one token per Unicode character, spaces included; unseen characters become ``<unk>``.
- ``word``: whitespace-separated tokens (e.g. phones ``HH AH L OW``); decode joins with single spaces.

The special tokens always have the same ids: ``<pad>``=0, ``<s>``=1, ``</s>``=2, ``<unk>``=3, followed by any
extra special tokens (e.g. T5 sentinels). ``encode`` adds no BOS/EOS: the caller decides where they go. Text
that spells an extra special token encodes to it, as Hugging Face tokenizers do: that is how an infilling
prompt names its sentinels ("The cat <extra_id_0> the mat"). The spellings of the four fixed ones are text
like any other (the library would match them too: an HTML ``<s>`` in a corpus became BOS, a ``<pad>`` was
masked out of attention); a vocabulary without their characters (word mode) has ``<unk>`` for them. In bpe and
unigram, an extra special token takes the spaces around its spelling with it (``lstrip`` / ``rstrip``):
the text on each side is encoded on its own, with its own leading space, so "cat <extra_id_0> the" gives
``Ġc at <extra_id_0> Ġthe`` -- the ids span corruption makes of "cat sat the" -- not ``... at Ġ <extra_id_0>
Ġ Ġthe`` (a stray space token on each side, which pretraining never shows the model).
A saved tokenizer is one JSON file that ``tokenizers.Tokenizer.from_file`` loads alone; the mode is read
back from the model and pre-tokenizer types stored in it.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

from bigseq.errors import BigseqError, ConfigError

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
# Their spellings in a text, which are encoded as the text they are (Tokenizer._encode_literally).
_BASE_SPELLING = re.compile("|".join(re.escape(t) for t in SPECIALS))


def _spells_a_fixed_special(text: str) -> bool:
    return "<" in text and _BASE_SPELLING.search(text) is not None  # the "in" test: most texts, cheaply


MODES = ("bpe", "unigram", "char", "word")

TOKENIZER_FILE = "tokenizer.json"
TARGET_TOKENIZER_FILE = "tokenizer_target.json"

# char/word keep every symbol seen min_frequency times; the trainers still want a cap, so give one no
# real vocabulary reaches.
_UNBOUNDED_VOCAB = 1 << 30


# Subword training is quadratic in the length of a "word" (a run of letters: a line of DNA, base64 or
# space-free text): one line of 100k letters took 10 s, of 2M letters more than 10 minutes. Texts are cut
# into pieces of at most this many characters, at a space where there is one in the second half.
TRAINING_PIECE_CHARS = 1000


def _training_pieces(text: str, size: int = TRAINING_PIECE_CHARS) -> Iterator[str]:
    start = 0
    while len(text) - start > size:
        cut = text.rfind(" ", start + size // 2, start + size)
        end = cut + 1 if cut >= 0 else start + size  # the space stays with the piece before it
        yield text[start:end]
        start = end
    yield text[start:]


def _no_special_pieces(tok: tokenizers.Tokenizer) -> tokenizers.Tokenizer:
    """A Unigram tokenizer whose model never picks a special token's piece. Its trainer puts them in the
    vocabulary at score 0, the best there is: text that reads as ``<s>`` after NFKC (a full-width ``＜s＞``)
    or after the literal path (``Tokenizer._encode_literally``) became BOS. At -1e9 they are never chosen;
    other texts' pieces are unchanged (2,000 random texts compared)."""
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    special = [i for i in tok.get_added_tokens_decoder() if i < len(vocab) and vocab[i][1] > _NEVER]
    if not special:
        return tok
    for i in special:
        vocab[i][1] = _NEVER
    return tokenizers.Tokenizer.from_str(json.dumps(data))


_NEVER = -1e9
# What an added token's lstrip / rstrip take: Rust's char::is_whitespace (Unicode White_Space), which unlike
# Python's \s leaves the separators \x1c-\x1f alone.
_LIBRARY_WHITESPACE = "[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*"


class Tokenizer:
    """A trained tokenizer: text <-> token ids, with fixed special-token ids."""

    def __init__(self, tok: tokenizers.Tokenizer, mode: str) -> None:
        if mode not in MODES:
            raise ConfigError(f"tokenizer mode {mode!r} is not valid; expected one of {', '.join(MODES)}")
        self._tok = _no_special_pieces(tok) if mode == "unigram" else tok
        self.mode = mode
        # encode_batch_fast (tokenizers >= 0.20) skips computing offsets, which we never use.
        self._encode_batch = getattr(tok, "encode_batch_fast", tok.encode_batch)

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        mode: str = "bpe",
        vocab_size: int = 8000,
        min_frequency: int = 1,
        extra_special_tokens: Sequence[str] = (),
    ) -> Tokenizer:
        """Train on an iterable of texts (streamed; it may be a generator over a large corpus).

        ``vocab_size`` caps bpe/unigram vocabularies (special tokens included); char/word keep every symbol
        seen at least ``min_frequency`` times. ``extra_special_tokens`` get ids 4, 5, ... in order.
        """
        if mode not in MODES:
            raise ConfigError(f"tokenizer mode {mode!r} is not valid; expected one of {', '.join(MODES)}")
        specials: list[str | tokenizers.AddedToken] = SPECIALS + list(extra_special_tokens)
        if len(set(specials)) != len(specials):
            raise ConfigError(
                f"extra_special_tokens {list(extra_special_tokens)} repeat a token or one of {SPECIALS}"
            )
        if mode in ("bpe", "unigram") and vocab_size <= len(specials):
            raise ConfigError(
                f"tokenizer vocab_size must exceed the {len(specials)} special tokens, got {vocab_size}"
            )
        if min_frequency < 1:
            raise ConfigError(f"tokenizer min_frequency must be >= 1, got {min_frequency}")

        if mode in ("bpe", "unigram"):  # extra specials absorb the spaces around them (module docstring)
            specials[len(SPECIALS) :] = [
                tokenizers.AddedToken(t, special=True, lstrip=True, rstrip=True, normalized=False)
                for t in extra_special_tokens
            ]
        if mode == "bpe":
            tok = tokenizers.Tokenizer(models.BPE())
            # Without a leading space, a line's first word is split into rare pieces ("A" + "nd"): the
            # model learns every word twice, and a sampled line can start with "H" + "nd" (the Shakespeare
            # demo did). The prefix always goes on and exactly one space comes off, so strings that already
            # start with spaces still round-trip exactly (ByteLevel's own add_prefix_space would not).
            tok.normalizer = normalizers.Prepend(" ")
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)])
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=specials,
                # All 256 byte symbols, seen or not, so that no text ever needs <unk>.
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                show_progress=False,
            )
        elif mode == "unigram":
            tok = tokenizers.Tokenizer(models.Unigram())
            tok.normalizer = normalizers.NFKC()
            tok.pre_tokenizer = pre_tokenizers.Metaspace()
            tok.decoder = decoders.Metaspace()
            trainer = trainers.UnigramTrainer(
                vocab_size=vocab_size, special_tokens=specials, unk_token=SPECIALS[UNK], show_progress=False
            )
        else:
            tok = tokenizers.Tokenizer(models.WordLevel(unk_token=SPECIALS[UNK]))
            if mode == "char":
                # [\s\S] rather than "." so that newlines are characters too.
                tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
                tok.decoder = decoders.Fuse()
            else:
                # No decoder: the library then joins tokens with single spaces, which is what word mode wants.
                tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
            trainer = trainers.WordLevelTrainer(
                vocab_size=_UNBOUNDED_VOCAB,
                min_frequency=min_frequency,
                special_tokens=specials,
                show_progress=False,
            )
        if mode in ("bpe", "unigram"):
            texts = (piece for text in texts for piece in _training_pieces(text))
        elif mode == "word":
            # A word spelled as a special token ("<unk>" in PTB-style text) was counted as a word too: the
            # trainer then gave the special token that word's id (<pad> 5, ids 0-3 unused).
            as_word = re.compile(
                rf"(?<!\S)(?:{'|'.join(re.escape(t) for t in [*SPECIALS, *extra_special_tokens])})(?!\S)"
            )
            texts = (as_word.sub(" ", text) for text in texts)
        try:
            tok.train_from_iterator(texts, trainer)
        except Exception as e:  # the library raises plain Exception subclasses from Rust
            raise BigseqError(f"training a {mode} tokenizer failed: {e}") from e
        got = [tok.token_to_id(str(t)) for t in specials]
        if got != list(range(len(specials))):  # every part of bigseq relies on them (PAD = 0, ...)
            raise BigseqError(
                f"training a {mode} tokenizer gave the special tokens ids {got}, not 0, 1, 2, ..."
            )
        return cls(tok, mode)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a tokenizer saved by :meth:`save` (or any compatible ``tokenizer.json``)."""
        path = Path(path)
        if not path.is_file():
            raise BigseqError(f"{path}: tokenizer file not found")
        try:
            tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:
            raise BigseqError(f"{path}: not a valid tokenizer file ({e})") from None
        mode = _mode_of(tok)
        if mode is None:
            raise BigseqError(
                f"{path}: tokenizer model {type(tok.model).__name__} with pre-tokenizer "
                f"{type(tok.pre_tokenizer).__name__} is not one of bigseq's modes ({', '.join(MODES)})"
            )
        return cls(tok, mode)

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as one JSON file (atomically: a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        self._tok.save(str(tmp))
        os.replace(tmp, path)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without BOS/EOS."""
        if _spells_a_fixed_special(text):
            return self._encode_literally(text)
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without BOS/EOS (encoded in parallel by the library)."""
        out = [enc.ids for enc in self._encode_batch(texts, add_special_tokens=False)]
        for i, text in enumerate(texts):
            if _spells_a_fixed_special(text):
                out[i] = self._encode_literally(text)
        return out

    def _encode_literally(self, text: str) -> list[int]:
        """``text`` holding a spelling of ``<pad>``, ``<s>``, ``</s>`` or ``<unk>``, encoded as the
        characters it is (the library would give the special id: an HTML ``<s>`` became BOS inside a
        pretraining window, a ``<pad>`` was masked out of attention). The extra special tokens (sentinels)
        are still recognised, with the spaces their lstrip / rstrip take, as the library does."""
        literal, extra, ids_of = self._literal_encoder
        out: list[int] = []
        for k, part in enumerate([text] if extra is None else extra.split(text)):
            if k % 2:  # an extra special token, with the spaces it took
                out.append(ids_of[part.strip()])
            elif part:
                out += literal.encode(part, add_special_tokens=False).ids
        # A word-level vocabulary holds the specials' spellings as words: such a word is unknown text.
        return [UNK if i < len(SPECIALS) else i for i in out]

    @functools.cached_property
    def _literal_encoder(self) -> tuple[tokenizers.Tokenizer, re.Pattern | None, dict[str, int]]:
        """A copy of the tokenizer that matches no special token in text; a pattern (one group) matching
        the extra special tokens with the spaces they take; their ids."""
        literal = tokenizers.Tokenizer.from_str(self._tok.to_str())
        literal.encode_special_tokens = True
        extra = [t for i, t in self._tok.get_added_tokens_decoder().items() if i >= len(SPECIALS)]
        extra.sort(key=lambda t: -len(t.content))  # the longest first, as the library matches
        ws = _LIBRARY_WHITESPACE
        spaced = [(ws if t.lstrip else "") + re.escape(t.content) + (ws if t.rstrip else "") for t in extra]
        pattern = re.compile(f"({'|'.join(spaced)})") if extra else None
        return literal, pattern, {t.content: self._tok.token_to_id(t.content) for t in extra}

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, skipping special tokens (``<unk>`` included). Truncate at EOS before calling."""
        return self._tok.decode(list(ids), skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        """:meth:`decode` for each sequence of ids."""
        return self._tok.decode_batch([list(ids) for ids in batch], skip_special_tokens=True)

    def newline_id(self) -> int | None:
        """The one token a newline inside a text is, or None if there is none (``<unk>``, or several tokens).

        Pretraining joins a document's lines with it. Not ``encode("\\n")``: a bpe tokenizer puts its prefix
        space before a text, so a text that is just a newline is two tokens.
        """
        if self.mode == "bpe" and self._tok.pre_tokenizer is not None:
            pieces = self._tok.pre_tokenizer.pre_tokenize_str("\n")  # byte-level: "\n" is the piece "Ċ"
            found = self._tok.token_to_id(pieces[0][0]) if len(pieces) == 1 else None
            if found is not None:
                return found
        ids = self.encode("\n")  # any other tokenizer.json: the newline as a text of its own
        return ids[0] if len(ids) == 1 and ids[0] != UNK else None

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included: model outputs have this many logits."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self._tok.id_to_token(i)

    @property
    def backend(self) -> tokenizers.Tokenizer:
        """The underlying ``tokenizers.Tokenizer`` (for export to other libraries)."""
        return self._tok

    def __repr__(self) -> str:
        return f"Tokenizer(mode={self.mode!r}, vocab_size={self.vocab_size})"


def _mode_of(tok: tokenizers.Tokenizer) -> str | None:
    """Recover the mode from the saved JSON: the model type, and for WordLevel the pre-tokenizer."""
    model, pre = tok.model, tok.pre_tokenizer
    if isinstance(model, models.BPE):
        return "bpe"
    if isinstance(model, models.Unigram):
        return "unigram"
    if isinstance(model, models.WordLevel):
        if isinstance(pre, pre_tokenizers.Split):
            return "char"
        if isinstance(pre, pre_tokenizers.WhitespaceSplit):
            return "word"
    return None


@dataclass
class TokenizerPair:
    """Source and target tokenizers. ``shared``: one tokenizer (same object) for both sides."""

    src: Tokenizer
    tgt: Tokenizer
    shared: bool

    def save(self, run_dir: str | Path) -> None:
        """Write ``tokenizer.json`` (source or shared) and, if not shared, ``tokenizer_target.json``."""
        run_dir = Path(run_dir)
        self.src.save(run_dir / TOKENIZER_FILE)
        target_file = run_dir / TARGET_TOKENIZER_FILE
        if self.shared:
            # A leftover target file would make load() think the pair is not shared.
            target_file.unlink(missing_ok=True)
        else:
            self.tgt.save(target_file)

    @classmethod
    def load(cls, run_dir: str | Path) -> TokenizerPair:
        """Load what :meth:`save` wrote; shared if there is no ``tokenizer_target.json``."""
        run_dir = Path(run_dir)
        src = Tokenizer.load(run_dir / TOKENIZER_FILE)
        target_file = run_dir / TARGET_TOKENIZER_FILE
        if target_file.exists():
            return cls(src, Tokenizer.load(target_file), shared=False)
        return cls(src, src, shared=True)


def build_tokenizers(
    sources: list[str],
    targets: list[str],
    src_mode: str,
    tgt_mode: str,
    vocab_size: int,
    shared: bool,
    min_frequency: int = 1,
    extra_special_tokens: Sequence[str] = (),
) -> TokenizerPair:
    """Train the tokenizers for a task: one on sources + targets if ``shared``, else one per side."""
    if shared:
        if src_mode != tgt_mode:
            raise ConfigError(
                f"a shared tokenizer needs the same mode on both sides, got source {src_mode!r} "
                f"and target {tgt_mode!r}; set them equal or turn sharing off"
            )
        tok = Tokenizer.train(
            itertools.chain(sources, targets), src_mode, vocab_size, min_frequency, extra_special_tokens
        )
        return TokenizerPair(tok, tok, shared=True)
    src = Tokenizer.train(sources, src_mode, vocab_size, min_frequency, extra_special_tokens)
    tgt = Tokenizer.train(targets, tgt_mode, vocab_size, min_frequency, extra_special_tokens)
    return TokenizerPair(src, tgt, shared=False)
