"""Access tokens: JWT, HS256 only, with every claim we rely on required."""
import time
import uuid

import jwt

from domain.errors import NotAuthenticated

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti"]


class TokenIssuer:
    def __init__(self, secret, lifetime_seconds, clock=time.time):
        self._secret = secret
        self.lifetime = lifetime_seconds
        self.clock = clock

    def issue(self, user_id, role):
        # iat keeps milliseconds so that a password reset can revoke exactly the tokens issued before it.
        now = round(self.clock(), 3)
        claims = {"sub": str(user_id), "role": role, "iat": now,
                  "exp": int(now) + self.lifetime, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token):
        """The claims of a genuine, unexpired token; NotAuthenticated for anything else."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                options={"require": REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("The token has expired.", code="token_expired") from None
        except jwt.PyJWTError:
            raise NotAuthenticated("The token is not valid.", code="token_invalid") from None
        if not all(isinstance(claims[c], str) for c in ("sub", "jti")):
            raise NotAuthenticated("The token is not valid.", code="token_invalid")
        return claims
