"""Settings: the file, the environment, and refusals that name the setting."""
import subprocess
import sys

import pytest

from domain.settings import SettingsError, load_settings
from tests.conftest import ROOT

SETTINGS = ROOT / "settings.yaml"
STRONG = "s" * 40
# What production must name besides its secrets.
PRODUCTION = {"ENV": "production", "SECRET_KEY": STRONG, "JWT_SECRET_KEY": STRONG,
              "SQLITE_PATH": "/var/lib/event-server/events.sqlite3", "ADDRESS": "127.0.0.1",
              "PUBLIC_BASE_URL": "https://events.example.com", "METRICS_ALLOWED_ADDRESSES": "127.0.0.1"}


def test_defaults_come_from_settings_yaml():
    settings = load_settings(SETTINGS, environ={})
    assert settings.port == 5000 and settings.mongo_dbname == "event_management"
    assert settings.bcrypt_rounds == 12 and settings.max_body_bytes == 1024 * 1024


def test_the_old_backends_environment_names_override_the_file():
    settings = load_settings(SETTINGS, environ={
        "MONGO_DBNAME": "legacy", "PORT": "8080", "CLOUD_STORAGE_BUCKET": "photos",
        "MAIL_SERVER": "smtp.example.com", "ALLOWED_ORIGINS": "https://a.example, https://b.example",
        "MAIL_USE_TLS": "true"})
    assert settings.mongo_dbname == "legacy" and settings.port == 8080
    assert settings.cloud_storage_bucket == "photos" and settings.mail_server == "smtp.example.com"
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]
    assert settings.mail_use_tls is True


@pytest.mark.parametrize("environ, named", [
    ({"PORT": "eighty"}, "setting port (from PORT)"),
    ({"PORT": "0"}, "setting port (from PORT)"),
    ({"BCRYPT_LOG_ROUNDS": "3"}, "setting bcrypt_rounds"),
    ({"ENV": "staging"}, "setting env"),
    ({"MAIL_USE_TLS": "perhaps"}, "setting mail_use_tls"),
    ({"TRUSTED_PROXIES": "10.0.0.1, proxy.local"}, "setting trusted_proxies"),
    ({"METRICS_ALLOWED_ADDRESSES": "10.0.0.0/33"}, "setting metrics_allowed_addresses"),
    ({"PUBLIC_BASE_URL": "events.example.com"}, "setting public_base_url"),
    ({"RESET_LINK": "myapp://reset"}, "setting reset_link (from RESET_LINK): 'myapp://reset' must contain {token}"),
    ({"RESET_LINK": "reset?token={token}"}, "setting reset_link"),
    ({"LISTEN_BACKLOG": "0"}, "setting listen_backlog"),
    ({"LISTEN_BACKLOG": "100000"}, "setting listen_backlog"),
])
def test_a_bad_value_is_refused_naming_the_setting(environ, named):
    with pytest.raises(SettingsError) as refused:
        load_settings(SETTINGS, environ=environ)
    assert str(refused.value).startswith(named)


def test_s3_storage_needs_a_bucket():
    with pytest.raises(SettingsError, match="setting cloud_storage_bucket"):
        load_settings(SETTINGS, environ={"STORAGE_BACKEND": "s3"})


def test_an_unknown_key_in_the_file_is_refused(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text(SETTINGS.read_text() + "\nprot: 80\n")
    with pytest.raises(SettingsError, match="setting prot: unknown"):
        load_settings(path, environ={})


def test_production_refuses_missing_placeholder_or_short_secrets():
    for secret in ("", "changeme", "short-secret"):
        with pytest.raises(SettingsError, match="setting secret_key"):
            load_settings(SETTINGS, environ={"ENV": "production", "SECRET_KEY": secret, "JWT_SECRET_KEY": STRONG})
    with pytest.raises(SettingsError, match="setting jwt_secret_key"):
        load_settings(SETTINGS, environ={"ENV": "production", "SECRET_KEY": STRONG})
    settings = load_settings(SETTINGS, environ={**PRODUCTION, "SECRET_KEY": STRONG, "JWT_SECRET_KEY": STRONG})
    assert settings.jwt_secret_key == STRONG and not settings.generated_secrets


def test_development_generates_random_secrets_per_process():
    first, second = load_settings(SETTINGS, environ={}), load_settings(SETTINGS, environ={})
    assert first.generated_secrets and len(first.jwt_secret_key) >= 32
    assert first.jwt_secret_key != second.jwt_secret_key
    assert STRONG not in repr(load_settings(SETTINGS, environ={"SECRET_KEY": STRONG}))


def test_the_server_stops_with_one_line_naming_a_bad_setting(tmp_path):
    bad = tmp_path / "settings.yaml"
    bad.write_text(SETTINGS.read_text().replace("port: 5000", "port: lots"))
    result = subprocess.run([sys.executable, "server.py", "--settings", str(bad)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"cannot start: setting port (from {bad}): 'lots' is not a valid int"]


def test_the_server_refuses_to_start_in_production_without_secrets():
    result = subprocess.run([sys.executable, "server.py"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"ENV": "production", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "setting secret_key (SECRET_KEY)" in result.stderr


# --- where the server listens, and the links it hands out ----------------------------------------

def test_development_listens_on_this_machine_only_unless_told_otherwise():
    assert load_settings(SETTINGS, environ={}).address == "127.0.0.1"
    assert load_settings(SETTINGS, environ={"ADDRESS": "0.0.0.0"}).address == "0.0.0.0"
    assert load_settings(SETTINGS, environ={"ADDRESS": "0.0.0.0"}, address="::1").address == "::1"


@pytest.mark.parametrize("environ, overrides, base", [
    ({}, {}, "http://127.0.0.1:5000"),
    ({"PORT": "8081"}, {"port": 8080}, "http://127.0.0.1:8080"),  # --port wins over PORT, links follow it
    ({}, {"address": "0.0.0.0", "port": 8080}, "http://localhost:8080"),
    ({"ADDRESS": "::"}, {}, "http://localhost:5000"),
    ({}, {"address": "::1", "port": 8080}, "http://[::1]:8080"),
    ({"ADDRESS": "192.0.2.7"}, {}, "http://192.0.2.7:5000"),
    ({"PUBLIC_BASE_URL": "https://events.example.com/"}, {"port": 8080}, "https://events.example.com"),
])
def test_without_public_base_url_links_follow_the_address_and_port_listened_on(environ, overrides, base):
    assert load_settings(SETTINGS, environ=environ, **overrides).public_base_url == base


def test_a_reset_link_may_be_an_apps_deep_link():
    settings = load_settings(SETTINGS, environ={"RESET_LINK": "myapp://reset?token={token}"})
    assert settings.reset_link == "myapp://reset?token={token}"


@pytest.mark.parametrize("left_out, named", [
    ("ADDRESS", "setting address (ADDRESS or --address): production needs the interface to listen on"),
    ("PUBLIC_BASE_URL", "setting public_base_url (PUBLIC_BASE_URL): production needs the address clients reach"),
    ("METRICS_ALLOWED_ADDRESSES", "setting metrics_token (METRICS_TOKEN) or metrics_allowed_addresses"),
])
def test_production_names_its_address_its_public_url_and_who_reads_metrics(left_out, named):
    environ = {name: value for name, value in PRODUCTION.items() if name != left_out}
    with pytest.raises(SettingsError) as refused:
        load_settings(SETTINGS, environ=environ)
    assert str(refused.value).startswith(named)


def test_production_takes_any_one_of_its_choices():
    assert load_settings(SETTINGS, environ=PRODUCTION, address="0.0.0.0").address == "0.0.0.0"  # --address
    token_only = {**PRODUCTION, "METRICS_ALLOWED_ADDRESSES": "", "METRICS_TOKEN": STRONG}
    assert load_settings(SETTINGS, environ=token_only).metrics_token == STRONG
    # An app's deep link and photos on S3 behind a CDN: calendar feed addresses still need it.
    no_base = {**PRODUCTION, "PUBLIC_BASE_URL": "", "RESET_LINK": "myapp://reset?token={token}",
               "STORAGE_BACKEND": "s3", "CLOUD_STORAGE_BUCKET": "photos"}
    with pytest.raises(SettingsError) as refused:
        load_settings(SETTINGS, environ=no_base)
    assert str(refused.value).startswith("setting public_base_url (PUBLIC_BASE_URL)")
