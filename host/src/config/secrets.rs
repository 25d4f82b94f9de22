//! What counts as a secret in the configuration, and how it is kept out of
//! everything probehost prints about it (`config check`, problems, warnings,
//! logs).
//!
//! A value is secret when its key suggests one ([`SECRET_HINTS`]), and the
//! user-info of any URL-shaped text is secret whatever its key: the password
//! (or, with no password, the whole user-info, which is then usually a token).

/// Settings whose name contains one of these are secret as a whole.
pub(crate) const SECRET_HINTS: &[&str] = &[
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "dsn",
];

/// What a secret is shown as.
pub(crate) const MASK: &str = "****";

/// Whether the setting named `key` (its last dotted part counts) holds a
/// secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let name = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    SECRET_HINTS.iter().any(|hint| name.contains(hint))
}

/// `value` of the setting `key` as it may be shown: [`MASK`] for a secret
/// key, else the text with every URL's user-info masked.
pub(crate) fn mask_value(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        MASK.to_owned()
    } else {
        mask_text(value)
    }
}

/// `text` with the user-info of every `scheme://user:password@host` in it
/// masked: the password, or the whole user-info when there is no password.
/// Works on text that is not a valid URL (a value with a broken `${`).
pub fn mask_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let authority_start = at + 3;
        out.push_str(&rest[..authority_start]);
        let tail = &rest[authority_start..];
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match authority.rfind('@') {
            Some(user_end) => {
                let userinfo = &authority[..user_end];
                if let Some((user, _)) = userinfo.split_once(':') {
                    out.push_str(user);
                    out.push(':');
                }
                out.push_str(MASK);
                out.push_str(&authority[user_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// The secret parts of `value` of the setting `key`, for redacting them from
/// messages that might repeat them: the whole value for a secret key, else the
/// user-info passwords in it. Parts too short to redact safely are left out
/// (they are masked where values are shown, through [`mask_value`]).
pub(crate) fn secret_parts(key: &str, value: &str) -> Vec<String> {
    const SHORTEST: usize = 4;
    let mut parts = Vec::new();
    if is_secret_key(key) {
        parts.push(value.to_owned());
    } else {
        let mut rest = value;
        while let Some(at) = rest.find("://") {
            let tail = &rest[at + 3..];
            let end = tail
                .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace() || c == '"')
                .unwrap_or(tail.len());
            if let Some(user_end) = tail[..end].rfind('@') {
                let userinfo = &tail[..user_end];
                let secret = userinfo.split_once(':').map_or(userinfo, |(_, p)| p);
                parts.push(secret.to_owned());
                // Percent-decoded too: that is how a URL parser reports it.
                if let Ok(decoded) = percent_decode(secret) {
                    parts.push(decoded);
                }
            }
            rest = &tail[end..];
        }
    }
    parts.retain(|p| p.chars().count() >= SHORTEST);
    parts
}

fn percent_decode(text: &str) -> Result<String, ()> {
    if !text.contains('%') {
        return Err(());
    }
    url::form_urlencoded::parse(format!("v={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .ok_or(())
}

/// `message` with every one of `secrets` in it replaced by `****`.
pub fn redact(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_owned();
    for secret in secrets {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

/// The URL with its password (if any), and query parameters such as
/// `?password=` or `?sslpassword=`, replaced by [`MASK`].
pub(crate) fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some(MASK));
            }
            if parsed.query().is_some() {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let value = if is_secret_key(&k) {
                            MASK.to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), value)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not parseable as a URL: show only the scheme, in case it holds a secret.
        Err(_) => match url.split_once(':') {
            Some((scheme, _)) => format!("{scheme}:{MASK}"),
            None => MASK.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_is_masked_in_any_text() {
        assert_eq!(
            mask_text("http://admin:HTTPSECRET@127.0.0.1:18999/health"),
            "http://admin:****@127.0.0.1:18999/health"
        );
        assert_eq!(mask_text("redis://:DSNSECRET@x"), "redis://:****@x");
        assert_eq!(
            mask_text("postgres://u:SECRET${x@127.0.0.1/db"),
            "postgres://u:****@127.0.0.1/db"
        );
        assert_eq!(
            mask_text("https://TOKEN@github.com/x"),
            "https://****@github.com/x"
        );
        assert_eq!(
            mask_text("a http://h/p and ftp://u:p@q"),
            "a http://h/p and ftp://u:****@q"
        );
        assert_eq!(mask_text("no url here"), "no url here");
    }

    #[test]
    fn secret_keys_are_recognised_by_their_last_part() {
        for key in [
            "password",
            "probes.x.config.pwd",
            "DSN",
            "api_key",
            "authorization",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in ["url", "probes.password.config.address", "timeout"] {
            assert!(!is_secret_key(key), "{key}");
        }
        assert_eq!(mask_value("pwd", "PWDSECRET"), MASK);
    }

    #[test]
    fn secret_parts_cover_raw_and_decoded_passwords() {
        assert_eq!(
            secret_parts("url", "postgres://u:p%40ss%2Fw0rd@db/app"),
            ["p%40ss%2Fw0rd", "p@ss/w0rd"]
        );
        assert_eq!(secret_parts("password", "S3CRET${abc"), ["S3CRET${abc"]);
        assert!(
            secret_parts("url", "postgres://u:ab@db/app").is_empty(),
            "too short"
        );
        assert_eq!(
            redact(
                "failed: p@ss/w0rd and p%40ss%2Fw0rd",
                &secret_parts("url", "x://u:p%40ss%2Fw0rd@h")
            ),
            "failed: **** and ****"
        );
    }
}
