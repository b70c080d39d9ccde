use std::process::Command;

#[test]
fn committed_schema_matches_what_the_binary_exports() {
    let output = Command::new(env!("CARGO_BIN_EXE_admit"))
        .arg("export-schema")
        .output()
        .expect("run admit export-schema");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let exported = String::from_utf8(output.stdout).expect("UTF-8 schema");
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql is committed");
    assert!(
        exported == committed,
        "schema.graphql is stale: run `cargo run -- export-schema --out schema.graphql`"
    );
    for name in [
        "register(input: RegisterInput!): RegisterPayload!",
        "token: String!\n\t): ConfirmAccountPayload!",
        "passwordPolicy: PasswordPolicy!",
    ] {
        assert!(committed.contains(name), "{name} missing");
    }
    assert!(!committed.contains("passwordHash"));
}

#[tokio::test]
async fn every_shared_operation_validates_against_the_schema() {
    // The pages, the tests and the typed client all send these: each must parse and validate
    // on its own (with the fragments it uses). A schema without application state still
    // validates; its resolvers then fail, which shows as an error with a path, unlike a
    // validation error.
    let schema = admit::graphql::build_schema(None, true);
    let whole = async_graphql::parser::parse_query(admit::graphql::OPERATIONS).unwrap();
    let names = admit::graphql::operation_names();
    assert_eq!(names.len(), whole.operations.iter().count(), "{names:?}");
    assert!(names.contains(&"ConfirmAccount"), "{names:?}");
    for &name in names {
        let document = admit::graphql::operation_document(name).unwrap();
        let input = match name {
            "ResetPassword" => serde_json::json!({ "token": "t", "newPassword": "x" }),
            "ChangePassword" => serde_json::json!({ "currentPassword": "x", "newPassword": "y" }),
            "RequestEmailChange" => {
                serde_json::json!({ "newEmail": "b@example.com", "password": "x" })
            }
            _ => serde_json::json!({ "email": "a@example.com", "password": "x" }),
        };
        let request = async_graphql::Request::new(document)
            .operation_name(name)
            .variables(async_graphql::Variables::from_json(serde_json::json!({
                "input": input,
                "token": "t",
                "email": "a@example.com",
                "id": "x",
                "password": "x",
            })));
        let response = schema.execute(request).await;
        assert!(!response.errors.is_empty(), "{name} ran without state?");
        for error in &response.errors {
            assert!(
                !error.path.is_empty(),
                "{name} does not validate: {}",
                error.message
            );
        }
    }
}
