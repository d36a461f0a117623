"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902) on plain JSON values.

Pure functions, no I/O. Errors raise :class:`PatchError` with ``bad_request`` telling whether the
patch document itself is malformed (HTTP 400) or merely cannot be applied (HTTP 422).
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """The patch is malformed (``bad_request``) or cannot be applied to the document."""

    def __init__(self, message: str, *, bad_request: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.bad_request = bad_request


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise PatchError(f"JSON pointer must be a string, got {pointer!r}", bad_request=True)
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"JSON pointer {pointer!r} must start with '/'", bad_request=True)
    return [_unescape(token) for token in pointer[1:].split("/")]


def _array_index(container: list[Any], token: str, *, for_add: bool) -> int:
    if for_add and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    index = int(token)
    limit = len(container) if for_add else len(container) - 1
    if index > limit:
        raise PatchError(f"array index {index} out of range")
    return index


def _parent(document: Any, tokens: list[str]) -> Any:
    node = document
    for token in tokens[:-1]:
        node = _child(node, token)
    return node


def _child(node: Any, token: str) -> Any:
    if isinstance(node, dict):
        if token not in node:
            raise PatchError(f"path member {token!r} does not exist")
        return node[token]
    if isinstance(node, list):
        return node[_array_index(node, token, for_add=False)]
    raise PatchError(f"cannot descend into scalar at {token!r}")


def _get(document: Any, pointer: Any) -> Any:
    node = document
    for token in _split_pointer(pointer):
        node = _child(node, token)
    return node


def _add(document: Any, pointer: Any, value: Any) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        return copy.deepcopy(value)
    parent = _parent(document, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_array_index(parent, last, for_add=True), copy.deepcopy(value))
    else:
        raise PatchError(f"cannot add to scalar at {pointer!r}")
    return document


def _remove(document: Any, pointer: Any) -> tuple[Any, Any]:
    tokens = _split_pointer(pointer)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(document, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"cannot remove missing member {pointer!r}")
        return document, parent.pop(last)
    if isinstance(parent, list):
        return document, parent.pop(_array_index(parent, last, for_add=False))
    raise PatchError(f"cannot remove from scalar at {pointer!r}")


def apply_json_patch(document: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, move, copy and test, applied atomically to a copy."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be an array of operations", bad_request=True)
    result = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
            raise PatchError(f"malformed JSON patch operation {operation!r}", bad_request=True)
        op, path = operation["op"], operation["path"]
        if op in {"add", "replace", "test"} and "value" not in operation:
            raise PatchError(f"operation {op!r} needs a value", bad_request=True)
        if op == "add":
            result = _add(result, path, operation["value"])
        elif op == "remove":
            result, _ = _remove(result, path)
        elif op == "replace":
            result, _ = _remove(result, path) if _split_pointer(path) else (result, None)
            result = _add(result, path, operation["value"])
        elif op == "test":
            if _get(result, path) != operation["value"]:
                raise PatchError(f"test failed: {path!r} is not {operation['value']!r}")
        elif op in {"move", "copy"}:
            if "from" not in operation:
                raise PatchError(f"operation {op!r} needs 'from'", bad_request=True)
            if op == "move":
                result, value = _remove(result, operation["from"])
            else:
                value = copy.deepcopy(_get(result, operation["from"]))
            result = _add(result, path, value)
        else:
            raise PatchError(f"unknown JSON patch operation {op!r}", bad_request=True)
    return result
