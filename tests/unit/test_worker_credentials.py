"""SASL/TLS options from configuration become Faust's broker_credentials."""

from __future__ import annotations

import datetime
import logging
import ssl
from pathlib import Path

import pytest
from faust.auth import GSSAPICredentials, SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr

from common.settings import Settings
from processors.faust_host import credentials as credentials_module
from processors.faust_host import worker_credentials
from processors.faust_host.credentials import CredentialsError, broker_credentials
from processors.worker import TriggerWorker

SECRET = "s3cr3t-never-logged"


def certificate_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "moments-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "client.pem", tmp_path / "client.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_plaintext_needs_no_credentials() -> None:
    assert broker_credentials({}) == (None, [])
    assert broker_credentials({"security.protocol": "plaintext"}) == (None, [])


def test_sasl_ssl_with_scram_and_a_ca_file(tmp_path: Path) -> None:
    cert, _ = certificate_pair(tmp_path)
    extra = {
        "security.protocol": "sasl_ssl",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "moments",
        "ssl.ca.location": str(cert),
    }
    credentials, ignored = broker_credentials(extra, SECRET)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (credentials.username, credentials.password) == ("moments", SECRET)
    context = credentials.ssl_context
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1  # our CA, not the system's
    assert ignored == []
    assert SECRET not in repr(credentials)


def test_sasl_plaintext_plain_with_the_password_in_extra() -> None:
    extra = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "u",
        "sasl.password": "from-extra",
    }
    credentials, _ = broker_credentials(extra)
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.ssl_context is None
    assert credentials.password == "from-extra"
    credentials, _ = broker_credentials(extra, SECRET)  # the secret setting wins
    assert isinstance(credentials, SASLCredentials) and credentials.password == SECRET


def test_mutual_tls_loads_the_client_certificate(tmp_path: Path) -> None:
    cert, key = certificate_pair(tmp_path)
    extra = {
        "security.protocol": "SSL",
        "ssl.ca.location": str(cert),
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
        "ssl.endpoint.identification.algorithm": "none",
    }
    credentials, ignored = broker_credentials(extra)
    assert isinstance(credentials, SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL
    assert credentials.context.check_hostname is False
    assert ignored == []


def test_sasl_defaults_to_gssapi_like_librdkafka() -> None:
    credentials, _ = broker_credentials(
        {"security.protocol": "SASL_PLAINTEXT", "sasl.kerberos.service.name": "kafka-prod"}
    )
    assert isinstance(credentials, GSSAPICredentials)
    assert credentials.kerberos_service_name == "kafka-prod"


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"security.protocol": "TLS"}, "security.protocol"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanisms": "OAUTHBEARER"}, "sasl.mechanisms"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN"}, "sasl.username"),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN", "sasl.username": "u"},
            "sasl.password",
        ),
        ({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"}, "ssl.ca.location"),
        (
            {"security.protocol": "SSL", "ssl.certificate.location": "/nonexistent/c.pem"},
            "ssl.key.location",
        ),
    ],
)
def test_bad_security_options_name_the_option(extra: dict[str, str], names: str) -> None:
    with pytest.raises(CredentialsError) as caught:
        broker_credentials(extra)
    assert str(caught.value).startswith(names + ":"), str(caught.value)


def test_an_unreadable_key_is_named_without_its_password(tmp_path: Path) -> None:
    cert, _ = certificate_pair(tmp_path)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("not a key")
    extra = {
        "security.protocol": "SSL",
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(bad_key),
        "ssl.key.password": SECRET,
    }
    with pytest.raises(CredentialsError) as caught:
        broker_credentials(extra)
    assert "ssl.key.location" in str(caught.value) and SECRET not in str(caught.value)


def test_options_faust_cannot_take_are_returned_by_name() -> None:
    extra = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "PLAIN",
        "sasl.username": "u",
        "linger.ms": "20",
        "compression.type": "lz4",
    }
    _, ignored = broker_credentials(extra, SECRET)
    assert ignored == ["compression.type", "linger.ms"]
    _, ignored = broker_credentials({"ssl.ca.location": "/x", "sasl.username": "u"})
    assert ignored == ["sasl.username", "ssl.ca.location"]  # no TLS, no SASL: meaningless


def test_the_worker_app_gets_the_credentials_and_warns_once_without_the_secret(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    credentials_module._REPORTED_IGNORED.clear()
    settings = Settings(
        bootstrap="broker.example:9093",
        data_dir=tmp_path,
        kafka_extra={
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-256",
            "sasl.username": "moments",
            "client.id": "moments-worker",
            "linger.ms": "5",
        },
        kafka_secret=SecretStr(SECRET),
    )
    with caplog.at_level(logging.WARNING, logger="processors.faust_host.credentials"):
        app = TriggerWorker(settings).app
        worker_credentials(settings)
    credentials = app.conf.broker_credentials
    assert isinstance(credentials, SASLCredentials)
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_256
    assert credentials.password == SECRET
    auth = credentials_to_aiokafka_auth(credentials)
    assert (auth["security_protocol"], auth["sasl_mechanism"]) == ("SASL_SSL", "SCRAM-SHA-256")
    assert auth["ssl_context"] is not None
    warnings = [r.getMessage() for r in caplog.records if "cannot take" in r.getMessage()]
    assert len(warnings) == 1
    assert "client.id, linger.ms" in warnings[0]
    assert SECRET not in caplog.text
