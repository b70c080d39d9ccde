(function () {
  "use strict";
  var form = document.getElementById("signup");
  var fields = ["email", "password", "displayName"];
  var hint = document.getElementById("password-hint");
  var formError = document.getElementById("form-error");
  var submit = document.getElementById("submit");
  var policy = null;


  function input(name) { return document.getElementById(name); }
  function errorOf(name) { return document.getElementById(name + "-error"); }

  // Counted as the server counts: Unicode code points after NFKC normalization.
  function length(value) { return Array.from(value.normalize("NFKC")).length; }

  function updateHint() {
    if (!policy) { return; }
    var n = length(input("password").value);
    hint.className = "hint";
    if (n === 0) {
      hint.textContent = "Use " + policy.minLength + " to " + policy.maxLength + " characters. Spaces and any characters are fine.";
    } else if (n < policy.minLength) {
      hint.textContent = (policy.minLength - n) + " more character" + (policy.minLength - n === 1 ? "" : "s") + " needed.";
    } else if (n > policy.maxLength) {
      hint.textContent = (n - policy.maxLength) + " character" + (n - policy.maxLength === 1 ? "" : "s") + " too many.";
    } else {
      hint.textContent = "Long enough.";
      hint.className = "hint ok";
    }
  }

  function clearErrors() {
    fields.forEach(function (name) {
      errorOf(name).textContent = "";
      input(name).removeAttribute("aria-invalid");
    });
    formError.textContent = "";
  }

  callAdmit("PasswordPolicy")
    .then(function (body) {
      policy = body.data.passwordPolicy;
      updateHint();
      setPageState("ready");
    })
    .catch(function () {
      hint.textContent = "";
      setPageState("ready");
    });
  input("password").addEventListener("input", updateHint);

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearErrors();
    submit.disabled = true;
    setPageState("submitting");
    var email = input("email").value;
    var displayName = input("displayName").value;
    callAdmit("Register",
      { input: { email: email, password: input("password").value, displayName: displayName || null } })
      .then(function (body) {
        var payload = body && body.data && body.data.register;
        if (!payload) { throw new Error("no payload"); }
        submit.disabled = false;
        if (payload.accepted) {
          form.hidden = true;
          document.getElementById("sent").hidden = false;
          document.getElementById("sent-message").textContent = "Check your inbox: we sent a link to " +
            email.trim() + ". Open it to activate your account.";
          setPageState("sent");
          return;
        }
        payload.userErrors.forEach(function (error) {
          var name = error.field ? error.field[error.field.length - 1] : "";
          var text = error.code === "RATE_LIMITED"
            ? "An email was sent to this address very recently. Please wait " + payload.retryAfterSeconds + " seconds."
            : error.message;
          if (fields.indexOf(name) >= 0) {
            errorOf(name).textContent = text;
            input(name).setAttribute("aria-invalid", "true");
          } else {
            formError.textContent = text;
          }
        });
        var first = payload.userErrors[0] && payload.userErrors[0].field;
        if (first) { input(first[first.length - 1]).focus(); }
        setPageState("invalid");
      })
      .catch(function () {
        submit.disabled = false;
        formError.textContent = "We could not reach the server. Check your connection and try again.";
        setPageState("error");
      });
  });
})();
