"""Signals sent from the native bridge: async receivers awaited in the task.

Inside :func:`~django_async_backend.utils.bridge.run_native`, Django's
``Signal.send()`` would run async receivers through asgiref's AsyncToSync,
which refuses to run on the event loop's thread. Once installed (when the
project uses the bridge), ``Signal.send()`` and ``Signal.send_robust()`` are
bridge-aware: inside the bridge they call the sync receivers inline and then
await the async ones one after the other in the same task (so in the same
transaction), the semantics of ``Signal.asend()`` without its thread for sync
receivers. Outside the bridge they are Django's own methods themselves, with
no frame of the package between a sender and its receivers (a receiver's
``warnings.warn(stacklevel=...)`` points where Django says).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.dispatch import Signal

from django_async_backend.utils import compat
from django_async_backend.utils.bridge import await_, in_bridge

__all__ = ["install"]

_originals: dict[str, Callable[..., Any]] = {}


class _BridgeAware:
    """A ``Signal`` method: Django's own, or inside the bridge, the bridge's.

    A descriptor rather than a wrapper function: the choice is made when the
    method is looked up (``signal.send``, right before the call), so that
    outside the bridge the call is Django's function itself.
    """

    __slots__ = ("bridge", "django")

    def __init__(self, django: Callable[..., Any], bridge: Callable[..., Any]) -> None:
        self.django, self.bridge = django, bridge

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        method = self.bridge if in_bridge() else self.django
        return method.__get__(instance, owner)


def _send(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
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
    Signal.send = _BridgeAware(Signal.send, _send)  # type: ignore[method-assign,assignment]
    Signal.send_robust = _BridgeAware(Signal.send_robust, _send_robust)  # type: ignore[method-assign,assignment]
