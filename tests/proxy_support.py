"""A loopback HTTP hop for the drills: an aiohttp server in a thread of its own that forwards to the origin."""

from __future__ import annotations

import asyncio
import ssl
import threading

from aiohttp import ClientSession, TCPConnector, web

from edgerec.cli.process import free_port


class LoopbackProxy:
    """Serves on a free loopback port from a thread of its own, with one client session to `origin_url`; a subclass
    says in `_handle` what it does with each request. With `server_tls` it serves HTTPS (the edge's TLS ends here),
    with `client_tls` it reaches an HTTPS origin on a TLS connection of its own: a hop that terminates and
    re-originates TLS, as a load balancer does. Used as a context manager: started on entry, stopped on exit."""

    def __init__(
        self,
        origin_url: str,
        server_tls: ssl.SSLContext | None = None,
        client_tls: ssl.SSLContext | None = None,
        max_body_bytes: int = 1024**2,
    ) -> None:
        self.origin_url = origin_url
        self.server_tls, self.client_tls = server_tls, client_tls
        self.max_body_bytes = max_body_bytes
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)

    @property
    def url(self) -> str:
        return f"{'https' if self.server_tls else 'http'}://127.0.0.1:{self.port}"

    def __enter__(self):
        self._thread.start()
        assert self._started.wait(10), f"{type(self).__name__} did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        async def shutdown() -> None:
            await self._session.close()
            await self._runner.cleanup()
            self._loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=self.max_body_bytes)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.1)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port, ssl_context=self.server_tls).start())

        async def make_session() -> ClientSession:
            connector = TCPConnector(ssl=self.client_tls) if self.client_tls is not None else None
            return ClientSession(auto_decompress=False, connector=connector)

        self._session = self._loop.run_until_complete(make_session())
        self._started.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError
