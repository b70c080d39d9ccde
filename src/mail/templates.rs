//! The emails admit sends, rendered with minijinja from built-in templates that operators can
//! override, file by file, from a folder (`ADMIT_TEMPLATE_DIR`) without recompiling.

use std::{path::Path, sync::Arc, time::Duration};

use minijinja::{Environment, UndefinedBehavior, context};

/// A rendered message, ready for the outbox.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    /// The subject line.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// Every template, by the file name that overrides it. Names ending in `.html` are
/// HTML-escaped: a display name cannot inject markup.
const BUILT_IN: [(&str, &str); 28] = [
    ("layout.html", include_str!("templates/layout.html")),
    (
        "confirmation.subject.txt",
        include_str!("templates/confirmation.subject.txt"),
    ),
    (
        "confirmation.txt",
        include_str!("templates/confirmation.txt"),
    ),
    (
        "confirmation.html",
        include_str!("templates/confirmation.html"),
    ),
    (
        "signup_again.subject.txt",
        include_str!("templates/signup_again.subject.txt"),
    ),
    (
        "signup_again.txt",
        include_str!("templates/signup_again.txt"),
    ),
    (
        "signup_again.html",
        include_str!("templates/signup_again.html"),
    ),
    (
        "signup_notice.subject.txt",
        include_str!("templates/signup_notice.subject.txt"),
    ),
    (
        "signup_notice.txt",
        include_str!("templates/signup_notice.txt"),
    ),
    (
        "signup_notice.html",
        include_str!("templates/signup_notice.html"),
    ),
    (
        "password_reset.subject.txt",
        include_str!("templates/password_reset.subject.txt"),
    ),
    (
        "password_reset.txt",
        include_str!("templates/password_reset.txt"),
    ),
    (
        "password_reset.html",
        include_str!("templates/password_reset.html"),
    ),
    (
        "password_changed.subject.txt",
        include_str!("templates/password_changed.subject.txt"),
    ),
    (
        "password_changed.txt",
        include_str!("templates/password_changed.txt"),
    ),
    (
        "password_changed.html",
        include_str!("templates/password_changed.html"),
    ),
    (
        "email_change.subject.txt",
        include_str!("templates/email_change.subject.txt"),
    ),
    (
        "email_change.txt",
        include_str!("templates/email_change.txt"),
    ),
    (
        "email_change.html",
        include_str!("templates/email_change.html"),
    ),
    (
        "email_changed.subject.txt",
        include_str!("templates/email_changed.subject.txt"),
    ),
    (
        "email_changed.txt",
        include_str!("templates/email_changed.txt"),
    ),
    (
        "email_changed.html",
        include_str!("templates/email_changed.html"),
    ),
    (
        "email_in_use.subject.txt",
        include_str!("templates/email_in_use.subject.txt"),
    ),
    (
        "email_in_use.txt",
        include_str!("templates/email_in_use.txt"),
    ),
    (
        "email_in_use.html",
        include_str!("templates/email_in_use.html"),
    ),
    (
        "account_deleted.subject.txt",
        include_str!("templates/account_deleted.subject.txt"),
    ),
    (
        "account_deleted.txt",
        include_str!("templates/account_deleted.txt"),
    ),
    (
        "account_deleted.html",
        include_str!("templates/account_deleted.html"),
    ),
];

/// The loaded templates and the product name they show.
#[derive(Clone)]
pub struct Templates {
    env: Arc<Environment<'static>>,
    product_name: Arc<str>,
}

/// A template could not be loaded, parsed or rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// An override exists but cannot be read.
    #[error("cannot read the mail template {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Syntax error, unknown variable, ...
    #[error("mail template {name}: {source}")]
    Template {
        /// The template's name.
        name: String,
        /// minijinja's explanation.
        source: minijinja::Error,
    },
}

impl Templates {
    /// The built-in templates, each replaced by the file of the same name in `overrides` if
    /// there is one. Every template is rendered once with sample values, so a mistake in an
    /// override stops the service at start-up instead of failing a sign-up later.
    pub fn load(product_name: &str, overrides: Option<&Path>) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        for (name, built_in) in BUILT_IN {
            let source = match overrides.map(|dir| dir.join(name)) {
                Some(path) if path.exists() => {
                    std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                        path: path.display().to_string(),
                        source,
                    })?
                }
                _ => built_in.to_owned(),
            };
            env.add_template_owned(name, source)
                .map_err(|source| TemplateError::Template {
                    name: name.to_owned(),
                    source,
                })?;
        }
        let templates = Self {
            env: Arc::new(env),
            product_name: Arc::from(product_name),
        };
        templates.confirmation(
            "https://example.com/confirm#token=x",
            Duration::from_secs(3600),
        )?;
        templates.signup_again(
            "https://example.com/confirm#token=x",
            Duration::from_secs(3600),
        )?;
        templates.signup_notice(Some("Sample"))?;
        templates.password_reset(
            "https://example.com/reset#token=x",
            Duration::from_secs(3600),
        )?;
        templates.password_changed(true)?;
        templates.email_change(
            "https://example.com/email-change#token=x",
            Duration::from_secs(3600),
        )?;
        templates.email_changed(
            "new@example.com",
            "https://example.com/email-revert#token=x",
            Duration::from_secs(3600),
        )?;
        templates.email_in_use()?;
        templates.account_deleted()?;
        Ok(templates)
    }

    /// The email asking the person to confirm their account by opening `link`. It goes to an
    /// address nobody has proven to own, so it carries nothing the requester wrote (no display
    /// name): admit must not mail a stranger's words from its own domain.
    pub fn confirmation(
        &self,
        link: &str,
        valid_for: Duration,
    ) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "confirmation",
            context! {
                product_name => &*self.product_name,
                link => link,
                valid_for => describe(valid_for),
            },
        )
    }

    /// The link for a further sign-up of an address whose earlier sign-up is still pending. It
    /// says plainly that the address was signed up again, and that the earlier link still works:
    /// the owner must not take a stranger's sign-up for their own.
    pub fn signup_again(
        &self,
        link: &str,
        valid_for: Duration,
    ) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "signup_again",
            context! {
                product_name => &*self.product_name,
                link => link,
                valid_for => describe(valid_for),
            },
        )
    }

    /// The notice sent when someone signs up with an address whose account is already
    /// confirmed: the owner learns of it, and nobody else learns anything from the API.
    pub fn signup_notice(
        &self,
        display_name: Option<&str>,
    ) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "signup_notice",
            context! {
                product_name => &*self.product_name,
                display_name => display_name,
            },
        )
    }

    /// The link to choose a new password. Like a confirmation, it carries nothing the requester
    /// wrote: whoever asked need not own the address.
    pub fn password_reset(
        &self,
        link: &str,
        valid_for: Duration,
    ) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "password_reset",
            context! {
                product_name => &*self.product_name,
                link => link,
                valid_for => describe(valid_for),
            },
        )
    }

    /// The notice that the password changed (by a reset, which signed out every device, or
    /// by the signed-in owner, which signed out the others), with the way out if it was not
    /// the owner. It carries no link that signs anybody in.
    pub fn password_changed(
        &self,
        signed_out_everywhere: bool,
    ) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "password_changed",
            context! {
                product_name => &*self.product_name,
                signed_out_everywhere => signed_out_everywhere,
            },
        )
    }

    /// The link that moves an account to this (new) address. Like a confirmation, it carries
    /// nothing the requester wrote.
    pub fn email_change(
        &self,
        link: &str,
        valid_for: Duration,
    ) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "email_change",
            context! {
                product_name => &*self.product_name,
                link => link,
                valid_for => describe(valid_for),
            },
        )
    }

    /// To the old address once the change is made: the new address, and the link that undoes
    /// the change if it was not the owner.
    pub fn email_changed(
        &self,
        new_email: &str,
        link: &str,
        valid_for: Duration,
    ) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "email_changed",
            context! {
                product_name => &*self.product_name,
                new_email => new_email,
                link => link,
                valid_for => describe(valid_for),
            },
        )
    }

    /// To an address another account asked to move to, which has an account already: no link.
    pub fn email_in_use(&self) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "email_in_use",
            context! { product_name => &*self.product_name },
        )
    }

    /// To the address of an account just deleted.
    pub fn account_deleted(&self) -> Result<OutgoingEmail, TemplateError> {
        self.render(
            "account_deleted",
            context! { product_name => &*self.product_name },
        )
    }

    fn render(
        &self,
        email: &str,
        values: minijinja::Value,
    ) -> Result<OutgoingEmail, TemplateError> {
        let render = |part: &str| {
            let name = format!("{email}.{part}");
            self.env
                .get_template(&name)
                .and_then(|template| template.render(&values))
                .map_err(|source| TemplateError::Template { name, source })
        };
        Ok(OutgoingEmail {
            subject: render("subject.txt")?.trim().to_owned(),
            text: render("txt")?,
            html: render("html")?,
        })
    }
}

/// "24 hours", "30 minutes": a lifetime in the words of the email.
fn describe(duration: Duration) -> String {
    let secs = duration.as_secs();
    let (count, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3_600 && secs.is_multiple_of(3_600) {
        (secs / 3_600, "hour")
    } else if secs >= 60 {
        (secs / 60, "minute")
    } else {
        (secs.max(1), "second")
    };
    let plural = if count == 1 { "" } else { "s" };
    match (count, unit) {
        (1, "day") => "24 hours".to_owned(),
        _ => format!("{count} {unit}{plural}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn built_in() -> Templates {
        Templates::load("Acme", None).unwrap()
    }

    #[test]
    fn the_email_says_how_long_the_link_is_valid() {
        let email = built_in()
            .confirmation(
                "https://x.test/confirm#token=t",
                Duration::from_secs(86_400),
            )
            .unwrap();
        assert!(email.text.contains("valid for 24 hours"));
        assert_eq!(email.subject, "Confirm your Acme account");
        let email = built_in()
            .confirmation("https://x.test/c", Duration::from_secs(1_800))
            .unwrap();
        assert!(email.html.contains("valid for 30 minutes"));
    }

    #[test]
    fn a_display_name_cannot_inject_html() {
        let email = built_in()
            .signup_notice(Some("<script>x</script>"))
            .unwrap();
        assert!(!email.html.contains("<script>"));
        assert!(email.text.contains("Hello <script>x</script>,"));
    }

    #[test]
    fn an_override_replaces_only_its_own_template_and_a_broken_one_fails_at_load() {
        let dir = std::env::temp_dir().join(format!("admit-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("confirmation.subject.txt"),
            "Welcome to {{ product_name }}!",
        )
        .unwrap();
        let templates = Templates::load("Acme", Some(&dir)).unwrap();
        let email = templates
            .confirmation("https://x.test/c", Duration::from_secs(60))
            .unwrap();
        assert_eq!(email.subject, "Welcome to Acme!");
        assert!(email.text.contains("https://x.test/c"));

        std::fs::write(dir.join("confirmation.txt"), "{{ no_such_value }}").unwrap();
        assert!(Templates::load("Acme", Some(&dir)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
