"""`tq-gguf build` runs before the package's heavy dependencies are installed.

The Makefile and tools/wheel_install_check.sh install the package without its
dependencies plus click, run `tq-gguf build` (which installs the patched llama-cpp-python),
and only then install the rest: pip would otherwise compile the stock llama-cpp-python.
So importing the CLI and running `build --help` must need nothing but click; so must
`tq-gguf --help` and every command's --help, which only load the command modules (tq_gguf.cli).
"""

import subprocess
import sys

HEAVY = ("numpy", "gguf", "cffi", "llama_cpp", "matplotlib", "uvicorn", "fastapi")

CODE = f"""
import sys
sys.modules.update({{name: None for name in {HEAVY!r}}})  # importing any of them now fails
from click.testing import CliRunner
from tq_gguf.cli import COMMANDS, main
for args in (["build", "--help"], ["--help"], *([name, "--help"] for name in COMMANDS)):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (args, result.output, repr(result.exception))
print("ok")
"""


def test_build_and_help_need_only_click():
    res = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-3000:]
