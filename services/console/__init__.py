"""The console: a read-only web view of the kernel, served by Nubis itself.

`app` is a plain ASGI app (no framework), deployed like any tenant's app
through the HTTP service (`nubis up` does it). It shows what its tenant can
see: the kernel, every tenant and its usage (when the tenant is an admin),
its own queues, blobs, cloud processes and listeners, and the latency of
cloud calls: the kernel's own service-time percentiles per call, and the
round trips of the console's own calls, as a small chart.
"""

from nubis.services.console.app import app

__all__ = ["app"]
