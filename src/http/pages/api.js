// Shared by admit's pages: one GraphQL request to this service's /graphql, answered as JSON.
function callAdmit(query, variables) {
  "use strict";
  return fetch(new URL("graphql", window.location.href).toString(), {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      "Accept": "application/graphql-response+json, application/json"
    },
    body: JSON.stringify({ query: query, variables: variables || {} })
  }).then(function (response) { return response.json(); });
}
