"""Bounds on work pending inside the kernel."""

from collections import deque
from types import SimpleNamespace

import pytest

from nubis.clock import KernelClock
from nubis.errors import ResourceExhausted
from nubis.handlers import queue as queue_calls
from nubis.queue import QueueSettings
from nubis.tenants import Quotas, Tenant
from nubis.transport import grpc_server
from nubis.v1 import queue_pb2


def test_long_polls_per_queue_are_bounded():
    clock = KernelClock()
    tenant = Tenant("acme", Quotas(), clock=clock.now)
    tenant.queues.create("jobs", QueueSettings())
    kernel = SimpleNamespace(clock=clock, queue_waiters={})
    req = queue_pb2.ReceiveMessagesRequest(queue="jobs", wait_ms=1000)
    kernel.queue_waiters[("acme", "jobs")] = deque(
        [None] * queue_calls.MAX_LONG_POLLS)
    with pytest.raises(ResourceExhausted, match="long polls waiting"):
        queue_calls.receive_messages(kernel, tenant, req, None)

    kernel.queue_waiters[("acme", "jobs")].pop()
    waiting = queue_calls.receive_messages(kernel, tenant, req, None)
    assert hasattr(waiting, "__await__")
    waiting.close()


def test_grpc_bounds_calls_in_progress():
    assert 0 < grpc_server.MAX_CONCURRENT_RPCS <= 100_000
