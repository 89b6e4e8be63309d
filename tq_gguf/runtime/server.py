"""An OpenAI-compatible server whose model runs with a compressed KV cache.

The server is llama-cpp-python's (llama_cpp.server): its routes (/v1/completions,
/v1/chat/completions with SSE streaming, /v1/embeddings, /v1/models), request
locking and settings. What changes is the model behind it: TqLlamaProxy builds
a tq_gguf.Llama, so cache types are chosen by name, checked against the model,
and may differ per layer (which llama-cpp-python's settings, one type_k and one
type_v, cannot express). GET /tq/cache reports the cache the server really holds.
Requests are checked first (tq_gguf.runtime.requestcheck): a wrong API key or a
malformed body is a 401 or 400 with one line, not llama-cpp-python's 500; and a
request waits for the one being decoded instead of cutting its stream short.
tq_gguf.runtime.serve checks the request and starts it.
"""

from __future__ import annotations

from typing import List, Optional

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from llama_cpp.server import app as server_app
from llama_cpp.server.model import LlamaProxy
from llama_cpp.server.settings import ModelSettings, ServerSettings
from pydantic import Field
from starlette.exceptions import HTTPException

from ..errors import TqError
from . import requestcheck
from .session import Llama

# ModelSettings fields that are llama_cpp.Llama arguments of the same name and meaning.
_PASSED = (
    "n_gpu_layers", "split_mode", "main_gpu", "tensor_split", "vocab_only", "use_mmap", "use_mlock",
    "seed", "n_ctx", "n_batch", "n_ubatch", "n_threads", "n_threads_batch",
    "rope_scaling_type", "rope_freq_base", "rope_freq_scale",
    "yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow", "yarn_orig_ctx",
    "logits_all", "embedding", "offload_kqv", "last_n_tokens_size", "lora_base", "lora_path", "numa",
    "chat_format", "verbose",
)
# llama-cpp-python server features that TqLlamaProxy does not build (hub downloads, multimodal
# and Hugging Face chat handlers, draft models, prompt caches, metadata overrides); raw
# type_k/type_v ids are replaced by the kv_cache* names.
_REFUSED = (
    "hf_model_repo_id", "clip_model_path", "hf_pretrained_model_name_or_path", "hf_tokenizer_config_path",
    "chat_template_kwargs", "draft_model", "cache", "kv_overrides", "rpc_servers", "type_k", "type_v",
)


class TqModelSettings(ModelSettings):
    """llama-cpp-python's model settings plus the KV cache by name (see tq_gguf.Llama)."""

    kv_cache: Optional[str] = Field(default=None, description="Cache config: a preset or K/V[:bN][:sk] spec.")
    kv_cache_k: Optional[str] = Field(default=None, description="K cache type; overrides kv_cache's.")
    kv_cache_v: Optional[str] = Field(default=None, description="V cache type; overrides kv_cache's.")
    flash_attn: Optional[bool] = Field(default=None, description="None: on whenever a cache type is quantized.")
    rpc: Optional[List[str]] = Field(default=None, description="host:port of each rpc-server holding layers.")


class TqLlamaProxy(LlamaProxy):
    """A LlamaProxy whose models are tq_gguf.Llama sessions."""

    @staticmethod
    def load_llama_from_model_settings(settings: ModelSettings) -> Llama:
        if not isinstance(settings, TqModelSettings):
            settings = TqModelSettings.model_validate(settings.model_dump())
        defaults = ModelSettings.model_fields
        refused = [name for name in _REFUSED if getattr(settings, name) != defaults[name].default]
        if refused:
            raise TqError(f"tq-gguf serve does not support these model settings: {', '.join(refused)}")
        return Llama(settings.model, cache=settings.kv_cache, cache_k=settings.kv_cache_k,
                     cache_v=settings.kv_cache_v, flash_attn=settings.flash_attn, rpc=settings.rpc,
                     **{name: getattr(settings, name) for name in _PASSED})


router = APIRouter(tags=["tq-gguf"])


@router.get("/tq/cache", summary="KV cache of the served model", dependencies=[Depends(server_app.authenticate)])
def cache_info(llama_proxy: LlamaProxy = Depends(server_app.get_llama_proxy)) -> dict:
    """Types, bits per value, and bytes allocated and in use, beside what f16 would take."""
    return llama_proxy().cache_info().as_dict()


def create_app(model_settings: TqModelSettings, server_settings: ServerSettings) -> FastAPI:
    """llama-cpp-python's FastAPI app serving `model_settings` through TqLlamaProxy."""
    # create_app builds its proxy from the LlamaProxy name in its own module and takes no proxy
    # class; binding ours there for the call keeps its routes, locks and streaming unchanged.
    # A request that arrives while another is decoded waits for it: llama-cpp-python's default
    # (interrupt_requests) would end the running stream early, so concurrent clients' streamed
    # answers would come back cut short.
    server_settings = server_settings.model_copy(update={"interrupt_requests": False})
    stock = server_app.LlamaProxy
    server_app.LlamaProxy = TqLlamaProxy
    try:
        app = server_app.create_app(server_settings=server_settings, model_settings=[model_settings])
    finally:
        server_app.LlamaProxy = stock
    app.include_router(router)
    # malformed and unauthorized requests: 400 and 401 with one line, not llama-cpp-python's 500s
    # (its router's routes: the app's own copies sit behind FastAPI's included-router wrapper)
    app.add_middleware(requestcheck.RequestCheck, models=requestcheck.request_models(server_app.router.routes),
                       api_key=server_settings.api_key)
    app.add_exception_handler(HTTPException, _http_error)
    return app


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """FastAPI's HTTP errors (404, 405, a GET's 401) in OpenAI's shape, as requestcheck answers."""
    if exc.status_code == 401:
        body = requestcheck.error_body(requestcheck.UNAUTHORIZED, "invalid_api_key")
    else:
        body = requestcheck.error_body(str(exc.detail))
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def run(app: FastAPI, host: str, port: int, verbose: bool) -> None:
    """Serve `app` until interrupted."""
    uvicorn.run(app, host=host, port=port, log_level="info" if verbose else "warning")
