"""Process model shared by every service: one ASGI app served by uvicorn.

The app's lifespan connects the Kafka broker (retrying while the bus is down),
starts the service's own workers, and stops everything cleanly on SIGINT/SIGTERM,
which uvicorn handles. The same app serves `/healthz`, `/readyz` and `/metrics`
(plus any API routes of the service).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import uvicorn
from faststream.kafka import KafkaBroker
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from . import bus, topics
from .config.follower import ConfigCallback, ConfigFollower
from .config.model import GatewayConfig
from .settings import ServiceSettings
from .telemetry import setup_logging, setup_tracing

log = logging.getLogger("mailgw.service")

ReadinessCheck = Callable[[], Awaitable[tuple[bool, str]]]
Hook = Callable[[], Awaitable[None]]


@dataclass
class ServiceRuntime:
    """What one service process runs: its broker, hooks, readiness checks and HTTP routes."""

    name: str
    settings: ServiceSettings
    broker: KafkaBroker | None = None
    # Run first, before the broker is connected (e.g. a listener that must answer even while Kafka is down).
    on_boot: list[Hook] = field(default_factory=list)
    # Run once the broker is connected.
    on_start: list[Hook] = field(default_factory=list)
    on_stop: list[Hook] = field(default_factory=list)
    checks: dict[str, ReadinessCheck] = field(default_factory=dict)
    routes: list[BaseRoute] = field(default_factory=list)
    # Topics this service makes sure exist before it subscribes (default: every main topic).
    topic_specs: list[topics.TopicSpec] | None = None
    broker_ready: bool = False
    started: bool = False
    # Follow `mailgw.config` (set by `on_config`): the current version is read before the broker and the start
    # hooks start, and /readyz is false until it has been.
    follow_config: bool = False
    config_follower: ConfigFollower | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def spawn(self, coro: Awaitable[None], name: str) -> None:
        """Run a background worker for the life of the process."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.append(task)

    def on_config(self, callback: ConfigCallback) -> None:
        """Call `callback(config)` with the configuration read at start (before the broker and the `on_start`
        hooks start) and then with every new version, live. Registering one makes the service follow
        `mailgw.config`."""
        self.follow_config = True
        self._follower().on_change(callback)

    @property
    def config(self) -> GatewayConfig:
        """The configuration in force (shipped defaults while the topic holds no version)."""
        if not self.follow_config:
            raise RuntimeError(f"{self.name} does not follow the configuration: set follow_config or use on_config")
        return self._follower().config

    def _follower(self) -> ConfigFollower:
        if self.config_follower is None:
            self.config_follower = ConfigFollower(self.settings)
        return self.config_follower

    async def _load_config(self) -> None:
        """Read `mailgw.config` to its end (retrying while Kafka is down), then hand it to the callbacks."""
        follower = self._follower()
        delay = 0.5
        while True:
            try:
                await asyncio.wait_for(follower.catch_up(), timeout=60.0)
                break
            except Exception as exc:  # noqa: BLE001 - the bus may be down at start: keep trying
                log.warning("configuration not readable, retrying", extra={"error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        await follower.notify(follower.config)

    async def _start_hooks(self) -> None:
        """The service's start hooks, then live configuration changes."""
        for hook in self.on_start:
            await hook()
        if self.follow_config:
            self.spawn(self._follower().follow(), "config-follower")
        self.started = True

    async def _start_without_broker(self) -> None:
        await self._load_config()
        await self._start_hooks()

    async def _connect_broker(self) -> None:
        assert self.broker is not None
        if self.follow_config:
            # Before the broker: its subscribers consume as soon as it starts, and must see the configuration.
            await self._load_config()
        delay = 0.5
        while True:
            try:
                await bus.ensure_topics(self.settings, self.topic_specs)
                await self.broker.start()
                self.broker_ready = True
                log.info("connected to kafka", extra={"bootstrap": self.settings.kafka_bootstrap})
                break
            except Exception as exc:  # noqa: BLE001 - the bus may be down at start: keep trying
                log.warning("kafka not reachable, retrying", extra={"error": repr(exc), "retry_in_s": delay})
                with contextlib.suppress(Exception):
                    await self.broker.stop()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        await self._start_hooks()

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        for hook in self.on_boot:
            await hook()
        if self.broker is not None:
            self.spawn(self._connect_broker(), "connect-broker")
        elif self.follow_config:
            self.spawn(self._start_without_broker(), "load-config")
        else:
            for hook in self.on_start:
                await hook()
            self.started = True
        try:
            yield
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            for hook in reversed(self.on_stop):
                try:
                    await hook()
                except Exception:
                    log.exception("stop hook failed")
            if self.broker is not None:
                with contextlib.suppress(Exception):
                    await self.broker.stop()
            if self.config_follower is not None:
                with contextlib.suppress(Exception):
                    await self.config_follower.stop()
            log.info("stopped", extra={"service": self.name})

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"service": self.name, "status": "alive", "time": time.time()})

    async def readyz(self, _request: Request) -> Response:
        results: dict[str, dict[str, object]] = {}
        if self.broker is not None:
            results["kafka"] = {"ok": self.broker_ready, "detail": self.settings.kafka_bootstrap}
        if self.follow_config:
            follower = self._follower()
            results["config"] = {"ok": follower.caught_up, "detail": f"version {follower.version}"}
        results["started"] = {"ok": self.started, "detail": ""}
        for name, check in self.checks.items():
            try:
                ok, detail = await asyncio.wait_for(check(), timeout=2.0)
            except Exception as exc:  # noqa: BLE001 - a failing check is a "not ready" answer
                ok, detail = False, repr(exc)
            results[name] = {"ok": ok, "detail": detail}
        ready = all(bool(r["ok"]) for r in results.values())
        return JSONResponse({"service": self.name, "ready": ready, "checks": results}, status_code=200 if ready else 503)

    async def metrics(self, _request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    def app(self) -> Starlette:
        base: Sequence[BaseRoute] = [
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.metrics),
        ]
        return Starlette(routes=[*base, *self.routes], lifespan=self.lifespan)


def setup(name: str, settings: ServiceSettings) -> TracerProvider:
    """Logging and tracing of one service process."""
    setup_logging(name, settings.log_level)
    return setup_tracing(name)


def serve(runtime: ServiceRuntime) -> None:
    """Serve the runtime's app until SIGINT/SIGTERM."""
    config = uvicorn.Config(
        runtime.app(),
        host=runtime.settings.http_host,
        port=runtime.settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.run()
