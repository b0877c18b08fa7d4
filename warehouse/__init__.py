"""The warehouse, read side: DuckDB views over the Parquet tables, named queries, vectors."""

from warehouse.store import Warehouse, open_warehouse, write_duckdb_file

__all__ = ["Warehouse", "open_warehouse", "write_duckdb_file"]
