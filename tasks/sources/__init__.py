"""AIS source adapters. Each one turns one input file into rows of the raw contract
(`tasks.sources.raw.RAW_COLUMNS`, all text) in a DuckDB table, plus quarantine rows for the
lines or records it could not read. Typing and cleaning happen later, in sql/stg_ais_positions.sql.
"""
