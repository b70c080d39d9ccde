// The landing page of the two address-change links: the one mailed to the new address
// (confirms the change) and the one mailed to the old address (undoes it). Nothing is sent
// until the person clicks: mail scanners open links and run scripts.
(function () {
  "use strict";
  var kind = document.body.getAttribute("data-kind");
  var revert = kind === "revert";
  var message = document.getElementById("message");
  var button = document.getElementById("act");
  var token = linkToken();

  function show(state, text, tone) {
    setPageState(state);
    message.textContent = text;
    message.className = tone || "";
  }

  if (!token) {
    show("missing", "This link has no code. Open the link from your email again, or copy the whole link into the address bar.", "bad");
    return;
  }
  show("ready", revert
    ? "If you did not change your email address, click the button: your old address comes back, every device is signed out, and we email you a link to choose a new password."
    : "Click the button to make this your account's email address.");
  button.hidden = false;

  button.addEventListener("click", function () {
    button.disabled = true;
    show("pending", "One moment…");
    var operation = revert ? "RevertEmailChange" : "ConfirmEmailChange";
    callAdmit(operation, { token: token })
      .then(function (body) {
        var payload = body && body.data && body.data[revert ? "revertEmailChange" : "confirmEmailChange"];
        if (!payload) { throw new Error("no payload"); }
        button.hidden = true;
        if (payload.user) {
          document.getElementById("next").hidden = revert;
          show("done", revert
            ? "Your email address is " + payload.user.email + " again and every device was signed out. Check that inbox for a link to choose a new password."
            : "Your account's email address is now " + payload.user.email + ". Sign in with it from now on.", "good");
          return;
        }
        var error = payload.userErrors[0] || { code: "", message: "That did not work." };
        var states = { TOKEN_EXPIRED: "expired", TOKEN_SUPERSEDED: "superseded", TOKEN_USED: "used", TOKEN_INVALID: "invalid", RATE_LIMITED: "rate-limited" };
        show(states[error.code] || "refused", error.message, "bad");
      })
      .catch(function () {
        button.disabled = false;
        show("error", "We could not reach the server. Check your connection and try again.", "bad");
      });
  });
})();
