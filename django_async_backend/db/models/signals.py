"""Signals sent from the native bridge: async receivers awaited in the task.

Inside :func:`~django_async_backend.utils.bridge.run_native`, Django's
``Signal.send()`` would run async receivers through asgiref's AsyncToSync,
which refuses to run on the event loop's thread. Once installed (when the
project uses the bridge), ``Signal.send()`` and ``Signal.send_robust()`` are
bridge-aware: inside the bridge they call the sync receivers inline and then
await the async ones one after the other in the same task (so in the same
transaction), the semantics of ``Signal.asend()`` without its thread for sync
receivers. Outside the bridge they are Django's own, called at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.dispatch import Signal

from django_async_backend.utils import compat
from django_async_backend.utils.bridge import await_, in_bridge

__all__ = ["install"]

_originals: dict[str, Callable[..., Any]] = {}


def _send(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    if not in_bridge():
        return _originals["send"](self, sender, **named)  # type: ignore[no-any-return]
    if compat.has_no_receivers(self, sender):
        return []
    sync_receivers, async_receivers = compat.live_receivers(self, sender)
    responses = []
    for receiver in sync_receivers:
        responses.append((receiver, receiver(signal=self, sender=sender, **named)))
    for receiver in async_receivers:
        response = await_(receiver(signal=self, sender=sender, **named))
        responses.append((receiver, response))
    return responses


def _send_robust(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    if not in_bridge():
        return _originals["send_robust"](self, sender, **named)  # type: ignore[no-any-return]
    if compat.has_no_receivers(self, sender):
        return []
    sync_receivers, async_receivers = compat.live_receivers(self, sender)
    return [
        *(_call_robust(self, r, sender, named, False) for r in sync_receivers),
        *(_call_robust(self, r, sender, named, True) for r in async_receivers),
    ]


def _call_robust(
    signal: Signal, receiver: Any, sender: Any, named: dict[str, Any], is_async: bool
) -> tuple[Any, Any]:
    try:
        response = receiver(signal=signal, sender=sender, **named)
        if is_async:
            response = await_(response)
    except Exception as err:
        compat.log_robust_failure(signal, receiver, err)
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
