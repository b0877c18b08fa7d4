"""The transformers internals the Hugging Face adapter relies on, behind one version check.

``generate()`` builds its logits processors with two private methods of ``GenerationMixin``
(``_prepare_special_tokens``, ``_get_logits_processor``); calling them is the only way to apply
exactly the rules ``generate()`` applies. Private methods change without notice, so they are
called here only, and only for the transformers versions the tests ran with (``SUPPORTED``).
"""

from __future__ import annotations

import inspect
from typing import Any

import transformers
from packaging.version import Version

from schemas import ConfigError

SUPPORTED = (Version("5.24"), Version("6.0"))  # [low, high): tested with 5.24 (pyproject: the same)
PRIVATE = ("_prepare_special_tokens", "_get_logits_processor")


def check_version(version: str = transformers.__version__) -> None:
    """Refuse a transformers version outside ``SUPPORTED`` with one line naming the range."""
    low, high = SUPPORTED
    if not low <= Version(version) < high:
        raise ConfigError(
            f"transformers {version} is not supported by beamscope's Hugging Face adapter "
            f"(supported: >={low}, <{high}); install a supported version"
        )


def logits_processors(model: Any, gen: Any) -> Any:
    """The ``LogitsProcessorList`` that ``generate()`` builds for ``model`` under config ``gen``."""
    check_version()
    missing = [name for name in PRIVATE if not hasattr(model, name)]
    if missing:
        raise ConfigError(
            f"transformers {transformers.__version__} lacks {', '.join(missing)}, which the Hugging Face "
            f"adapter needs (supported: >={SUPPORTED[0]}, <{SUPPORTED[1]})"
        )
    model._prepare_special_tokens(gen, True, device=model.device)
    return model._get_logits_processor(generation_config=gen, input_ids_seq_length=1, device=model.device)


def cache_keyword(model: Any) -> str:
    """The name of the key/value cache in the model's forward arguments and outputs."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
