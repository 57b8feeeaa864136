"""Persistence: LangGraph's SQLite checkpointer (one thread per seed) and the run registry."""
