// Shared by admit's pages. The page's state, for its stylesheet and for the browser tests that
// wait on it.
function setPageState(name) {
  "use strict";
  document.body.setAttribute("data-state", name);
}

// The token a link carries in its fragment, which the browser never sends to any server.
function linkToken() {
  "use strict";
  return new URLSearchParams(window.location.hash.slice(1)).get("token");
}

// One of admit's operations (clients/typescript/src/operations.graphql,
// put here when the page is built) sent to this service's /graphql, answered as JSON.
var ADMIT_OPERATIONS = /*OPERATIONS*/;
function callAdmit(operationName, variables) {
  "use strict";
  return fetch(new URL("graphql", window.location.href).toString(), {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "Accept": "application/graphql-response+json, application/json"
    },
    body: JSON.stringify({ query: ADMIT_OPERATIONS[operationName], operationName: operationName, variables: variables || {} })
  }).then(function (response) { return response.json(); });
}
