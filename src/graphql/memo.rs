//! Validation remembered.
//!
//! async-graphql validates every request's document against the schema before executing it,
//! and for the short documents front ends send over and over (the landing page's
//! `confirmAccount`) that walk costs more than the rest of decoding the request. Whether a
//! document validates depends on its text, the operation selected and, through the variables,
//! only on whether each value fits its type. So a successful result is kept under a key made of
//! the text, the operation name and the variables' *shape*: a string given where the document
//! declares `String` or `ID` (which every string fits) stands for any string, and every other
//! value stands for itself. A request with the same key validates the same way, so its result
//! comes from memory. Failed validations are not kept: they are answered as usual.
//!
//! This holds as long as no complexity function reads a string argument; ours are constants.

use std::{collections::HashMap, fmt::Write as _, sync::Arc};

use async_graphql::{
    ServerError, ValidationResult, Value, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation},
    parser::{
        parse_schema,
        types::{BaseType, ExecutableDocument, Type, TypeKind, TypeSystemDefinition},
    },
};

/// Longest variables' shape a key may hold: past it the request is validated as usual. With
/// the document's text (at most 4 KiB, or it is not cached) a key is under 5.2 KB, so a memo
/// full of the longest keys holds about 1.3 MB.
const MAX_SHAPE_BYTES: usize = 1024;
/// Validation results the memo keeps.
const REMEMBERED: usize = 256;

/// The declared field types of the schema's input objects, so that the strings inside an input
/// object's `String` fields can stand for any string too.
#[derive(Debug, Default)]
pub struct InputTypes(HashMap<String, HashMap<String, Type>>);

impl InputTypes {
    /// The input objects `sdl` (the schema's own SDL) defines. An SDL that does not parse gives
    /// none: requests with input objects are then never remembered, which is slower, never wrong.
    pub fn from_sdl(sdl: &str) -> Self {
        let Ok(document) = parse_schema(sdl) else {
            return Self::default();
        };
        let inputs = document
            .definitions
            .into_iter()
            .filter_map(|definition| match definition {
                TypeSystemDefinition::Type(ty) => Some(ty.node),
                _ => None,
            })
            .filter_map(|ty| match ty.kind {
                TypeKind::InputObject(input) => Some((
                    ty.name.node.to_string(),
                    input
                        .fields
                        .into_iter()
                        .map(|field| (field.node.name.node.to_string(), field.node.ty.node))
                        .collect(),
                )),
                _ => None,
            })
            .collect();
        Self(inputs)
    }
}

/// Under what a request's validation is remembered; put in the request's data by whoever
/// parsed its document (see [`key`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ValidationKey(String);

/// The key of a request made of `query` (parsed as `document`), `operation_name` and
/// `variables`; `None` when the variables are too large to be worth remembering, or hold an
/// object of an input type `inputs` does not know. A key never holds a string given where
/// `String` or `ID` is declared, so no password or token is kept in one.
pub fn key(
    query: &str,
    operation_name: Option<&str>,
    document: &ExecutableDocument,
    variables: &Variables,
    inputs: &InputTypes,
) -> Option<ValidationKey> {
    let mut key = String::with_capacity(query.len() + 64);
    // Lengths first, so that no text can pass for another's boundary.
    let name = operation_name.unwrap_or_default();
    let _ = write!(
        key,
        "{}:{query}{}:{}{name}|",
        query.len(),
        u8::from(operation_name.is_some()),
        name.len(),
    );
    let shape_starts = key.len();
    // In the order of their names: a document's operations are a hash map, whose order
    // differs from one parse of the same text to the next.
    let mut operations: Vec<_> = document.operations.iter().collect();
    operations.sort_unstable_by_key(|(name, _)| *name);
    for (_, operation) in operations {
        for definition in &operation.node.variable_definitions {
            // A variable's name is a GraphQL name: letters, digits and underscores only.
            let name = &definition.node.name.node;
            key.push_str(name);
            match variables.get(name) {
                None => key.push('-'),
                Some(value) => shape(&mut key, value, &definition.node.var_type.node, inputs)?,
            }
            key.push(';');
            if key.len() - shape_starts > MAX_SHAPE_BYTES {
                return None;
            }
        }
    }
    Some(ValidationKey(key))
}

/// Appends what of `value` decides whether it fits `ty`.
fn shape(out: &mut String, value: &Value, ty: &Type, inputs: &InputTypes) -> Option<()> {
    match (value, &ty.base) {
        (Value::Null, _) => out.push('N'),
        (Value::List(items), BaseType::List(item_type)) => {
            out.push('[');
            for item in items {
                shape(out, item, item_type, inputs)?;
                out.push(',');
            }
            out.push(']');
        }
        // A single value where a list is expected stands for a list of one.
        (_, BaseType::List(item_type)) => {
            out.push('<');
            shape(out, value, item_type, inputs)?;
        }
        (Value::String(_), BaseType::Named(name)) if name == "String" || name == "ID" => {
            out.push('S');
        }
        (Value::Object(fields), BaseType::Named(name)) => {
            // An object of a type not known here could hold a password in a `String` field:
            // rather than keep it in a key, the request is not remembered.
            let types = inputs.0.get(name.as_str())?;
            out.push('{');
            for (field, value) in fields {
                out.push_str(&serde_json::to_string(field.as_str()).ok()?);
                out.push(':');
                match types.get(field.as_str()) {
                    Some(field_type) => shape(out, value, field_type, inputs)?,
                    None => verbatim(out, value)?,
                }
                out.push(',');
            }
            out.push('}');
        }
        _ => verbatim(out, value)?,
    }
    Some(())
}

fn verbatim(out: &mut String, value: &Value) -> Option<()> {
    out.push('=');
    out.push_str(&serde_json::to_string(value).ok()?);
    Some(())
}

/// The async-graphql extension that answers validation from memory for a request whose
/// [`ValidationKey`] it has seen validate, and otherwise lets async-graphql validate.
#[derive(Clone)]
pub struct ValidationMemo(Arc<Memo>);

impl Default for ValidationMemo {
    fn default() -> Self {
        Self(Arc::new(Memo(quick_cache::sync::Cache::new(REMEMBERED))))
    }
}

/// The results, shared by every request of one schema.
struct Memo(quick_cache::sync::Cache<ValidationKey, ValidationResult>);

impl ExtensionFactory for ValidationMemo {
    fn create(&self) -> Arc<dyn Extension> {
        // Holds no state of its own request, so every request shares the one instance.
        self.0.clone()
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Memo {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let Some(key) = ctx.data_opt::<ValidationKey>() else {
            return next.run(ctx).await;
        };
        if let Some(result) = self.0.get(key) {
            return Ok(result);
        }
        let result = next.run(ctx).await?;
        self.0.insert(key.clone(), result);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;
    use serde_json::json;

    use super::*;

    const SDL: &str = "input Pair { name: String!, kind: Kind, tags: [String!] }
        enum Kind { A B }
        type Query { a: Int }";

    fn key_of(query: &str, operation: Option<&str>, variables: serde_json::Value) -> String {
        let document = parse_query(query).expect("the test's document parses");
        let variables = Variables::from_json(variables);
        key(
            query,
            operation,
            &document,
            &variables,
            &InputTypes::from_sdl(SDL),
        )
        .expect("small variables have a key")
        .0
    }

    const DOCUMENT: &str = "query($token: String!, $id: ID, $kind: Kind, $count: Int, $pair: Pair, $list: [String!]) { a }";

    #[test]
    fn strings_of_string_and_id_variables_share_a_key_and_other_values_do_not() {
        let first = json!({ "token": "abc", "id": "1", "pair": { "name": "x", "tags": ["a"] }, "list": ["p", "q"] });
        let second = json!({ "token": "xyz-longer", "id": "2", "pair": { "name": "y", "tags": ["b"] }, "list": ["r", "s"] });
        assert_eq!(
            key_of(DOCUMENT, None, first),
            key_of(DOCUMENT, None, second)
        );

        let base = key_of(DOCUMENT, None, json!({ "token": "abc" }));
        for other in [
            json!({ "token": 5 }),
            json!({ "token": null }),
            json!({}),
            json!({ "token": ["abc"] }),
            json!({ "token": "abc", "kind": "A" }),
            json!({ "token": "abc", "count": 1 }),
        ] {
            assert_ne!(base, key_of(DOCUMENT, None, other.clone()), "{other}");
        }
        assert_ne!(
            key_of(DOCUMENT, None, json!({ "kind": "A" })),
            key_of(DOCUMENT, None, json!({ "kind": "B" }))
        );
        assert_ne!(
            key_of(DOCUMENT, None, json!({ "count": 1 })),
            key_of(DOCUMENT, None, json!({ "count": 2 }))
        );
    }

    #[test]
    fn input_objects_keep_their_field_names_enums_and_list_lengths() {
        let base = key_of(
            DOCUMENT,
            None,
            json!({ "pair": { "name": "x", "kind": "A" } }),
        );
        for other in [
            json!({ "pair": { "name": "x", "kind": "B" } }),
            json!({ "pair": { "name": "x" } }),
            json!({ "pair": { "name": "x", "kind": "A", "extra": "y" } }),
            json!({ "pair": { "name": 1, "kind": "A" } }),
            json!({ "pair": { "name": "x", "kind": "A", "tags": [] } }),
        ] {
            assert_ne!(base, key_of(DOCUMENT, None, other.clone()), "{other}");
        }
        assert_ne!(
            key_of(DOCUMENT, None, json!({ "list": ["a"] })),
            key_of(DOCUMENT, None, json!({ "list": ["a", "b"] }))
        );
        assert_ne!(
            key_of(DOCUMENT, None, json!({ "list": "a" })),
            key_of(DOCUMENT, None, json!({ "list": ["a"] }))
        );
    }

    #[test]
    fn the_operation_name_and_the_text_are_part_of_the_key() {
        let two = "query A($x: String) { a } query B { a }";
        let vars = json!({ "x": "1" });
        assert_ne!(
            key_of(two, Some("A"), vars.clone()),
            key_of(two, Some("B"), vars.clone())
        );
        assert_ne!(
            key_of(two, Some("A"), vars.clone()),
            key_of(two, None, vars.clone())
        );
        assert_ne!(
            key_of("{ a }", None, json!({})),
            key_of("{ a }", Some(""), json!({}))
        );
        assert_ne!(
            key_of("{ a }", None, json!({})),
            key_of("{a}", None, json!({}))
        );
    }

    #[test]
    fn every_parse_of_a_text_gives_its_requests_the_same_key() {
        let many = "query A($a: String) { a } query B($b: Kind) { a } query C($c: Int) { a }
                    query D($d: Pair) { a } query E($e: ID) { a }";
        let vars = json!({ "a": "x", "b": "A", "c": 1, "d": { "name": "y" }, "e": "z" });
        let first = key_of(many, Some("C"), vars.clone());
        for _ in 0..20 {
            assert_eq!(key_of(many, Some("C"), vars.clone()), first);
        }
    }

    #[test]
    fn variables_beyond_the_bound_are_not_remembered() {
        let document = parse_query("query($n: [Int]) { a }").expect("parses");
        let long: Vec<u32> = (0..1000).collect();
        let variables = Variables::from_json(json!({ "n": long }));
        assert_eq!(
            key(
                "query($n: [Int]) { a }",
                None,
                &document,
                &variables,
                &InputTypes::default()
            ),
            None
        );
    }

    #[test]
    fn no_key_holds_a_string_given_for_a_string_field() {
        let secret = "correct horse battery staple";
        let known = key_of(DOCUMENT, None, json!({ "pair": { "name": secret } }));
        assert!(!known.contains(secret), "{known}");
        // Without the type's fields, the object's strings cannot be told apart: no key.
        let document = parse_query(DOCUMENT).expect("parses");
        let variables = Variables::from_json(json!({ "pair": { "name": secret } }));
        assert_eq!(
            key(
                DOCUMENT,
                None,
                &document,
                &variables,
                &InputTypes::default()
            ),
            None
        );
    }

    #[test]
    fn the_input_objects_are_read_from_the_sdl() {
        let inputs = InputTypes::from_sdl(SDL);
        assert_eq!(inputs.0.len(), 1);
        assert_eq!(inputs.0["Pair"]["tags"].to_string(), "[String!]");
        assert!(InputTypes::from_sdl("not a schema {").0.is_empty());
    }
}
