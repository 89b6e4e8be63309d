"""`python -m tq_gguf`: the `tq-gguf` command line."""

from .cli import main

main(prog_name="tq-gguf")
