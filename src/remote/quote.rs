//! The one place where values become shell words.

use std::borrow::Cow;

/// Quote `s` as one POSIX shell word. Values made only of safe characters are left as they are,
/// so rendered commands stay readable; everything else is single-quoted, which makes `$`, `` ` ``,
/// `\`, `"`, spaces and newlines inert. The inventory rejects NUL, the one byte no shell can carry.
pub fn quote(s: &str) -> Cow<'_, str> {
    let safe = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./-_".contains(&b));
    if safe {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(format!("'{}'", s.replace('\'', r"'\''")))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn safe_words_stay_readable() {
        assert_eq!(quote("/var/www/app"), "/var/www/app");
        assert_eq!(quote("releases/20261122103000"), "releases/20261122103000");
    }

    #[test]
    fn hostile_values_are_inert() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(quote("`id`"), "'`id`'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote("x\ny"), "'x\ny'");
        assert_eq!(quote("-rf"), "-rf");
    }

    #[test]
    fn quoted_values_round_trip_through_a_real_shell() {
        for value in [
            "a b",
            "$(echo pwned)",
            "`echo pwned`",
            "it's \"q\"",
            "x\ny",
            "\\",
            "*",
            "~",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", quote(value)))
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&out.stdout), value);
        }
    }
}
