//! The example typed client in `clients/typescript`: generated from the committed schema with
//! GraphQL Code Generator and type-checked with `tsc`, as a frontend team would. A breaking
//! schema change must make it fail.

use std::path::{Path, PathBuf};

use tokio::process::Command;

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/typescript")
}

fn committed_schema() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap()
}

/// What `npm run generate` and `npm run typecheck` said, run on a scratch copy of the client
/// against `schema`.
struct Outcome {
    generated: bool,
    type_checked: Option<bool>,
    output: String,
}

async fn generate_and_check(schema: &str) -> Outcome {
    let source = client_dir();
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    std::fs::create_dir(dir.join("src")).unwrap();
    for file in [
        "package.json",
        "codegen.ts",
        "tsconfig.json",
        "src/operations.graphql",
        "src/client.ts",
    ] {
        std::fs::copy(source.join(file), dir.join(file)).unwrap();
    }
    std::os::unix::fs::symlink(source.join("node_modules"), dir.join("node_modules")).unwrap();
    let schema_file = dir.join("schema.graphql");
    std::fs::write(&schema_file, schema).unwrap();

    let (generated, mut output) = npm(dir, "generate", &schema_file).await;
    if !generated {
        return Outcome {
            generated,
            type_checked: None,
            output,
        };
    }
    let (type_checked, typecheck_output) = npm(dir, "typecheck", &schema_file).await;
    output.push_str(&typecheck_output);
    Outcome {
        generated,
        type_checked: Some(type_checked),
        output,
    }
}

async fn npm(dir: &Path, script: &str, schema: &Path) -> (bool, String) {
    let output = Command::new("npm")
        .args(["run", "--silent", script])
        .current_dir(dir)
        .env("ADMIT_SCHEMA", schema)
        .output()
        .await
        .expect("run npm");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn the_typed_client_generates_from_the_committed_schema_and_type_checks() {
    if !crate::helpers::node_tools_ready(
        &client_dir().join("node_modules/.bin/graphql-codegen"),
        "the typed-client tests",
    ) {
        return;
    }
    let outcome = generate_and_check(&committed_schema()).await;
    assert!(outcome.generated, "{}", outcome.output);
    assert_eq!(outcome.type_checked, Some(true), "{}", outcome.output);
}

#[tokio::test]
async fn removing_a_field_the_client_uses_fails_its_generation() {
    if !crate::helpers::node_tools_ready(
        &client_dir().join("node_modules/.bin/graphql-codegen"),
        "the typed-client tests",
    ) {
        return;
    }
    let schema = committed_schema();
    // RegisterPayload's `retryAfterSeconds`, with the description above it.
    let start = schema
        .find("type RegisterPayload")
        .expect("the payload type");
    let field = schema[start..]
        .find("\tretryAfterSeconds: Int\n")
        .expect("the field this test removes")
        + start;
    let closing = schema[..field]
        .rfind("\t\"\"\"\n")
        .expect("its description");
    let opening = schema[..closing]
        .rfind("\t\"\"\"\n")
        .expect("its description");
    let mut broken = schema.clone();
    broken.replace_range(opening..field + "\tretryAfterSeconds: Int\n".len(), "");
    let outcome = generate_and_check(&broken).await;
    assert!(!outcome.generated, "{}", outcome.output);
    assert!(
        outcome.output.contains("retryAfterSeconds"),
        "{}",
        outcome.output
    );
}

#[tokio::test]
async fn changing_a_field_type_the_client_relies_on_fails_its_type_check() {
    if !crate::helpers::node_tools_ready(
        &client_dir().join("node_modules/.bin/graphql-codegen"),
        "the typed-client tests",
    ) {
        return;
    }
    let schema = committed_schema();
    // `ResendConfirmationPayload.accepted` turns from a Boolean into a String.
    let start = schema
        .find("type ResendConfirmationPayload")
        .expect("the payload type");
    let field = schema[start..]
        .find("\taccepted: Boolean!")
        .expect("its accepted field")
        + start;
    let mut broken = schema.clone();
    broken.replace_range(
        field..field + "\taccepted: Boolean!".len(),
        "\taccepted: String!",
    );
    let outcome = generate_and_check(&broken).await;
    assert!(outcome.generated, "{}", outcome.output);
    assert_eq!(outcome.type_checked, Some(false), "{}", outcome.output);
    assert!(outcome.output.contains("client.ts"), "{}", outcome.output);
}
