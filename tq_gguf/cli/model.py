"""`tq-gguf inspect`, `plan` and `tag`: what a GGUF holds, what its KV cache costs, and tagging it
with a recommended cache config. Loaded by tq_gguf.cli when used."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from ..errors import CacheTypeError
from ..gguf import models
from ..kv.cacheconfig import CacheConfig
from ..kv.cachetypes import CACHE_TYPES
from ..kv.plan import ContextParams, format_size, parse_size
from ..kv.plan import plan as plan_sizes


class ByteSize(click.ParamType):
    """A size such as 8GiB, 512MiB, 1.5GB or a plain number of bytes."""

    name = "SIZE"

    def convert(self, value, param, ctx) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _ranges(layers) -> str:
    """0, 1, 2, 4 -> '0-2, 4'."""
    out, layers = [], list(layers)
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and layers[j + 1] == layers[j] + 1:
            j += 1
        out.append(str(layers[i]) if i == j else f"{layers[i]}-{layers[j]}")
        i = j + 1
    return ", ".join(out) or "none"


def cache_type_fit(info) -> dict[str, str | None]:
    """Every cache type -> None if it can hold the model's heads, else why not."""
    dims = {("K", info.head_dim_k), ("V", info.head_dim_v)}
    if info.swa_layers:
        dims |= {("K", info.head_dims(info.swa_layers[0])[0]), ("V", info.head_dims(info.swa_layers[0])[1])}
    out = {}
    for name, ct in CACHE_TYPES.items():
        bad = sorted(f"{which} head size {d}" for which, d in dims if d % ct.block_size)
        out[name] = f"blocks of {ct.block_size} values do not divide the {' and '.join(bad)}" if bad else None
    return out


def _tag_state(info) -> tuple[str | None, str | None, str | None]:
    """(tag, preset, problem) of the model's tq.cache tag."""
    if info.tq_cache is None:
        return None, None, None
    try:
        config = CacheConfig.parse(info.tq_cache)
        config.validate(info, native=False)
    except CacheTypeError as exc:
        return info.tq_cache, None, str(exc)
    return info.tq_cache, config.preset, None


def inspect_dict(info) -> dict:
    tag, preset, problem = _tag_state(info)
    fit = cache_type_fit(info)
    data = asdict(info) | {"path": str(info.path)}
    data |= {
        "file_type_name": info.file_type_name,
        "tq_cache_preset": preset, "tq_cache_problem": problem,
        "full_attention_layers": [il for il in range(info.n_layer) if not info.is_swa(il)] if info.swa_layers else [],
        "cache_types": {name: {"fits": reason is None, "reason": reason,
                               "bits_per_value": CACHE_TYPES[name].bits_per_value} for name, reason in fit.items()},
    }
    return data


def inspect_lines(info) -> list[str]:
    rows: list[tuple[str, str]] = [
        ("model", info.name),
        ("file", str(info.path)),
        ("size", f"{format_size(info.file_size)} ({info.file_size} bytes), GGUF v{info.gguf_version}, "
                 f"{info.n_metadata} metadata keys, {info.n_tensors} tensors"),
        ("file type", info.file_type_name or "not stated"),
        ("architecture", info.arch),
        ("layers", str(info.n_layer) + (f" ({info.n_layer_nextn} next-token-prediction layers outside the cache)"
                                        if info.n_layer_nextn else "")),
    ]
    heads_kv = (f"{info.n_head_kv} KV" if not info.n_head_kv_layers
                else f"KV per layer {', '.join(map(str, info.n_head_kv_layers))}")
    rows.append(("heads", f"{info.n_head} query, {heads_kv}"))
    head = f"K {info.head_dim_k}, V {info.head_dim_v}"
    if info.swa_layers and info.head_dims(info.swa_layers[0]) != (info.head_dim_k, info.head_dim_v):
        k, v = info.head_dims(info.swa_layers[0])
        head += f" (sliding-window layers: K {k}, V {v})"
    rows.append(("head size", head))
    rows.append(("context length", f"{info.n_ctx_train} (training)" if info.n_ctx_train else "not stated"))
    if info.swa_layers:
        full = [il for il in range(info.n_layer_kv) if not info.is_swa(il)]
        kind = "chunked attention" if info.swa_chunked else "sliding window"
        rows.append((kind, f"{info.swa_window} tokens on {len(info.swa_layers)} of {info.n_layer_kv} layers: "
                           f"{_ranges(info.swa_layers)} (full attention: {_ranges(full)})"))
    else:
        rows.append(("sliding window", "none"))
    rows += [("", note) for note in info.notes]
    tag, preset, problem = _tag_state(info)
    if tag is None:
        rows.append(("tq.cache", "none"))
    else:
        rows.append(("tq.cache", tag + (f" (preset {preset})" if preset else "")
                     + (f"; not usable: {problem}" if problem else "")))
    rows.append(("KV cache", info.kv_layout or "one K and one V tensor per layer (tq-gguf plan sizes it exactly)"))
    lines = [f"{key:<15} {value}" for key, value in rows]
    lines.append("cache types     bits/value  fits the head sizes")
    for name, reason in cache_type_fit(info).items():
        lines.append(f"  {name:<13} {CACHE_TYPES[name].bits_per_value:>10.2f}  {'yes' if reason is None else 'no: ' + reason}")
    return lines


@click.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def inspect(model: str, as_json: bool) -> None:
    """What MODEL (a GGUF path or a model name) holds that decides its KV cache.

    Architecture, layers, query and KV heads, K and V head sizes, training context,
    the sliding-window layers llama.cpp derives for the architecture (which layers,
    how wide), file type and size, the tq.cache tag, and which cache types fit the
    head sizes (and why the others do not). Damaged or non-GGUF files are refused
    with one error line.
    """
    from ..gguf import ggufinfo  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    info = ggufinfo.read(models.resolve(model))
    if as_json:
        _echo_json(inspect_dict(info))
        return
    for line in inspect_lines(info):
        click.echo(line)


def _plan_header(info, result, training_ctx: bool) -> list[str]:
    size, params = result.size_f16, result.params
    lines = [f"{info.name} ({info.arch}, {info.n_layer} layers, {info.n_head_kv} KV head{'s' * (info.n_head_kv != 1)}, "
             f"head size K {info.head_dim_k} / V {info.head_dim_v})"]
    asked = f"context {result.n_ctx}" + (" (the training context)" if training_ctx else "")
    if params.unified or params.n_seq == 1:
        shared = f", shared by {params.n_seq} sequences" if params.n_seq > 1 else ""
        lines.append(f"{asked}: {size.n_ctx_seq} cells{shared}")
    else:
        lines.append(f"{asked}: {params.n_seq} sequences x {size.n_ctx_seq} cells = {size.n_ctx} cells")
    if size.n_ctx != result.n_ctx:
        lines.append(f"  (llama.cpp pads the cell count to multiples of 256 per sequence: it allocates {size.n_ctx})")
    for buf in size.buffers:
        if buf.kind == "sliding-window":
            how = ("as many as the full layers (swa_full, what tq_gguf.Llama and llama-cpp-python allocate; "
                   "--no-swa-full for llama.cpp's tools)" if params.swa_full
                   else f"window {info.swa_window} + ubatch {params.n_ubatch}, padded to 256")
            lines.append(f"sliding-window layers {_ranges(buf.layers)}: {buf.cells} cells per sequence, {how}")
    if result.budget is not None:
        lines.append(f"budget {format_size(result.budget)} for the KV cache alone (weights and compute buffers "
                     f"not counted)")
    return lines


def plan_lines(info, result, training_ctx: bool = False) -> list[str]:
    lines = _plan_header(info, result, training_ctx) + [""]
    f16 = result.size_f16.total
    n_seq = result.params.n_seq
    fit_title = f"max context in {format_size(result.budget)}" if result.budget is not None else ""
    head = f"{'config':<16} {'preset':<9} {'K bits':>6} {'V bits':>6} {f'KV @ {result.size_f16.n_ctx}':>12} {'vs f16':>7}"
    lines.append(f"{head}  {fit_title}".rstrip())
    beyond = False
    for row in result.rows:
        if row.bytes is None:
            continue
        line = (f"{row.config:<16} {row.preset or '':<9} {row.bits_k:>6.2f} {row.bits_v:>6.2f} "
                f"{format_size(row.bytes):>12} {row.bytes / f16:>6.2f}x")
        if row.max_ctx is not None:
            if row.max_ctx == 0:
                fit = "does not fit"
            else:
                per_seq = row.max_ctx if result.params.unified else row.max_ctx // n_seq
                mark = "*" if info.n_ctx_train and per_seq > info.n_ctx_train else ""
                beyond |= bool(mark)
                fit = f"{row.max_ctx}{mark}"
            line += f"  {fit:>{len(fit_title)}}"
        lines.append(line)
    if beyond:
        lines.append(f"* each sequence would exceed the model's training context ({info.n_ctx_train})")
    if n_seq > 1 and result.budget is not None:
        lines.append(f"max context is llama.cpp's --ctx-size for all {n_seq} sequences together")
    for row in result.rows:
        if row.bytes is None:
            lines.append(f"{row.config}: not usable with this model: {row.problem}")
    return lines


@click.command()
@click.argument("model")
@click.option("--ctx", "n_ctx", type=click.IntRange(min=0), default=0,
              help="context size as llama.cpp's --ctx-size: cells for all sequences together "
                   "[default: 0 = the model's training context]")
@click.option("--parallel", "-np", "n_seq", type=click.IntRange(1, 256), default=1, show_default=True,
              help="sequences decoded in parallel (llama.cpp's n_seq_max / --parallel)")
@click.option("--budget", type=ByteSize(), help="memory for the KV cache, e.g. 8GiB, 512MiB, 1.5GB: "
                                                "adds the largest context each config fits into it")
@click.option("--cache", "configs", multiple=True, metavar="SPEC",
              help="size only these configs (K/V, K/V:bN or a preset; repeatable) [default: every type, "
                   "the common mixed configs and every preset]")
@click.option("--kv-unified", is_flag=True, help="one cell pool shared by all sequences (llama.cpp --kv-unified)")
@click.option("--swa-full/--no-swa-full", default=True, show_default=True,
              help="sliding-window layers get full-size caches; llama-cpp-python and tq_gguf.Llama do this, "
                   "llama.cpp's tools do not")
@click.option("--ubatch", "n_ubatch", type=click.IntRange(min=1), default=512, show_default=True,
              help="physical batch size (sizes the sliding-window cache with --no-swa-full)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of a table")
def plan(model: str, n_ctx: int, n_seq: int, budget: int | None, configs: tuple[str, ...], kv_unified: bool,
         swa_full: bool, n_ubatch: int, as_json: bool) -> None:
    """KV-cache bytes of every cache config for MODEL at a context size, exactly as llama.cpp allocates them.

    Rows: every cache type with K = V, the common mixed configs (q8_0/turbo3, ...) and
    every preset. Sizes include llama.cpp's padding of the cell count to multiples of
    256, the smaller caches of sliding-window layers (with --no-swa-full) and the
    buffer alignment. With --budget, also the largest context that fits in it.
    """
    from ..gguf import ggufinfo  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    info = ggufinfo.read(models.resolve(model))
    params = ContextParams(n_seq=n_seq, unified=kv_unified, swa_full=swa_full, n_ubatch=n_ubatch)
    result = plan_sizes(info, n_ctx, budget, params, list(configs) or None)
    if as_json:
        _echo_json({"model": str(info.path), "arch": info.arch, "n_layer": info.n_layer,
                    "n_ctx_train": info.n_ctx_train} | result.as_dict())
        return
    for line in plan_lines(info, result, training_ctx=not n_ctx):
        click.echo(line)


@click.command()
@click.argument("model")
@click.option("--cache", "spec", required=True, metavar="SPEC",
              help="the config to recommend: K/V (q8_0/turbo3), K/V:bN or a preset name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), required=True,
              help="the tagged GGUF to write (never the input)")
@click.option("--force", is_flag=True, help="replace OUTPUT if it exists")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object instead of text")
def tag(model: str, spec: str, output: str, force: bool, as_json: bool) -> None:
    """Copy MODEL with a recommended KV-cache config in its metadata (key tq.cache).

    The config is checked against the model's head sizes first. Every other metadata
    key and all tensor data are copied unchanged. tq_gguf.Llama uses the tag when it
    is given no cache config; stock llama.cpp loads the file and ignores the key.
    """
    from ..gguf import ggufinfo, gguftag  # deferred: heavy (numpy, gguf, llama_cpp); --help needs none

    info, written = gguftag.tag(models.resolve(model), output, spec, force=force)
    preset = CacheConfig.parse(written).preset
    if as_json:
        _echo_json({"input": str(info.path), "output": output, "key": ggufinfo.TQ_CACHE_KEY,
                    "tq_cache": written, "preset": preset, "tensors": info.n_tensors})
        return
    click.echo(f"wrote {output}: {ggufinfo.TQ_CACHE_KEY} = {written}" + (f" (preset {preset})" if preset else ""))
    click.echo(f"copied {info.n_tensors} tensors and the other metadata of {info.path} unchanged")
