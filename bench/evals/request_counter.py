"""How far an accuracy task is: lm-eval's LM calls its cache hook once per answered request
(lm_eval.api.model.CacheHook, with no cache behind it here), so a hook that counts them knows
the requests done, whatever the engine; each task says beforehand how many it will send."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

from lm_eval.api.model import CacheHook

ProgressSink = Callable[[dict[str, Any]], None]


class EvalProgress(CacheHook):
    """Counts answered requests and reports `done` of `total` items (questions, problems)
    with an ETA from the rate so far, at most every `every_s` seconds."""

    def __init__(self, sink: Optional[ProgressSink], every_s: float = 1.0) -> None:
        super().__init__(None)
        self._sink = sink
        self._every_s = every_s
        self.expect("", None, "items")

    def expect(self, label: str, items: Optional[int], unit: str,
               requests_per_item: int = 1) -> None:
        """A task is about to send `items` x `requests_per_item` requests (items: None when
        unknown)."""
        self.label, self.items, self.unit = label, items, unit
        self.per_item = max(1, requests_per_item)
        self.requests = 0
        self._started = time.monotonic()
        self._sent_at = -self._every_s

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.requests += 1
        now = time.monotonic()
        if self._sink is None or now - self._sent_at < self._every_s:
            return
        self._sent_at = now
        self._sink(self.fields(now))

    def fields(self, now: float) -> dict[str, Any]:
        done = self.requests // self.per_item
        eta = None
        # the first requests are the longest (lm-eval sorts them so): no ETA from them alone
        if self.items and self.requests >= max(1, self.items * self.per_item // 50):
            left = self.items * self.per_item - self.requests
            eta = max(0.0, left * (now - self._started) / self.requests)
        return {"label": self.label, "done": min(done, self.items or done),
                "total": self.items, "unit": self.unit, "eta_s": eta}
