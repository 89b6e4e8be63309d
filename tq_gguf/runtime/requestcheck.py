"""The python engine's requests checked before llama-cpp-python's routes see them.

llama-cpp-python's route error handler answers a body that fails validation with HTTP 500
(the validation text as the message, a traceback in the log), and one that is not JSON with
a bare 500. This ASGI middleware answers such requests itself, in OpenAI's error shape with
one readable line: 401 for a missing or wrong API key (checked first, as OpenAI does, so an
unauthenticated client learns nothing about the body), 400 for a body that is not JSON or
does not fit the route's request model. The routes then see only well-formed requests, and
`error_body` gives the app's other HTTP errors (404, 405, a GET's 401) the same shape.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Iterable

from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

_INPUT_REPR = 60  # characters of an offending value quoted in a message
# pydantic names a union's member in an error's location ("str", "list[str]", a class name);
# the request models' own field names are lowercase snake_case and never one of these.
_TYPE_NAMES = {"str", "int", "float", "bool", "bytes", "none", "dict", "list"}


def error_body(message: str, code: str | None = None) -> dict:
    """OpenAI's error response: what its clients (the openai package) read the message from."""
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def request_models(routes: Iterable[Any]) -> dict[str, TypeAdapter]:
    """path -> validator of its POST body, for every route that takes a JSON body."""
    out = {}
    for route in routes:
        if isinstance(route, APIRoute) and "POST" in route.methods and route.body_field is not None:
            out[route.path] = TypeAdapter(route.body_field.field_info.annotation)
    return out


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and (part in _TYPE_NAMES or any(not (c.islower() or c.isdigit() or c == "_")
                                                                 for c in part))


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out or "the request body"


def _branch(loc: tuple) -> tuple:
    """The location up to the last union member named in it: errors of one member share it."""
    tags = [i for i, part in enumerate(loc) if _is_union_tag(part)]
    return loc[: tags[-1] + 1] if tags else ()


def describe(error: ValidationError) -> str:
    """One line for a validation error. A union (a chat message is one of several roles) fails
    once per member; the members a literal (the role) rules out say nothing about the message
    the client meant, unless every member ruled it out, which says the literal is wrong."""
    errors = error.errors(include_url=False)
    literal_out = {_branch(e["loc"]) for e in errors if e["type"] == "literal_error" and _branch(e["loc"])}
    relevant = [e for e in errors if _branch(e["loc"]) not in literal_out]
    if not relevant:  # every member ruled out: name the literal's allowed values
        first = next(e for e in errors if e["type"] == "literal_error")
        where = tuple(p for p in first["loc"] if not _is_union_tag(p))
        allowed = [e["ctx"]["expected"] for e in errors if e["type"] == "literal_error"
                   and tuple(p for p in e["loc"] if not _is_union_tag(p)) == where]
        return f"{_where(where)}: {first['input']!r} is not one of {', '.join(dict.fromkeys(allowed))}"[:300]
    first = relevant[0]
    where = tuple(p for p in first["loc"] if not _is_union_tag(p))
    # the same place failing in several union members ("a valid string", "a valid list"): say all
    messages = list(dict.fromkeys(e["msg"] for e in relevant
                                  if tuple(p for p in e["loc"] if not _is_union_tag(p)) == where))
    got = "" if first["type"] == "missing" else f" (got {repr(first['input'])[:_INPUT_REPR]})"
    return f"{_where(where)}: {'; or '.join(messages)}{got}"


def problem(body: bytes, content_type: str, model: TypeAdapter) -> str | None:
    """What is wrong with a request body, in one line, or None."""
    media = content_type.split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        return f"send the request body as JSON (Content-Type: application/json), not {media}"
    try:
        data = json.loads(body)
    except ValueError as e:  # also a body that is not UTF-8
        return f"the request body is not valid JSON: {e}"
    try:
        model.validate_python(data)
    except ValidationError as e:
        return describe(e)
    # llama-cpp-python's chat request takes any integer here and fails mid-generation
    if isinstance(data, dict) and isinstance(data.get("max_tokens"), int) and data["max_tokens"] < 0:
        return f"max_tokens: Input should be greater than or equal to 0 (got {data['max_tokens']})"
    return None


def authorized(scope: Scope, api_key: str | None) -> bool:
    if api_key is None:
        return True
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), api_key.encode())
    return False


UNAUTHORIZED = "missing or wrong API key: send it as the header `Authorization: Bearer <key>`"


class RequestCheck:
    """ASGI middleware: refuse unauthorized and malformed POST bodies for `models`' paths."""

    def __init__(self, app: ASGIApp, models: dict[str, TypeAdapter], api_key: str | None):
        self.app = app
        self.models = models
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model = self.models.get(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        if not authorized(scope, self.api_key):
            await JSONResponse(error_body(UNAUTHORIZED, "invalid_api_key"), status_code=401)(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = dict(scope["headers"])
        found = problem(body, headers.get(b"content-type", b"").decode("latin-1"), model)
        if found:
            await JSONResponse(error_body(found), status_code=400)(scope, receive, send)
            return

        replayed = False

        async def replay() -> dict:
            # the route reads the body we read; after it, disconnects reach a streaming response
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
