(function () {
  "use strict";
  var message = document.getElementById("message");
  var confirmButton = document.getElementById("confirm");
  var resendForm = document.getElementById("resend");
  var resendEmail = document.getElementById("resend-email");
  var resendError = document.getElementById("resend-error");
  var resendButton = document.getElementById("resend-submit");
  var token = linkToken();

  function show(state, text, tone) {
    setPageState(state);
    message.textContent = text;
    message.className = tone || "";
  }


  function offerResend() {
    resendForm.hidden = false;
    resendEmail.focus();
  }

  if (!token) {
    show("missing", "This link has no confirmation code. Open the link from your email again, " +
      "or copy the whole link into the address bar.", "bad");
    return;
  }
  // Nothing is sent until the person clicks: mail scanners open links and run scripts.
  show("ready", "Click the button to activate your account.");
  confirmButton.hidden = false;

  confirmButton.addEventListener("click", function () {
    confirmButton.disabled = true;
    show("pending", "Confirming…");
    callAdmit("ConfirmAccount", { token: token })
      .then(function (body) {
        var payload = body && body.data && body.data.confirmAccount;
        if (!payload) { throw new Error("no payload"); }
        confirmButton.hidden = true;
        if (payload.user) {
          show("confirmed", "Your account " + payload.user.email + " is confirmed. You can close this page.", "good");
          return;
        }
        var code = payload.userErrors.length ? payload.userErrors[0].code : "";
        if (code === "TOKEN_SUPERSEDED") {
          show("superseded", "A newer confirmation email was sent to you. Please use the link in the most recent email.", "bad");
        } else if (code === "TOKEN_EXPIRED") {
          show("expired", "This link has expired, so your account was not confirmed. We can send you a new one.", "bad");
          offerResend();
        } else {
          show("invalid", "This link is not valid. Make sure you opened the whole link from your most recent email.", "bad");
        }
      })
      .catch(function () {
        confirmButton.disabled = false;
        show("error", "We could not reach the server. Check your connection and try again.", "bad");
      });
  });

  resendForm.addEventListener("submit", function (event) {
    event.preventDefault();
    resendButton.disabled = true;
    resendError.textContent = "";
    callAdmit("ResendConfirmation", { email: resendEmail.value })
      .then(function (body) {
        var payload = body && body.data && body.data.resendConfirmation;
        if (!payload) { throw new Error("no payload"); }
        resendButton.disabled = false;
        if (payload.accepted) {
          resendForm.hidden = true;
          show("resent", "If " + resendEmail.value.trim() + " has an account waiting for confirmation, " +
            "a new link is on its way. Check your inbox.", "good");
          return;
        }
        var error = payload.userErrors[0] || { code: "", message: "Please try again." };
        if (error.code === "RATE_LIMITED") {
          setPageState("rate-limited");
          resendError.textContent = "An email was sent to this address very recently. " +
            "Please wait " + payload.retryAfterSeconds + " seconds before asking again.";
        } else {
          setPageState("resend-invalid");
          resendError.textContent = error.message;
        }
      })
      .catch(function () {
        resendButton.disabled = false;
        setPageState("error");
        resendError.textContent = "We could not reach the server. Check your connection and try again.";
      });
  });
})();
