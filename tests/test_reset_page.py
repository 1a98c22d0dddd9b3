"""Password reset that a person can finish: the link of the reset email (an app's deep link, or
this server's page at /reset-password), the page's headers, and the page in a real headless
Chromium against a real server process, from the link in its console email to a login with the
new password. Chromium and its driver are Debian's; the skip rule is tests/test_docs_page.py's.
"""
import re
import time

import pytest

from handlers.docs_page import CONTENT_SECURITY_POLICY
from tests.conftest import PASSWORD, console_emails
from tests.running_server import SAFETY_TIMEOUT, RunningServer
from tests.test_docs_page import WAIT_SECONDS, browser  # noqa: F401 (the browser fixture)

NEW_PASSWORD = "a brand new passphrase"


# --- the link in the email --------------------------------------------------------------------

@pytest.mark.gen_test
@pytest.mark.settings(reset_link="myapp://reset?token={token}")
async def test_the_reset_email_carries_the_apps_deep_link_and_its_token_works(api, services, caplog):
    caplog.set_level("INFO")
    await api.register(email="phone@example.com")
    await api.call("POST", "/api/v1/auth/forgot-password", {"email": "phone@example.com"})
    await services.accounts.drain()
    [email] = console_emails(caplog)
    [token] = re.findall(r"^myapp://reset\?token=([\w-]+)$", email, re.M)
    assert "reset-password" not in email and email.count(token) == 1
    reply = await api.call("POST", "/api/v1/auth/reset-password", {"token": token, "password": NEW_PASSWORD})
    assert reply.status == 200
    login = await api.call("POST", "/api/v1/auth/login", {"email": "phone@example.com", "password": NEW_PASSWORD})
    assert login.status == 200


# --- the page over plain HTTP -----------------------------------------------------------------

@pytest.mark.gen_test
async def test_the_default_link_loads_the_page_which_keeps_its_address_to_itself(http_client, base_url):
    reply = await http_client.fetch(base_url + "/reset-password?token=abc", raise_error=False)
    assert reply.code == 200 and reply.headers["Content-Type"] == "text/html; charset=UTF-8"
    page = reply.body.decode()
    assert page.startswith("<!doctype html>") and "Choose a new password" in page
    # The address holds the token: no Referer carries it anywhere, no cache keeps the answer.
    assert reply.headers["Referrer-Policy"] == "no-referrer" and reply.headers["Cache-Control"] == "no-store"
    assert reply.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY and "form-action 'none'" in CONTENT_SECURITY_POLICY
    markup = re.sub(r"<!--.*?-->", "", page, flags=re.S)
    assert "//" not in markup and "<script>" not in markup  # nothing from elsewhere, no inline script
    for asset, content_type in (("reset-password.js", "javascript"), ("reset-password.css", "text/css")):
        assert f'"{asset}"' in page
        served = await http_client.fetch(f"{base_url}/{asset}")
        assert served.code == 200 and content_type in served.headers["Content-Type"]
        assert served.headers["Referrer-Policy"] == "no-referrer"
    script = (await http_client.fetch(f"{base_url}/reset-password.js")).body.decode()
    # The token goes to one place: the body of the API's reset request, on this server.
    assert re.findall(r"fetch\(\"([^\"]+)\"", script) == ["api/v1/auth/reset-password"]


@pytest.mark.gen_test
async def test_only_the_pages_own_files_are_served_beside_it(http_client, base_url):
    for path in ("/reset-password.html", "/docs.js", "/reset-password.jsx", "/reset-password/", "/settings.yaml"):
        reply = await http_client.fetch(base_url + path, raise_error=False)
        assert reply.code == 404, path


# --- the page in a browser --------------------------------------------------------------------

def test_a_person_follows_the_console_emails_link_chooses_a_password_and_logs_in_with_it(browser):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    # Development as started from a terminal: no PUBLIC_BASE_URL, no --address, the console mailer.
    with RunningServer(address=None) as server:
        base = f"http://127.0.0.1:{server.port}"
        status, _ = server.request("POST", "/api/v1/auth/register", {
            "username": "forgetful", "email": "forgetful@example.com", "password": PASSWORD})
        assert status == 201
        assert server.request("POST", "/api/v1/auth/forgot-password", {"email": "forgetful@example.com"})[0] == 200
        for _ in range(int(SAFETY_TIMEOUT / 0.05)):
            if "Subject: Reset your password" in server.stderr():
                break
            time.sleep(0.05)
        email = server.stderr()

        # The email on the terminal, as a person reads one, its link whole; the secret in it once.
        lines = email.splitlines()
        assert {"From: no-reply@localhost", "To: forgetful@example.com", "Subject: Reset your password"} <= set(lines)
        [link] = [line for line in lines if line.startswith(f"{base}/reset-password#token=")]
        token = link.split("token=", 1)[1]
        assert email.count(token) == 1 and token not in open(server.stdout_path, encoding="utf-8").read()

        wait = WebDriverWait(browser, WAIT_SECONDS)
        browser.get(link)
        wait.until(seen.visibility_of_element_located((By.ID, "password"))).send_keys(NEW_PASSWORD)
        browser.find_element(By.ID, "repeated").send_keys(NEW_PASSWORD)
        # Out of the address bar, so that history and a look over the shoulder do not keep it.
        assert browser.current_url == f"{base}/reset-password"
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda _: "success" in browser.find_element(By.ID, "status").get_attribute("class"))
        assert browser.find_element(By.ID, "status").text == "Your password has been changed. Log in with the new one."

        status, logged_in = server.request("POST", "/api/v1/auth/login",
                                           {"email": "forgetful@example.com", "password": NEW_PASSWORD})
        assert status == 200 and logged_in["data"]["token"]
        assert server.request("POST", "/api/v1/auth/login",
                              {"email": "forgetful@example.com", "password": PASSWORD})[0] == 401

        # The same link again, the token in its fragment this time (which never reaches a server
        # log): the API's refusal, in its own words, on the page.
        browser.get("about:blank")  # else only the fragment would change, on the same page
        browser.get(link.replace("?token=", "#token="))
        wait.until(seen.visibility_of_element_located((By.ID, "password"))).send_keys("yet another passphrase")
        browser.find_element(By.ID, "repeated").send_keys("yet another passphrase")
        browser.find_element(By.ID, "submit").click()
        wait.until(lambda _: "error" in browser.find_element(By.ID, "status").get_attribute("class"))
        assert browser.find_element(By.ID, "status").text == "The reset token is not valid or has expired."

        # Two different passwords never leave the page.
        browser.find_element(By.ID, "repeated").send_keys(" typo")
        browser.find_element(By.ID, "submit").click()
        assert browser.find_element(By.ID, "status").text == "The two passwords are not the same."

        # A link cut short: no form to fill in vain.
        browser.get(f"{base}/reset-password")
        wait.until(lambda _: browser.find_element(By.ID, "status").text)
        assert browser.find_element(By.ID, "status").text.startswith("This link has no reset token.")
        assert not browser.find_element(By.ID, "password").is_displayed()

        # Nothing refused by the page's policy, nothing from elsewhere; the 401 above is the one
        # failed request, and it went to the API.
        problems = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert all("api/v1/auth/reset-password - Failed to load resource" in entry["message"]
                   and "401" in entry["message"] for entry in problems), problems
        loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert loaded and all(url.startswith(f"{base}/") for url in loaded), loaded
        resets = [entry["status"] for entry in server.log_entries()
                  if entry.get("route") == "/api/v1/auth/reset-password"]
        assert resets == [200, 401]
        # The page's requests: the token is in the link's fragment, which a browser never sends.
        pages = [entry for entry in server.log_entries() if entry.get("path") == "/reset-password"]
        assert [entry["message"] for entry in pages] == ["GET /reset-password 200"] * 3
        assert token not in open(server.stdout_path, encoding="utf-8").read()
