(function () {
  "use strict";
  var message = document.getElementById("message");
  var button = document.getElementById("confirm");
  var endpoint = new URL("graphql", window.location.href).toString();
  var token = new URLSearchParams(window.location.hash.slice(1)).get("token");
  var mutation =
    "mutation ConfirmAccount($token: String!) {" +
    " confirmAccount(token: $token) { user { email confirmedAt } userErrors { code message } } }";

  function show(state, text) {
    document.body.setAttribute("data-state", state);
    message.textContent = text;
  }

  if (!token) {
    show("missing", "This link has no confirmation code. Open the link from your email again, " +
      "or copy the whole link into the address bar.");
    return;
  }
  // Nothing is sent until the person clicks: mail scanners open links and run scripts.
  show("ready", "Click the button to activate your account.");
  button.hidden = false;

  button.addEventListener("click", function () {
    button.disabled = true;
    show("pending", "Confirming…");
    fetch(endpoint, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        "Accept": "application/graphql-response+json, application/json"
      },
      body: JSON.stringify({ query: mutation, variables: { token: token } })
    })
      .then(function (response) { return response.json(); })
      .then(function (body) {
        var payload = body && body.data && body.data.confirmAccount;
        if (!payload) { throw new Error("no payload"); }
        button.hidden = true;
        if (payload.user) {
          show("confirmed", "Your account " + payload.user.email + " is confirmed. You can close this page.");
          return;
        }
        var code = payload.userErrors.length ? payload.userErrors[0].code : "";
        if (code === "TOKEN_SUPERSEDED") {
          show("superseded", "A newer confirmation email was sent to you. Please use the link in the most recent email.");
        } else if (code === "TOKEN_EXPIRED") {
          show("expired", "This link has expired, so your account was not confirmed.");
        } else {
          show("invalid", "This link is not valid. Make sure you opened the whole link from your most recent email.");
        }
      })
      .catch(function () {
        button.disabled = false;
        show("error", "We could not reach the server. Check your connection and try again.");
      });
  });
})();
