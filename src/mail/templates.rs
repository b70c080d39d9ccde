use std::time::Duration;

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

/// The email asking `name` (if known) to confirm their account by opening `link`.
pub fn confirmation_email(name: Option<&str>, link: &str, valid_for: Duration) -> OutgoingEmail {
    let greeting = name.map_or_else(|| "Hello,".to_owned(), |name| format!("Hello {name},"));
    let validity = describe(valid_for);
    let text = format!(
        "{greeting}\n\n\
         Please confirm your email address to activate your account by opening this link:\n\n\
         {link}\n\n\
         The link is valid for {validity}. If you did not sign up, ignore this email: \
         no account is activated without you.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;line-height:1.5;color:#1f2328\">\
         <p>{greeting}</p>\
         <p>Please confirm your email address to activate your account.</p>\
         <p><a href=\"{link}\" style=\"display:inline-block;padding:10px 18px;background:#0b5fff;\
         color:#ffffff;border-radius:6px;text-decoration:none\">Confirm my account</a></p>\
         <p>Or open this link: <a href=\"{link}\">{link}</a></p>\
         <p>The link is valid for {validity}. If you did not sign up, ignore this email: \
         no account is activated without you.</p></body></html>",
        greeting = escape_html(&greeting),
        link = escape_html(link),
    );
    OutgoingEmail {
        subject: "Confirm your account".to_owned(),
        text,
        html,
    }
}

/// The notice sent when someone signs up with an address whose account is already confirmed:
/// the owner learns of it, and nobody else learns anything from the API's answer.
pub fn signup_attempt_notice(name: Option<&str>) -> OutgoingEmail {
    let greeting = name.map_or_else(|| "Hello,".to_owned(), |name| format!("Hello {name},"));
    let body = "Someone just tried to sign up with this email address, which already has a \
                confirmed account. If it was you, sign in with your password, or reset it if \
                you forgot it. If it was not you, you can ignore this email: nothing about your \
                account has changed.";
    OutgoingEmail {
        subject: "Someone tried to sign up with your address".to_owned(),
        text: format!("{greeting}\n\n{body}\n"),
        html: format!(
            "<!doctype html><html><body style=\"font-family:sans-serif;line-height:1.5;color:#1f2328\">\
             <p>{}</p><p>{body}</p></body></html>",
            escape_html(&greeting)
        ),
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

fn escape_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_email_says_how_long_the_link_is_valid() {
        let email = confirmation_email(
            None,
            "https://x.test/confirm#token=t",
            Duration::from_secs(86_400),
        );
        assert!(email.text.contains("valid for 24 hours"));
        let email = confirmation_email(None, "https://x.test/c", Duration::from_secs(1_800));
        assert!(email.html.contains("valid for 30 minutes"));
    }

    #[test]
    fn a_display_name_cannot_inject_html() {
        let email = confirmation_email(
            Some("<script>x</script>"),
            "https://x.test/c",
            Duration::from_secs(60),
        );
        assert!(!email.html.contains("<script>"));
        assert!(email.text.contains("Hello <script>x</script>,"));
    }
}
