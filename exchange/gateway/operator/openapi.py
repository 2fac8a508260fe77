"""``/openapi.json``: the operator API described from the same msgspec structs it decodes.

The document is generated, never written by hand: paths from the route table of
:mod:`exchange.gateway.operator.api` (handed in, with its error body: this module imports
nothing of the API, so the two do not import each other), request and response schemas from
its structs through ``msgspec.json.schema_components``, and each operation's allowed roles
from :data:`exchange.gateway.operator.roles.ENDPOINTS` (as ``x-roles``), so the
description, the decoder and the authorization cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any
from collections.abc import Sequence

import msgspec

from exchange.gateway.operator import roles

REF = "#/components/schemas/{name}"
_ERROR_STATUSES = {"400": "Bad input: the field is named", "401": "No or invalid token",
                   "403": "The token's role may not call this", "404": "No such thing",
                   "409": "Refused by the exchange (reject code and text)",
                   "413": "The body is over the size limit (64 KiB)"}


def build_openapi(routes: Sequence[tuple], error_body: type) -> dict[str, Any]:
    """The document for ``routes`` (method, path, handler, body, response, summary); every
    error answers with ``error_body``."""
    types = [error_body]
    for _, _, _, body, response, _ in routes:
        types.extend(t for t in (body, response) if t is not None)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    by_type = dict(zip(types, schemas, strict=True))
    paths: dict[str, dict] = {}
    for method, path, _, body, response, summary in routes:
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, body, response, summary, by_type, error_body.__name__)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Exchange operator API", "version": "1"},
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


def _operation(method: str, path: str, body: Any, response: Any, summary: str, by_type: dict, error_name: str) -> dict:
    allowed = sorted(roles.ENDPOINTS[(method, path)])
    operation: dict[str, Any] = {
        "summary": summary,
        "x-roles": allowed,
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.findall(r"{(\w+)}", path)
        ],
        "responses": {
            "200": {"description": "OK", **({"content": {"application/json": {"schema": by_type[response]}}} if response is not None else {})},
            **{status: {"description": text, "content": {"application/json": {"schema": {"$ref": REF.format(name=error_name)}}}}
               for status, text in _ERROR_STATUSES.items()},
        },
    }
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": by_type[body]}}}
    if roles.ANONYMOUS in allowed:
        operation["security"] = []
    return operation
