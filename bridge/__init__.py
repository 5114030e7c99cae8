"""amego-bridge: desk IP phones' Action URLs to MQTT."""

import sys

# httpx's package imports its command line (click, rich, pygments: 80 modules, about 4 MB of RSS)
# whenever those are installed, as they are for amqtt. The bridge never runs it, and httpx
# carries on without it when that import fails.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

__version__ = "0.1.0"
