"""teachgraph: AgentInstruct-style synthetic data from raw documents and code, as LangGraph graphs."""

__version__ = "0.1.0"
