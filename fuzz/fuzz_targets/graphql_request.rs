//! Raw bytes as a POST body and as a GET query string, through everything `/graphql` does
//! before and during execution: JSON decoding, the document limits, parsing, validation and
//! execution of a schema that has no database (resolvers stop at the missing state).
#![no_main]

use std::sync::LazyLock;

use admit::{
    graphql::{AdmitSchema, build_schema, limits::DocumentCache},
    http::{decode_get, decode_post},
};
use libfuzzer_sys::fuzz_target;

static SCHEMA: LazyLock<AdmitSchema> = LazyLock::new(|| build_schema(None, true));
/// Shared by every input through POST, so that documents (and their validation, which the
/// schema remembers per variables' shape) come from it as they do in service; GET parses and
/// validates afresh, so that both paths are driven.
static DOCUMENTS: LazyLock<DocumentCache> = LazyLock::new(|| DocumentCache::for_schema(&SCHEMA));

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode_post(data, Some(&DOCUMENTS)) {
        futures::executor::block_on(SCHEMA.execute_batch(batch));
    }
    if let Ok(query_string) = std::str::from_utf8(data)
        && let Ok(request) = decode_get(query_string, None)
    {
        futures::executor::block_on(SCHEMA.execute(request));
    }
});
