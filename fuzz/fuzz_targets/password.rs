//! `ensureadmin`'s password handling: Django's validators and the PBKDF2 hash
//! in Django's format, on any password.
#![no_main]

use libfuzzer_sys::fuzz_target;
use probehost::config::PasswordValidator;
use probehost::jobs::password::{make_password, validate};

fuzz_target!(|password: &str| {
    let validators = [
        PasswordValidator::MinimumLength(8),
        PasswordValidator::Numeric,
    ];
    if let Err(messages) = validate(password, &validators) {
        assert!(!messages.is_empty());
    }
    // One iteration: the format, not the cost, is under test.
    let hash = make_password(password, 1);
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts.len(), 4, "{hash}");
    assert_eq!((parts[0], parts[1]), ("pbkdf2_sha256", "1"));
});
