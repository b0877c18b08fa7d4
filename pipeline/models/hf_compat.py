"""The transformers internals the Hugging Face adapter relies on, behind one version check.

``generate()`` builds its logits processors with two private methods of ``GenerationMixin``
(``_prepare_special_tokens``, ``_get_logits_processor``); calling them is the only way to apply
exactly the rules ``generate()`` applies. Attention edits call each family's module-level
``eager_attention_forward`` (not part of the documented API). Internals change without notice, so
they are reached here only, and only for the transformers versions the tests ran with
(``SUPPORTED``).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
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


def eager_attention(module: Any) -> Callable[..., tuple[Any, Any]]:
    """The eager attention function of the modelling file that defines ``module``'s class."""
    found = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if found is None:
        raise ConfigError(
            f"transformers {transformers.__version__}: {type(module).__name__} has no "
            f"eager_attention_forward (supported: >={SUPPORTED[0]}, <{SUPPORTED[1]})"
        )
    return found


def cache_keyword(model: Any) -> str:
    """The name of the key/value cache in the model's forward arguments and outputs."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
