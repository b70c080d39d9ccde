//! The session side of one request: the credential the HTTP layer found (a cookie or a bearer
//! token, already filtered by its rules), the viewer it opens (looked up once per request), and
//! what the cookie should become (the HTTP layer writes the header: only it knows headers).

use std::sync::{Arc, Mutex};

use async_graphql::Context;

use crate::{
    domain::SessionToken,
    services::sessions::{self, Authenticated},
    state::AppState,
};

/// How a request presented its session token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// In the session cookie.
    Cookie,
    /// In `Authorization: Bearer ...`.
    Bearer,
}

/// What the session cookie should become after this request.
#[derive(Debug)]
pub enum CookieChange {
    /// Set to a new session's token, for `max_age`.
    Set {
        /// The new session's token.
        token: SessionToken,
        /// How long the browser keeps it.
        max_age: std::time::Duration,
    },
    /// Removed.
    Clear,
}

/// One request's session: shared by every operation of a batch.
#[derive(Clone, Default)]
pub struct RequestSession(Arc<Inner>);

#[derive(Default)]
struct Inner {
    credential: Option<(Presented, SessionToken)>,
    user_agent: Option<String>,
    /// `None` until looked up; forgotten when the request ends its own session.
    viewer: tokio::sync::Mutex<Option<Option<Authenticated>>>,
    cookie: Mutex<Option<CookieChange>>,
}

impl RequestSession {
    /// A request presenting `credential` (none: anonymous) from a client that calls itself
    /// `user_agent`.
    pub fn new(credential: Option<(Presented, SessionToken)>, user_agent: Option<String>) -> Self {
        Self(Arc::new(Inner {
            credential,
            user_agent,
            ..Inner::default()
        }))
    }

    /// The client's `User-Agent`, if it sent one.
    pub(super) fn user_agent(&self) -> Option<String> {
        self.0.user_agent.clone()
    }

    /// What the cookie should become, once the request has run.
    pub fn cookie_change(&self) -> Option<CookieChange> {
        self.0
            .cookie
            .lock()
            .map_or(None, |mut change| change.take())
    }

    /// How the token was presented, if one was.
    pub(super) fn presented(&self) -> Option<Presented> {
        self.0.credential.as_ref().map(|(presented, _)| *presented)
    }

    /// The session was ended by this request: later operations of a batch see no viewer.
    pub(super) async fn forget_viewer(&self) {
        *self.0.viewer.lock().await = Some(None);
    }

    pub(super) fn set_cookie(&self, change: CookieChange) {
        if let Ok(mut slot) = self.0.cookie.lock() {
            *slot = Some(change);
        }
    }
}

/// The request's session, if any.
pub(super) fn of(ctx: &Context<'_>) -> RequestSession {
    ctx.data_opt::<RequestSession>()
        .cloned()
        .unwrap_or_default()
}

/// The viewer the request's credential opens, looked up at most once per request.
pub(super) async fn viewer(
    state: &AppState,
    session: &RequestSession,
) -> anyhow::Result<Option<Authenticated>> {
    let Some((_, token)) = &session.0.credential else {
        return Ok(None);
    };
    let mut cached = session.0.viewer.lock().await;
    if let Some(known) = &*cached {
        return Ok(known.clone());
    }
    let found = sessions::authenticate(&state.sessions, token).await?;
    *cached = Some(found.clone());
    Ok(found)
}
