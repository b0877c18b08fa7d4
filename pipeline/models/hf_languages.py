"""Language codes of multilingual Hugging Face models (NLLB/M2M100, mBART-50, mBART-25).

Their tokenizers mark the language of a text with a special token: NLLB, M2M100 and mBART-50 put
it first (``[lang] text </s>``; the target language is then ``generate``'s forced first token),
mBART-25 puts it last (``text </s> [lang]``; the target language is then the decoder's start
token). The codes are the tokenizer's own (``fra_Latn``, ``fr_XX``, ``fr``); an unknown code would
silently become ``<unk>``, so each is checked here, by the token the tokenizer then writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from schemas import ConfigError

Side = Literal["source", "target"]


@dataclass(frozen=True)
class LanguageToken:
    """The token that marks a language: its id, and whether it comes first or last in a text."""

    id: int
    first: bool


def multilingual(tokenizer: Any) -> bool:
    """Whether the tokenizer marks texts with language codes."""
    return hasattr(tokenizer, "src_lang") and bool(known_codes(tokenizer))


def known_codes(tokenizer: Any) -> list[str]:
    """The language codes the tokenizer knows (its extra special tokens, or M2M100's code table)."""
    table = getattr(tokenizer, "lang_code_to_token", None) or getattr(tokenizer, "lang_code_to_id", None)
    if table:
        return list(table)
    extra = getattr(tokenizer, "extra_special_tokens", None) or []
    return [str(t) for t in (extra if isinstance(extra, list) else [])]


def set_language(tokenizer: Any, code: str, side: Side, where: str) -> LanguageToken:
    """Make ``tokenizer`` mark its ``side`` texts as ``code``; a ConfigError for an unknown code."""
    known = known_codes(tokenizer)
    if code not in known:
        close = [k for k in known if k.lower().startswith(code.lower()[:2])][:6] or known[:6]
        flag = "--src-lang" if side == "source" else "--tgt-lang"
        raise ConfigError(
            f"{flag} {code!r} is not a language code of the tokenizer in {where} "
            f"({len(known)} codes, e.g. {', '.join(close)})"
        )
    setattr(tokenizer, "src_lang" if side == "source" else "tgt_lang", code)
    ids = tokenizer(text_target="")["input_ids"] if side == "target" else tokenizer("")["input_ids"]
    marks = [i for i in ids if i != tokenizer.eos_token_id]
    if len(marks) != 1 or marks[0] == tokenizer.unk_token_id:
        raise ConfigError(
            f"the tokenizer in {where} does not mark {side} texts with {code!r} (got ids {ids})"
        )
    return LanguageToken(int(marks[0]), first=ids[0] == marks[0])
