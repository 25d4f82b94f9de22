//! Django's password hashing (`pbkdf2_sha256`) and the standard validators
//! `ensureadmin` applies, with Django's exact messages.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use base64::Engine as _;
use rand::RngExt as _;
use rand::distr::Alphanumeric;
use sha2::Sha256;

use crate::config::PasswordValidator;

/// Django's salt: 22 characters of `[A-Za-z0-9]` (about 128 bits).
const SALT_LENGTH: usize = 22;

/// `make_password(password)` as Django's `PBKDF2PasswordHasher` writes it:
/// `pbkdf2_sha256$<iterations>$<salt>$<base64 of the 32-byte derived key>`.
pub fn make_password(password: &str, iterations: u32) -> String {
    let salt: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(SALT_LENGTH)
        .map(char::from)
        .collect();
    encode(password, &salt, iterations)
}

fn encode(password: &str, salt: &str, iterations: u32) -> String {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut key);
    let hash = base64::engine::general_purpose::STANDARD.encode(key);
    format!("pbkdf2_sha256${iterations}${salt}${hash}")
}

/// Run the validators in order; every failure's message, as Django reports them.
pub fn validate(password: &str, validators: &[PasswordValidator]) -> Result<(), Vec<String>> {
    let mut messages = Vec::new();
    for validator in validators {
        match validator {
            PasswordValidator::MinimumLength(min) => {
                if password.chars().count() < *min {
                    let unit = if *min == 1 { "character" } else { "characters" };
                    messages.push(format!(
                        "This password is too short. It must contain at least {min} {unit}."
                    ));
                }
            }
            PasswordValidator::Common(list) => match common_passwords(list) {
                Ok(common) => {
                    if common.contains(password.to_lowercase().trim()) {
                        messages.push("This password is too common.".to_owned());
                    }
                }
                Err(e) => messages.push(format!(
                    "The list of common passwords {} cannot be read: {e}",
                    list.display()
                )),
            },
            PasswordValidator::Numeric => {
                if !password.is_empty() && password.chars().all(char::is_numeric) {
                    messages.push("This password is entirely numeric.".to_owned());
                }
            }
        }
    }
    if messages.is_empty() {
        Ok(())
    } else {
        Err(messages)
    }
}

/// The list file, gzip-compressed or plain, one password per line (stripped), as
/// Django's `CommonPasswordValidator` reads it.
fn common_passwords(path: &Path) -> std::io::Result<HashSet<String>> {
    let raw = std::fs::read(path)?;
    let text = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut text = String::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_string(&mut text)?;
        text
    } else {
        String::from_utf8(raw)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
    };
    Ok(text.lines().map(|l| l.trim().to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn hashes_match_django() {
        // Django 5.2: PBKDF2PasswordHasher().encode("hunter2", "seasalt", 1000), which
        // is base64(hashlib.pbkdf2_hmac("sha256", password, salt, iterations)).
        assert_eq!(
            encode("hunter2", "seasalt", 1000),
            "pbkdf2_sha256$1000$seasalt$aZOLUDnbVq4qfmIhIFCkAqvDNHspRzj9l43SgVe7GOM="
        );
    }

    #[test]
    fn made_passwords_have_a_fresh_22_character_salt() {
        let a = make_password("pw", 10);
        let b = make_password("pw", 10);
        let parts: Vec<&str> = a.split('$').collect();
        assert_eq!(parts[..2], ["pbkdf2_sha256", "10"]);
        assert_eq!(parts[2].len(), 22);
        assert!(parts[2].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }

    #[test]
    fn validators_report_djangos_messages_in_order() {
        let mut list = tempfile::NamedTempFile::new().unwrap();
        writeln!(list, "password\n12345678\n  letmein  ").unwrap();
        let validators = [
            PasswordValidator::MinimumLength(8),
            PasswordValidator::Common(list.path().to_path_buf()),
            PasswordValidator::Numeric,
        ];
        assert_eq!(
            validate("1234", &validators).unwrap_err(),
            [
                "This password is too short. It must contain at least 8 characters.",
                "This password is entirely numeric."
            ]
        );
        assert_eq!(
            validate("12345678", &validators).unwrap_err(),
            [
                "This password is too common.",
                "This password is entirely numeric."
            ]
        );
        assert_eq!(
            validate("LetMeIn ", &validators).unwrap_err(),
            ["This password is too common."]
        );
        assert_eq!(validate("correct horse", &validators), Ok(()));
        assert_eq!(
            validate("", &[PasswordValidator::MinimumLength(1)]).unwrap_err(),
            ["This password is too short. It must contain at least 1 character."]
        );
    }

    #[test]
    fn gzip_lists_are_read() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hunter2\n").unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), gz.finish().unwrap()).unwrap();
        let validators = [PasswordValidator::Common(file.path().to_path_buf())];
        assert_eq!(
            validate("Hunter2", &validators).unwrap_err(),
            ["This password is too common."]
        );
    }
}
