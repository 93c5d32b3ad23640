"""Customer ids and secrets at the edges: hashed ids, masked URLs and settings, safe errors."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from common.privacy import (
    MASK,
    is_loopback,
    keyed_customer_hash,
    redact_url,
    set_id_hash_key,
)
from common.settings import Settings
from common.topics import topic_config
from producers.publisher import PublishError

SASL = "sasl-pw-0c1d2e"
REGISTRY_PW = "reg-pw-9f8e7d"
HOOK_TOKEN = "hook-token-5a4b3c"
API_KEY = "api-key-1f2e3d"
DB_PW = "db-pw-6c5b4a"
OAUTH = "client-secret-7e6d"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://u:pw@reg.example:8081/x", f"https://u:{MASK}@reg.example:8081/x"),
        ("https://token@hooks.example/a", f"https://{MASK}@hooks.example/a"),
        (
            "https://hooks.example/a?token=abc&x=1",
            f"https://hooks.example/a?token={MASK}&x={MASK}",
        ),
        ("https://hooks.example/a#sig", f"https://hooks.example/a#{MASK}"),
        ("postgresql://moments:pw@db/moments", f"postgresql://moments:{MASK}@db/moments"),
        ("http://plain.example/a", "http://plain.example/a"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url_masks_passwords_and_query_values(url: str, masked: str) -> None:
    assert redact_url(url) == masked


def test_redact_url_can_mask_the_path_too() -> None:
    url = "https://hooks.example/services/T0/B0/secret?x=1"
    assert redact_url(url, keep_path=False) == f"https://hooks.example/{MASK}?x={MASK}"
    assert redact_url("https://hooks.example/", keep_path=False) == "https://hooks.example/"


def test_loopback_is_only_this_machine() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "api.example"]))


def test_settings_repr_and_str_show_no_secret_of_any_kind() -> None:
    settings = Settings(
        bootstrap="broker:9092",
        kafka_extra={
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "PLAIN",
            "sasl.username": "moments",
            "sasl.password": SASL,
            "sasl.oauthbearer.client.secret": OAUTH,
        },
        schema_registry_url=f"https://moments:{REGISTRY_PW}@registry:8081",
        webhook_urls={
            "care": f"https://hooks.example/care?token={HOOK_TOKEN}",
            "crm": f"https://{HOOK_TOKEN}@hooks.example/crm",
            "feedback": f"https://hooks.example/services/T0/B0/{HOOK_TOKEN}",
        },
        api_keys=[SecretStr(API_KEY)],
        database_url=f"postgresql://moments:{DB_PW}@db/moments",
    )
    text = repr(settings) + str(settings)
    for secret in (SASL, REGISTRY_PW, HOOK_TOKEN, API_KEY, DB_PW, OAUTH):
        assert secret not in text, secret
    assert "SASL_SSL" in text and "registry:8081" in text and "hooks.example" in text
    # the values themselves are intact for the clients
    assert settings.kafka_config()["sasl.password"] == SASL
    assert REGISTRY_PW in (settings.kafka.schema_registry_url or "")
    assert HOOK_TOKEN in settings.as_env()["MOMENTS_WEBHOOK_URLS"]


def test_publish_errors_name_the_key_by_its_hash_only() -> None:
    error = PublishError("interactions", "CUST-SECRET-9", "Local: Message timed out", more=2)
    assert "CUST-SECRET-9" not in str(error) and "CUST-SECRET-9" not in repr(error)
    assert keyed_customer_hash("CUST-SECRET-9") in str(error)
    assert error.key == "CUST-SECRET-9"  # the caller still knows which one failed


def test_topics_are_created_with_retention() -> None:
    settings = Settings(retention_days=7)
    seven_days = str(7 * 86_400_000)
    for name in settings.topics.all():
        if name == settings.topics.erasures:  # compacted, ages out a day later (test_erasure)
            continue
        assert topic_config(settings, name) == {"retention.ms": seven_days}, name


def test_keyed_customer_hash_is_an_hmac_under_the_deployment_key() -> None:
    try:
        set_id_hash_key("deployment-secret")
        first = keyed_customer_hash("C-37")
        assert first == hmac.new(b"deployment-secret", b"C-37", hashlib.sha256).hexdigest()
        assert first != hashlib.sha256(b"C-37").hexdigest() and "C-37" not in first
        assert keyed_customer_hash("C-37") == first  # stable: lines can be correlated
        set_id_hash_key("another-secret")
        assert keyed_customer_hash("C-37") != first
    finally:
        set_id_hash_key(None)


def test_keyed_customer_hash_reads_moments_id_hash_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOMENTS_ID_HASH_KEY", "from-the-environment")
    set_id_hash_key(None)
    try:
        expected = hmac.new(b"from-the-environment", b"C-37", hashlib.sha256).hexdigest()
        assert keyed_customer_hash("C-37") == expected
    finally:
        set_id_hash_key(None)


def test_without_a_key_the_hash_is_still_keyed(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("MOMENTS_ID_HASH_KEY", raising=False)
    set_id_hash_key(None)
    try:
        hashed = keyed_customer_hash("C-37")
        assert hashed != hashlib.sha256(b"C-37").hexdigest()
        assert "MOMENTS_ID_HASH_KEY is not set" in caplog.text
    finally:
        set_id_hash_key(None)
