"""The daemon's TLS material (api/tls.py): made once, reused, a new server certificate for a new name."""

from __future__ import annotations

import ipaddress
import ssl
from pathlib import Path

from cryptography import x509

from nestor.api import tls


def names(cert: Path) -> set[str]:
    ext = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return {str(n.value) for n in ext}


def test_made_once_and_reused(tmp_path: Path) -> None:
    files = tls.ensure(tmp_path, "127.0.0.1")
    assert files.ca_cert.is_file() and files.cert.is_file()
    for key in (files.ca_key, files.key):
        assert key.stat().st_mode & 0o777 == 0o600
    assert files.dir.stat().st_mode & 0o777 == 0o700
    assert {"localhost", "127.0.0.1", "::1"} <= names(files.cert)
    before = (files.ca_cert.read_bytes(), files.cert.read_bytes())
    tls.ensure(tmp_path, "127.0.0.1")
    tls.ensure(tmp_path, "0.0.0.0")  # all addresses: nothing new to name
    assert (files.ca_cert.read_bytes(), files.cert.read_bytes()) == before


def test_new_listen_name_gets_a_new_server_certificate_from_the_same_ca(tmp_path: Path) -> None:
    files = tls.ensure(tmp_path, "127.0.0.1")
    ca = files.ca_cert.read_bytes()
    old = files.cert.read_bytes()
    tls.ensure(tmp_path, "lab.example")
    assert files.ca_cert.read_bytes() == ca and files.cert.read_bytes() != old
    assert "lab.example" in names(files.cert)
    tls.ensure(tmp_path, "10.20.30.40")  # the certificate names the address it serves now
    assert "10.20.30.40" in names(files.cert) and files.ca_cert.read_bytes() == ca
    # the server certificate chains to the CA, for a client that trusts only that CA
    context = ssl.create_default_context(cafile=str(files.ca_cert))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.cert, files.key)
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca)
    cert.verify_directly_issued_by(ca_cert)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert ipaddress.ip_address("10.20.30.40") in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
