"""How many requests the server is handling, and how many of them wait on a batcher.

The batcher holds a batch open for companions only while `expect_more()` is true: some request
whose body has arrived has not reached a batcher yet (it is being parsed and preprocessed). A
request whose body is still arriving does not count (`service.middleware.MetricsMiddleware`), so
a slow or stalled upload holds no batch open. A lone request is therefore dispatched at once,
while under concurrent load batches still fill up to `max_batch_size` or `max_wait_ms`. All
counting happens on the event loop thread.
"""

from __future__ import annotations


class Traffic:
    """Requests in flight in the HTTP layer and requests waiting for inference results."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.waiting = 0

    def expect_more(self) -> bool:
        """True when some request in flight has not yet been queued for inference."""
        return self.in_flight > self.waiting
