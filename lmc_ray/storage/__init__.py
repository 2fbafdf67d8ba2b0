"""Where results live: the Parquet store (store), one writer at a time (lease), and the sweep's writer that knows what
is done (recorder)."""
