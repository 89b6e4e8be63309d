"""The parts of tools/gen_codebooks.py, which runs them: layout (the turbo and trellis-coded rows
of the type table and their block layouts), solver (the Lloyd-Max codebooks and the scale
search's tables), trellis (the trellis-coded types' trained codebooks and scale factors) and
emitters (one file per language from those tables). They import tq_gguf, so the tool puts the
repository on sys.path before it imports them."""
