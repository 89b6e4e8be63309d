"""Model files: a GGUF's header without its vocabulary (ggufheader), the model facts the KV cache depends
on (ggufinfo), `tq.cache` tags (gguftag), the models shipped on PyPI (models) and the cache layout of a
saved context state (statefile) and its inverse (statewrite)."""
