(function () {
  "use strict";
  var message = document.getElementById("message");
  var form = document.getElementById("reset");
  var password = document.getElementById("password");
  var repeat = document.getElementById("repeat");
  var hint = document.getElementById("password-hint");
  var passwordError = document.getElementById("password-error");
  var repeatError = document.getElementById("repeat-error");
  var submit = document.getElementById("submit");
  var again = document.getElementById("again");
  var againEmail = document.getElementById("again-email");
  var againMessage = document.getElementById("again-message");
  var token = linkToken();
  var policy = null;

  function show(state, text, tone) {
    setPageState(state);
    message.textContent = text;
    message.className = tone || "";
  }

  function offerNewLink() {
    form.hidden = true;
    again.hidden = false;
    againEmail.focus();
  }

  // Counted as the server counts: Unicode code points after NFKC normalization.
  function length(value) { return Array.from(value.normalize("NFKC")).length; }

  function updateHint() {
    if (!policy) { return; }
    var n = length(password.value);
    hint.className = "hint";
    if (n < policy.minLength) {
      hint.textContent = "Use " + policy.minLength + " to " + policy.maxLength + " characters" +
        (n ? " (" + (policy.minLength - n) + " more needed)." : ".") +
        " Common passwords and ones built on your address are refused.";
    } else if (n > policy.maxLength) {
      hint.textContent = (n - policy.maxLength) + " characters too many.";
    } else {
      hint.textContent = "Long enough.";
      hint.className = "hint ok";
    }
  }

  if (!token) {
    show("missing", "This link has no reset code. Open the link from your email again, or ask for a new one.", "bad");
    offerNewLink();
    return;
  }
  // Nothing is sent until the person submits: mail scanners open links and run scripts.
  show("ready", "Choose a new password. Every device signed in to your account will be signed out.");
  form.hidden = false;
  callAdmit("PasswordPolicy")
    .then(function (body) { policy = body.data.passwordPolicy; updateHint(); })
    .catch(function () { hint.textContent = ""; });
  password.addEventListener("input", updateHint);

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    passwordError.textContent = "";
    repeatError.textContent = "";
    if (password.value !== repeat.value) {
      repeatError.textContent = "The two passwords are not the same.";
      repeat.focus();
      show("mismatch", message.textContent);
      return;
    }
    submit.disabled = true;
    show("pending", "Setting your new password…");
    callAdmit("ResetPassword", { input: { token: token, newPassword: password.value } })
      .then(function (body) {
        var payload = body && body.data && body.data.resetPassword;
        if (!payload) { throw new Error("no payload"); }
        submit.disabled = false;
        if (payload.user) {
          form.hidden = true;
          document.getElementById("signin-link").hidden = false;
          show("changed", "Your password is changed. Every device was signed out: sign in with your new password.", "good");
          return;
        }
        var error = payload.userErrors[0] || { code: "", message: "That did not work." };
        if (error.code === "TOKEN_EXPIRED") {
          show("expired", "This link has expired. We can send you a new one.", "bad");
          offerNewLink();
        } else if (error.code === "TOKEN_SUPERSEDED") {
          show("superseded", "A newer reset link was sent to you since. Please use the link in the most recent email.", "bad");
          form.hidden = true;
        } else if (error.code === "TOKEN_USED") {
          show("used", "This link was used already. Sign in with your new password, or ask for a new link.", "bad");
          document.getElementById("signin-link").hidden = false;
          offerNewLink();
        } else if (error.code === "TOKEN_INVALID") {
          show("invalid", "This link is not valid. Make sure you opened the whole link from your most recent email.", "bad");
          offerNewLink();
        } else if (error.code === "RATE_LIMITED") {
          show("rate-limited", "Too many requests. Please wait " + payload.retryAfterSeconds + " seconds and try again.", "bad");
        } else {
          passwordError.textContent = error.message;
          password.focus();
          show("invalid-password", "Choose another password.", "bad");
        }
      })
      .catch(function () {
        submit.disabled = false;
        show("error", "We could not reach the server. Check your connection and try again.", "bad");
      });
  });

  again.addEventListener("submit", function (event) {
    event.preventDefault();
    callAdmit("RequestPasswordReset", { email: againEmail.value })
      .then(function (body) {
        var payload = body.data.requestPasswordReset;
        if (payload.accepted) {
          againMessage.className = "good";
          againMessage.textContent = "If this address has an account, a new link is on its way.";
          show("resent", message.textContent, message.className);
        } else {
          againMessage.className = "error";
          againMessage.textContent = payload.userErrors[0] ? payload.userErrors[0].message : "That did not work.";
          show("resend-refused", message.textContent, message.className);
        }
      })
      .catch(function () {
        againMessage.className = "error";
        againMessage.textContent = "We could not reach the server. Check your connection and try again.";
        show("error", message.textContent, message.className);
      });
  });
})();
