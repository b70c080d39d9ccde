//! Bounds on what a request may make the server do before anything recursive looks at it.
//!
//! async-graphql's parser recurses once per nesting level of a value or selection, and its depth,
//! complexity and validation walks follow every fragment spread without memoizing, so a few
//! kilobytes can overflow a stack (deep lists) or cost minutes of CPU (fragments that spread the
//! previous one twice). The checks here run first and are linear: a scan of the source text that
//! needs no parser, then one memoized pass over the parsed document that measures what expanding
//! every spread would give. Only a document within both bounds reaches async-graphql.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    Name, Positioned, Request, Value, Variables,
    parser::{
        parse_query,
        types::{ExecutableDocument, Selection, SelectionSet},
    },
};

use super::memo::{self, InputTypes};

/// Deepest nesting of `{`, `[` and `(` in a document, and of lists and objects in variables.
/// The standard introspection query nests 13 levels; our own operations fewer than 8.
pub const MAX_NESTING: usize = 32;
/// Most lexical tokens in one document: the introspection query has about 400.
pub const MAX_TOKENS: usize = 5_000;
/// Most fragment definitions in one document.
pub const MAX_FRAGMENTS: usize = 100;
/// Most fragment spreads (`...Name` and inline `... on`) in one document.
pub const MAX_SPREADS: usize = 500;
/// Most selections the operations hold once every spread is replaced by its fragment: the
/// introspection query expands to about 250.
pub const MAX_EXPANDED_SELECTIONS: usize = 2_000;

/// Why a document was refused before execution. Each answer names the limit, so a developer who
/// meets one knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Brackets, lists or objects nested too deeply.
    #[error("The document nests more than {MAX_NESTING} levels of brackets.")]
    TooDeep,
    /// Variables nested too deeply.
    #[error("The variables nest more than {MAX_NESTING} levels of lists and objects.")]
    VariablesTooDeep,
    /// Too many tokens.
    #[error("The document has more than {MAX_TOKENS} tokens.")]
    TooManyTokens,
    /// Too many fragment definitions.
    #[error("The document defines more than {MAX_FRAGMENTS} fragments.")]
    TooManyFragments,
    /// Too many spreads.
    #[error("The document has more than {MAX_SPREADS} fragment spreads.")]
    TooManySpreads,
    /// Expanding the spreads would give too many selections.
    #[error(
        "With its fragments expanded, the document selects more than {MAX_EXPANDED_SELECTIONS} fields."
    )]
    TooManySelections,
    /// A fragment spreads itself, directly or through others.
    #[error("Fragment \"{0}\" spreads itself, directly or through other fragments.")]
    FragmentCycle(String),
}

impl LimitError {
    /// The `extensions.code` clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooDeep | Self::VariablesTooDeep => "DOCUMENT_TOO_DEEP",
            Self::FragmentCycle(_) => "FRAGMENT_CYCLE",
            Self::TooManyTokens
            | Self::TooManyFragments
            | Self::TooManySpreads
            | Self::TooManySelections => "DOCUMENT_TOO_LARGE",
        }
    }
}

/// Checks `request` against every bound and, when it passes, leaves it parsed, so that the
/// checks and the execution share one parse. A document that does not parse is left as it is:
/// async-graphql parses it again, safely now, and answers with the usual syntax error.
pub fn check_request(request: &mut Request) -> Result<(), LimitError> {
    check_request_with(request, None)
}

/// Longest source text whose parsed document is kept in a [`DocumentCache`]: clients' shared
/// operations are a few hundred bytes, so a cache full of the longest costs 1 MiB at most.
const CACHED_SOURCE_BYTES: usize = 4096;
/// Documents a [`DocumentCache`] keeps.
const CACHED_DOCUMENTS: usize = 256;

/// Parsed documents that passed every bound, by their source text. Front ends send the same
/// few documents over and over (a landing page sends one), and parsing is most of what
/// decoding a request costs; a hit skips the scan, the parse and the checks of the document.
/// Unknown documents evict others by the cache's own policy (S3-FIFO), so a client sending
/// endless new ones costs at most the parse it would have cost anyway. A request whose document
/// is kept also gets its [`memo::ValidationKey`], so that its validation can be remembered too.
#[derive(Clone)]
pub struct DocumentCache(Arc<Documents>);

struct Documents {
    parsed: quick_cache::sync::Cache<String, ExecutableDocument>,
    inputs: InputTypes,
}

impl DocumentCache {
    /// An empty cache for `schema`'s documents.
    pub fn for_schema(schema: &super::AdmitSchema) -> Self {
        Self::for_sdl(&schema.sdl())
    }

    /// An empty cache for the schema whose SDL is `sdl`.
    fn for_sdl(sdl: &str) -> Self {
        Self(Arc::new(Documents {
            parsed: quick_cache::sync::Cache::new(CACHED_DOCUMENTS),
            inputs: InputTypes::from_sdl(sdl),
        }))
    }
}

/// [`check_request`], reusing and filling `cache` when given.
pub fn check_request_with(
    request: &mut Request,
    cache: Option<&DocumentCache>,
) -> Result<(), LimitError> {
    if let Some(cache) = cache
        && let Some(document) = cache.0.parsed.get(&request.query)
    {
        check_variables(&request.variables)?;
        remember_as(request, &document, cache);
        request.set_parsed_query(document);
        return Ok(());
    }
    scan_source(&request.query)?;
    check_variables(&request.variables)?;
    if let Ok(document) = parse_query(&request.query) {
        check_document(&document)?;
        if let Some(cache) = cache
            && request.query.len() <= CACHED_SOURCE_BYTES
        {
            cache
                .0
                .parsed
                .insert(request.query.clone(), document.clone());
            remember_as(request, &document, cache);
        }
        request.set_parsed_query(document);
    }
    Ok(())
}

/// Gives `request` the key its validation is remembered under, when it has one.
fn remember_as(request: &mut Request, document: &ExecutableDocument, cache: &DocumentCache) {
    if let Some(key) = memo::key(
        &request.query,
        request.operation_name.as_deref(),
        document,
        &request.variables,
        &cache.0.inputs,
    ) {
        request.data.insert(key);
    }
}

/// One pass over the source text, without a parser: nesting, tokens, fragments and spreads.
/// Strings and comments are skipped as the GraphQL lexer would, so brackets inside them do not
/// count; anything malformed is left for the parser to report.
pub fn scan_source(source: &str) -> Result<(), LimitError> {
    let bytes = source.as_bytes();
    let mut i = 0;
    let mut depth = 0usize;
    let mut tokens = 0usize;
    let mut fragments = 0usize;
    let mut spreads = 0usize;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => i = skip_block_string(bytes, i + 3),
            b'"' => i = skip_string(bytes, i + 1),
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(LimitError::TooDeep);
                }
                i += 1;
            }
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => {
                spreads += 1;
                if spreads > MAX_SPREADS {
                    return Err(LimitError::TooManySpreads);
                }
                i += 3;
            }
            b'_' | b'a'..=b'z' | b'A'..=b'Z' => {
                let start = i;
                while i < bytes.len() && (bytes[i] == b'_' || bytes[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
                // Counts a field named `fragment` too: an over-estimate, never an under-estimate.
                if &bytes[start..i] == b"fragment" {
                    fragments += 1;
                    if fragments > MAX_FRAGMENTS {
                        return Err(LimitError::TooManyFragments);
                    }
                }
            }
            b'-' | b'0'..=b'9' => {
                i += 1;
                while i < bytes.len() && matches!(bytes[i], b'0'..=b'9' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                if i < bytes.len() && bytes[i] == b'.' && !bytes[i..].starts_with(b"...") {
                    i += 1;
                    while i < bytes.len()
                        && matches!(bytes[i], b'0'..=b'9' | b'e' | b'E' | b'+' | b'-')
                    {
                        i += 1;
                    }
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > MAX_TOKENS {
            return Err(LimitError::TooManyTokens);
        }
    }
    Ok(())
}

/// The index after a `"..."` string whose content starts at `i`; a string ends at its closing
/// quote or, unterminated, at the end of the line.
fn skip_string(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            b'\n' | b'\r' => return i,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The index after a `"""..."""` block string whose content starts at `i`.
fn skip_block_string(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() {
        if bytes[i..].starts_with(b"\\\"\"\"") {
            i += 4;
        } else if bytes[i..].starts_with(b"\"\"\"") {
            return i + 3;
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Refuses variables nested deeper than [`MAX_NESTING`]. serde_json already stops at 128 levels
/// while parsing, so this walk is bounded too.
pub fn check_variables(variables: &Variables) -> Result<(), LimitError> {
    fn depth_ok(value: &Value, depth: usize) -> bool {
        if depth > MAX_NESTING {
            return false;
        }
        match value {
            Value::List(items) => items.iter().all(|item| depth_ok(item, depth + 1)),
            Value::Object(fields) => fields.values().all(|item| depth_ok(item, depth + 1)),
            _ => true,
        }
    }
    if variables.values().all(|value| depth_ok(value, 1)) {
        Ok(())
    } else {
        Err(LimitError::VariablesTooDeep)
    }
}

/// Refuses documents with too many fragments, a fragment cycle, or too many selections once
/// every spread is expanded. Each fragment is measured once, so this is linear in the document.
pub fn check_document(document: &ExecutableDocument) -> Result<(), LimitError> {
    if document.fragments.len() > MAX_FRAGMENTS {
        return Err(LimitError::TooManyFragments);
    }
    let mut sizes = ExpandedSizes {
        document,
        measured: HashMap::new(),
    };
    let mut total = 0usize;
    for (_, operation) in document.operations.iter() {
        total = total.saturating_add(sizes.selection_set(&operation.node.selection_set)?);
    }
    // Fragments no operation uses are still validated (and walked) by async-graphql.
    for name in document.fragments.keys() {
        total = total.saturating_add(sizes.fragment(name)?);
    }
    if total > MAX_EXPANDED_SELECTIONS {
        return Err(LimitError::TooManySelections);
    }
    Ok(())
}

/// A fragment being measured (`None`), to detect cycles, or its expanded size.
struct ExpandedSizes<'a> {
    document: &'a ExecutableDocument,
    measured: HashMap<&'a Name, Option<usize>>,
}

impl<'a> ExpandedSizes<'a> {
    fn fragment(&mut self, name: &'a Name) -> Result<usize, LimitError> {
        match self.measured.get(name) {
            Some(Some(size)) => return Ok(*size),
            Some(None) => return Err(LimitError::FragmentCycle(name.to_string())),
            None => {}
        }
        // A spread of an unknown fragment is a validation error, reported later; it expands to
        // nothing.
        let Some(fragment) = self.document.fragments.get(name) else {
            return Ok(0);
        };
        self.measured.insert(name, None);
        let size = self.selection_set(&fragment.node.selection_set)?;
        self.measured.insert(name, Some(size));
        Ok(size)
    }

    fn selection_set(&mut self, set: &'a Positioned<SelectionSet>) -> Result<usize, LimitError> {
        let mut size = 0usize;
        for selection in &set.node.items {
            let item = match &selection.node {
                Selection::Field(field) => {
                    1usize.saturating_add(self.selection_set(&field.node.selection_set)?)
                }
                Selection::InlineFragment(inline) => {
                    self.selection_set(&inline.node.selection_set)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node)?
                }
            };
            size = size.saturating_add(item);
            if size > MAX_EXPANDED_SELECTIONS {
                return Err(LimitError::TooManySelections);
            }
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_list(levels: usize) -> String {
        format!(
            "{{ passwordPolicy(x: {}1{}) {{ minLength }} }}",
            "[".repeat(levels),
            "]".repeat(levels)
        )
    }

    /// `F{n}` spreads `F{n-1}` twice: 2^n selections from a few hundred bytes.
    fn fragment_bomb(levels: usize) -> String {
        let mut document = String::from("query A { passwordPolicy { ...F0 } }\n");
        document.push_str("fragment F0 on PasswordPolicy { minLength }\n");
        for level in 1..=levels {
            document.push_str(&format!(
                "fragment F{level} on PasswordPolicy {{ ...F{prev} ...F{prev} }}\n",
                prev = level - 1
            ));
        }
        document.push_str(&format!("query B {{ passwordPolicy {{ ...F{levels} }} }}"));
        document
    }

    fn check(source: &str) -> Result<(), LimitError> {
        check_request(&mut Request::new(source))
    }

    #[test]
    fn nesting_is_counted_outside_strings_and_comments_only() {
        assert_eq!(check(&nested_list(MAX_NESTING - 4)), Ok(()));
        assert_eq!(check(&nested_list(1_600)), Err(LimitError::TooDeep));
        let quoted = format!(
            "{{ passwordPolicy(x: \"{0}\", y: \"\"\"{0}\"\"\") {{ minLength }} }} # {0}",
            "[".repeat(100)
        );
        assert_eq!(check(&quoted), Ok(()));
    }

    #[test]
    fn fragment_bombs_are_refused_by_their_expanded_size() {
        assert_eq!(check(&fragment_bomb(5)), Ok(()));
        assert_eq!(
            check(&fragment_bomb(28)),
            Err(LimitError::TooManySelections)
        );
    }

    #[test]
    fn fragment_cycles_are_refused_before_anything_follows_them() {
        let cycle = "{ passwordPolicy { ...A } }
            fragment A on PasswordPolicy { ...B ...B }
            fragment B on PasswordPolicy { ...A ...A }";
        assert!(matches!(check(cycle), Err(LimitError::FragmentCycle(_))));
    }

    #[test]
    fn token_fragment_and_spread_counts_are_bounded() {
        let many_fields = format!("{{ {} }}", "a ".repeat(MAX_TOKENS + 1));
        assert_eq!(check(&many_fields), Err(LimitError::TooManyTokens));
        let fragments: String = (0..=MAX_FRAGMENTS)
            .map(|i| format!("fragment F{i} on Query {{ a }} "))
            .collect();
        assert_eq!(check(&fragments), Err(LimitError::TooManyFragments));
        let spreads = format!("{{ {} }}", "...F ".repeat(MAX_SPREADS + 1));
        assert_eq!(check(&spreads), Err(LimitError::TooManySpreads));
    }

    #[test]
    fn deeply_nested_variables_are_refused() {
        let mut value = serde_json::json!(1);
        for _ in 0..MAX_NESTING + 1 {
            value = serde_json::json!([value]);
        }
        let variables = Variables::from_json(serde_json::json!({ "x": value }));
        assert_eq!(
            check_variables(&variables),
            Err(LimitError::VariablesTooDeep)
        );
    }

    #[test]
    fn cached_documents_serve_their_own_source_only_and_variables_are_still_checked() {
        let cache = DocumentCache::for_sdl("");
        let source = "query P { passwordPolicy { minLength } }";
        let has_key = |request: &Request| {
            request
                .data
                .contains_key(&std::any::TypeId::of::<memo::ValidationKey>())
        };
        for _ in 0..3 {
            let mut request = Request::new(source);
            check_request_with(&mut request, Some(&cache)).unwrap();
            assert!(
                has_key(&request),
                "a kept document's validation is remembered"
            );
            let document = request.parsed_query().unwrap();
            assert!(
                document
                    .operations
                    .iter()
                    .any(|(name, _)| name.is_some_and(|n| n == "P"))
            );
        }
        assert_eq!(cache.0.parsed.len(), 1);
        // Another source is parsed on its own, never served the cached one.
        let mut other = Request::new("query Q { passwordPolicy { maxLength } }");
        check_request_with(&mut other, Some(&cache)).unwrap();
        let names: Vec<String> = other
            .parsed_query()
            .unwrap()
            .operations
            .iter()
            .filter_map(|(name, _)| name.map(|n| n.to_string()))
            .collect();
        assert_eq!(names, ["Q"]);
        // A hit still checks the request's own variables.
        let mut value = serde_json::json!(1);
        for _ in 0..MAX_NESTING + 1 {
            value = serde_json::json!([value]);
        }
        let mut deep =
            Request::new(source).variables(Variables::from_json(serde_json::json!({ "x": value })));
        assert_eq!(
            check_request_with(&mut deep, Some(&cache)),
            Err(LimitError::VariablesTooDeep)
        );
        // What fails a bound, and what is too long to keep, is not kept.
        let mut too_deep = Request::new(nested_list(MAX_NESTING + 1));
        assert!(check_request_with(&mut too_deep, Some(&cache)).is_err());
        let long = format!(
            "query L {{ passwordPolicy {{ minLength }} }} # {}",
            "x".repeat(5000)
        );
        let mut long = Request::new(long);
        check_request_with(&mut long, Some(&cache)).unwrap();
        assert!(!has_key(&long), "nor is its validation");
        assert_eq!(cache.0.parsed.len(), 2);
    }

    #[test]
    fn unterminated_strings_and_odd_bytes_end_the_scan_cleanly() {
        for source in [
            "\"",
            "\"\"\"",
            "{ a(x: \"\\",
            "...",
            "-",
            "1.",
            "\u{feff}{ a }",
            "é",
        ] {
            assert_eq!(scan_source(source), Ok(()), "{source:?}");
        }
        assert_eq!(scan_source("\"\"\"\\\"\"\"{{{\"\"\""), Ok(()));
    }
}
