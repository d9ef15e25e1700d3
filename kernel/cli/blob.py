"""`nubis blob`: objects from a terminal."""

import click

from nubis.cli.output import calls_kernel, emit, fail, table


@click.group()
def blob():
    """BLOB: put, get, head, rm and ls objects."""


def _metadata(pairs) -> dict:
    meta = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"bad --meta {pair!r}: use NAME=VALUE", 2)
        meta[name] = value
    return meta


@blob.command()
@click.argument("key")
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--content-type", default="", help="MIME type of the content.")
@click.option("--meta", multiple=True, help="User metadata NAME=VALUE.")
@click.option("--if-none-match", is_flag=True, help="Create only.")
@click.option("--if-match", default="", help="Replace only this etag.")
@click.pass_context
@calls_kernel
def put(ctx, key, source, content_type, meta, if_none_match, if_match):
    """Store SOURCE (a file, or - for stdin) as KEY."""
    info = ctx.obj.client().blob.put(
        key, source.read(), content_type=content_type, metadata=_metadata(meta),
        if_none_match=if_none_match, if_match=if_match)
    emit(ctx, info, f"{info.key}  {info.size} bytes  etag {info.etag}")


@blob.command()
@click.argument("key")
@click.option("-o", "--output", type=click.File("wb"), default="-",
              help="Write here instead of stdout.")
@click.option("--range", "byte_range", default="",
              help="Bytes START-END (inclusive), or START- to the end.")
@click.pass_context
@calls_kernel
def get(ctx, key, output, byte_range):
    """Write the content of KEY to stdout or a file."""
    offset, length = _range(byte_range)
    got = ctx.obj.client().blob.get(key, offset=offset, length=length)
    output.write(got.data)
    output.flush()


def _range(spec: str) -> tuple[int, int]:
    if not spec:
        return 0, 0
    start, sep, end = spec.partition("-")
    try:
        first = int(start)
        last = int(end) if end else None
    except ValueError:
        fail(f"bad --range {spec!r}: use START-END or START-", 2)
    if not sep or first < 0 or (last is not None and last < first):
        fail(f"bad --range {spec!r}: use START-END or START-", 2)
    return first, 0 if last is None else last - first + 1


@blob.command()
@click.argument("key")
@click.pass_context
@calls_kernel
def head(ctx, key):
    """Show the info of KEY: size, etag, type, metadata."""
    emit(ctx, ctx.obj.client().blob.head(key))


@blob.command("rm")
@click.argument("keys", nargs=-1, required=True)
@click.option("--if-match", default="", help="Delete only this etag.")
@click.pass_context
@calls_kernel
def remove(ctx, keys, if_match):
    """Delete objects."""
    for key in keys:
        ctx.obj.client().blob.delete(key, if_match=if_match)


@blob.command("ls")
@click.argument("prefix", default="")
@click.option("-d", "--delimiter", default="", help="Fold keys at this, e.g. /.")
@click.option("--page-size", type=int, default=0)
@click.pass_context
@calls_kernel
def list_blobs(ctx, prefix, delimiter, page_size):
    """List objects under PREFIX, every page."""
    client = ctx.obj.client()
    blobs, prefixes, token = [], [], ""
    while True:
        page = client.blob.list(prefix, delimiter=delimiter, page_size=page_size,
                                page_token=token)
        blobs += page.blobs
        prefixes += page.common_prefixes
        token = page.next_page_token
        if not token:
            break
    rows = [[p, "-", "", ""] for p in prefixes]
    rows += [[b.key, b.size, b.etag[:16], b.content_type] for b in blobs]
    emit(ctx, {"blobs": blobs, "common_prefixes": prefixes},
         table(sorted(rows), ["KEY", "SIZE", "ETAG", "TYPE"]) if rows else "")
