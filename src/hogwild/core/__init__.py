"""The engine's mechanism: scripts in, events out (knows nothing of wording or I/O)."""
