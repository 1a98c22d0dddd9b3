"""Auth endpoints: register, login, logout, forgot and reset password, and the caller's own profile."""
from domain.users import own_user
from handlers.base import BaseHandler
from handlers.docs import operation


class RegisterHandler(BaseHandler):
    authentication = "none"
    docs = {"post": operation("Register a new user", request="RegisterRequest", response="AuthResult",
                              status=201, errors=[409, 429], public=True,
                              description="The email and username are stored in their Unicode NFKC form. The same "
                                          "email or username, in any case or compatibility form (fullwidth "
                                          "letters, the Kelvin sign...), is a 409. A username or email "
                                          "with invisible characters or letters of mixed scripts (look-alikes) is a "
                                          "400. Registrations per client address are limited, and so are those "
                                          "waiting for their password to be hashed: 429 with Retry-After.")}

    async def post(self):
        body = self.json_body("RegisterRequest")
        user, token = await self.services.accounts.register(
            body["username"], body["email"], body["password"], self.client_address(), body.get("role", "attendee"))
        self.reply({"user": own_user(user), "token": token}, "Registered.", status=201)


class LoginHandler(BaseHandler):
    authentication = "none"
    docs = {"post": operation("Log in with email and password", request="LoginRequest", response="AuthResult",
                              errors=[401, 429], public=True,
                              description="Failed logins are limited per email and client address, per client "
                                          "address, and per email from all addresses (a backoff of at most "
                                          "login_backoff_max_seconds, which addresses the owner logged in from "
                                          "pass): 429 with Retry-After.")}

    async def post(self):
        body = self.json_body("LoginRequest")
        user, token = await self.services.accounts.login(body["email"], body["password"], self.client_address())
        self.reply({"user": own_user(user), "token": token}, "Logged in.")


class LogoutHandler(BaseHandler):
    docs = {"post": operation("Log out: revoke the presented token (no body)", response="Empty"),
            "get": operation("Log out: revoke the presented token", response="Empty")}

    async def get(self):
        await self.services.accounts.logout(self.claims)
        self.reply({}, "Logged out.")

    post = get


class ForgotPasswordHandler(BaseHandler):
    authentication = "none"
    docs = {"post": operation("Ask for a password reset email", request="ForgotPasswordRequest", response="Empty",
                              public=True,
                              description="The same answer whether or not the email is registered. A registered "
                                          "email gets a single-use link to reset_link with the token in place of "
                                          "{token} (an app's deep link), or by default to this server's page "
                                          "/reset-password#token=..., which sends it to reset-password.")}

    async def post(self):
        body = self.json_body("ForgotPasswordRequest")
        message = await self.services.accounts.request_password_reset(body["email"])
        self.reply({}, message)


class ResetPasswordHandler(BaseHandler):
    authentication = "none"
    docs = {"post": operation("Choose a new password with a reset token", request="ResetPasswordRequest",
                              response="Empty", errors=[401], public=True,
                              description="An unknown, used or expired reset token is a 401, like any bad credential.")}

    async def post(self):
        body = self.json_body("ResetPasswordRequest")
        await self.services.accounts.reset_password(body["token"], body["password"])
        self.reply({}, "Your password has been changed. Log in with the new one.")


class MeHandler(BaseHandler):
    docs = {"get": operation("The caller's own profile", response="OwnUser")}

    async def get(self):
        self.reply(own_user(self.current_user))


ROUTES = [
    (r"/api/v1/auth/register", RegisterHandler),
    (r"/api/v1/auth/login", LoginHandler),
    (r"/api/v1/auth/logout", LogoutHandler),
    (r"/api/v1/auth/forgot-password", ForgotPasswordHandler),
    (r"/api/v1/auth/reset-password", ResetPasswordHandler),
    (r"/api/v1/users/me", MeHandler),
]
