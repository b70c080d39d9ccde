// Shared by admit's pages: one of admit's operations (clients/typescript/src/operations.graphql,
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
