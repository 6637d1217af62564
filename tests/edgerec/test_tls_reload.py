"""The certificate reloader on a live server context: a half-replaced pair on disk must not break handshakes."""

from __future__ import annotations

import ssl

from edgerec.core.tls import CertificateReloader, server_context
from tests.conftest import first_certificate_der, replace_file


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> bytes:
    """A TLS handshake in memory (no sockets); the DER certificate the server presented."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname="127.0.0.1")
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    pending = {client_end, server_end}
    for _ in range(20):
        for end in list(pending):
            try:
                end.do_handshake()
                pending.discard(end)
            except ssl.SSLWantReadError:
                pass
        if not pending:
            return client_end.getpeercert(binary_form=True)
    raise AssertionError("handshake did not finish")


def test_a_half_renewed_pair_is_not_loaded_and_handshakes_keep_working(pki):
    context = server_context(pki.origin_cert, pki.origin_key)
    reloader = CertificateReloader(context, pki.origin_cert, pki.origin_key, interval_s=60)
    client = pki.client_context()
    first = first_certificate_der(pki.origin_cert)
    assert _handshake(context, client) == first
    renewed_cert, renewed_key = pki.issue("origin-renewed", "127.0.0.1", "localhost")
    replace_file(pki.origin_key, renewed_key)  # the key first, as a certificate agent renames them
    assert reloader.check() is False and reloader.failures == 1
    assert _handshake(context, client) == first  # still the previous pair, whole
    replace_file(pki.origin_cert, renewed_cert)
    assert reloader.check() is True and reloader.reloads == 1
    assert _handshake(context, client) == first_certificate_der(renewed_cert)
    assert reloader.check() is False and reloader.failures == 1  # nothing changed since: no reload, no failure


def test_a_server_context_is_never_changed_in_place_the_renewal_reaches_new_handshakes(pki):
    """With a factory, a renewed pair goes into a new context that the live one's SNI callback hands to each new
    connection (clients by IP address send no server name: the callback runs anyway)."""

    def factory() -> ssl.SSLContext:
        return server_context(pki.origin_cert, pki.origin_key)

    context = factory()
    reloader = CertificateReloader(context, pki.origin_cert, pki.origin_key, interval_s=60, factory=factory)
    client = pki.client_context()
    first = first_certificate_der(pki.origin_cert)
    renewed_cert, renewed_key = pki.issue("origin-renewed", "127.0.0.1", "localhost")
    replace_file(pki.origin_key, renewed_key)
    assert reloader.check() is False and _handshake(context, client) == first
    replace_file(pki.origin_cert, renewed_cert)
    assert reloader.check() is True
    assert _handshake(context, client) == first_certificate_der(renewed_cert)
    # The live context still holds the first pair itself: nothing in it was replaced while handshakes ran.
    context.sni_callback = None
    assert _handshake(context, client) == first
