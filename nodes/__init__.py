"""Shared node types every skill graph is built from (agents, routing, the LLM layer)."""
