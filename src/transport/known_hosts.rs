//! Host-key verification against an OpenSSH `known_hosts` file.
//!
//! Written here rather than taken from russh because russh's reader splits on single spaces and
//! knows neither wildcards, negation, markers (`@cert-authority`, `@revoked`) nor tabs, and a
//! deploy tool must read the files operators actually have.

use std::io::Write;
use std::path::Path;

use data_encoding::BASE64;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};
use sha1::Sha1;

/// What known_hosts says about the key a host presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A recorded key matches.
    Known,
    /// Nothing is recorded for this host and key type.
    Unknown,
    /// A different key of the same type is recorded: possibly an attack.
    Changed {
        line: usize,
        recorded_fingerprint: String,
    },
    /// The key is marked `@revoked`.
    Revoked { line: usize },
}

struct Entry {
    line: usize,
    revoked: bool,
    key: PublicKey,
}

/// The name a host is recorded under: `host`, or `[host]:port` for a non-default port.
pub fn lookup_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

fn entries(text: &str, host: &str, port: u16) -> Vec<Entry> {
    let name = lookup_name(host, port);
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if let Some(marker) = first.strip_prefix('@') {
            match marker {
                "revoked" => revoked = true,
                // CA keys sign host certificates; they are not a host's own key.
                _ => continue,
            }
            first = fields.next().unwrap_or_default();
        }
        let (Some(_key_type), Some(b64)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !revoked && !patterns_match(first, &name) {
            continue;
        }
        // Lines with keys this build cannot parse are skipped, as OpenSSH does.
        if let Ok(key) = russh::keys::parse_public_key_base64(b64) {
            out.push(Entry {
                line: i + 1,
                revoked,
                key,
            });
        }
    }
    out
}

/// OpenSSH's rule: a line matches when some pattern matches and no negated pattern does.
fn patterns_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(neg) = pattern.strip_prefix('!') {
            if glob(neg, name) {
                return false;
            }
        } else if pattern.starts_with("|1|") {
            matched |= hashed_match(pattern, name);
        } else {
            matched |= glob(pattern, name);
        }
    }
    matched
}

fn hashed_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('|').skip(2);
    let (Some(salt), Some(hash)) = (parts.next(), parts.next()) else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        BASE64.decode(salt.as_bytes()),
        BASE64.decode(hash.as_bytes()),
    ) else {
        return false;
    };
    let Ok(mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.chain_update(name.as_bytes())
        .verify_slice(&hash)
        .is_ok()
}

/// `*` and `?` wildcards, case-insensitive like host names.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let n: Vec<char> = name.to_lowercase().chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Check `key` presented by `host:port` against the file at `path` (a missing file knows no one).
pub fn check(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<Verdict> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Verdict::Unknown),
        Err(e) => return Err(e),
    };
    Ok(verdict(&entries(&text, host, port), key))
}

fn verdict(entries: &[Entry], key: &PublicKey) -> Verdict {
    if let Some(e) = entries
        .iter()
        .find(|e| e.revoked && e.key.key_data() == key.key_data())
    {
        return Verdict::Revoked { line: e.line };
    }
    let same_type: Vec<&Entry> = entries
        .iter()
        .filter(|e| !e.revoked && e.key.algorithm() == key.algorithm())
        .collect();
    if same_type.iter().any(|e| e.key.key_data() == key.key_data()) {
        return Verdict::Known;
    }
    match same_type.first() {
        Some(e) => Verdict::Changed {
            line: e.line,
            recorded_fingerprint: e.key.fingerprint(HashAlg::Sha256).to_string(),
        },
        None => Verdict::Unknown,
    }
}

/// The key algorithms recorded for a host, so the client can ask the server for one of those
/// (otherwise a server offering ed25519 first makes a host recorded only by its RSA key look
/// unknown).
pub fn recorded_algorithms(path: &Path, host: &str, port: u16) -> Vec<Algorithm> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let mut algs: Vec<Algorithm> = Vec::new();
    for e in entries(&text, host, port) {
        if e.revoked {
            continue;
        }
        let alg = e.key.algorithm();
        if matches!(alg, Algorithm::Rsa { .. }) {
            for hash in [Some(HashAlg::Sha512), Some(HashAlg::Sha256), None] {
                let a = Algorithm::Rsa { hash };
                if !algs.contains(&a) {
                    algs.push(a);
                }
            }
        } else if !algs.contains(&alg) {
            algs.push(alg);
        }
    }
    algs
}

/// Record a newly accepted host key (accept-new), creating the file if needed.
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let encoded = key
        .to_openssh()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(f, "{} {}", lookup_name(host, port), encoded.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIGHTSkhHKK5ZzGSEPuEemQwgr3aSyEs0Gq/PwopytiiA";
    const ED2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIPWu2F0Tz0pj8lWz9XKtLwt9VKC/hifFUyEfAmBNedCd";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).expect("test key")
    }

    fn verdict_for(text: &str, host: &str, port: u16, b64: &str) -> Verdict {
        verdict(&entries(text, host, port), &key(b64))
    }

    #[test]
    fn matches_plain_port_wildcard_tab_and_negation() {
        let text = format!(
            "# comment\n\nweb-1,10.0.0.1 ssh-ed25519 {ED} c\n[web-2]:2222\tssh-ed25519\t{ED}\n\
             *.example.com,!bad.example.com ssh-ed25519 {ED}\n@cert-authority * ssh-ed25519 {ED2}\n"
        );
        assert_eq!(verdict_for(&text, "web-1", 22, ED), Verdict::Known);
        assert_eq!(verdict_for(&text, "10.0.0.1", 22, ED), Verdict::Known);
        assert_eq!(verdict_for(&text, "web-2", 2222, ED), Verdict::Known);
        assert_eq!(verdict_for(&text, "web-2", 22, ED), Verdict::Unknown);
        assert_eq!(
            verdict_for(&text, "app.example.com", 22, ED),
            Verdict::Known
        );
        assert_eq!(
            verdict_for(&text, "bad.example.com", 22, ED),
            Verdict::Unknown
        );
        assert_eq!(verdict_for(&text, "other", 22, ED2), Verdict::Unknown);
    }

    #[test]
    fn changed_key_names_the_line() {
        let text = format!("web-1 ssh-ed25519 {ED}\n");
        match verdict_for(&text, "web-1", 22, ED2) {
            Verdict::Changed {
                line,
                recorded_fingerprint,
            } => {
                assert_eq!(line, 1);
                assert!(recorded_fingerprint.starts_with("SHA256:"));
            }
            other => panic!("expected Changed, got {other:?}"),
        }
    }

    #[test]
    fn revoked_keys_are_refused() {
        let text = format!("web-1 ssh-ed25519 {ED}\n@revoked * ssh-ed25519 {ED}\n");
        assert_eq!(
            verdict_for(&text, "web-1", 22, ED),
            Verdict::Revoked { line: 2 }
        );
    }

    #[test]
    fn hashed_names() {
        // `ssh-keygen -H` style entry for "web-1", salt and hash computed here.
        let salt = b"0123456789abcdefghij";
        let mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).expect("hmac");
        let hash = mac.chain_update(b"web-1").finalize().into_bytes();
        let text = format!(
            "|1|{}|{} ssh-ed25519 {ED}\n",
            BASE64.encode(salt),
            BASE64.encode(&hash)
        );
        assert_eq!(verdict_for(&text, "web-1", 22, ED), Verdict::Known);
        assert_eq!(verdict_for(&text, "web-2", 22, ED), Verdict::Unknown);
    }

    #[test]
    fn append_then_known() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/known_hosts");
        append(&path, "web-1", 2222, &key(ED)).expect("append");
        assert_eq!(
            check(&path, "web-1", 2222, &key(ED)).expect("check"),
            Verdict::Known
        );
        assert_eq!(
            recorded_algorithms(&path, "web-1", 2222),
            vec![Algorithm::Ed25519]
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("web-?", "WEB-1"));
        assert!(!glob("web-?", "web-10"));
        assert!(glob("10.0.*.1", "10.0.200.1"));
    }
}
