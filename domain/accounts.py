"""Accounts: registration, login, token revocation and password reset."""
import asyncio
import datetime
import hashlib
import ipaddress
import logging
import secrets
import urllib.parse

from domain import store as db
from domain.errors import Conflict, InvalidInput, NotAuthenticated, RateLimited
from domain.passwords import MAX_PASSWORD_BYTES
from domain.ratelimit import TokenBucketLimiter
from domain.times import UTC, as_utc, utcnow

log = logging.getLogger("accounts")

BAD_CREDENTIALS = "The email or password is incorrect."
FORGOT_ANSWER = "If that email is registered, a reset link is on its way."
# Reset emails one address receives per reset token lifetime: enough for a lost email or two,
# too few to flood a mailbox (or run up the mail bill) by asking again and again.
RESET_EMAILS_PER_LIFETIME = 3


def _reset_token_digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def _address_key(address):
    """IPv4 addresses count one by one; IPv6 by /64, the block one subscriber is usually given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def check_password_length(password, path="/password"):
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidInput("The password is too long.", errors=[{
            "path": path, "message": f"must be at most {MAX_PASSWORD_BYTES} bytes (bcrypt's limit)"}],
            code="password_too_long")


class Accounts:
    def __init__(self, store, settings, hasher, tokens, mailer, clock=utcnow):
        self.store = store
        self.settings = settings
        self.hasher = hasher
        self.tokens = tokens
        self.mailer = mailer
        self.clock = clock
        window = settings.login_window_seconds
        self._failures_by_email = TokenBucketLimiter(
            settings.login_attempts_per_email, settings.login_attempts_per_email / window)
        self._failures_by_address = TokenBucketLimiter(
            settings.login_attempts_per_address, settings.login_attempts_per_address / window)
        self._reset_emails = TokenBucketLimiter(
            RESET_EMAILS_PER_LIFETIME, RESET_EMAILS_PER_LIFETIME / settings.reset_token_lifetime_seconds)
        # Called as listener(user_id, jti=None, issued_before=None) when tokens stop working,
        # so live connections opened with them can be closed.
        self.revocation_listeners = []
        self._background = set()

    async def register(self, username, email, password, role="attendee"):
        check_password_length(password)
        now = self.clock()
        user = {
            "username": username, "email": email, "role": role,
            "username_lower": username.lower(), "email_lower": email.lower(),
            "password_hash": await self.hasher.hash(password),
            "following": [], "followers": [], "created_events": [], "rsvped_events": [],
            "created_at": now,
        }
        try:
            result = await self.store.users.insert_one(user)
        except db.DuplicateKeyError:
            taken = await self.store.users.find_one({"email_lower": email.lower()}, {"_id": 1})
            field = "email" if taken else "username"
            raise Conflict(f"That {field} is already registered.", code=f"{field}_taken") from None
        user["_id"] = result.inserted_id
        return user, self.tokens.issue(user["_id"], role)

    async def login(self, email, password, client_address):
        email_key, address_key = email.lower(), _address_key(client_address)
        # Every attempt takes its tokens before the first await and only a success gives them
        # back: attempts sent in parallel cannot all pass the check before any failure counts.
        wait = max(self._failures_by_email.retry_after(email_key),
                   self._failures_by_address.retry_after(address_key))
        if wait:
            raise RateLimited(wait, "Too many failed logins. Try again later.")
        self._failures_by_email.hit(email_key)
        self._failures_by_address.hit(address_key)
        user = await self.store.users.find_one({"email_lower": email_key})
        stored_hash = user.get("password_hash") if user else None
        if not await self.hasher.verify(password, stored_hash) or user is None:
            raise NotAuthenticated(BAD_CREDENTIALS, code="bad_credentials")
        self._failures_by_email.reset(email_key)
        self._failures_by_address.refund(address_key)
        return user, self.tokens.issue(user["_id"], user.get("role", "attendee"))

    async def authenticate(self, token):
        """The user and claims behind a token that is genuine, unexpired and not revoked."""
        claims = self.tokens.decode(token)
        user_id = db.parse_id(claims["sub"])
        if user_id is None:
            raise NotAuthenticated("The token is not valid.", code="token_invalid")
        if await self.store.revoked_tokens.find_one({"_id": claims["jti"]}, {"_id": 1}):
            raise NotAuthenticated("The token has been revoked.", code="token_revoked")
        user = await self.store.users.find_one({"_id": user_id})
        if user is None:
            raise NotAuthenticated("The token is not valid.", code="token_invalid")
        valid_after = user.get("tokens_valid_after")
        if valid_after is not None and claims["iat"] < as_utc(valid_after).timestamp():
            raise NotAuthenticated("The token has been revoked.", code="token_revoked")
        return user, claims

    async def logout(self, claims):
        expires_at = datetime.datetime.fromtimestamp(claims["exp"], UTC)
        # An upsert keyed by jti: logging out twice is harmless, and the TTL index forgets it after expiry.
        await self.store.revoked_tokens.update_one(
            {"_id": claims["jti"]},
            {"$setOnInsert": {"user_id": db.parse_id(claims["sub"]), "expires_at": expires_at}},
            upsert=True)
        self._notify_revoked(claims["sub"], jti=claims["jti"])

    async def request_password_reset(self, email):
        """Same answer, and the same work on the request path, whether or not the email exists:
        one lookup. Storing the token and mailing it happen in the background, so neither a slow
        write nor a slow mail server makes a registered email answer later than an unknown one."""
        user = await self.store.users.find_one({"email_lower": email.lower()}, {"email": 1})
        # Over the cap the answer stays the same: a 429 here would tell which emails are registered.
        if user is not None and not self._reset_emails.hit(email.lower()):
            self._in_background(self._issue_reset_token(user))
        return FORGOT_ANSWER

    async def _issue_reset_token(self, user):
        token = secrets.token_urlsafe(32)
        try:
            await self.store.reset_tokens.insert_one({
                "_id": _reset_token_digest(token), "user_id": user["_id"],
                "expires_at": self.clock() + datetime.timedelta(seconds=self.settings.reset_token_lifetime_seconds)})
        except db.UNAVAILABLE_ERRORS:
            log.error("password reset token not stored: the database is unavailable")
            return
        await self._send_reset_email(user["email"], token)

    async def _send_reset_email(self, address, token):
        link = f"{self.settings.public_base_url.rstrip('/')}/reset-password?token={urllib.parse.quote(token)}"
        minutes = self.settings.reset_token_lifetime_seconds // 60
        body = (f"Someone asked to reset the password of your account.\n\n"
                f"To choose a new password, open this link within {minutes} minutes:\n{link}\n\n"
                f"Or give this code to the app: {token}\n\n"
                f"If it was not you, ignore this email; your password stays as it is.\n")
        try:
            await self.mailer.send(address, "Reset your password", body)
        except Exception:
            log.exception("password reset email not sent")

    async def reset_password(self, token, new_password):
        check_password_length(new_password)
        # find_one_and_delete makes the token single-use even when two resets race.
        record = await self.store.reset_tokens.find_one_and_delete(
            {"_id": _reset_token_digest(token), "expires_at": {"$gt": self.clock()}})
        if record is None:
            raise NotAuthenticated("The reset token is not valid or has expired.", code="invalid_reset_token")
        password_hash = await self.hasher.hash(new_password)
        now = self.clock()
        await self.store.users.update_one(
            {"_id": record["user_id"]},
            {"$set": {"password_hash": password_hash, "tokens_valid_after": now}})
        await self.store.reset_tokens.delete_many({"user_id": record["user_id"]})
        self._notify_revoked(str(record["user_id"]), issued_before=now.timestamp())

    def _notify_revoked(self, user_id, jti=None, issued_before=None):
        for listener in self.revocation_listeners:
            listener(user_id, jti=jti, issued_before=issued_before)

    def _in_background(self, coroutine):
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self):
        """Waits for background work (emails) to finish; used at shutdown."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
