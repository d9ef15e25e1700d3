"""Deploy an app as HTTP daemons on a port: N supervised cloud processes.

A deployment named NAME is two blobs and some processes of the tenant:

- `nubis-http/NAME/app.py`: the app's source followed by the daemon's entry
  (nubis.services.http.daemon.STUB), the cloud executable itself;
- `nubis-http/NAME/deploy.json`: port, processes wanted, options;
- processes named `http:NAME`, spawned with restart on-failure, each
  attached to the port, balanced by the kernel.

Scaling starts or stops (SIGTERM: they drain) processes until the count of
live ones (pending, running or in backoff) is the number wanted.
"""

import ast
import json
import re

from nubis.errors import AlreadyExists, NotFound
from nubis.services.http.daemon import ENTRY, STUB, parse_args
from nubis.v1 import spawn_pb2 as spb

PREFIX = "nubis-http/"
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LIVE = (spb.PROCESS_STATE_PENDING, spb.PROCESS_STATE_RUNNING,
        spb.PROCESS_STATE_BACKOFF)


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise ValueError(f"deployment name {name!r} must be 1-63 of a-z, 0-9, "
                         "_ and -, starting with a letter or digit")
    return name


def check_source(source: str, attr: str, where: str = "the app") -> None:
    """The source parses and binds `attr` at its top level."""
    try:
        tree = ast.parse(source, filename=where)
    except SyntaxError as e:
        raise ValueError(f"{where} is not valid Python: line {e.lineno}: "
                         f"{e.msg}") from None
    bound = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    if attr not in bound:
        raise ValueError(f"{where} defines no {attr!r} at its top level")


def deploy(client, name: str, source: str, port: int, processes: int = 1, *,
           attr: str = "app", interface: str = "asgi", mode: str = "handoff",
           limits: dict | None = None, where: str = "the app") -> list[str]:
    """Store the app, listen on `port` and run `processes` daemons of it;
    returns the pids started. Deploying again replaces the app: the old
    processes are stopped (they drain) and new ones started."""
    check_name(name)
    if processes < 0:
        raise ValueError(f"processes must be 0 or more, got {processes}")
    check_source(source, attr, where)
    settings = {"port": port, "attr": attr, "interface": interface,
                "mode": mode, "limits": limits or {}}
    parse_args(json.dumps(settings).encode())
    try:
        client.listen.listen(port)
    except AlreadyExists:
        pass
    stop(client, name, forget=False)
    client.blob.put(PREFIX + name + "/app.py", (source + STUB).encode(),
                    content_type="text/x-python")
    record = {**settings, "processes": processes}
    client.blob.put(PREFIX + name + "/deploy.json", json.dumps(record).encode(),
                    content_type="application/json")
    return scale(client, name, processes)


def record(client, name: str) -> dict:
    """A deployment's settings; NotFound if there is none by that name."""
    try:
        data = client.blob.get(PREFIX + check_name(name) + "/deploy.json").data
    except NotFound:
        raise NotFound(f"no HTTP deployment named {name!r}") from None
    return json.loads(data)


def processes(client, name: str) -> list:
    """The live processes (ProcessInfo) of a deployment."""
    found, token = [], ""
    while True:
        page = client.spawn.list(page_size=500, page_token=token)
        found += [p for p in page.processes
                  if p.name == f"http:{name}" and p.state in LIVE]
        token = page.next_page_token
        if not token:
            return found


def scale(client, name: str, count: int) -> list[str]:
    """Run `count` daemons of a deployment; returns the pids started."""
    if count < 0:
        raise ValueError(f"processes must be 0 or more, got {count}")
    settings = record(client, name)
    live = processes(client, name)
    for info in live[count:]:
        client.spawn.kill(info.pid)
    args = json.dumps({k: settings[k] for k in
                       ("port", "attr", "interface", "mode", "limits")}).encode()
    started = [client.spawn.spawn(
        ENTRY, blob_key=PREFIX + name + "/app.py", args=args,
        name=f"http:{name}", restart="on-failure").pid
        for _ in range(count - len(live))]
    if settings.get("processes") != count:
        settings["processes"] = count
        client.blob.put(PREFIX + name + "/deploy.json",
                        json.dumps(settings).encode(),
                        content_type="application/json")
    return started


def stop(client, name: str, *, forget: bool = True) -> int:
    """Stop a deployment's daemons (they drain); with `forget`, drop its
    blobs and its port too. Returns how many processes were stopped."""
    live = processes(client, check_name(name))
    for info in live:
        client.spawn.kill(info.pid)
    if forget:
        port = record(client, name)["port"]
        for key in ("app.py", "deploy.json"):
            try:
                client.blob.delete(PREFIX + name + "/" + key)
            except NotFound:
                pass
        try:
            client.listen.unlisten(port)
        except NotFound:
            pass
    return len(live)


def deployments(client) -> list[dict]:
    """Every deployment of the tenant: its settings, name and live pids."""
    out = []
    for info in client.blob.list(PREFIX, delimiter="/").common_prefixes:
        name = info.removeprefix(PREFIX).rstrip("/")
        try:
            settings = record(client, name)
        except NotFound:
            continue
        pids = [p.pid for p in processes(client, name)]
        out.append({"name": name, **settings, "live": pids})
    return out
