(function () {
  "use strict";
  var message = document.getElementById("message");
  var account = document.getElementById("account");
  var list = document.getElementById("sessions");

  function when(iso) {
    return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function signedOut(text) {
    account.hidden = true;
    message.textContent = text;
    document.getElementById("signin-link").hidden = false;
    setPageState("signed-out");
  }

  function failed() {
    message.textContent = "We could not reach the server. Check your connection and reload the page.";
    setPageState("error");
  }

  function device(session) {
    var item = document.createElement("li");
    var what = document.createElement("span");
    what.className = "device";
    what.textContent = (session.userAgent || "Unknown device") + (session.current ? " (this device)" : "");
    var since = document.createElement("span");
    since.className = "hint";
    since.textContent = "Signed in " + when(session.createdAt) + ", last active " + when(session.lastSeenAt);
    var button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = "Sign out this device";
    button.setAttribute("data-session", session.id);
    button.addEventListener("click", function () {
      button.disabled = true;
      callAdmit("RevokeSession", { id: session.id })
        .then(function (body) {
          if (session.current) {
            signedOut("You are signed out.");
          } else if (body.data.revokeSession.revoked) {
            load();
          } else {
            button.disabled = false;
            message.textContent = body.data.revokeSession.userErrors[0].message;
          }
        })
        .catch(failed);
    });
    item.appendChild(what);
    item.appendChild(since);
    item.appendChild(button);
    return item;
  }

  function load() {
    callAdmit("Viewer")
      .then(function (body) {
        var viewer = body.data.viewer;
        if (!viewer) {
          signedOut("You are not signed in.");
          return;
        }
        document.getElementById("email").textContent = viewer.user.email;
        document.getElementById("confirmed").textContent =
          viewer.user.confirmedAt ? when(viewer.user.confirmedAt) : "not yet";
        while (list.firstChild) { list.removeChild(list.firstChild); }
        viewer.sessions.forEach(function (session) { list.appendChild(device(session)); });
        message.textContent = "Signed in as " + viewer.user.email + ".";
        account.hidden = false;
        setPageState("signed-in");
      })
      .catch(failed);
  }

  var change = document.getElementById("change");
  change.addEventListener("submit", function (event) {
    event.preventDefault();
    // Until the answer: a state left from the last try must not read as this one's outcome.
    setPageState("pending");
    var current = document.getElementById("current");
    var fresh = document.getElementById("new");
    var changeMessage = document.getElementById("change-message");
    ["current-error", "new-error"].forEach(function (id) { document.getElementById(id).textContent = ""; });
    changeMessage.textContent = "";
    callAdmit("ChangePassword", { input: { currentPassword: current.value, newPassword: fresh.value } })
      .then(function (body) {
        var payload = body.data.changePassword;
        if (payload.user) {
          current.value = "";
          fresh.value = "";
          changeMessage.className = "good";
          changeMessage.textContent = "Your password is changed. Every other device was signed out.";
          load();
          setPageState("password-changed");
          return;
        }
        var error = payload.userErrors[0] || { field: null, message: "That did not work." };
        var field = error.field ? error.field[error.field.length - 1] : "";
        var text = error.code === "RATE_LIMITED"
          ? "Too many wrong passwords. Please wait " + payload.retryAfterSeconds + " seconds."
          : error.message;
        if (field === "newPassword") {
          document.getElementById("new-error").textContent = text;
        } else if (field === "currentPassword") {
          document.getElementById("current-error").textContent = text;
        } else {
          changeMessage.className = "error";
          changeMessage.textContent = text;
        }
        setPageState("password-refused");
      })
      .catch(failed);
  });

  document.getElementById("email-form").addEventListener("submit", function (event) {
    event.preventDefault();
    // Until the answer: a state left from the last try must not read as this one's outcome.
    setPageState("pending");
    var newEmail = document.getElementById("new-email");
    var password = document.getElementById("email-password");
    var emailMessage = document.getElementById("email-message");
    ["new-email-error", "email-password-error"].forEach(function (id) { document.getElementById(id).textContent = ""; });
    emailMessage.textContent = "";
    callAdmit("RequestEmailChange", { input: { newEmail: newEmail.value, password: password.value } })
      .then(function (body) {
        var payload = body.data.requestEmailChange;
        if (payload.accepted) {
          password.value = "";
          emailMessage.className = "good";
          emailMessage.textContent = "Check " + newEmail.value.trim() + " for a link: your address changes when you open it.";
          setPageState("email-requested");
          return;
        }
        var error = payload.userErrors[0] || { field: null, message: "That did not work." };
        var field = error.field ? error.field[error.field.length - 1] : "";
        var text = error.code === "RATE_LIMITED"
          ? "Please wait " + payload.retryAfterSeconds + " seconds and try again."
          : error.message;
        var target = field === "password" ? "email-password-error" : field === "newEmail" ? "new-email-error" : null;
        if (target) {
          document.getElementById(target).textContent = text;
        } else {
          emailMessage.className = "error";
          emailMessage.textContent = text;
        }
        setPageState("email-refused");
      })
      .catch(failed);
  });

  document.getElementById("delete-form").addEventListener("submit", function (event) {
    event.preventDefault();
    // Until the answer: a state left from the last try must not read as this one's outcome.
    setPageState("pending");
    var password = document.getElementById("delete-password");
    var deleteError = document.getElementById("delete-error");
    deleteError.textContent = "";
    callAdmit("DeleteAccount", { password: password.value })
      .then(function (body) {
        var payload = body.data.deleteAccount;
        if (payload.deleted) {
          signedOut("Your account is deleted. We sent a last email to confirm it.");
          setPageState("deleted");
          return;
        }
        var error = payload.userErrors[0] || { message: "That did not work." };
        deleteError.textContent = error.code === "RATE_LIMITED"
          ? "Too many wrong passwords. Please wait " + payload.retryAfterSeconds + " seconds."
          : error.message;
        setPageState("delete-refused");
      })
      .catch(failed);
  });

  document.getElementById("signout").addEventListener("click", function () {
    callAdmit("SignOut")
      .then(function (body) {
        if (body.data.signOut.signedOut) {
          signedOut("You are signed out.");
        } else {
          signedOut("You were not signed in.");
        }
      })
      .catch(failed);
  });

  load();
})();
