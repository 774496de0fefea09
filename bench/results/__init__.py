"""Results: a cell's identity (the hashes that key resume and history), the Parquet store,
and where a sweep writes (checked before any work, never losing a measured row)."""
