"""docs/API.md, the contract in prose, names exactly the operations of the OpenAPI document, and
nothing in the product points outside the repository."""
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
# `GET /api/v1/events/{event_id}`: an operation as docs/API.md names it, with the document's path.
OPERATION = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`")


def test_api_md_names_every_operation_of_the_openapi_document_and_no_other(services):
    named = {(method.lower(), path) for method, path in OPERATION.findall((ROOT / "docs/API.md").read_text())}
    documented = {(method, path) for path, item in services.openapi["paths"].items() for method in item}
    assert sorted(documented - named) == [], "in the OpenAPI document, missing from docs/API.md"
    assert sorted(named - documented) == [], "in docs/API.md, not an operation of the OpenAPI document"


@pytest.mark.parametrize("extension", ["x-websocket", "x-websocket-notifications"])
def test_api_md_describes_every_frame_and_close_code_of_each_websocket(services, extension):
    text = (ROOT / "docs/API.md").read_text()
    protocol = services.openapi[extension]
    assert f"## WebSocket {'chat' if extension == 'x-websocket' else 'notifications'}: `{protocol['path']}" in text
    section = text[text.index(f"`{protocol['path']}"):]
    for frame in [*protocol["client_frames"], *protocol["server_frames"]]:
        assert f'"type": "{frame}"' in section, frame
    for code in re.findall(r"\b(1001|1009|1013|44\d\d)\b", protocol["description"]):
        assert code in section, code


def test_nothing_in_the_repository_refers_to_files_outside_it():
    outside = re.compile(rb"\.\./shared|/work/shared")
    offenders = [name for name in product_files() if name != "tests/test_api_doc.py"
                 and outside.search((ROOT / name).read_bytes())]
    assert offenders == []


def product_files():
    """The repository's files: git's list in a checkout, else every file outside hidden folders."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return [name for name in listed.decode().split("\0") if name and (ROOT / name).is_file()]
    return [str(path.relative_to(ROOT)) for path in ROOT.rglob("*") if path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(ROOT).parts)]
