"""The one definition of every beamscope table, the warehouse layout and user-facing errors."""

from schemas.errors import (
    BeamscopeError,
    CheckpointError,
    ConfigError,
    CorpusError,
    SchemaVersionError,
    WarehouseError,
)
from schemas.tables import (
    KEYS,
    PART_TABLES,
    SCHEMA_VERSION,
    TABLES,
    VECTOR_TABLES,
    decoder_states_schema,
    encoder_states_schema,
)

__all__ = [
    "KEYS",
    "PART_TABLES",
    "SCHEMA_VERSION",
    "TABLES",
    "VECTOR_TABLES",
    "BeamscopeError",
    "CheckpointError",
    "ConfigError",
    "CorpusError",
    "SchemaVersionError",
    "WarehouseError",
    "decoder_states_schema",
    "encoder_states_schema",
]
