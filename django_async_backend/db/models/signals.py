"""Signals sent from the native bridge: async receivers awaited in the task.

Inside :func:`~django_async_backend.utils.bridge.run_native`, Django's
``Signal.send()`` would run async receivers through asgiref's AsyncToSync, which
refuses to run on the event loop's thread. So a signal that has an async
receiver gets bridge-aware ``send()``/``send_robust()``: inside the bridge
they call the sync receivers inline and then await the async ones one after
the other in the same task (so in the same transaction), the semantics of
``Signal.asend()`` without its thread for sync receivers. Outside the bridge
they are Django's own. Signals without async receivers are not touched at
all (no cost on the sync path).
"""

from __future__ import annotations

from collections.abc import Callable
from types import MethodType
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.db.backends.signals import connection_created
from django.db.models import signals as model_signals
from django.dispatch import Signal
from django.dispatch.dispatcher import NO_RECEIVERS

from django_async_backend.utils.bridge import await_, in_bridge

__all__ = ["install"]

_originals: dict[str, Callable[..., Any]] = {}


def _send(self: Signal, sender: Any, **named: Any) -> list[tuple[Any, Any]]:
    if not in_bridge():
        return _originals["send"](self, sender, **named)  # type: ignore[no-any-return]
    if not self.receivers or self.sender_receivers_cache.get(sender) is NO_RECEIVERS:
        return []
    sync_receivers, async_receivers = self._live_receivers(sender)
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
    if not self.receivers or self.sender_receivers_cache.get(sender) is NO_RECEIVERS:
        return []
    sync_receivers, async_receivers = self._live_receivers(sender)
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
        signal._log_robust_failure(receiver, err)  # type: ignore[attr-defined]
        return receiver, err
    return receiver, response


def make_bridge_aware(signal: Signal) -> None:
    """Give ``signal`` the bridge-aware ``send``/``send_robust`` (idempotent)."""
    if "send" not in signal.__dict__:
        signal.send = MethodType(_send, signal)  # type: ignore[method-assign]
        signal.send_robust = MethodType(_send_robust, signal)  # type: ignore[method-assign]


def _connect(self: Signal, receiver: Any, *args: Any, **kwargs: Any) -> None:
    _originals["connect"](self, receiver, *args, **kwargs)
    if iscoroutinefunction(receiver) or iscoroutinefunction(
        getattr(receiver, "__call__", None)  # noqa: B004 - async callable objects
    ):
        make_bridge_aware(self)


def _has_async_receiver(signal: Signal) -> bool:
    return any(len(r) > 2 and r[2] is True for r in signal.receivers)


def install() -> None:
    """Watch ``Signal.connect`` for async receivers (once)."""
    if _originals:
        return
    _originals["send"] = Signal.send
    _originals["send_robust"] = Signal.send_robust
    _originals["connect"] = Signal.connect
    Signal.connect = _connect  # type: ignore[method-assign]
    # Async receivers connected before this app was ready.
    for value in [*vars(model_signals).values(), connection_created]:
        if isinstance(value, Signal) and _has_async_receiver(value):
            make_bridge_aware(value)
