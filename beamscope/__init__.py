"""beamscope: a trace warehouse and visual debugger for sequence-to-sequence models."""

__version__ = "0.1.0"
