"""chat: a real-time multi-room chat and activity-feed service (REST in, SSE out)."""

__version__ = "0.1.0"
