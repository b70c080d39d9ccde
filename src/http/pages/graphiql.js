// Renders GraphiQL against this origin's /graphql. Everything it loads is pinned by version and
// integrity in the page; this script is allowed by its hash.
const fetcher = GraphiQL.createFetcher({ url: "/graphql" });
ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, { fetcher, defaultEditorToolsVisibility: true }),
);
