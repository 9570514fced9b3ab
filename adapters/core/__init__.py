"""The generic base every model module builds on: configuration, prompt items, batching, truncation, generation, loading."""
