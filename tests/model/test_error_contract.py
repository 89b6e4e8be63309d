"""One error contract: every command that takes a model answers a bad one with exactly one
`error: ...` line on stderr and exit status 1, never a traceback.

Three bad models: a GGUF cut in half, a file that is not a GGUF, and a well-formed GGUF
of an architecture llama.cpp does not know (it refuses to load it). Commands that load
the model need the native build; inspect, plan and tag read only the header.
"""

from __future__ import annotations

import socket
from pathlib import Path

import click
import pytest

from tq_gguf.cli import main
from tq_gguf.runtime.ports import free_port

from helpers import run_cli
from helpers import synthetic_gguf

# Each command that takes a model, with the cheapest arguments that reach the model.
COMMANDS = {
    "inspect": lambda model, tmp: ["inspect", model],
    "plan": lambda model, tmp: ["plan", model, "--ctx", "512"],
    "tag": lambda model, tmp: ["tag", model, "--cache", "f16/f16", "-o", tmp / "tagged.gguf"],
    "advise": lambda model, tmp: ["advise", model],
    "eval": lambda model, tmp: ["eval", model, "--chunks", "1", "--configs", "f16/f16"],
    "bench": lambda model, tmp: ["bench", model, "--configs", "q8_0/q8_0", "--depths", "0",
                                 "-p", "16", "-n", "4", "-r", "1"],
    "run": lambda model, tmp: ["run", model, "-p", "hi", "-n", "1"],
    "needle": lambda model, tmp: ["needle", model, "--configs", "f16/f16", "--lengths", "256", "--depths", "0",
                                  "--trials", "1", "--allow-beyond-train"],
    # port 0: the check that the address is free binds any free port; the model fails after it,
    # before the server starts
    "serve": lambda model, tmp: ["serve", model, "--port", "0"],
}
HEADER_ONLY = ("inspect", "plan", "tag")  # they never hand the model to llama.cpp
# Other ways a command reaches a model: llama.cpp's own server loads it in a child process.
VARIANTS = {
    "serve-llama-server": lambda model, tmp: ["serve", model, "--engine", "llama-server", "--port", free_port()],
}


def bad_model(kind: str, tmp: Path) -> Path:
    if kind == "truncated":
        whole = synthetic_gguf(tmp / "whole.gguf", n_layer=1, heads=2, heads_kv=1).read_bytes()
        path = tmp / "truncated.gguf"
        path.write_bytes(whole[:len(whole) // 2])
    elif kind == "not-gguf":
        path = tmp / "notes.gguf"
        path.write_text("just some notes, not a model\n")
    else:  # "refused": every key tq-gguf reads is there; llama.cpp has no such architecture
        path = synthetic_gguf(tmp / "refused.gguf", arch="nosucharch", n_layer=1, heads=2, heads_kv=1)
    return path


def _cases():
    for kind in ("truncated", "not-gguf", "refused"):
        for command in {**COMMANDS, **VARIANTS}:
            if kind == "refused" and command in HEADER_ONLY:
                continue
            marks = [] if command in HEADER_ONLY else [pytest.mark.native]
            yield pytest.param(kind, command, marks=marks, id=f"{command}-{kind}")


def _commands_taking_a_model(group: click.Group, prefix: str = ""):
    ctx = click.Context(group)  # through click's API: the main group loads its commands on demand
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _commands_taking_a_model(command, f"{prefix}{name} ")
        elif any(param.name == "model" for param in command.params):
            yield prefix + name


def test_every_command_that_takes_a_model_is_here():
    assert sorted(_commands_taking_a_model(main)) == sorted(COMMANDS)


@pytest.mark.parametrize("kind,command", list(_cases()))
def test_a_bad_model_is_one_error_line(tmp_path, kind, command):
    model = bad_model(kind, tmp_path)
    r = run_cli(*{**COMMANDS, **VARIANTS}[command](model, tmp_path))  # fails the test if an exception escapes
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.exit_code == 1, r.output
    assert len(errors) == 1 and "Traceback" not in r.output, r.stderr
    assert str(model) in errors[0], errors[0]  # about the model, not something else that went wrong
    assert not (tmp_path / "tagged.gguf").exists()


@pytest.mark.parametrize("command", HEADER_ONLY)
def test_header_commands_describe_a_model_llama_cpp_refuses(tmp_path, command):
    """A well-formed GGUF is described, planned and tagged: these commands do not load it."""
    r = run_cli(*COMMANDS[command](bad_model("refused", tmp_path), tmp_path))
    assert r.exit_code == 0 and not r.stderr, r.output


@pytest.mark.native
@pytest.mark.model
def test_a_prompt_longer_than_the_context_is_one_error_line(default_model_path):
    r = run_cli("run", default_model_path, "--ctx", "64", "-n", "1", "-p", "word " * 300)
    assert r.exit_code == 1 and r.stderr.count("error:") == 1, r.output
    assert r.stderr.startswith("error: the prompt does not fit the 256-token context"), r.stderr


def test_commands_without_a_model_answer_bad_input_in_one_line():
    """exec and rpc-server take no model; their bad input (a tool that is not one, a port in use)
    is refused before any process starts."""
    r = run_cli("exec", "llama-nothing", "-h")
    assert r.exit_code == 1 and r.stderr.splitlines() == [
        "error: unknown tool 'llama-nothing'; choose one of llama-cli, llama-server, llama-bench, llama-perplexity, "
        "rpc-server"], r.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_cli("rpc-server", "--port", port)
    assert r.exit_code == 1 and r.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"], r.output
