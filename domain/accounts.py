"""Accounts: registration, login, token revocation and password reset."""
import asyncio
import datetime
import hashlib
import ipaddress
import logging
import secrets
import urllib.parse

from domain.errors import Conflict, InvalidInput, NotAuthenticated, RateLimited, StoreUnavailable
from domain.passwords import MAX_PASSWORD_BYTES
from domain.ratelimit import TokenBucketLimiter
from domain.repositories import AlreadyTaken
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
        password_hash = await self.hasher.hash(password)
        try:
            user = await self.store.users.add(username, email, role, password_hash, self.clock())
        except AlreadyTaken as taken:
            raise Conflict(f"That {taken.field} is already registered.", code=f"{taken.field}_taken") from None
        return user, self.tokens.issue(user["id"], role)

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
        user = await self.store.users.find_by_email(email)
        stored_hash = user["password_hash"] if user else None
        if not await self.hasher.verify(password, stored_hash) or user is None:
            raise NotAuthenticated(BAD_CREDENTIALS, code="bad_credentials")
        self._failures_by_email.reset(email_key)
        self._failures_by_address.refund(address_key)
        return user, self.tokens.issue(user["id"], user["role"] or "attendee")

    async def authenticate(self, token):
        """The user and claims behind a token that is genuine, unexpired and not revoked."""
        claims = self.tokens.decode(token)
        if await self.store.revoked_tokens.is_revoked(claims["jti"]):
            raise NotAuthenticated("The token has been revoked.", code="token_revoked")
        user = await self.store.users.get(claims["sub"])
        if user is None:
            raise NotAuthenticated("The token is not valid.", code="token_invalid")
        valid_after = user["tokens_valid_after"]
        if valid_after is not None and claims["iat"] < as_utc(valid_after).timestamp():
            raise NotAuthenticated("The token has been revoked.", code="token_revoked")
        return user, claims

    async def logout(self, claims):
        # Idempotent, so logging out twice is harmless; kept only until the token would expire anyway.
        expires_at = datetime.datetime.fromtimestamp(claims["exp"], UTC)
        await self.store.revoked_tokens.revoke(claims["jti"], claims["sub"], expires_at)
        self._notify_revoked(claims["sub"], jti=claims["jti"])

    async def request_password_reset(self, email):
        """Same answer, and the same work on the request path, whether or not the email exists:
        one lookup. Storing the token and mailing it happen in the background, so neither a slow
        write nor a slow mail server makes a registered email answer later than an unknown one."""
        user = await self.store.users.find_by_email(email)
        # Over the cap the answer stays the same: a 429 here would tell which emails are registered.
        if user is not None and not self._reset_emails.hit(email.lower()):
            self._in_background(self._issue_reset_token(user))
        return FORGOT_ANSWER

    async def _issue_reset_token(self, user):
        token = secrets.token_urlsafe(32)
        expires_at = self.clock() + datetime.timedelta(seconds=self.settings.reset_token_lifetime_seconds)
        try:
            await self.store.reset_tokens.add(_reset_token_digest(token), user["id"], expires_at)
        except StoreUnavailable:
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
        # take() is single use: of two resets racing with one token, only one gets the user.
        user_id = await self.store.reset_tokens.take(_reset_token_digest(token), self.clock())
        if user_id is None:
            raise NotAuthenticated("The reset token is not valid or has expired.", code="invalid_reset_token")
        password_hash = await self.hasher.hash(new_password)
        now = self.clock()
        await self.store.users.set_password(user_id, password_hash, now)
        await self.store.reset_tokens.drop_all(user_id)
        self._notify_revoked(user_id, issued_before=now.timestamp())

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
