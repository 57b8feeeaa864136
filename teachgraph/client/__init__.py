"""The model client: model calls, structured output, retries and limits, the endpoint probe."""
