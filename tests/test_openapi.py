"""The published contract matches the server: every route documented, nothing documented that is not served."""
import pytest
from openapi_spec_validator import validate

from handlers.app import route_table
from handlers.base import BaseHandler, implemented_methods
from handlers.openapi import openapi_path


def test_every_route_and_method_is_documented_and_nothing_else():
    for pattern, handler in route_table():
        if not issubclass(handler, BaseHandler):
            continue
        served, documented = set(implemented_methods(handler)), set(getattr(handler, "docs", {}))
        assert served == documented, f"{pattern} ({handler.__name__}): served {served}, documented {documented}"


def test_the_document_is_valid_openapi_3_1(services):
    validate(services.openapi)


def test_every_route_has_a_path_in_the_document(services):
    paths = {openapi_path(pattern)[0] for pattern, handler in route_table() if issubclass(handler, BaseHandler)}
    assert paths == set(services.openapi["paths"])


@pytest.mark.gen_test
async def test_the_document_is_served(api, services):
    reply = await api.call("GET", "/api/v1/openapi.json")
    assert reply.status == 200 and reply.json == services.openapi
    assert reply.json["openapi"] == "3.1.0"
