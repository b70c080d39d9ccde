//! The GraphQL API: schema, resolvers and the mapping of outcomes to payloads. Resolvers only
//! convert input, call one service function and map its result.

mod errors;
pub mod limits;
pub mod memo;
mod session;
mod types;

use async_graphql::{ComplexObject, Context, EmptySubscription, ID, Object, Schema};

use crate::{
    domain::{ClientNetwork, ConfirmationToken, EmailAddress, Password},
    services::{
        accounts, email_change, recovery,
        sessions::{self, Authenticated},
        sign_in::{self, SignInError, SignInRequest},
    },
    state::AppState,
};
pub use errors::{CostlyBudget, MAX_COSTLY_PER_REQUEST, RequestId};
pub use session::{CookieChange, Presented, RequestSession};
use types::{
    Acceptance, ChangePasswordInput, ChangePasswordPayload, ConfirmAccountPayload,
    ConfirmEmailChangePayload, DeleteAccountPayload, PasswordPolicy, RegisterInput,
    RegisterPayload, RequestEmailChangeInput, RequestEmailChangePayload,
    RequestPasswordResetPayload, ResendConfirmationPayload, ResetPasswordInput,
    ResetPasswordPayload, RevertEmailChangePayload, RevokeSessionPayload, Session, SessionDelivery,
    SignInInput, SignInPayload, SignOutPayload, Viewer,
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
        .limit_complexity(MAX_COMPLEXITY)
        .extension(memo::ValidationMemo::default());
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

    /// The signed-in person, from the session cookie or the `Authorization: Bearer` token;
    /// null when the request carries no valid session. Backends check a request by forwarding
    /// its cookie or bearer token here.
    async fn viewer(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Viewer>> {
        Ok(signed_in(ctx).await?.map(Viewer::from))
    }
}

#[ComplexObject]
impl Viewer {
    /// Every live session of the account, newest first, with `current` marking this one.
    async fn sessions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Session>> {
        let state = errors::app_state(ctx)?;
        let listed = errors::within_deadline(state, sessions::list(&state.sessions, self.user_id))
            .await
            .map_err(|err| errors::internal(ctx, &err))?;
        Ok(listed
            .into_iter()
            .map(|session| Session::new(session, self.session_id))
            .collect())
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
        let outcome = with_link(
            state,
            &token,
            accounts::ConfirmError::InvalidToken,
            |token| accounts::confirm_account(&state.accounts, client(ctx), token),
        )
        .await;
        errors::confirm_account_payload(ctx, outcome)
    }

    /// Emails a link to choose a new password, if the address has an account (confirmed or
    /// not); earlier reset links then answer `TOKEN_SUPERSEDED`. The answer is the same for
    /// every address.
    #[graphql(complexity = "MUTATION_COST")]
    async fn request_password_reset(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The address the account was registered with.")] email: String,
    ) -> async_graphql::Result<RequestPasswordResetPayload> {
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
            recovery::request_password_reset(&state.accounts, client(ctx), email),
        )
        .await;
        errors::request_password_reset_payload(ctx, outcome)
    }

    /// Sets a new password with the token of a reset link. Every session of the account
    /// ends, an unconfirmed address counts as confirmed (the link proved the inbox), and a
    /// notice goes to the address. It does not sign in.
    #[graphql(complexity = "MUTATION_COST")]
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        input: ResetPasswordInput,
    ) -> async_graphql::Result<ResetPasswordPayload> {
        let state = errors::app_state(ctx)?;
        errors::charge_costly(ctx)?;
        let outcome = with_link(
            state,
            &input.token,
            recovery::ResetError::InvalidToken,
            |token| {
                recovery::reset_password(&state.accounts, client(ctx), token, &input.new_password)
            },
        )
        .await;
        errors::reset_password_payload(ctx, outcome)
    }

    /// Changes the signed-in person's password, given the current one (a wrong one counts
    /// like a failed sign-in). This session stays; every other session ends, and a notice
    /// goes to the address.
    #[graphql(complexity = "MUTATION_COST")]
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        input: ChangePasswordInput,
    ) -> async_graphql::Result<ChangePasswordPayload> {
        let state = errors::app_state(ctx)?;
        let Some(viewer) = signed_in(ctx).await? else {
            return Ok(ChangePasswordPayload {
                user: None,
                retry_after_seconds: None,
                user_errors: vec![types::UserError::unauthenticated()],
            });
        };
        errors::charge_costly(ctx)?;
        let outcome = with_password(
            state,
            &input.current_password,
            recovery::ChangePasswordError::InvalidCredentials,
            |current| {
                recovery::change_password(
                    &state.accounts,
                    client(ctx),
                    &viewer,
                    current,
                    &input.new_password,
                )
            },
        )
        .await;
        errors::change_password_payload(ctx, outcome)
    }

    /// Asks to move the signed-in person's account to `newEmail`, given the password (a wrong
    /// one counts like a failed sign-in). A link goes to the new address; the address changes
    /// only when it is used. If the new address has an account, the answer is the same and
    /// that address gets a short notice instead.
    #[graphql(complexity = "MUTATION_COST")]
    async fn request_email_change(
        &self,
        ctx: &Context<'_>,
        input: RequestEmailChangeInput,
    ) -> async_graphql::Result<RequestEmailChangePayload> {
        let state = errors::app_state(ctx)?;
        let Some(viewer) = signed_in(ctx).await? else {
            return Ok(Acceptance::invalid(vec![types::UserError::unauthenticated()]).into());
        };
        let new_email = match EmailAddress::parse(&input.new_email) {
            Ok(email) => email,
            Err(err) => {
                let error = errors::invalid_email(&["input", "newEmail"], err);
                return Ok(Acceptance::invalid(vec![error]).into());
            }
        };
        errors::charge_costly(ctx)?;
        let outcome = with_password(
            state,
            &input.password,
            email_change::RequestEmailChangeError::InvalidCredentials,
            |password| {
                email_change::request_email_change(
                    &state.accounts,
                    client(ctx),
                    &viewer,
                    new_email,
                    password,
                )
            },
        )
        .await;
        errors::request_email_change_payload(ctx, outcome)
    }

    /// Moves the account to the address the link was mailed to (from the link's token). The
    /// old address then gets a notice with a link that undoes the change.
    #[graphql(complexity = "MUTATION_COST")]
    async fn confirm_email_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token from the link (after `#token=`).")] token: String,
    ) -> async_graphql::Result<ConfirmEmailChangePayload> {
        let state = errors::app_state(ctx)?;
        errors::charge_costly(ctx)?;
        let outcome = with_link(
            state,
            &token,
            email_change::ChangeEmailError::InvalidToken,
            |token| email_change::confirm_email_change(&state.accounts, client(ctx), token),
        )
        .await;
        errors::confirm_email_change_payload(ctx, outcome)
    }

    /// Undoes an address change with the link mailed to the old address: the old address
    /// again (if still free), every session ended, and a password reset link mailed there.
    #[graphql(complexity = "MUTATION_COST")]
    async fn revert_email_change(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The token from the link (after `#token=`).")] token: String,
    ) -> async_graphql::Result<RevertEmailChangePayload> {
        let state = errors::app_state(ctx)?;
        errors::charge_costly(ctx)?;
        let outcome = with_link(
            state,
            &token,
            email_change::ChangeEmailError::InvalidToken,
            |token| email_change::revert_email_change(&state.accounts, client(ctx), token),
        )
        .await;
        errors::revert_email_change_payload(ctx, outcome)
    }

    /// Deletes the signed-in person's account, given the password: the account, its sessions,
    /// links and waiting mail go; a notice goes to the address, which can sign up again.
    #[graphql(complexity = "MUTATION_COST")]
    async fn delete_account(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The account's password, exactly as typed.")] password: String,
    ) -> async_graphql::Result<DeleteAccountPayload> {
        let state = errors::app_state(ctx)?;
        let Some(viewer) = signed_in(ctx).await? else {
            return Ok(DeleteAccountPayload {
                deleted: false,
                user_errors: vec![types::UserError::unauthenticated()],
            });
        };
        errors::charge_costly(ctx)?;
        let outcome = with_password(
            state,
            &password,
            email_change::DeleteAccountError::InvalidCredentials,
            |password| {
                email_change::delete_account(&state.accounts, client(ctx), &viewer, password)
            },
        )
        .await;
        if outcome.is_ok() {
            let request = session::of(ctx);
            request.forget_viewer().await;
            if request.presented() == Some(Presented::Cookie) {
                request.set_cookie(CookieChange::Clear);
            }
        }
        errors::delete_account_payload(ctx, outcome)
    }

    /// Signs in to a confirmed account and starts a session, delivered as an `HttpOnly`
    /// cookie (the default) or, with `delivery: BEARER`, as `sessionToken`. A wrong address
    /// and a wrong password get the same answer, `INVALID_CREDENTIALS`; `EMAIL_NOT_CONFIRMED`
    /// comes only with the right password. After five failures in a row for an address, each
    /// further attempt waits (from 1 s, doubling, at most 15 minutes): `RATE_LIMITED`.
    #[graphql(complexity = "MUTATION_COST")]
    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        input: SignInInput,
    ) -> async_graphql::Result<SignInPayload> {
        let state = errors::app_state(ctx)?;
        let delivery = input.delivery.unwrap_or(SessionDelivery::Cookie);
        let email = match EmailAddress::parse(&input.email) {
            Ok(email) => email,
            Err(err) => {
                return Ok(SignInPayload {
                    user_errors: vec![errors::invalid_email(&["input", "email"], err)],
                    ..SignInPayload::default()
                });
            }
        };
        errors::charge_costly(ctx)?;
        let outcome = with_password(
            state,
            &input.password,
            SignInError::InvalidCredentials,
            |password| {
                let request = SignInRequest {
                    email,
                    password,
                    user_agent: session::of(ctx).user_agent(),
                };
                sign_in::sign_in(&state.sessions, client(ctx), request)
            },
        )
        .await;
        errors::sign_in_payload(ctx, outcome, delivery, state.sessions.ttl().std())
    }

    /// Ends the session the request was made with, and clears the session cookie.
    async fn sign_out(&self, ctx: &Context<'_>) -> async_graphql::Result<SignOutPayload> {
        let state = errors::app_state(ctx)?;
        let request = session::of(ctx);
        if request.presented() == Some(Presented::Cookie) {
            request.set_cookie(CookieChange::Clear);
        }
        let Some(viewer) = signed_in(ctx).await? else {
            return Ok(SignOutPayload {
                signed_out: false,
                user_errors: vec![types::UserError::unauthenticated()],
            });
        };
        let outcome = errors::within_deadline(
            state,
            sessions::revoke(&state.sessions, viewer.user.id, viewer.session.id),
        )
        .await;
        request.forget_viewer().await;
        let payload = errors::revoke_session_payload(ctx, outcome)?;
        Ok(SignOutPayload {
            signed_out: payload.revoked,
            user_errors: payload.user_errors,
        })
    }

    /// Ends one of the viewer's own sessions (a lost phone, a shared computer). An id that is
    /// not one of the viewer's sessions answers `NOT_FOUND` and changes nothing.
    async fn revoke_session(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The session's `id`, as `viewer.sessions` lists it.")] id: ID,
    ) -> async_graphql::Result<RevokeSessionPayload> {
        let state = errors::app_state(ctx)?;
        let Some(viewer) = signed_in(ctx).await? else {
            return Ok(RevokeSessionPayload::unauthenticated());
        };
        let outcome = match uuid::Uuid::try_parse(id.as_str()) {
            Ok(session_id) => {
                let outcome = errors::within_deadline(
                    state,
                    sessions::revoke(&state.sessions, viewer.user.id, session_id),
                )
                .await;
                if outcome.is_ok() && session_id == viewer.session.id {
                    let request = session::of(ctx);
                    request.forget_viewer().await;
                    if request.presented() == Some(Presented::Cookie) {
                        request.set_cookie(CookieChange::Clear);
                    }
                }
                outcome
            }
            Err(_) => Err(sessions::RevokeError::NotFound),
        };
        errors::revoke_session_payload(ctx, outcome)
    }

    /// Ends every session of the viewer except the one the request was made with.
    async fn revoke_other_sessions(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<RevokeSessionPayload> {
        let state = errors::app_state(ctx)?;
        let Some(viewer) = signed_in(ctx).await? else {
            return Ok(RevokeSessionPayload::unauthenticated());
        };
        errors::within_deadline(
            state,
            sessions::revoke_others(&state.sessions, viewer.user.id, viewer.session.id),
        )
        .await
        .map_err(|err| errors::internal(ctx, &err))?;
        Ok(RevokeSessionPayload {
            revoked: true,
            user_errors: Vec::new(),
        })
    }
}

/// Runs `work` with the link token `raw` under the database deadline; a string that cannot
/// be a token answers `invalid` without a lookup.
async fn with_link<T, E, Fut>(
    state: &AppState,
    raw: &str,
    invalid: E,
    work: impl FnOnce(ConfirmationToken) -> Fut,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: From<anyhow::Error>,
{
    match ConfirmationToken::parse(raw) {
        Ok(token) => errors::within_deadline(state, work(token)).await,
        Err(_) => Err(invalid),
    }
}

/// Runs `work` with the typed password `raw` under the database deadline; one longer than any
/// password admit accepts cannot be right and answers `wrong` without hashing.
async fn with_password<T, E, Fut>(
    state: &AppState,
    raw: &str,
    wrong: E,
    work: impl FnOnce(Password) -> Fut,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
    E: From<anyhow::Error>,
{
    match Password::attempt(raw) {
        Ok(password) => errors::within_deadline(state, work(password)).await,
        Err(_) => Err(wrong),
    }
}

/// The request's viewer, if its credential opens a valid session.
async fn signed_in(ctx: &Context<'_>) -> async_graphql::Result<Option<Authenticated>> {
    let state = errors::app_state(ctx)?;
    let request = session::of(ctx);
    errors::within_deadline(state, session::viewer(state, &request))
        .await
        .map_err(|err| errors::internal(ctx, &err))
}

/// The network the request came from; the HTTP layer always provides it, and a schema run
/// without it counts as one anonymous client.
fn client(ctx: &Context<'_>) -> ClientNetwork {
    ctx.data_opt::<ClientNetwork>()
        .copied()
        .unwrap_or_else(ClientNetwork::anonymous)
}
