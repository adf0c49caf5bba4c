"""Authentication of the reporting API: Basic credentials against the configuration's admins (real hashes),
roles, hostile headers, the loopback-only open mode, and the running service following `admins` live
(real Kafka, chdb; the `mailgw` CLI over real HTTP with MAILGW_API_USER / MAILGW_API_PASSWORD)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn
from passlib.hash import argon2, pbkdf2_sha256
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mailgw_devstack.infra import free_port
from mailgw_devstack.testing import running
from mailgw_libs import cli
from mailgw_libs.config.model import AdminUser, GatewayConfig
from mailgw_libs.config.store import ConfigStore
from mailgw_libs.service import ServiceRuntime
from mailgw_reporting.app import assemble
from mailgw_reporting.auth import Account, Authenticator, allowed, credentials
from mailgw_reporting.settings import ReportingSettings

HANG_GUARD = 1000  # polls of 10 ms: a hang guard, not a timing assertion


def basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def openssl_sha512(password: str) -> str:
    return subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                          check=True).stdout.strip()


FAST_ARGON2 = argon2.using(memory_cost=1024, rounds=1, parallelism=1)


async def ok(_: Request) -> Response:
    return JSONResponse({"ok": True})


def app_with(authenticator: Authenticator, client: tuple[str, int] = ("127.0.0.1", 4000)) -> httpx.AsyncClient:
    routes = authenticator.protect_routes([Route("/api/v1/stats/summary", ok, methods=["GET"]),
                                           Route("/api/v1/quarantine/{id}/release", ok, methods=["POST"]),
                                           Route("/api/v1/quarantine-reports", ok, methods=["POST"])])
    transport = httpx.ASGITransport(app=Starlette(routes=routes), client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://r")


def test_roles() -> None:
    release, reports, stats = "/api/v1/quarantine/X/release", "/api/v1/quarantine-reports", "/api/v1/stats/summary"
    assert all(allowed(role, m, p) for role in ("root", "admin") for m in ("GET", "POST", "DELETE")
               for p in (release, reports))
    assert allowed("audit", "GET", stats) and not allowed("audit", "POST", release)
    assert not allowed("audit", "DELETE", "/api/v1/quarantine/X")
    assert allowed("qmanager", "POST", release) and allowed("helpdesk", "DELETE", "/api/v1/quarantine/X")
    assert not allowed("qmanager", "POST", reports) and not allowed("nobody", "GET", stats)


@pytest.mark.parametrize("header", [
    "", "Basic", "Basic ", "Bearer abc", "Basic !!!notbase64", "Basic " + base64.b64encode(b"nocolon").decode(),
    "Basic " + base64.b64encode(b":password").decode(), "Basic " + base64.b64encode(b"user:").decode(),
    "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(), "Basic " + base64.b64encode(b"a:b\r\nX: y").decode(),
    "Basic " + "A" * 10_000])
def test_malformed_authorization_headers_give_no_credentials(header: str) -> None:
    assert credentials(header) is None


def test_credentials_of_a_good_header() -> None:
    assert credentials(basic("root", "pa:ss wörd")["Authorization"]) == ("root", "pa:ss wörd")


async def test_hash_formats_and_roles_over_http() -> None:
    accounts = [Account("root", "root", openssl_sha512("r00t-secret")),
                Account("auditor", "audit", FAST_ARGON2.hash("audit-secret")),
                Account("qm", "qmanager", pbkdf2_sha256.hash("qm-secret"))]
    async with app_with(Authenticator(accounts)) as http:
        assert (await http.get("/api/v1/stats/summary")).status_code == 401
        r = await http.get("/api/v1/stats/summary", headers=basic("root", "wrong"))
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert (await http.get("/api/v1/stats/summary", headers=basic("nobody", "r00t-secret"))).status_code == 401
        assert (await http.get("/api/v1/stats/summary", headers=basic("root", "r00t-secret"))).status_code == 200
        assert (await http.post("/api/v1/quarantine-reports", headers=basic("root", "r00t-secret"))).status_code == 200
        assert (await http.get("/api/v1/stats/summary", headers=basic("auditor", "audit-secret"))).status_code == 200
        r = await http.post("/api/v1/quarantine/X/release", headers=basic("auditor", "audit-secret"))
        assert r.status_code == 403
        assert (await http.post("/api/v1/quarantine/X/release", headers=basic("qm", "qm-secret"))).status_code == 200
        assert (await http.post("/api/v1/quarantine-reports", headers=basic("qm", "qm-secret"))).status_code == 403
        for header in ("Basic !!!", "Basic " + "A" * 10_000, "Digest x"):
            assert (await http.get("/api/v1/stats/summary", headers={"Authorization": header})).status_code == 401


async def test_a_changed_password_is_not_remembered() -> None:
    authenticator = Authenticator([Account("root", "root", pbkdf2_sha256.hash("old-secret"))])
    async with app_with(authenticator) as http:
        assert (await http.get("/api/v1/stats/summary", headers=basic("root", "old-secret"))).status_code == 200
        authenticator.use([Account("root", "root", pbkdf2_sha256.hash("new-secret"))])
        assert (await http.get("/api/v1/stats/summary", headers=basic("root", "old-secret"))).status_code == 401
        assert (await http.get("/api/v1/stats/summary", headers=basic("root", "new-secret"))).status_code == 200


async def test_without_admins_the_api_is_open_to_loopback_only() -> None:
    async with app_with(Authenticator()) as http:
        assert (await http.get("/api/v1/stats/summary")).status_code == 200
    async with app_with(Authenticator(), client=("::1", 4000)) as http:
        assert (await http.get("/api/v1/stats/summary")).status_code == 200
    async with app_with(Authenticator(), client=("192.0.2.7", 4000)) as http:
        assert (await http.get("/api/v1/stats/summary")).status_code == 403
    async with app_with(Authenticator(), client=("not-an-address", 4000)) as http:
        assert (await http.get("/api/v1/stats/summary")).status_code == 403


async def wait_for_version(runtime: ServiceRuntime, version: int) -> None:
    follower = runtime.config_follower
    assert follower is not None
    for _ in range(HANG_GUARD):
        if follower.version >= version:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"config version {version} never in force")


@pytest.fixture
async def served_service(fresh_kafka: str, chdb_url: str, redis_url: str, unique: str
                         ) -> AsyncIterator[tuple[Any, str]]:
    settings = ReportingSettings(kafka_bootstrap=fresh_kafka, clickhouse_url=chdb_url, http_port=0,
                                 redis_url=redis_url, database=f"auth_{unique}")
    service = assemble(settings, background=False)
    async with running(service.runtime):
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(service.runtime.app(), host="127.0.0.1", port=port,
                                               log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve())
        for _ in range(HANG_GUARD):  # uvicorn's startup has no event to wait on
            if server.started:
                break
            await asyncio.sleep(0.01)
        try:
            yield service, f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            await task


async def test_the_service_follows_the_configured_admins(
        served_service: tuple[Any, str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    service, url = served_service
    async with httpx.AsyncClient(base_url=url) as http:
        assert (await http.get("/api/v1/stats/summary")).status_code == 200  # no admins: open on loopback

        config = GatewayConfig(admins=[
            AdminUser(name="root", role="root", password_hash=openssl_sha512("r00t-secret")),
            AdminUser(name="auditor", role="audit", password_hash=FAST_ARGON2.hash("audit-secret")),
            AdminUser(name="gone", role="root", password_hash=pbkdf2_sha256.hash("gone-secret"), enabled=False)])
        await ConfigStore(service.runtime.settings).publish(config, 0, "test", "admins")
        await wait_for_version(service.runtime, 1)

        assert (await http.get("/api/v1/stats/summary")).status_code == 401
        assert (await http.get("/api/v1/stats/summary", auth=("gone", "gone-secret"))).status_code == 401
        assert (await http.get("/api/v1/stats/summary", auth=("auditor", "audit-secret"))).status_code == 200
        r = await http.post("/api/v1/quarantine/NOSUCHID/release", auth=("auditor", "audit-secret"))
        assert r.status_code == 403
        r = await http.post("/api/v1/quarantine/NOSUCHID/release", auth=("root", "r00t-secret"))
        assert r.status_code == 404  # authorised; the message does not exist
        # The unauthenticated endpoints stay so: health, and the signed quarantine links (refused without a secret).
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/quarantine/link/release/whatever")).status_code == 403

    # The CLI passes the credentials from the environment.
    monkeypatch.setenv("MAILGW_API_USER", "auditor")
    monkeypatch.setenv("MAILGW_API_PASSWORD", "audit-secret")
    await asyncio.to_thread(cli.main, ["--api", url, "stats", "--json"])
    assert "received" in json.loads(capsys.readouterr().out)
    monkeypatch.setenv("MAILGW_API_PASSWORD", "wrong")
    with pytest.raises(SystemExit, match="401"):
        await asyncio.to_thread(cli.main, ["--api", url, "stats", "--json"])
