"""`tq-gguf tag`: copy a GGUF with the recommended cache config in its metadata (key tq.cache).

The copy is made from the file's own bytes: every other key record, the tensor
descriptions and the tensor data are written back exactly as stored, and only the
tq.cache record is replaced (in place) or added (last). Tensor offsets are relative to
the data section, so they stay valid when the header grows; the data section starts
at the next multiple of the file's alignment, as in the input.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path

from gguf import GGUFValueType

from ..errors import ModelError
from ..kv.cacheconfig import CacheConfig
from . import ggufheader, ggufinfo

COPY_CHUNK = 16 << 20


def tag(src: str | Path, dst: str | Path, spec: str, force: bool = False) -> tuple[ggufinfo.ModelInfo, str]:
    """Copy the GGUF `src` to `dst` with `tq.cache` set to the cache config `spec`.

    The config is checked against the model first. Returns the source's ModelInfo and
    the canonical spec written."""
    src, dst = Path(src), Path(dst)
    header = ggufheader.read_checked(src)
    info = ggufinfo.info_of(header)
    config = CacheConfig.parse(spec)
    config.validate(info, native=False)  # a tag describes the model; the local build does not matter
    value = str(config)
    _check_output(src, dst, force)

    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            os.chmod(tmp, src.stat().st_mode & 0o777)  # mkstemp makes it private; match the input
            _write_copy(header, inp, out, _record(header.byte_order, ggufinfo.TQ_CACHE_KEY, value))
        tmp.replace(dst)
    except OSError as exc:
        raise ModelError(f"cannot write {dst}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)  # after a failure; a finished copy has been renamed already
    return info, value


def _check_output(src: Path, dst: Path, force: bool) -> None:
    if dst.exists():
        if dst.is_dir():
            raise ModelError(f"{dst} is a directory; give the output GGUF's file name")
        if os.path.samefile(src, dst):
            raise ModelError(f"refusing to overwrite the input {src}; write the tagged copy to another file")
        if not force:
            raise ModelError(f"{dst} already exists; pass --force to replace it")
    if not dst.parent.is_dir():
        raise ModelError(f"cannot write {dst}: directory {dst.parent} does not exist")


def _record(byte_order: str, key: str, text: str) -> bytes:
    """One string-valued key record: key length, key, value type, value length, value."""
    name, value = key.encode(), text.encode()
    return (struct.pack(byte_order + "Q", len(name)) + name
            + struct.pack(byte_order + "IQ", GGUFValueType.STRING, len(value)) + value)


def _write_copy(header: ggufheader.Header, inp, out, tag_record: bytes) -> None:
    records = ggufheader.read_records(header)
    replaced = ggufinfo.TQ_CACHE_KEY in records
    n_kv = len(records) + (0 if replaced else 1)
    out.write(ggufheader.GGUF_MAGIC + struct.pack(header.byte_order + "IQQ", header.version, len(header.tensors), n_kv))
    for name, record in records.items():
        out.write(tag_record if name == ggufinfo.TQ_CACHE_KEY else record)
    if not replaced:
        out.write(tag_record)
    inp.seek(header.tensor_info_start)
    out.write(inp.read(header.tensor_info_end - header.tensor_info_start))
    end = out.tell()
    out.write(b"\0" * (ggufheader.align(end, header.alignment) - end))
    inp.seek(header.data_start)
    shutil.copyfileobj(inp, out, COPY_CHUNK)
