"""The job functions the worker runs. Plain module-level functions with JSON-friendly arguments."""
