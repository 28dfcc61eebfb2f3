"""Dynamic batching of concurrent requests per model."""
