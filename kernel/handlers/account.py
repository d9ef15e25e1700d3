"""Accounting, kernel information and tenant administration."""

import time

from nubis.calls import handler
from nubis.errors import InvalidArgument, NotFound, PermissionDenied
from nubis.tenants import Quotas, parse_ports
from nubis.v1 import account_pb2 as pb

PERCENTILES = (("p50_us", 50.0), ("p90_us", 90.0), ("p99_us", 99.0),
               ("p999_us", 99.9))


def usage_of(tenant) -> pb.Usage:
    u = tenant.usage
    return pb.Usage(
        tenant=tenant.name,
        calls=[pb.CallUsage(call=k, count=c[0], errors=c[1])
               for k, c in sorted(u.calls.items())],
        bytes_in=u.bytes_in, bytes_out=u.bytes_out,
        bytes_stored=tenant.bytes_stored,
        queues=tenant.queues.queue_count, blobs=tenant.blobs.count,
        messages_sent=u.messages_sent, messages_received=u.messages_received,
        messages_acked=u.messages_acked,
        cpu_user_seconds=u.cpu_user_seconds,
        cpu_system_seconds=u.cpu_system_seconds, processes=u.processes,
        connections=u.connections, connections_refused=u.connections_refused,
        relay_bytes_in=u.relay_bytes_in, relay_bytes_out=u.relay_bytes_out,
    )


@handler("GetUsage")
def get_usage(kernel, tenant, req, body):
    if not req.tenant or req.tenant == tenant.name:
        return pb.GetUsageResponse(usage=[usage_of(tenant)])
    if not tenant.admin:
        raise PermissionDenied("only the admin tenant may read another's usage")
    if req.tenant == "*":
        tenants = sorted(kernel.tenants.by_name.values(), key=lambda t: t.name)
        return pb.GetUsageResponse(usage=[usage_of(t) for t in tenants])
    other = kernel.tenants.by_name.get(req.tenant)
    if other is None:
        raise NotFound(f"tenant {req.tenant!r} not found")
    return pb.GetUsageResponse(usage=[usage_of(other)])


@handler("GetKernelInfo")
def get_kernel_info(kernel, tenant, req, body):
    return pb.GetKernelInfoResponse(
        version=kernel.version,
        uptime_seconds=time.time() - kernel.started,
        endpoints=kernel.endpoints,
        calls=[pb.CallEntry(id=c.id, name=c.key, method=c.method.path)
               for c in kernel.calls.values()],
        hot_paths=kernel.hot_paths(),
        tenant=tenant.name,
    )


@handler("GetCallStats")
def get_call_stats(kernel, tenant, req, body):
    stats = []
    for call_id, hist in kernel.stats.items():
        if not hist.total:
            continue
        row = pb.CallStats(call=kernel.calls[call_id].key, count=hist.total,
                           max_us=hist.max / 1e3)
        for field, p in PERCENTILES:
            setattr(row, field, hist.percentile(p) / 1e3)
        stats.append(row)
        if req.reset:
            hist.reset()
    return pb.GetCallStatsResponse(stats=stats)


def quotas_from_pb(msg: pb.Quotas) -> Quotas:
    defaults = Quotas()
    return Quotas(**{
        name: getattr(msg, name) or getattr(defaults, name)
        for name in defaults.__dataclass_fields__
    })


def quotas_to_pb(quotas: Quotas) -> pb.Quotas:
    return pb.Quotas(**vars(quotas))


@handler("CreateTenant", admin=True)
def create_tenant(kernel, tenant, req, body):
    t = req.tenant
    if not t.name:
        raise InvalidArgument("tenant.name is empty")
    ports = parse_ports(t.ports, f"tenant {t.name!r}")
    quotas = quotas_from_pb(t.quotas)
    _, token = kernel.tenants.add(t.name, req.token, quotas, t.admin, ports)
    if kernel.journal is not None:
        kernel.journal.tenant_created(t.name, token, quotas, t.admin, ports)
    return pb.CreateTenantResponse(token=token)


@handler("DeleteTenant", admin=True)
def delete_tenant(kernel, tenant, req, body):
    if req.name == tenant.name:
        raise InvalidArgument(f"tenant {req.name!r} cannot delete itself")
    kernel.tenants.remove(req.name)
    if kernel.procs is not None:
        kernel.procs.end_tenant(req.name)
    kernel.net.close_tenant(req.name)
    if kernel.journal is not None:
        kernel.journal.tenant_deleted(req.name)
    return pb.DeleteTenantResponse()


@handler("ListTenants", admin=True)
def list_tenants(kernel, tenant, req, body):
    return pb.ListTenantsResponse(tenants=[
        pb.Tenant(name=t.name, admin=t.admin, quotas=quotas_to_pb(t.quotas),
                  ports=[f"{lo}-{hi}" for lo, hi in t.ports])
        for t in sorted(kernel.tenants.by_name.values(), key=lambda t: t.name)
    ])
