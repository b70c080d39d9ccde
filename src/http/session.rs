//! The session cookie and the bearer header: which credential a request presents, and the
//! `Set-Cookie` that a sign-in or sign-out asks for.
//!
//! A cookie rides along with every request a browser makes to us, including ones another site
//! triggers; so it counts only where a browser would not send it on another site's behalf:
//! in a JSON POST (which no HTML form can produce, and which a foreign page's script can send
//! only after a CORS preflight that only `ADMIT_CORS_ORIGINS` pass), and, when the request
//! names its `Origin`, only from the public URL's origin or a CORS origin. Otherwise the cookie
//! is ignored as if absent. A bearer token is sent deliberately by its holder's code, so it is
//! taken from any request.

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};

use crate::{
    domain::SessionToken,
    graphql::{CookieChange, Presented},
};

/// The cookie's name over plain http.
const COOKIE: &str = "admit_session";
/// The cookie's name over https: browsers then refuse it unless `Secure`, `Path=/` and without
/// `Domain`, so no subdomain can plant or overwrite it.
const HOST_COOKIE: &str = "__Host-admit_session";

/// How this service names and guards its session cookie.
#[derive(Debug, Clone)]
pub(super) struct CookiePolicy {
    secure: bool,
    /// Origins whose pages may use the cookie: the public URL's and the CORS origins.
    origins: Vec<HeaderValue>,
}

impl CookiePolicy {
    /// `secure` when the public URL is https; `origins` as browsers send them.
    pub(super) fn new(secure: bool, origins: Vec<HeaderValue>) -> Self {
        Self { secure, origins }
    }

    fn name(&self) -> &'static str {
        if self.secure { HOST_COOKIE } else { COOKIE }
    }

    /// The session token the request presents, and how: the bearer header first, then the
    /// cookie where the rules above let it count. A malformed token counts as none.
    pub(super) fn credential(
        &self,
        headers: &HeaderMap,
        json_post: bool,
    ) -> Option<(Presented, SessionToken)> {
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .and_then(|raw| SessionToken::parse(raw).ok())?;
            return Some((Presented::Bearer, token));
        }
        if !json_post || !self.origin_allowed(headers) {
            return None;
        }
        let name = self.name();
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(Cookie::split_parse)
            .filter_map(Result::ok)
            .find(|cookie| cookie.name() == name)
            .and_then(|cookie| SessionToken::parse(cookie.value()).ok())
            .map(|token| (Presented::Cookie, token))
    }

    /// No `Origin` (same-origin navigations and non-browser clients), or one we serve.
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::ORIGIN)
            .is_none_or(|origin| self.origins.iter().any(|allowed| allowed == origin))
    }

    /// The `Set-Cookie` value for `change`.
    pub(super) fn set_cookie(&self, change: CookieChange) -> Option<HeaderValue> {
        let (value, max_age) = match change {
            CookieChange::Set { token, max_age } => {
                let seconds = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
                (token.expose().to_owned(), seconds)
            }
            CookieChange::Clear => (String::new(), 0),
        };
        let cookie = Cookie::build((self.name(), value))
            .path("/")
            .http_only(true)
            .same_site(SameSite::Lax)
            .secure(self.secure)
            .max_age(cookie::time::Duration::seconds(max_age))
            .build();
        HeaderValue::from_str(&cookie.to_string()).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn policy(secure: bool) -> CookiePolicy {
        CookiePolicy::new(
            secure,
            vec![HeaderValue::from_static("https://id.example.com")],
        )
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap()))
            .collect()
    }

    #[test]
    fn the_cookie_counts_only_in_a_json_post_from_an_allowed_origin() {
        let token = SessionToken::generate().unwrap();
        let cookie = format!("other=1; admit_session={}", token.expose());
        let plain = policy(false);
        let same = headers(&[
            (header::COOKIE, &cookie),
            (header::ORIGIN, "https://id.example.com"),
        ]);
        let found = plain.credential(&same, true).unwrap();
        assert_eq!(found.0, Presented::Cookie);
        assert_eq!(found.1.hash(), token.hash());
        assert!(plain.credential(&same, false).is_none(), "not a JSON POST");
        let foreign = headers(&[
            (header::COOKIE, &cookie),
            (header::ORIGIN, "https://evil.example"),
        ]);
        assert!(plain.credential(&foreign, true).is_none());
        let no_origin = headers(&[(header::COOKIE, &cookie)]);
        assert!(plain.credential(&no_origin, true).is_some());
        // Over https only the __Host- cookie counts.
        assert!(policy(true).credential(&no_origin, true).is_none());
    }

    #[test]
    fn a_bearer_token_counts_anywhere_and_a_malformed_one_counts_as_none() {
        let token = SessionToken::generate().unwrap();
        let bearer = headers(&[
            (header::AUTHORIZATION, &format!("Bearer {}", token.expose())),
            (header::ORIGIN, "https://evil.example"),
        ]);
        let found = policy(false).credential(&bearer, false).unwrap();
        assert_eq!(found.0, Presented::Bearer);
        let malformed = headers(&[(header::AUTHORIZATION, "Bearer nope")]);
        assert!(policy(false).credential(&malformed, true).is_none());
    }

    #[test]
    fn set_cookie_carries_every_attribute() {
        let token = SessionToken::generate().unwrap();
        let expose = token.expose().to_owned();
        let set = policy(true)
            .set_cookie(CookieChange::Set {
                token,
                max_age: Duration::from_secs(3_600),
            })
            .unwrap();
        let set = set.to_str().unwrap();
        assert!(set.starts_with(&format!("__Host-admit_session={expose}")));
        for attribute in [
            "HttpOnly",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=3600",
            "Secure",
        ] {
            assert!(set.contains(attribute), "{attribute} in {set}");
        }
        let cleared = policy(false).set_cookie(CookieChange::Clear).unwrap();
        let cleared = cleared.to_str().unwrap();
        assert!(cleared.starts_with("admit_session=;"), "{cleared}");
        assert!(cleared.contains("Max-Age=0") && !cleared.contains("Secure"));
    }
}
