import type { CodegenConfig } from "@graphql-codegen/cli";

// Generates typed documents for the operations in src/*.graphql from admit's committed schema.
// ADMIT_SCHEMA points at another schema file (admit's tests use it to prove that a breaking
// change fails this client).
const config: CodegenConfig = {
  schema: process.env.ADMIT_SCHEMA ?? "../../schema.graphql",
  documents: ["src/**/*.graphql"],
  ignoreNoDocuments: false,
  generates: {
    "src/gql/": {
      preset: "client",
      // Payloads are read whole by the client below; no fragment masking.
      presetConfig: { fragmentMasking: false },
      config: {
        // Plain strings instead of parsed ASTs: no graphql runtime in the browser bundle.
        documentMode: "string",
        enumsAsTypes: true,
        scalars: { DateTime: "string" },
        useTypeImports: true,
      },
    },
  },
};

export default config;
