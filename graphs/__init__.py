"""Graph assembly: one small module per skill, built from the shared node types in nodes/."""
