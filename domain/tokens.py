"""Access tokens: JWT, HS256 only, with every claim we rely on required."""
import time
import uuid

import jwt
from jwt.algorithms import HMACAlgorithm

from domain.errors import NotAuthenticated

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "sub", "jti"]


class _OneKeyHMAC(HMACAlgorithm):
    """HS256 that vets and prepares its one key once. PyJWT does it at every decode (is it a PEM,
    SSH or DER key, or a JWK in JSON?): ~200 µs, a quarter of a chat handshake's CPU when a crowd
    reconnects at once."""

    def __init__(self, secret):
        super().__init__(HMACAlgorithm.SHA256)
        self._secret = secret
        self._prepared = super().prepare_key(secret)

    def prepare_key(self, key):
        return self._prepared if key == self._secret else super().prepare_key(key)


class TokenIssuer:
    def __init__(self, secret, lifetime_seconds, clock=time.time):
        self._secret = secret
        self.lifetime = lifetime_seconds
        self.clock = clock
        self._jwt = jwt.PyJWT()
        # PyJWT offers no other way to give its decoder an algorithm object (2.15.1, pinned).
        self._jwt._jws.unregister_algorithm(ALGORITHM)
        self._jwt._jws.register_algorithm(ALGORITHM, _OneKeyHMAC(secret))

    def issue(self, user_id, role):
        # iat keeps milliseconds so that a password reset can revoke exactly the tokens issued before it.
        now = round(self.clock(), 3)
        claims = {"sub": str(user_id), "role": role, "iat": now,
                  "exp": int(now) + self.lifetime, "jti": uuid.uuid4().hex}
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def decode(self, token):
        """The claims of a genuine, unexpired token; NotAuthenticated for anything else."""
        try:
            claims = self._jwt.decode(token, self._secret, algorithms=[ALGORITHM],
                                      options={"require": REQUIRED_CLAIMS})
        except jwt.ExpiredSignatureError:
            raise NotAuthenticated("The token has expired.", code="token_expired") from None
        except jwt.PyJWTError:
            raise NotAuthenticated("The token is not valid.", code="token_invalid") from None
        if not all(isinstance(claims[c], str) for c in ("sub", "jti")):
            raise NotAuthenticated("The token is not valid.", code="token_invalid")
        return claims
