"""Broker credentials: the librdkafka security options, as Faust's `broker_credentials`.

`broker_urls` and `worker_credentials` give the worker's app its brokers and
credentials from the settings every other process uses.

`broker_credentials` turns the librdkafka security options that the
confluent clients take from `settings.kafka.kafka_extra` (+ the secret) into
Faust's `broker_credentials`, so the worker reaches a SASL/TLS cluster with
the same configuration as every other process. It never puts the secret in
an error or a log line.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from pathlib import Path

from faust.auth import GSSAPICredentials, SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from common.settings import Settings

#: librdkafka options `broker_credentials` maps; any other one Faust cannot take.
CREDENTIAL_OPTIONS = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.kerberos.service.name",
        "ssl.ca.location",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "enable.ssl.certificate.verification",
    }
)
_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class CredentialsError(ValueError):
    """A security option of `kafka_extra` the worker cannot honour (names it, never a secret)."""


def broker_credentials(
    extra: Mapping[str, str], secret: str | None = None
) -> tuple[CredentialsT | None, list[str]]:
    """Faust `broker_credentials` from librdkafka options, and the options Faust cannot take.

    `extra` is `settings.kafka.kafka_extra`; `secret` is `settings.kafka.kafka_secret` (it wins over
    an `sasl.password` in `extra`). Like librdkafka: `security.protocol` is
    case-insensitive and defaults to PLAINTEXT, `sasl.mechanisms` defaults to GSSAPI,
    `ssl.ca.location` may be a file or a directory (default: the system CAs), a client
    certificate needs `ssl.certificate.location` + `ssl.key.location`, and
    `ssl.endpoint.identification.algorithm=none` turns off host name checks. Returns
    (None, ignored) for PLAINTEXT. Raises `CredentialsError` naming the option that is
    missing, unsupported (OAUTHBEARER needs a token provider) or unreadable.
    """
    ignored = {k for k in extra if k not in CREDENTIAL_OPTIONS}
    protocol = extra.get("security.protocol", "PLAINTEXT").strip().upper()
    if protocol not in _PROTOCOLS:
        raise CredentialsError(
            f"security.protocol: {protocol!r} is none of {', '.join(_PROTOCOLS)}"
        )
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        context = _ssl_context(extra)
    else:  # like librdkafka, TLS options mean nothing without TLS
        ignored |= {k for k in extra if k.startswith(("ssl.", "enable.ssl."))}
    if not protocol.startswith("SASL"):
        ignored |= {k for k in extra if k.startswith("sasl.")}
        return (None if context is None else SSLCredentials(context)), sorted(ignored)
    mechanism = (
        (extra.get("sasl.mechanisms") or extra.get("sasl.mechanism") or "GSSAPI").strip().upper()
    )
    if mechanism == "GSSAPI":
        service = extra.get("sasl.kerberos.service.name", "kafka")
        return GSSAPICredentials(kerberos_service_name=service, ssl_context=context), sorted(
            ignored | {k for k in ("sasl.username", "sasl.password") if k in extra}
        )
    if mechanism not in _PASSWORD_MECHANISMS:
        raise CredentialsError(
            f"sasl.mechanisms: {mechanism!r} is not supported by the worker "
            f"(use one of GSSAPI, {', '.join(_PASSWORD_MECHANISMS)})"
        )
    username = extra.get("sasl.username")
    password = secret if secret is not None else extra.get("sasl.password")
    if not username:
        raise CredentialsError(f"sasl.username: required with sasl.mechanisms={mechanism}")
    if password is None:
        raise CredentialsError(
            f"sasl.password: required with sasl.mechanisms={mechanism} (set MOMENTS_KAFKA_SECRET)"
        )
    credentials = SASLCredentials(
        username=username, password=password, ssl_context=context, mechanism=mechanism
    )
    return credentials, sorted(ignored)


def _ssl_context(extra: Mapping[str, str]) -> ssl.SSLContext:
    ca = extra.get("ssl.ca.location")
    if ca == "probe":  # librdkafka: look in the usual system places, as the default does
        ca = None
    try:
        if ca and Path(ca).is_dir():
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, capath=ca)
        else:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca or None)
    except (OSError, ssl.SSLError) as exc:
        raise CredentialsError(f"ssl.ca.location: cannot load {ca!r}: {exc}") from None
    if extra.get("ssl.endpoint.identification.algorithm", "https").strip().lower() == "none":
        context.check_hostname = False
    if extra.get("enable.ssl.certificate.verification", "true").strip().lower() == "false":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    certificate = extra.get("ssl.certificate.location")
    key = extra.get("ssl.key.location")
    if bool(certificate) != bool(key):
        missing = "ssl.key.location" if certificate else "ssl.certificate.location"
        raise CredentialsError(f"{missing}: required for a client certificate")
    if certificate:
        try:
            context.load_cert_chain(certificate, key, password=extra.get("ssl.key.password"))
        except (OSError, ssl.SSLError) as exc:
            raise CredentialsError(
                f"ssl.certificate.location / ssl.key.location: cannot load "
                f"{certificate!r} with key {key!r}: {type(exc).__name__}: {exc.strerror or exc}"
            ) from None
    return context


log = logging.getLogger(__name__)


def broker_urls(bootstrap: str) -> list[str]:
    """Faust broker URLs from a Kafka bootstrap list (`host:port,host:port`)."""
    return [f"kafka://{server.strip()}" for server in bootstrap.split(",") if server.strip()]


_REPORTED_IGNORED: set[tuple[str, ...]] = set()


def worker_credentials(settings: Settings) -> CredentialsT | None:
    """Faust `broker_credentials` from `kafka_extra` + `kafka_secret` (None: plaintext).

    Options of `kafka_extra` that Faust cannot take are reported once per process in a
    warning that names them (never their values).
    """
    secret = settings.kafka.kafka_secret.get_secret_value() if settings.kafka.kafka_secret else None
    credentials, ignored = broker_credentials(settings.kafka.kafka_extra, secret)
    if ignored and tuple(ignored) not in _REPORTED_IGNORED:
        _REPORTED_IGNORED.add(tuple(ignored))
        log.warning(
            "kafka_extra options the worker (Faust/aiokafka) cannot take are ignored: %s",
            ", ".join(ignored),
        )
    return credentials
