"""Names of the built-in architectures, importable without torch (``train --arch`` choices).

``pipeline.models.builtin.ARCHS`` maps each of these names to its config and network classes.
"""

TRANSFORMER = "transformer"
LSTM = "lstm"
ARCH_NAMES: tuple[str, ...] = (TRANSFORMER, LSTM)
