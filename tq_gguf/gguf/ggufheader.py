"""A GGUF file's header (version, metadata keys, tensor descriptions) read without its payloads.

The header of a model GGUF is mostly vocabulary: hundreds of thousands of token strings,
scores and merges. A general reader decodes all of them, which takes seconds; this one
walks past array payloads (numeric arrays by arithmetic, string arrays by their length
prefixes over a memory map) and decodes only scalars and short arrays, so the keys the
KV cache depends on come back in milliseconds. Each key keeps its byte range in the file,
so a copy (`tq-gguf tag`) can write every other key back unchanged.

Anything that does not parse is a ModelError naming the file: a cut or corrupt header, a
version this reader does not know, tensor data that runs past the end of the file.
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from ..errors import ModelError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 stored 32-bit counts and lengths; nothing current writes it
DEFAULT_ALIGNMENT = 32  # the GGUF spec's, when general.alignment is absent
ALIGNMENT_KEY = "general.alignment"

# Arrays longer than this (vocabularies, scores, merges) are skipped, not decoded: the
# per-layer arrays the KV cache depends on hold one item per layer.
MAX_DECODED_ITEMS = 4096

# struct formats of the scalar value types (without the byte order)
_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H", GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i", GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q", GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d",
}


class _Cut(Exception):
    """The header needs bytes past the end of the file."""

    def __init__(self, needed: int):
        self.needed = needed


class _Corrupt(Exception):
    """The header holds a value no writer produces (an unknown type, an impossible count)."""


@dataclass(frozen=True)
class Field:
    """One metadata key. `start`..`end` is its whole record in the file (key, type, value);
    `value` is None for arrays longer than MAX_DECODED_ITEMS, which are skipped."""

    name: str
    type: GGUFValueType
    item_type: GGUFValueType | None  # arrays only
    count: int  # items of an array; 1 for a scalar or string
    value: Any  # str/bytes for strings (bytes when not UTF-8), int/float/bool, or a list
    start: int
    end: int

    @property
    def skipped(self) -> bool:
        return self.value is None


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    ggml_type: int
    data_offset: int  # absolute position of the tensor's first byte in the file
    n_bytes: int


@dataclass(frozen=True)
class Header:
    path: Path
    byte_order: str  # struct's "<" or ">"
    version: int
    fields: dict[str, Field]  # in file order
    tensors: tuple[TensorInfo, ...]
    alignment: int
    kv_start: int  # the first key's record
    tensor_info_start: int  # the first tensor description (where the keys end)
    tensor_info_end: int
    data_start: int  # the aligned start of tensor data
    file_size: int

    def get(self, key: str, default: Any = None) -> Any:
        field = self.fields.get(key)
        return default if field is None else field.value


class _Cursor:
    """Reads the header's encodings at a position in the memory-mapped file, in its byte order."""

    def __init__(self, data, byte_order: str, pos: int):
        self.data = data
        self.size = len(data)
        self.pos = pos
        self.u32 = struct.Struct(byte_order + "I")
        self.u64 = struct.Struct(byte_order + "Q")
        self.byte_order = byte_order

    def need(self, n: int) -> None:
        if self.pos + n > self.size:
            raise _Cut(self.pos + n)

    def unpack(self, fmt: struct.Struct):
        self.need(fmt.size)
        (value,) = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return value

    def string(self) -> bytes:
        n = self.unpack(self.u64)
        self.need(n)
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        return raw

    def skip_strings(self, count: int) -> None:
        """Past `count` strings: only their length prefixes are read (this loop is the whole cost
        of skipping a vocabulary)."""
        unpack_from, data, size, pos = self.u64.unpack_from, self.data, self.size, self.pos
        for _ in range(count):
            if pos + 8 > size:
                raise _Cut(pos + 8)
            pos += 8 + unpack_from(data, pos)[0]
        if pos > size:
            raise _Cut(pos)
        self.pos = pos

    def value_type(self) -> GGUFValueType:
        code = self.unpack(self.u32)
        try:
            return GGUFValueType(code)
        except ValueError:
            raise _Corrupt(f"unknown value type {code} at byte {self.pos - 4}") from None

    def scalar(self, vtype: GGUFValueType):
        if vtype == GGUFValueType.STRING:
            return _text(self.string())
        return self.unpack(struct.Struct(self.byte_order + _SCALAR_FORMATS[vtype]))

    def array(self, item_type: GGUFValueType, count: int):
        """The items as a list, or None (skipped) when there are more than MAX_DECODED_ITEMS."""
        if item_type == GGUFValueType.ARRAY:
            raise _Corrupt(f"an array of arrays at byte {self.pos}")
        if item_type == GGUFValueType.STRING:
            if count > MAX_DECODED_ITEMS:
                self.skip_strings(count)
                return None
            return [_text(self.string()) for _ in range(count)]
        fmt = _SCALAR_FORMATS[item_type]
        n_bytes = count * struct.calcsize(fmt)
        self.need(n_bytes)
        start, self.pos = self.pos, self.pos + n_bytes
        if count > MAX_DECODED_ITEMS:
            return None
        dtype = np.dtype(self.byte_order + fmt)
        return np.frombuffer(self.data, dtype=dtype, count=count, offset=start).tolist()


def _text(raw: bytes) -> str | bytes:
    """A GGUF string as text; bytes that are not UTF-8 are kept as bytes for the caller to refuse."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


def read_header(path: str | Path) -> Header:
    """The header of the GGUF at `path`, checked against the file's size; ModelError when it is not one."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a GGUF file")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            if magic != GGUF_MAGIC:
                raise ModelError(f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
            size = f.seek(0, 2)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                return _parse(path, data, size)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    except _Cut as cut:
        raise ModelError(f"{path} is a corrupt or truncated GGUF: its header needs {cut.needed} bytes "
                         f"but the file has {size}") from None
    except _Corrupt as exc:
        raise ModelError(f"{path} is a corrupt or truncated GGUF: {exc}") from None


def _parse(path: Path, data, size: int) -> Header:
    if size < 24:  # magic, version and the two counts
        raise _Cut(24)
    byte_order = "<"
    (version,) = struct.unpack_from("<I", data, 4)
    if version & 0xFFFF == 0:  # written on a big-endian machine (gguf's own test)
        byte_order = ">"
        (version,) = struct.unpack_from(">I", data, 4)
    if version not in SUPPORTED_VERSIONS:
        raise _Corrupt(f"GGUF version {version} is not one this reader knows "
                       f"({' or '.join(map(str, SUPPORTED_VERSIONS))})")
    n_tensors, n_kv = struct.unpack_from(byte_order + "QQ", data, 8)
    # every key takes at least 12 bytes and every tensor description 24: more cannot fit
    if n_kv * 12 + n_tensors * 24 > size:
        raise _Corrupt(f"it claims {n_kv} keys and {n_tensors} tensors, more than {size} bytes can hold")
    cur = _Cursor(data, byte_order, 24)
    fields = {}
    for _ in range(n_kv):
        start = cur.pos
        name = _key_name(cur.string(), start)
        vtype = cur.value_type()
        if vtype == GGUFValueType.ARRAY:
            item_type = cur.value_type()
            count = cur.unpack(cur.u64)
            value = cur.array(item_type, count)
        else:
            item_type, count = None, 1
            value = cur.scalar(vtype)
        fields[name] = Field(name, vtype, item_type, count, value, start, cur.pos)
    tensor_info_start = cur.pos
    tensors = [_tensor_info(cur) for _ in range(n_tensors)]
    alignment = _alignment(fields)
    data_start = align(cur.pos, alignment)
    tensors = tuple(TensorInfo(name, shape, ggml_type, data_start + offset, n_bytes)
                    for name, shape, ggml_type, offset, n_bytes in tensors)
    return Header(path, byte_order, version, fields, tensors, alignment, kv_start=24,
                  tensor_info_start=tensor_info_start, tensor_info_end=cur.pos, data_start=data_start, file_size=size)


def align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def _key_name(raw: bytes, pos: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Corrupt(f"the key at byte {pos} is not UTF-8 text") from None


def _tensor_info(cur: _Cursor) -> tuple[str, tuple[int, ...], int, int, int]:
    pos = cur.pos
    name = _key_name(cur.string(), pos)
    n_dims = cur.unpack(cur.u32)
    if n_dims > 8:  # GGML_MAX_DIMS is 4; more is corruption, not a newer format
        raise _Corrupt(f"tensor {name} claims {n_dims} dimensions")
    shape = tuple(cur.unpack(cur.u64) for _ in range(n_dims))
    ggml_type = cur.unpack(cur.u32)
    offset = cur.unpack(cur.u64)
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise _Corrupt(f"tensor {name} has unknown type {ggml_type}") from None
    return name, shape, ggml_type, offset, math.prod(shape) * type_size // block


def _alignment(fields: dict[str, Field]) -> int:
    field = fields.get(ALIGNMENT_KEY)
    if field is None:
        return DEFAULT_ALIGNMENT
    if field.type != GGUFValueType.UINT32 or not field.value or field.value & (field.value - 1):
        raise _Corrupt(f"{ALIGNMENT_KEY} is {field.value!r}, expected a power of two (uint32)")
    return field.value


def check_tensor_data(header: Header) -> None:
    """ModelError when the tensors described run past the end of the file (a cut download)."""
    end = max((t.data_offset + t.n_bytes for t in header.tensors), default=header.data_start)
    if end > header.file_size:
        raise ModelError(f"{header.path} is a truncated GGUF: its tensors need {end} bytes "
                         f"but the file has {header.file_size}")


def read_checked(path: str | Path) -> Header:
    """read_header, then check_tensor_data: the header of a whole, readable GGUF."""
    header = read_header(path)
    check_tensor_data(header)
    return header


def read_records(header: Header) -> dict[str, bytes]:
    """Each key's whole record (key, type, value) as the file stores it, in file order."""
    try:
        with open(header.path, "rb") as f:
            f.seek(header.kv_start)
            block = f.read(header.tensor_info_start - header.kv_start)
    except OSError as exc:
        raise ModelError(f"cannot read {header.path}: {exc.strerror or exc}") from None
    return {name: block[field.start - header.kv_start:field.end - header.kv_start]
            for name, field in header.fields.items()}


def read_values(path: str | Path) -> dict[str, bytes]:
    """Every key's stored value bytes (its type code and payload), keyed by name."""
    return {name: record[8 + len(name.encode()):] for name, record in read_records(read_header(path)).items()}


def read_string_array(header: Header, key: str) -> list[bytes]:
    """Every item of the string array `key` (a vocabulary, say), decoded from the file; [] when absent."""
    field = header.fields.get(key)
    if field is None:
        return []
    if field.item_type != GGUFValueType.STRING:
        raise ModelError(f"{header.path}: {key} is not an array of strings")
    record = read_records(header)[key]
    # the record is the key (length-prefixed), the array type, the item type, the count, then the items
    cur = _Cursor(record, header.byte_order, 8 + len(key.encode()) + 4 + 4 + 8)
    try:
        return [bytes(cur.string()) for _ in range(field.count)]
    except _Cut:
        raise ModelError(f"{header.path} is a corrupt GGUF: {key} runs past its record") from None
