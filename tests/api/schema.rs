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
