//! The GraphQL API: schema, resolvers and the mapping of outcomes to payloads. Resolvers only
//! convert input, call one service function and map its result.

mod errors;
pub mod limits;
mod types;

use async_graphql::{Context, EmptySubscription, Object, Schema};

use crate::{
    domain::{ClientNetwork, ConfirmationToken, EmailAddress},
    services::accounts,
    state::AppState,
};
pub use errors::{CostlyBudget, MAX_COSTLY_PER_REQUEST, RequestId};
use types::{
    Acceptance, ConfirmAccountPayload, PasswordPolicy, RegisterInput, RegisterPayload,
    ResendConfirmationPayload,
};

/// admit's operations (one file, several named operations and their fragments): the pages send
/// them, the tests use them, and the typed client is generated from them.
pub const OPERATIONS: &str = include_str!("../../clients/typescript/src/operations.graphql");

/// The names of the operations in [`OPERATIONS`], in file order (worked out once: the HTTP
/// layer labels every request's metrics with them).
pub fn operation_names() -> &'static [&'static str] {
    static NAMES: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
        definitions()
            .into_iter()
            .filter(|(keyword, _, _)| *keyword != "fragment")
            .map(|(_, name, _)| name)
            .collect()
    });
    &NAMES
}

/// The document for operation `name` of [`OPERATIONS`]: the operation and the fragments it
/// uses, so that it is sent, validated and costed on its own.
pub fn operation_document(name: &str) -> Option<String> {
    let definitions = definitions();
    let (_, _, operation) = definitions
        .iter()
        .find(|(keyword, found, _)| *keyword != "fragment" && *found == name)?;
    let mut document = (*operation).to_owned();
    let mut added: Vec<&str> = Vec::new();
    // Fragments can spread fragments: add until nothing more is used.
    while let Some((_, fragment, text)) = definitions.iter().find(|(keyword, fragment, _)| {
        *keyword == "fragment" && !added.contains(fragment) && spreads(&document, fragment)
    }) {
        added.push(fragment);
        document.push('\n');
        document.push_str(text);
    }
    Some(document)
}

/// The top-level definitions of [`OPERATIONS`] as (keyword, name, text): each starts on a line
/// of its own with its keyword at the start, as the file is written.
fn definitions() -> Vec<(&'static str, &'static str, &'static str)> {
    let starts: Vec<usize> = OPERATIONS
        .match_indices('\n')
        .map(|(at, _)| at + 1)
        .chain([0])
        .filter(|&at| {
            ["query ", "mutation ", "subscription ", "fragment "]
                .iter()
                .any(|keyword| OPERATIONS[at..].starts_with(keyword))
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(index, &start)| {
            let end = starts.get(index + 1).copied().unwrap_or(OPERATIONS.len());
            let text = OPERATIONS[start..end].trim_end();
            let mut words = text.split(|c: char| !(c.is_alphanumeric() || c == '_'));
            let keyword = words.next().unwrap_or_default();
            let name = words.find(|word| !word.is_empty()).unwrap_or_default();
            (keyword, name, text)
        })
        .collect()
}

/// Whether `document` spreads the fragment `name` (`...name` not followed by more of a name).
fn spreads(document: &str, name: &str) -> bool {
    let spread = format!("...{name}");
    document.match_indices(&spread).any(|(at, _)| {
        !document[at + spread.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// The admit schema.
pub type AdmitSchema = Schema<Query, Mutation, EmptySubscription>;

/// Deepest selection allowed. Our own types are shallow; the standard introspection query that
/// IDEs and code generators send nests about a dozen levels through `ofType`.
const MAX_DEPTH: usize = 16;
/// Most complexity points a document may cost: the introspection query fits, while the costly
/// mutations below can appear only a couple of times in one document.
const MAX_COMPLEXITY: usize = 1_000;
/// Cost of one `register` or `confirmAccount`: each hashes a password or takes a write lock.
const MUTATION_COST: usize = 400;

/// Builds the schema; with `state` absent it can still print its SDL.
pub fn build_schema(state: Option<AppState>, introspection: bool) -> AdmitSchema {
    let mut builder = Schema::build(Query, Mutation, EmptySubscription)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY);
    if !introspection {
        // "Did you mean ...?" would hand out the schema piece by piece.
        builder = builder.disable_introspection().disable_suggestions();
    }
    if let Some(state) = state {
        builder = builder.data(state);
    }
    builder.finish()
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn schema_sdl() -> String {
    build_schema(None, true).sdl()
}

/// Read-only operations.
pub struct Query;

#[Object]
impl Query {
    /// The rule passwords must meet, so forms can show it before submitting.
    async fn password_policy(&self, ctx: &Context<'_>) -> async_graphql::Result<PasswordPolicy> {
        let state = errors::app_state(ctx)?;
        Ok(state.accounts.password_policy().into())
    }
}

/// Operations that change data.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates an unconfirmed account and emails a confirmation link. The answer is the same
    /// whether or not the address already has an account.
    #[graphql(complexity = "MUTATION_COST")]
    async fn register(
        &self,
        ctx: &Context<'_>,
        input: RegisterInput,
    ) -> async_graphql::Result<RegisterPayload> {
        let state = errors::app_state(ctx)?;
        let account = match input.parse(state.accounts.password_policy()) {
            Ok(account) => account,
            Err(user_errors) => return Ok(Acceptance::invalid(user_errors).into()),
        };
        errors::charge_costly(ctx)?;
        let outcome = errors::within_deadline(
            state,
            accounts::register(&state.accounts, client(ctx), account),
        )
        .await;
        errors::register_payload(ctx, outcome)
    }

    /// Sends a new confirmation link to an address whose account is not confirmed yet; earlier
    /// links then answer `TOKEN_SUPERSEDED`. The answer is the same for every address.
    #[graphql(complexity = "MUTATION_COST")]
    async fn resend_confirmation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The address the account was registered with.")] email: String,
    ) -> async_graphql::Result<ResendConfirmationPayload> {
        let state = errors::app_state(ctx)?;
        let email = match EmailAddress::parse(&email) {
            Ok(email) => email,
            Err(err) => {
                let error = errors::invalid_email(&["email"], err);
                return Ok(Acceptance::invalid(vec![error]).into());
            }
        };
        errors::charge_costly(ctx)?;
        let outcome = errors::within_deadline(
            state,
            accounts::resend_confirmation(&state.accounts, client(ctx), email),
        )
        .await;
        errors::resend_confirmation_payload(ctx, outcome)
    }

    /// Confirms the account a link's token was issued for, and returns it. Submitting the same
    /// token again while it is valid returns the same account.
    #[graphql(complexity = "MUTATION_COST")]
    async fn confirm_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token from the confirmation link (after `#token=`).")] token: String,
    ) -> async_graphql::Result<ConfirmAccountPayload> {
        let state = errors::app_state(ctx)?;
        errors::charge_costly(ctx)?;
        let outcome = match ConfirmationToken::parse(&token) {
            Ok(token) => {
                errors::within_deadline(
                    state,
                    accounts::confirm_account(&state.accounts, client(ctx), token),
                )
                .await
            }
            Err(_) => Err(accounts::ConfirmError::InvalidToken),
        };
        errors::confirm_account_payload(ctx, outcome)
    }
}

/// The network the request came from; the HTTP layer always provides it, and a schema run
/// without it counts as one anonymous client.
fn client(ctx: &Context<'_>) -> ClientNetwork {
    ctx.data_opt::<ClientNetwork>()
        .copied()
        .unwrap_or_else(ClientNetwork::anonymous)
}
