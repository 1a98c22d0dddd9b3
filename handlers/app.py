"""Assembles the application: the services every handler gets, and the one URL table."""
import dataclasses

import tornado.web

from domain.accounts import Accounts
from domain.mailer import make_mailer
from domain.passwords import PasswordHasher
from domain.store import Store
from domain.tokens import TokenIssuer
from domain.validation import Validator, load_schemas
from handlers import auth, feed, openapi, ops, users
from handlers.base import NotFoundHandler
from handlers.logs import log_request


@dataclasses.dataclass
class Services:
    settings: object
    store: Store
    validator: Validator
    accounts: Accounts
    mailer: object
    inflight: int = 0  # requests being handled, so shutdown can wait for them
    openapi: dict = None


def build_services(settings, store=None, mailer=None):
    store = store or Store.connect(settings.mongo_uri, settings.mongo_dbname, settings.mongo_timeout_ms)
    mailer = mailer or make_mailer(settings)
    accounts = Accounts(store, settings, PasswordHasher(settings.bcrypt_rounds),
                        TokenIssuer(settings.jwt_secret_key, settings.jwt_lifetime_seconds), mailer)
    validator = Validator(load_schemas())
    return Services(settings=settings, store=store, validator=validator, accounts=accounts, mailer=mailer,
                    openapi=openapi.build_openapi(route_table(), validator.schemas))


def route_table():
    """(pattern, handler class) for every route; the OpenAPI document is built from this too."""
    # auth before users: /api/v1/users/me must win over /api/v1/users/<id>.
    return [*auth.ROUTES, *users.ROUTES, *feed.ROUTES, *ops.ROUTES, *openapi.ROUTES]


def make_app(services):
    handlers = [(pattern, cls, dict(services=services, route=pattern)) for pattern, cls in route_table()]
    return tornado.web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        default_handler_args=dict(services=services),
        log_function=log_request,
        debug=False,
        compress_response=False,
    )
