(function () {
  "use strict";
  var form = document.getElementById("signin");
  var email = document.getElementById("email");
  var password = document.getElementById("password");
  var emailError = document.getElementById("email-error");
  var formError = document.getElementById("form-error");
  var submit = document.getElementById("submit");
  var resend = document.getElementById("resend");
  var resendMessage = document.getElementById("resend-message");

  function offerResend() {
    resend.hidden = false;
    resendMessage.textContent = "";
  }

  document.getElementById("resend-link").addEventListener("click", function (event) {
    event.preventDefault();
    offerResend();
    email.focus();
  });

  document.getElementById("resend-submit").addEventListener("click", function () {
    if (!email.value.trim()) {
      resendMessage.className = "error";
      resendMessage.textContent = "Enter your email address above first.";
      email.focus();
      return;
    }
    callAdmit("ResendConfirmation", { email: email.value })
      .then(function (body) {
        var payload = body.data.resendConfirmation;
        if (payload.accepted) {
          resendMessage.className = "good";
          resendMessage.textContent = "If this address has an account waiting for confirmation, a new link is on its way.";
          setPageState("resent");
        } else {
          resendMessage.className = "error";
          resendMessage.textContent = payload.userErrors[0] ? payload.userErrors[0].message : "That did not work.";
          setPageState("resend-refused");
        }
      })
      .catch(function () {
        resendMessage.className = "error";
        resendMessage.textContent = "We could not reach the server. Check your connection and try again.";
        setPageState("error");
      });
  });

  var forgotMessage = document.getElementById("forgot-message");
  document.getElementById("forgot-link").addEventListener("click", function (event) {
    event.preventDefault();
    document.getElementById("forgot").hidden = false;
    email.focus();
  });

  document.getElementById("forgot-submit").addEventListener("click", function () {
    if (!email.value.trim()) {
      forgotMessage.className = "error";
      forgotMessage.textContent = "Enter your email address above first.";
      email.focus();
      return;
    }
    callAdmit("RequestPasswordReset", { email: email.value })
      .then(function (body) {
        var payload = body.data.requestPasswordReset;
        if (payload.accepted) {
          forgotMessage.className = "good";
          forgotMessage.textContent = "If this address has an account, a link to choose a new password is on its way.";
          setPageState("reset-requested");
        } else {
          forgotMessage.className = "error";
          forgotMessage.textContent = payload.userErrors[0] ? payload.userErrors[0].message : "That did not work.";
          setPageState("reset-refused");
        }
      })
      .catch(function () {
        forgotMessage.className = "error";
        forgotMessage.textContent = "We could not reach the server. Check your connection and try again.";
        setPageState("error");
      });
  });

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    emailError.textContent = "";
    formError.textContent = "";
    email.removeAttribute("aria-invalid");
    submit.disabled = true;
    setPageState("submitting");
    callAdmit("SignIn", { input: { email: email.value, password: password.value, delivery: "COOKIE" } })
      .then(function (body) {
        var payload = body && body.data && body.data.signIn;
        if (!payload) { throw new Error("no payload"); }
        submit.disabled = false;
        if (payload.user) {
          setPageState("signed-in");
          window.location.assign("account");
          return;
        }
        var error = payload.userErrors[0] || { code: "", message: "Signing in did not work." };
        if (error.code === "INVALID_EMAIL") {
          emailError.textContent = error.message;
          email.setAttribute("aria-invalid", "true");
          email.focus();
          setPageState("invalid");
        } else if (error.code === "INVALID_CREDENTIALS") {
          formError.textContent = "That email address and password do not match an account. Check both and try again.";
          password.value = "";
          password.focus();
          setPageState("invalid-credentials");
        } else if (error.code === "EMAIL_NOT_CONFIRMED") {
          formError.textContent = "Your password is right, but your email address is not confirmed yet.";
          offerResend();
          setPageState("not-confirmed");
        } else if (error.code === "RATE_LIMITED") {
          formError.textContent = "Too many attempts. Please wait " + payload.retryAfterSeconds +
            " second" + (payload.retryAfterSeconds === 1 ? "" : "s") + " before trying again.";
          setPageState("rate-limited");
        } else {
          formError.textContent = error.message;
          setPageState("invalid");
        }
      })
      .catch(function () {
        submit.disabled = false;
        formError.textContent = "We could not reach the server. Check your connection and try again.";
        setPageState("error");
      });
  });
})();
