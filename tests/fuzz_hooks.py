"""Schemathesis hooks for tests/test_fuzz.py: authenticate each case as a real user.

A fresh login per case, alternating organizer and attendee, so that a fuzzed logout (which
revokes the token it was sent with) cannot leave the rest of the run unauthenticated.
"""
import itertools
import json
import os
import urllib.request

import schemathesis

_accounts = itertools.cycle(json.loads(os.environ["FUZZ_ACCOUNTS"]))


@schemathesis.auth(refresh_interval=None)
class FreshLogin:
    def get(self, case, context):
        email, password = next(_accounts)
        request = urllib.request.Request(
            os.environ["FUZZ_BASE_URL"] + "/api/v1/auth/login", method="POST",
            data=json.dumps({"email": email, "password": password}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["data"]["token"]

    def set(self, case, token, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
