"""How the CLI prints: plain text for people, JSON with --json for programs."""

import functools
import json
import sys

import click
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from nubis.errors import NubisError


def to_plain(value):
    """A JSON-ready value from protobuf messages, lists and dicts."""
    if isinstance(value, Message):
        return MessageToDict(value, preserving_proto_field_name=True,
                             always_print_fields_with_no_presence=True)
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


def emit(ctx: click.Context, value, text=None) -> None:
    """Print `value` as JSON under --json, else `text` (or a simple rendering)."""
    if ctx.obj.get("json"):
        click.echo(json.dumps(to_plain(value), indent=2, sort_keys=True))
        return
    if text is None:
        text = render(to_plain(value))
    if text:
        click.echo(text)


def render(value, indent: str = "") -> str:
    if isinstance(value, dict):
        lines = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{indent}{k}:")
                lines.append(render(v, indent + "  "))
            else:
                lines.append(f"{indent}{k}: {v}")
        return "\n".join(lines)
    if isinstance(value, list):
        return "\n".join(render(v, indent) if isinstance(v, (dict, list))
                         else f"{indent}{v}" for v in value)
    return f"{indent}{value}"


def table(rows: list[list], headers: list[str]) -> str:
    """Rows as aligned columns under their headers."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in cells
    )


def fail(message: str, code: int = 1):
    click.echo(f"nubis: {message}", err=True)
    sys.exit(code)


def calls_kernel(fn):
    """Turn a failed cloud call into a message and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NubisError as e:
            fail(str(e))

    return wrapper
