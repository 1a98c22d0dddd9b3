"""Assembles the application: the services every handler gets, and the one URL table."""
import dataclasses

import tornado.web

import cluster
from cluster.endings import ClusterEndings
from cluster.limits import RedisLimits
from cluster.pushes import ClusterNotificationHub
from domain.accounts import Accounts
from domain.calendar import Calendars
from domain.events import Events
from domain.gallery import Gallery
from domain.mailer import make_mailer
from domain.moderation import ChatModeration
from domain.notifications import Notifier
from domain.passwords import PasswordHasher
from domain.photo_workers import PhotoWorkers
from domain.repositories import Store
from domain.storage import make_storage
from domain.tokens import TokenIssuer
from domain.validation import Validator, schema_validator
from handlers import (attendees, auth, calendar, chat, docs_page, events, feed, messages, metrics, moderation,
                      notifications, openapi, ops, photos, reset_page, users)
from handlers.base import NotFoundHandler
from handlers.logs import log_request
from handlers.metrics import ServerMetrics
from storage import make_store


@dataclasses.dataclass
class Services:
    settings: object
    store: Store
    validator: Validator
    accounts: Accounts
    mailer: object
    events: Events
    storage: object  # domain.storage.PhotoStorage
    photo_workers: PhotoWorkers
    gallery: Gallery
    chat: chat.ChatService
    moderation: ChatModeration
    notifications: notifications.NotificationService
    calendars: Calendars
    redis: object = None  # a redis.asyncio client when REDIS_URL is set (cluster/), else None
    inflight: int = 0  # requests being handled, so shutdown can wait for them
    openapi: dict = None
    metrics: ServerMetrics = dataclasses.field(default_factory=ServerMetrics)
    # Async callables without arguments, awaited in order on SIGTERM once no new connections are
    # accepted, before requests in flight are waited for: e.g. the chat closes its sockets with 1001.
    shutdown_hooks: list = dataclasses.field(default_factory=list)
    # Async callables without arguments, awaited once the loop runs, before listening: e.g. subscribing
    # to the other processes' endings (cluster/).
    startup_hooks: list = dataclasses.field(default_factory=list)


def build_services(settings, store=None, mailer=None):
    """Everything the handlers use. `store`: an opened store; without one, the store the settings
    name, which the caller opens (`await services.store.open()`) before serving."""
    if store is None:
        store = make_store(settings)
    mailer = mailer or make_mailer(settings)
    accounts = Accounts(store, settings, PasswordHasher(settings.bcrypt_rounds),
                        TokenIssuer(settings.jwt_secret_key, settings.jwt_lifetime_seconds), mailer)
    validator = schema_validator()
    storage = photo_storage(settings)
    photo_workers = PhotoWorkers(settings.photo_decode_cpu_seconds, settings.photo_decode_workers)
    gallery = Gallery(store, storage, photo_workers)
    notification_service = notifications.NotificationService(settings, Notifier(store, mailer))
    events_service = Events(store, settings, notification_service.notifier)
    server_metrics = ServerMetrics()
    redis = cluster.connect(settings.redis_url)
    chat_service = chat.ChatService(settings, store, server_metrics, redis)
    revoked = [chat_service.sockets.close_revoked, notification_service.sockets.close_revoked]
    left, deleted, moderated = [chat_service.close_member], [chat_service.close_event], [chat_service.moderated]
    accounts.revocation_listeners.extend(revoked)
    events_service.deleted_listeners.extend(deleted)
    events_service.deleted_cleanups.append(gallery.delete_event_photos)
    events_service.left_listeners.extend(left)
    events_service.online_counter = chat_service.online_counts
    chat_moderation = ChatModeration(store, list(moderated))
    services = Services(settings=settings, store=store, validator=validator, accounts=accounts, mailer=mailer,
                        events=events_service, storage=storage, photo_workers=photo_workers, gallery=gallery,
                        chat=chat_service, moderation=chat_moderation, notifications=notification_service,
                        calendars=Calendars(store, settings), redis=redis,
                        metrics=server_metrics, shutdown_hooks=[chat_service.shutdown, events_service.background.drain,
                                                                notification_service.shutdown],
                        openapi=openapi.build_openapi(route_table(), validator.schemas, websocket=chat.CHAT_PROTOCOL,
                                                      notifications_websocket=notifications.NOTIFICATIONS_PROTOCOL))
    services.metrics.in_flight.set_function(lambda: services.inflight)
    if services.redis is not None:
        # The chat's broker was made Redis's by ChatService (cluster/chat_broker.py).
        services.startup_hooks.append(chat_service.broker.start)
        services.shutdown_hooks.append(chat_service.broker.close)
        share_endings(services, revoked, left, deleted, moderated)
        share_pushes(services)
        share_limits(services)
    return services


def share_limits(services):
    """Several processes: login limits, connection caps and the chat's frame buckets held in Redis
    for all of them (cluster/limits.py)."""
    limits = RedisLimits(services.redis, services.metrics.redis_failures)
    services.accounts.shared_limits = limits
    services.chat.sockets.shared = limits
    services.notifications.sockets.shared = limits
    services.startup_hooks.append(limits.start)
    services.shutdown_hooks.append(limits.stop)


def share_endings(services, revoked, left, deleted, moderated):
    """Several processes: endings happening here are published to the others, and theirs are
    applied here through the same listeners (cluster/endings.py)."""
    async def recheck():
        await services.chat.sockets.recheck(services.accounts.still_valid)
        await services.notifications.sockets.recheck(services.accounts.still_valid)
        await services.chat.recheck_members()

    endings = ClusterEndings(services.redis, revoked, left, deleted, moderated, recheck,
                             services.metrics.redis_failures)
    services.accounts.revocation_listeners.append(endings.revoked)
    services.events.deleted_listeners.append(endings.deleted)
    services.events.left_listeners.append(endings.left)
    services.moderation.listeners.append(endings.moderated)
    services.startup_hooks.append(endings.start)
    services.shutdown_hooks.append(endings.stop)


def share_pushes(services):
    """Several processes: a notification stored here is pushed to the user's sockets on all of
    them (cluster/pushes.py)."""
    hub = ClusterNotificationHub(services.redis, services.notifications.hub, services.metrics.redis_failures)
    services.notifications.notifier.push = hub.push
    services.startup_hooks.append(hub.start)
    services.shutdown_hooks.append(hub.stop)


def photo_storage(settings):
    """The photo storage the settings name; the gallery starts it on the first upload."""
    if settings.storage_backend == "s3":
        # Credentials come from the usual AWS sources (environment, shared files, instance role).
        return make_storage("s3", bucket=settings.cloud_storage_bucket, region=settings.s3_region,
                            endpoint_url=settings.s3_endpoint_url or None,
                            public_base_url=settings.s3_public_base_url or None)
    return make_storage("local", root_dir=settings.media_root, public_base_url=settings.public_base_url)


def route_table():
    """(pattern, handler class) for every route; the OpenAPI document is built from this too."""
    # auth before users: /api/v1/users/me must win over /api/v1/users/<id>.
    return [*auth.ROUTES, *calendar.ROUTES, *users.ROUTES, *events.ROUTES, *attendees.ROUTES, *photos.ROUTES,
            *messages.ROUTES, *moderation.ROUTES, *chat.ROUTES, *notifications.ROUTES, *feed.ROUTES, *ops.ROUTES,
            *openapi.ROUTES,
            *metrics.ROUTES, *docs_page.ROUTES, *reset_page.ROUTES]


def make_app(services):
    def request_finished(handler):
        log_request(handler)
        services.metrics.observe_request(handler)

    handlers = [(pattern, cls, dict(services=services, route=pattern)) for pattern, cls in route_table()]
    return tornado.web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        default_handler_args=dict(services=services),
        log_function=request_finished,
        debug=False,
        compress_response=False,
    )
