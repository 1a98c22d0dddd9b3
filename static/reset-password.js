// The page a reset email links to: reads the token from the address (?token= or #token=) and
// sends it, with the new password, to POST api/v1/auth/reset-password. The token goes nowhere
// else: the page loads only this server's files and its responses carry Referrer-Policy:
// no-referrer. A file of its own rather than an inline script, so that the page's
// Content-Security-Policy allows scripts from this server only.
(function () {
  "use strict";
  var form = document.getElementById("reset");
  var password = document.getElementById("password");
  var repeated = document.getElementById("repeated");
  var submit = document.getElementById("submit");
  var status = document.getElementById("status");
  var problems = document.getElementById("problems");

  function tokenFromAddress() {
    var query = new URLSearchParams(window.location.search).get("token");
    var fragment = new URLSearchParams(window.location.hash.replace(/^#/, "")).get("token");
    return query || fragment || "";
  }

  function say(text, kind, details) {
    status.textContent = text;
    status.className = kind;
    problems.textContent = "";
    (details || []).forEach(function (detail) {
      var item = document.createElement("li");
      item.className = kind;
      item.textContent = detail;
      problems.appendChild(item);
    });
  }

  var token = tokenFromAddress();
  // Out of the address bar and the browser's history: the token works until it is used or expires.
  window.history.replaceState(null, "", window.location.pathname);
  if (!token) {
    say("This link has no reset token. Open the link from the email again, or ask for a new one.", "error");
    return;
  }
  form.hidden = false;
  password.focus();

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (password.value !== repeated.value) {
      say("The two passwords are not the same.", "error");
      return;
    }
    submit.disabled = true;
    say("Changing your password…", "");
    // Relative to the page, like its files: the same server, whatever its address or path prefix.
    fetch("api/v1/auth/reset-password", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({token: token, password: password.value}),
      credentials: "omit",
      referrerPolicy: "no-referrer",
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (response.ok) {
          form.hidden = true;
          say(body.message || "Your password has been changed.", "success");
          return;
        }
        var details = (body.errors || []).map(function (error) { return error.message; });
        say(body.message || "The password could not be changed (" + response.status + ").", "error", details);
        submit.disabled = false;
      });
    }).catch(function () {
      say("The server could not be reached. Check your connection and try again.", "error");
      submit.disabled = false;
    });
  });
})();
