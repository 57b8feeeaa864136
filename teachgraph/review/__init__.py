"""The review page: a runs graphs with their figures, its samples and their lineage, and reviewers verdicts."""
