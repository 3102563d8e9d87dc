"""Signals sent from the native bridge: async receivers awaited in the task.

Inside :func:`~django_async_backend.db.models.bridge.run_native`, Django's
``Signal.send()`` would run async receivers with ``async_to_sync``, which
refuses to run on the event loop's thread. There, ``send()`` and
``send_robust()`` call the sync receivers inline and then await the async
ones one after the other in the same task (so in the same transaction) — the
semantics of ``Signal.asend()`` without its thread for sync receivers.
Outside the bridge, and for signals without async receivers, they are
Django's own, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.dispatch import Signal

from django_async_backend.db.models.bridge import await_, in_bridge

__all__ = ["install"]

_originals: dict[str, Callable[..., Any]] = {}


def _send(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    if self.receivers and in_bridge():
        sync_receivers, async_receivers = self._live_receivers(sender)
        if async_receivers:
            responses = []
            for receiver in sync_receivers:
                response = receiver(signal=self, sender=sender, **named)
                responses.append((receiver, response))
            for receiver in async_receivers:
                response = await_(receiver(signal=self, sender=sender, **named))
                responses.append((receiver, response))
            return responses
    return _originals["send"](self, sender, **named)  # type: ignore[no-any-return]


def _send_robust(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    if self.receivers and in_bridge():
        sync_receivers, async_receivers = self._live_receivers(sender)
        if async_receivers:
            responses = []
            for receiver in sync_receivers:
                responses.append(_call_robust(self, receiver, sender, named, False))
            for receiver in async_receivers:
                responses.append(_call_robust(self, receiver, sender, named, True))
            return responses
    return _originals["send_robust"](self, sender, **named)  # type: ignore[no-any-return]


def _call_robust(
    signal: Signal, receiver: Any, sender: Any, named: dict[str, Any], is_async: bool
) -> tuple[Any, Any]:
    try:
        response = receiver(signal=signal, sender=sender, **named)
        if is_async:
            response = await_(response)
    except Exception as err:
        signal._log_robust_failure(receiver, err)  # type: ignore[attr-defined]
        return receiver, err
    return receiver, response


def install() -> None:
    """Make ``Signal.send``/``send_robust`` bridge-aware (once)."""
    if _originals:
        return
    _originals["send"] = Signal.send
    _originals["send_robust"] = Signal.send_robust
    Signal.send = _send  # type: ignore[method-assign]
    Signal.send_robust = _send_robust  # type: ignore[method-assign]
