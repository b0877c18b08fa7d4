"""Token vocabularies of the built-in models: characters, words or greedy word pieces."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS: tuple[str, ...] = ("<pad>", "<s>", "</s>", "<unk>")
Mode = Literal["char", "word", "pieces"]
_WORD = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class Vocab:
    """An ordered token list; ids 0-3 are the specials ``<pad> <s> </s> <unk>``.

    ``char`` splits text into characters, ``word`` into words and punctuation (joined by
    spaces), ``pieces`` greedily into the longest known pieces (joined without spaces).
    """

    tokens: tuple[str, ...]
    mode: Mode
    index: dict[str, int] = field(init=False, repr=False, compare=False)
    _longest: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.tokens[: len(SPECIALS)] != SPECIALS:
            raise ValueError("vocabulary must start with the special tokens")
        object.__setattr__(self, "index", {t: i for i, t in enumerate(self.tokens)})
        object.__setattr__(self, "_longest", max(len(t) for t in self.tokens))

    @classmethod
    def build(cls, texts: Iterable[str], mode: Mode, extra: Sequence[str] = ()) -> Vocab:
        """Collect every token of ``texts`` (plus ``extra``), sorted for determinism."""
        seen: set[str] = set(extra)
        if mode == "pieces":
            seen.update(ch for text in texts for ch in text)
        else:
            splitter = list if mode == "char" else _WORD.findall
            for text in texts:
                seen.update(splitter(text))
        return cls(SPECIALS + tuple(sorted(seen - set(SPECIALS))), mode)

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        """Cut ``text`` into token strings (unknown ones included as they are)."""
        if self.mode == "char":
            return list(text)
        if self.mode == "word":
            return _WORD.findall(text)
        out: list[str] = []
        i = 0
        while i < len(text):
            for n in range(min(self._longest, len(text) - i), 0, -1):
                if text[i : i + n] in self.index:
                    out.append(text[i : i + n])
                    i += n
                    break
            else:
                out.append(text[i])
                i += 1
        return out

    def encode(self, text: str) -> list[int]:
        return [self.index.get(t, UNK) for t in self.split(text)]

    def token(self, token_id: int) -> str:
        return self.tokens[token_id] if 0 <= token_id < len(self.tokens) else SPECIALS[UNK]

    def decode(self, ids: Iterable[int]) -> str:
        """Join the non-special tokens of ``ids`` back into text."""
        toks = [self.tokens[i] for i in ids if i >= len(SPECIALS) or i == UNK]
        return (" " if self.mode == "word" else "").join(toks)

    def word_starts(self, pieces: list[str]) -> list[bool]:
        """Whether each token begins a word: every token of ``word`` mode; the first token and
        those after a space or a special token in ``char`` and ``pieces`` mode."""
        if self.mode == "word":
            return [True] * len(pieces)
        return [i == 0 or pieces[i - 1].isspace() or pieces[i - 1] in SPECIALS for i in range(len(pieces))]

    def to_json(self) -> dict[str, object]:
        return {"mode": self.mode, "tokens": list(self.tokens)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Vocab:
        return cls(tuple(data["tokens"]), data["mode"])  # type: ignore[arg-type]

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), ensure_ascii=False), encoding="utf-8")
