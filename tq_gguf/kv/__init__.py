"""What a KV cache is: the type table (cachetypes), `CacheConfig` and its presets (cacheconfig), and exact
sizes as llama.cpp allocates them (plan). Pure Python: no build, no model."""
