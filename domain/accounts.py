"""Accounts: registration, login, token revocation and password reset."""
import asyncio
import datetime
import hashlib
import ipaddress
import json
import logging
import secrets
import urllib.parse

from domain.errors import Conflict, InvalidInput, NotAuthenticated, RateLimited, StoreUnavailable
from domain.identity import identity_key, registered_email, registered_username, same_address
from domain.passwords import MAX_PASSWORD_BYTES
from domain.ratelimit import Backoff, ConcurrencyGate, RecentKeys, SharedLimitsDown, TokenBucketLimiter
from domain.repositories import AlreadyTaken
from domain.settings import TOKEN_PLACEHOLDER
from domain.times import UTC, as_utc, utcnow

log = logging.getLogger("accounts")

BAD_CREDENTIALS = "The email or password is incorrect."
FORGOT_ANSWER = "If that email is registered, a reset link is on its way."
# Reset emails one address receives per reset token lifetime: enough for a lost email or two,
# too few to flood a mailbox (or run up the mail bill) by asking again and again.
RESET_EMAILS_PER_LIFETIME = 3
# bcrypt hashes for registrations run on PasswordHasher's yielding threads (at most half the
# cores, at the lowest CPU priority), so a registration flood leaves the cores to logins. At most
# this many wait for one (about two seconds' worth at cost 12); beyond, a registration is refused
# at once rather than left to wait.
REGISTRATIONS_WAITING = 8
REGISTRATION_BUSY_RETRY_SECONDS = 2


def _reset_token_digest(token):
    return hashlib.sha256(token.encode()).hexdigest()


def _address_key(address):
    """IPv4 addresses count one by one; IPv6 by /64, the block one subscriber is usually given.
    An IPv4 client seen through a dual-stack socket (::ffff:a.b.c.d) is that IPv4 address: as
    IPv6 every such client would fall into the one block ::ffff:0:0/64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address or "unknown"
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


def reset_link(settings, token):
    """The link of a reset email: RESET_LINK with the token in place of {token}, or this server's
    page. Built from the settings alone, never from the request: a forged Host header must not
    send the token to someone else's site."""
    template = settings.reset_link or f"{settings.public_base_url}/reset-password#token={TOKEN_PLACEHOLDER}"
    return template.replace(TOKEN_PLACEHOLDER, urllib.parse.quote(token, safe=""))


def _conflict(field):
    return Conflict(f"That {field} is already registered.", code=f"{field}_taken")


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
        # Failed logins count three ways (OWASP's authentication cheat sheet): per account and
        # client address, which stops one client guessing one password; per address, which stops
        # one client trying many accounts; and per account from everywhere, which slows guessing
        # spread over many addresses with a bounded backoff rather than a lockout. Addresses the
        # owner logged in from pass that backoff, so a stranger's failures never lock the owner out.
        self._failures_by_account_and_address = TokenBucketLimiter(
            settings.login_attempts_per_email, settings.login_attempts_per_email / window)
        self._failures_by_address = TokenBucketLimiter(
            settings.login_attempts_per_address, settings.login_attempts_per_address / window)
        self._failures_by_account = Backoff(
            settings.login_attempts_per_account, settings.login_attempts_per_account / window,
            cap=settings.login_backoff_max_seconds)
        self._owners_addresses = RecentKeys()  # (account, address) of successful logins
        self._registrations = TokenBucketLimiter(
            settings.registrations_per_address,
            settings.registrations_per_address / settings.registration_window_seconds)
        self._registration_hashing = ConcurrencyGate(hasher.yielding_threads, REGISTRATIONS_WAITING)
        self._reset_emails = TokenBucketLimiter(
            RESET_EMAILS_PER_LIFETIME, RESET_EMAILS_PER_LIFETIME / settings.reset_token_lifetime_seconds)
        # Called as listener(user_id, jti=None, issued_before=None) when tokens stop working,
        # so live connections opened with them can be closed.
        self.revocation_listeners = []
        # With several processes, the login limits they hold together (cluster/limits.py).
        self.shared_limits = None  # domain.ratelimit.SharedLimits
        self._background = set()

    async def register(self, username, email, password, client_address, role="attendee"):
        check_password_length(password)
        username, email = registered_username(username), registered_email(email)
        wait = self._registrations.hit(_address_key(client_address))
        if wait:
            raise RateLimited(wait, "Too many registrations from your address. Try again later.")
        # A taken email or username is answered before the password is hashed: a 409 costs a
        # lookup, not a bcrypt hash. The insert still decides (a registration racing this one).
        taken = await self.store.users.taken(email, username)
        if taken:
            raise _conflict(taken)
        try:
            async with self._registration_hashing.enter():
                password_hash = await self.hasher.hash(password, yielding=True)
        except ConcurrencyGate.Busy:
            raise RateLimited(REGISTRATION_BUSY_RETRY_SECONDS, "Too many registrations right now. Try again shortly.",
                              code="registrations_busy") from None
        try:
            user = await self.store.users.add(username, email, role, password_hash, self.clock())
        except AlreadyTaken as taken:
            raise _conflict(taken.field) from None
        return user, self.tokens.issue(user["id"], role)

    async def login(self, email, password, client_address):
        account = identity_key(email)
        address = _address_key(client_address)
        pair = (account, address)
        owners_address = pair in self._owners_addresses
        shared = await self._take_login_share(pair, address, account, owners_address)
        user = await self.store.users.find_by_email(email)
        stored_hash = user["password_hash"] if user else None
        if not await self.hasher.verify(password, stored_hash) or user is None:
            raise NotAuthenticated(BAD_CREDENTIALS, code="bad_credentials")
        if shared:
            await self._give_back_shared_login_share(pair, address, account, owners_address)
        else:
            self._failures_by_account_and_address.reset(pair)
            self._failures_by_address.refund(address)
            if not owners_address:
                self._failures_by_account.refund(account)
        self._owners_addresses.add(pair)
        return user, self.tokens.issue(user["id"], user["role"] or "attendee")

    async def _take_login_share(self, pair, address, account, owners_address):
        """Every attempt takes its share before the password is checked and only a success gives it
        back: attempts sent in parallel cannot all pass the check before any failure counts. In one
        process, by taking it before the first await; with several, in one atomic step in the shared
        limits. True when the shared limits took it; with them unreachable, this process's apply."""
        if self.shared_limits is not None:
            buckets, backoffs = self._shared_login_limits(pair, address, account, owners_address)
            try:
                wait = await self.shared_limits.take(buckets, backoffs)
            except SharedLimitsDown:
                wait = None
            if wait is not None:
                if wait:
                    raise RateLimited(wait, "Too many failed logins. Try again later.")
                return True
        wait = max(self._failures_by_account_and_address.retry_after(pair),
                   self._failures_by_address.retry_after(address),
                   0 if owners_address else self._failures_by_account.retry_after(account))
        if wait:
            raise RateLimited(wait, "Too many failed logins. Try again later.")
        self._failures_by_account_and_address.hit(pair)
        self._failures_by_address.hit(address)
        if not owners_address:
            self._failures_by_account.hit(account)
        return False

    def _shared_login_limits(self, pair, address, account, owners_address):
        """The three limits of __init__, as the shared limits take them."""
        settings, window = self.settings, self.settings.login_window_seconds
        buckets = [("login:pair:" + json.dumps(pair), settings.login_attempts_per_email,
                    settings.login_attempts_per_email / window),
                   ("login:address:" + address, settings.login_attempts_per_address,
                    settings.login_attempts_per_address / window)]
        backoffs = [] if owners_address else [("login:account:" + account, settings.login_attempts_per_account,
                                               settings.login_attempts_per_account / window,
                                               settings.login_backoff_max_seconds)]
        return buckets, backoffs

    async def _give_back_shared_login_share(self, pair, address, account, owners_address):
        buckets, backoffs = self._shared_login_limits(pair, address, account, owners_address)
        try:
            await self.shared_limits.give_back(refunds=buckets[1:], resets=[buckets[0][0]], backoff_refunds=backoffs)
        except SharedLimitsDown:
            pass  # the owner's share stays taken until it refills: stricter, not looser

    async def authenticate(self, token):
        """The user and claims behind a token that is genuine, unexpired and not revoked."""
        claims = self.tokens.decode(token)
        return await self._holder(claims["sub"], claims["jti"], claims["iat"]), claims

    async def still_valid(self, user_id, jti, issued_at):
        """Whether a token, known by its claims, still works: a connection opened with it checks
        again when endings published meanwhile may have been missed (another process's logout)."""
        try:
            await self._holder(user_id, jti, issued_at)
        except NotAuthenticated:
            return False
        return True

    async def _holder(self, user_id, jti, issued_at):
        if await self.store.revoked_tokens.is_revoked(jti):
            raise NotAuthenticated("The token has been revoked.", code="token_revoked")
        user = await self.store.users.get(user_id)
        if user is None:
            raise NotAuthenticated("The token is not valid.", code="token_invalid")
        valid_after = user["tokens_valid_after"]
        if valid_after is not None and issued_at < as_utc(valid_after).timestamp():
            raise NotAuthenticated("The token has been revoked.", code="token_revoked")
        return user

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
        # Mail goes only to the address its owner registered, and only when that is the address
        # asked for: one that merely shares its key ("\u212aate@" for "kate@") may be a squatter's.
        # Over the cap the answer stays the same: a 429 here would tell which emails are registered.
        if (user is not None and same_address(email, user["email"] or "")
                and not self._reset_emails.hit(identity_key(email))):
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
        # The token is in the email once, in the link: the app's deep link hands it over, and
        # the page at /reset-password reads it from the address bar.
        link = reset_link(self.settings, token)
        minutes = self.settings.reset_token_lifetime_seconds // 60
        body = (f"Someone asked to reset the password of your account.\n\n"
                f"To choose a new password, open this link within {minutes} minutes:\n{link}\n\n"
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
