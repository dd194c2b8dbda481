"""Pulse's Python SDK: a batching event client and an ASGI middleware (docs/sdk.md).

    from pulse_sdk import Client, PulseMiddleware

    client = Client("http://localhost:3000", key="pk_...", service_name="python-api")
    client.track("user-created", {"metadata": {"source": "python-api"}}, user_id="user-123")
    app.add_middleware(PulseMiddleware, client=client)   # FastAPI / Starlette
    Privacy("http://localhost:3000", key="sk_...").erase("user-123")   # consent, erasure (docs/privacy.md)

Standard library only at run time.
"""

from pulse_sdk.client import Client
from pulse_sdk.middleware import PulseMiddleware
from pulse_sdk.privacy import Privacy, PrivacyError
from pulse_sdk.stats import Stats
from pulse_sdk.transport import VERSION as __version__
from pulse_sdk.worker import DeliveryError

__all__ = ["Client", "DeliveryError", "Privacy", "PrivacyError", "PulseMiddleware", "Stats", "__version__"]
