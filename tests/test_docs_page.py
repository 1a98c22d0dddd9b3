"""The API reference at /docs, as a person sees it: Swagger UI in a real headless Chromium against a
real server process, under the page's Content-Security-Policy.

Chromium and its driver are Debian's (`apt-get install chromium chromium-driver`; .ci/run installs
them). Without them the browser test is skipped on a developer's machine, and fails in CI (CI=true).
"""
import os
import re
import shutil

import pytest

from handlers.docs_page import CONTENT_SECURITY_POLICY
from tests.running_server import RunningServer

# Debian's name first; GitHub's runners have Google Chrome with a chromedriver that matches it.
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "google-chrome"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
WAIT_SECONDS = 30  # only so that a broken page fails the test instead of hanging it


def operations(document):
    return {(method, path, op["operationId"], op["tags"][0])
            for path, item in document["paths"].items() for method, op in item.items()}


# --- the page's headers and files, over plain HTTP --------------------------------------------

@pytest.mark.gen_test
async def test_the_root_redirects_to_the_docs_page_relatively(http_client, base_url):
    reply = await http_client.fetch(base_url + "/", follow_redirects=False, raise_error=False)
    assert reply.code == 302 and reply.headers["Location"] == "docs"


@pytest.mark.gen_test
async def test_the_page_and_its_files_allow_only_this_servers_own_files(http_client, base_url):
    for path in ("/", "/docs", "/docs/static/docs.js", "/docs/static/swagger-ui/swagger-ui-bundle.js",
                 "/docs/static/swagger-ui/swagger-ui.css", "/docs/static/no-such-file.js"):
        reply = await http_client.fetch(base_url + path, follow_redirects=False, raise_error=False)
        assert reply.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY, path
        assert reply.headers["X-Content-Type-Options"] == "nosniff", path
        assert reply.headers["X-Frame-Options"] == "DENY" and "Server" not in reply.headers, path
    directives = dict(part.split(" ", 1) for part in CONTENT_SECURITY_POLICY.split("; "))
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    assert directives["script-src"] == directives["style-src"] == directives["connect-src"] == "'self'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY


@pytest.mark.gen_test
async def test_the_page_loads_nothing_from_elsewhere(http_client, base_url):
    page = (await http_client.fetch(base_url + "/docs")).body.decode()
    markup = re.sub(r"<!--.*?-->", "", page, flags=re.S)
    assert page.startswith("<!doctype html>") and "//" not in markup  # no http://, https:// or //host
    for asset in ("docs/static/swagger-ui/swagger-ui-bundle.js", "docs/static/swagger-ui/swagger-ui.css",
                  "docs/static/docs.js"):
        assert f'"{asset}"' in page
        served = await http_client.fetch(base_url + "/" + asset)
        assert served.code == 200 and served.body


@pytest.mark.gen_test
async def test_nothing_outside_static_is_served(http_client, base_url):
    for path in ("/docs/static/../server.py", "/docs/static/%2e%2e/server.py", "/docs/static/..%2fsettings.yaml",
                 "/docs/static//etc/passwd", "/docs/"):
        reply = await http_client.fetch(base_url + path, raise_error=False)
        assert reply.code in (403, 404) and b"import" not in reply.body and b"root:" not in reply.body, path


@pytest.mark.gen_test
async def test_the_document_names_its_own_server_relatively(api):
    reply = await api.call("GET", "/api/v1/openapi.json")
    assert reply.json["servers"] == [{"url": "/", "description": "This server"}]


# --- the page in a browser ----------------------------------------------------------------------

@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromedriver are missing: .ci/run installs them")
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver: Selenium Manager would otherwise try to download one.
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def server():
    with RunningServer() as running:
        yield running


def test_a_person_reads_every_operation_and_tries_one_with_a_token(browser, server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    status, registered = server.request("POST", "/api/v1/auth/register", {
        "username": "reader", "email": "reader@example.com", "password": "correct horse battery"})
    assert status == 201, registered
    _, document = server.request("GET", "/api/v1/openapi.json")
    wait = WebDriverWait(browser, WAIT_SECONDS)

    browser.get(f"http://127.0.0.1:{server.port}/")  # the root redirects to the page
    wait.until(seen.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))
    assert browser.current_url == f"http://127.0.0.1:{server.port}/docs"

    # Every operation, and every schema, is on the page; so is the chat protocol.
    shown = {element.get_attribute("id") for element in browser.find_elements(By.CSS_SELECTOR, ".opblock")}
    assert shown == {f"operations-{tag}-{operation_id}" for _, _, operation_id, tag in operations(document)}
    models = {element.text for element in browser.find_elements(
        By.CSS_SELECTOR, ".models article[data-json-schema-level='0'] > .json-schema-2020-12-head .json-schema-2020-12__title")}
    assert models == set(document["components"]["schemas"])
    description = browser.find_element(By.CSS_SELECTOR, ".information-container .description").text
    assert "Live chat: WebSocket /ws/chat/{event_id}" in description and "Close codes." in description

    # Authorize with the token, then try GET /api/v1/users/me from the page.
    browser.find_element(By.CSS_SELECTOR, ".auth-wrapper .authorize").click()
    token_field = wait.until(seen.element_to_be_clickable((By.CSS_SELECTOR, ".modal-ux input")))
    token_field.send_keys(registered["data"]["token"])
    browser.find_element(By.CSS_SELECTOR, ".modal-ux .auth-btn-wrapper .authorize").click()
    browser.find_element(By.CSS_SELECTOR, ".modal-ux .btn-done").click()
    [me] = [op for op in operations(document) if op[:2] == ("get", "/api/v1/users/me")]
    operation = browser.find_element(By.ID, f"operations-{me[3]}-{me[2]}")
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary-control").click()
    wait.until(lambda _: operation.find_element(By.CSS_SELECTOR, ".try-out__btn")).click()
    wait.until(lambda _: operation.find_element(By.CSS_SELECTOR, ".execute")).click()
    status_cell = wait.until(lambda _: operation.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"))
    assert status_cell.text.strip() == "200"
    body = operation.find_element(By.CSS_SELECTOR, ".live-responses-table .response-col_description .highlight-code")
    assert '"username": "reader"' in body.get_attribute("textContent")
    request_url = operation.find_element(By.CSS_SELECTOR, ".request-url pre").text
    assert request_url.strip() == f"http://127.0.0.1:{server.port}/api/v1/users/me"

    # Nothing was refused by the page's policy, nothing failed to load, nothing came from elsewhere.
    problems = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert problems == []
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(f"http://127.0.0.1:{server.port}/") for url in loaded), loaded
