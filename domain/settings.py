"""Settings: read once at start from settings.yaml and the environment into one frozen object.

Every setting is declared once below, with its type, its environment variable (the old Flask
backend's name where it had one) and its check. A wrong value raises SettingsError, whose
text is the one line the operator sees.
"""
import dataclasses
import ipaddress
import os
import re
import secrets

import yaml


class SettingsError(Exception):
    pass


TOKEN_PLACEHOLDER = "{token}"


def _positive(value):
    return value > 0 or "must be greater than 0"


def _non_negative(value):
    return value >= 0 or "must be 0 or more"


def _one_of(*choices):
    return lambda value: value in choices or f"must be one of {', '.join(choices)}"


def _between(low, high):
    return lambda value: low <= value <= high or f"must be between {low} and {high}"


def _addresses(values):
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            return f"has {value!r}, which is not an IP address or network"
    return True


def _link_template(value):
    # Any scheme: an app's deep link (myapp://reset?token={token}) as well as https://. A link
    # without the token would send every user a link that cannot reset anything.
    if not value:
        return True
    if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", value):
        return "must be a link with a scheme (https://..., myapp://...)"
    return TOKEN_PLACEHOLDER in value or f"must contain {TOKEN_PLACEHOLDER}, where the reset token goes"


def _redis_url(value):
    # Empty: one process, everything in memory. Otherwise redis-py's URL forms.
    return not value or value.startswith(("redis://", "rediss://", "unix://")) or \
        "must start with redis://, rediss:// or unix://"


@dataclasses.dataclass(frozen=True)
class Spec:
    type: type
    env: str
    check: object = None


SPECS = {
    "env": Spec(str, "ENV", _one_of("development", "production")),
    "address": Spec(str, "ADDRESS"),
    "port": Spec(int, "PORT", _between(1, 65535)),
    "public_base_url": Spec(str, "PUBLIC_BASE_URL",
                            lambda v: not v or v.startswith(("http://", "https://"))
                            or "must start with http:// or https://"),
    "shutdown_grace_seconds": Spec(float, "SHUTDOWN_GRACE_SECONDS", _non_negative),
    "log_level": Spec(str, "LOG_LEVEL", _one_of("DEBUG", "INFO", "WARNING", "ERROR")),
    "trusted_proxies": Spec(list, "TRUSTED_PROXIES", _addresses),
    "allowed_origins": Spec(list, "ALLOWED_ORIGINS"),
    "secret_key": Spec(str, "SECRET_KEY"),
    "jwt_secret_key": Spec(str, "JWT_SECRET_KEY"),
    "jwt_lifetime_seconds": Spec(int, "JWT_ACCESS_TOKEN_EXPIRES", _between(60, 30 * 86400)),
    "mongo_uri": Spec(str, "MONGO_URI"),
    "mongo_dbname": Spec(str, "MONGO_DBNAME", lambda v: bool(v) or "must not be empty"),
    "mongo_timeout_ms": Spec(int, "MONGO_TIMEOUT_MS", _positive),
    "sqlite_path": Spec(str, "SQLITE_PATH"),
    "bcrypt_rounds": Spec(int, "BCRYPT_LOG_ROUNDS", _between(4, 16)),
    "login_attempts_per_email": Spec(int, "LOGIN_ATTEMPTS_PER_EMAIL", _positive),
    "login_attempts_per_address": Spec(int, "LOGIN_ATTEMPTS_PER_ADDRESS", _positive),
    "login_attempts_per_account": Spec(int, "LOGIN_ATTEMPTS_PER_ACCOUNT", _positive),
    "login_window_seconds": Spec(int, "LOGIN_WINDOW_SECONDS", _positive),
    "login_backoff_max_seconds": Spec(int, "LOGIN_BACKOFF_MAX_SECONDS", _positive),
    "registrations_per_address": Spec(int, "REGISTRATIONS_PER_ADDRESS", _positive),
    "registration_window_seconds": Spec(int, "REGISTRATION_WINDOW_SECONDS", _positive),
    "reset_token_lifetime_seconds": Spec(int, "RESET_TOKEN_LIFETIME_SECONDS", _positive),
    "reset_link": Spec(str, "RESET_LINK", _link_template),
    "mail_backend": Spec(str, "MAIL_BACKEND", _one_of("console", "smtp")),
    "mail_server": Spec(str, "MAIL_SERVER"),
    "mail_port": Spec(int, "MAIL_PORT", _between(1, 65535)),
    "mail_use_tls": Spec(bool, "MAIL_USE_TLS"),
    "mail_username": Spec(str, "MAIL_USERNAME"),
    "mail_password": Spec(str, "MAIL_PASSWORD"),
    "mail_default_sender": Spec(str, "MAIL_DEFAULT_SENDER", lambda v: "@" in v or "must be an email address"),
    "max_body_bytes": Spec(int, "MAX_BODY_BYTES", _positive),
    "header_timeout_seconds": Spec(float, "HEADER_TIMEOUT_SECONDS", _positive),
    "body_timeout_seconds": Spec(float, "BODY_TIMEOUT_SECONDS", _positive),
    "max_connections_per_address": Spec(int, "MAX_CONNECTIONS_PER_ADDRESS", _positive),
    "listen_backlog": Spec(int, "LISTEN_BACKLOG", _between(1, 65535)),
    "arrival_opens_minutes_before": Spec(int, "ARRIVAL_OPENS_MINUTES_BEFORE", _non_negative),
    "arrival_accuracy_cap_m": Spec(float, "ARRIVAL_ACCURACY_CAP_M", _non_negative),
    "default_event_hours": Spec(float, "DEFAULT_EVENT_HOURS", _positive),
    "chat_ping_interval_seconds": Spec(float, "CHAT_PING_INTERVAL_SECONDS", _positive),
    "chat_max_connections_per_user": Spec(int, "CHAT_MAX_CONNECTIONS_PER_USER", _positive),
    "chat_messages_per_second": Spec(float, "CHAT_MESSAGES_PER_SECOND", _positive),
    "chat_burst": Spec(int, "CHAT_BURST", _positive),
    "chat_max_buffer_bytes": Spec(int, "CHAT_MAX_BUFFER_BYTES", _positive),
    "redis_url": Spec(str, "REDIS_URL", _redis_url),
    "photo_max_bytes": Spec(int, "PHOTO_MAX_BYTES", _positive),
    "photo_decode_cpu_seconds": Spec(float, "PHOTO_DECODE_CPU_SECONDS", _positive),
    "photo_decode_workers": Spec(int, "PHOTO_DECODE_WORKERS", _positive),
    "storage_backend": Spec(str, "STORAGE_BACKEND", _one_of("local", "s3")),
    "media_root": Spec(str, "MEDIA_ROOT", lambda v: bool(v) or "must not be empty"),
    "cloud_storage_bucket": Spec(str, "CLOUD_STORAGE_BUCKET"),
    "s3_region": Spec(str, "AWS_REGION"),
    "s3_endpoint_url": Spec(str, "S3_ENDPOINT_URL"),
    "s3_public_base_url": Spec(str, "S3_PUBLIC_BASE_URL"),
    "metrics_token": Spec(str, "METRICS_TOKEN"),
    "metrics_allowed_addresses": Spec(list, "METRICS_ALLOWED_ADDRESSES", _addresses),
}

Settings = dataclasses.make_dataclass(
    "Settings",
    [(name, spec.type) for name, spec in SPECS.items()] + [("generated_secrets", bool, False)],
    frozen=True,
)
Settings.__doc__ = "All settings, read once at start. Secrets are kept out of repr."
Settings.__repr__ = lambda self: "Settings(env=%r, port=%r, store=%s)" % (
    self.env, self.port, "mongodb" if self.mongo_uri else f"sqlite {self.sqlite_path}")

# Where development keeps its data when sqlite_path is left empty.
DEVELOPMENT_SQLITE_PATH = "data/events.sqlite3"
# Where development listens when address is left empty: this machine only.
DEVELOPMENT_ADDRESS = "127.0.0.1"
# Addresses that mean "every interface": a link cannot name them, it names this machine instead.
WILDCARD_ADDRESSES = {"0.0.0.0", "::"}
PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "your-secret-key", "dev", "development"}
MIN_SECRET_BYTES = 32


def load_settings(path, environ=None, **overrides):
    """Reads the YAML file, applies the environment, then explicit overrides (command line)."""
    environ = os.environ if environ is None else environ
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f) or {}
    except OSError as e:
        raise SettingsError(f"settings file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise SettingsError(f"settings file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise SettingsError(f"settings file {path} must be a mapping of setting names to values")
    unknown = sorted(set(raw) - set(SPECS))
    if unknown:
        raise SettingsError(f"setting {unknown[0]}: unknown setting in {path}")
    missing = sorted(set(SPECS) - set(raw))
    if missing:
        raise SettingsError(f"setting {missing[0]}: missing from {path}")

    values = {}
    for name, spec in SPECS.items():
        value, source = raw[name], path
        if spec.env in environ:
            value, source = _from_env(environ[spec.env], spec.type), spec.env
        if name in overrides and overrides[name] is not None:
            value, source = overrides[name], "command line"
        values[name] = _checked(name, spec, value, source)
    if values["storage_backend"] == "s3" and not values["cloud_storage_bucket"]:
        raise SettingsError("setting cloud_storage_bucket (CLOUD_STORAGE_BUCKET): storage_backend s3 needs a bucket")
    return _with_public_base_url(_with_exposure(_with_database(_with_secrets(values))))


def _from_env(text, kind):
    if kind is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if kind is bool:
        lowered = text.strip().lower()
        return {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}.get(lowered, text)
    return text.strip()


def _checked(name, spec, value, source):
    where = f"setting {name} (from {source})"
    if value is None:
        value = [] if spec.type is list else ""
    try:
        if spec.type is bool:
            if not isinstance(value, bool):
                raise ValueError
        elif spec.type is list:
            if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
                raise ValueError
        elif spec.type in (int, float):
            if isinstance(value, bool):
                raise ValueError
            value = spec.type(value)
        else:
            value = str(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: {value!r} is not a valid {spec.type.__name__}") from None
    if spec.check:
        verdict = spec.check(value)
        if verdict is not True:
            raise SettingsError(f"{where}: {value!r} {verdict}")
    return value


def _with_database(settings):
    """Production names its database; development falls back to a file under data/, so that a
    production host never silently keeps its users in a default path inside the checkout."""
    if settings.mongo_uri or settings.sqlite_path:
        return settings
    if settings.env == "production":
        raise SettingsError("setting mongo_uri (MONGO_URI) or sqlite_path (SQLITE_PATH): production needs "
                            "one of them: a MongoDB connection string, or the path of the SQLite file")
    return dataclasses.replace(settings, sqlite_path=DEVELOPMENT_SQLITE_PATH)


def _with_secrets(values):
    """Production refuses weak secrets; development makes random ones for this process."""
    generated = False
    for name in ("secret_key", "jwt_secret_key"):
        secret = values[name]
        weak = secret.strip().lower() in PLACEHOLDER_SECRETS or len(secret.encode()) < MIN_SECRET_BYTES
        if not weak:
            continue
        if values["env"] == "production":
            raise SettingsError(
                f"setting {name} ({SPECS[name].env}): production needs a random secret of at least "
                f"{MIN_SECRET_BYTES} bytes, not a placeholder")
        values[name] = secrets.token_urlsafe(48)
        generated = True
    return Settings(**values, generated_secrets=generated)


def _with_exposure(settings):
    """Development listens on this machine only unless told otherwise. Production names its
    address: where it must listen (127.0.0.1 behind nginx, 0.0.0.0 in a container) is the
    operator's decision, and a guessed default is either unreachable or open to every network.
    Production keeps /metrics closed too: it names the process, its memory and every route."""
    if settings.env == "production":
        if not settings.address:
            raise SettingsError("setting address (ADDRESS or --address): production needs the interface to listen "
                                "on: 127.0.0.1 behind a proxy on this host, 0.0.0.0 in a container")
        if not settings.metrics_token and not settings.metrics_allowed_addresses:
            raise SettingsError("setting metrics_token (METRICS_TOKEN) or metrics_allowed_addresses "
                                "(METRICS_ALLOWED_ADDRESSES): production does not serve /metrics to everyone: "
                                "set a token Prometheus sends, or the addresses it scrapes from")
    if settings.address:
        return settings
    return dataclasses.replace(settings, address=DEVELOPMENT_ADDRESS)


def _with_public_base_url(settings):
    """The one base of the links this server hands out (photo URLs, reset links, calendar feed
    addresses): PUBLIC_BASE_URL, or else the address and port it listens on, after --port and
    --address. Production names it: behind a proxy or a NAT only the operator knows how phones
    reach us, and a link to 127.0.0.1 in a user's mailbox or calendar app leads nowhere (a feed
    address is shown once)."""
    if settings.public_base_url:
        return dataclasses.replace(settings, public_base_url=settings.public_base_url.rstrip("/"))
    if settings.env == "production":
        raise SettingsError("setting public_base_url (PUBLIC_BASE_URL): production needs the address clients "
                            "reach the server at (https://events.example.com): photo URLs, reset links and "
                            "calendar feed addresses are built on it")
    return dataclasses.replace(settings, public_base_url=listening_url(settings.address, settings.port))


def listening_url(address, port):
    """http://<address>:<port>, naming this machine (localhost) for the wildcard addresses."""
    host = "localhost" if address in WILDCARD_ADDRESSES else address
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    return f"http://{host}:{port}"
