//! Secrets kept out of everything ship shows.
//!
//! One [`Masker`] per run knows every secret of the stage: `env` values marked `secret`, and
//! the credentials inside URLs (a git source's `https://user:token@…`, a health check's
//! `?token=…`). It is applied to every text ship shows or records — live rows, plain lines, `-v`
//! output, `--json`, `plan`, `config`, errors — and recognises a secret in each form it can
//! take on the way: as it is, shell-quoted (`'it'\''s'`, `"it's \"x\""`), JSON-escaped, percent-
//! encoded, and line by line when it spans lines. Any URL in a text also has its credentials
//! masked, whether or not the masker was told about them.

use std::sync::Arc;

/// What a secret is replaced with.
pub const MASK: &str = "****";

/// Replaces secrets in anything shown.
#[derive(Clone, Default, Debug)]
pub struct Masker(Arc<Vec<String>>);

impl Masker {
    /// A masker for these secrets (empty ones are ignored).
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut v: Vec<String> = secrets
            .into_iter()
            .filter(|s| !s.is_empty())
            .flat_map(|s| forms(&s))
            .collect();
        // Longest first: a secret that contains another is masked whole.
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        Masker(Arc::new(v))
    }

    /// `text` with every form of every secret, and the credentials of every URL, masked.
    pub fn mask(&self, text: &str) -> String {
        let masked = self
            .0
            .iter()
            .fold(text.to_owned(), |t, s| t.replace(s.as_str(), MASK));
        mask_urls(&masked)
    }
}

/// The forms a secret takes in the texts ship shows: as it is; inside single quotes (each `'`
/// as `'\''`, which is also how bash's trace shows it); inside double quotes; JSON-escaped (and
/// the JSON of the single-quoted form, as `plan --json` shows a script); percent-encoded; and
/// each line of a secret that spans lines, when the line is long enough to mean something.
fn forms(secret: &str) -> Vec<String> {
    let single = secret.replace('\'', r"'\''");
    let double: String = secret
        .chars()
        .flat_map(|c| match c {
            '"' | '\\' | '$' | '`' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let json = |s: &str| {
        let j = serde_json::to_string(s).unwrap_or_default();
        j.trim_matches('"').to_owned()
    };
    let mut out = vec![
        secret.to_owned(),
        json(secret),
        json(&single),
        percent_encode(secret),
        single,
        double,
    ];
    if secret.contains('\n') {
        out.extend(
            secret
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= 6)
                .map(str::to_owned),
        );
    }
    out.retain(|s| !s.is_empty());
    out
}

/// Every byte but unreserved characters as `%XX` (how a secret looks inside a URL).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `%XX` sequences decoded (bytes that do not make UTF-8 are kept as they were written).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_owned())
}

/// Query parameters whose value is a credential (matched without case, as a part of the name:
/// `api_key`, `X-Amz-Signature`, `access_token`…).
const SECRET_PARAMS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "pwd",
    "key",
    "signature",
    "sig",
    "credential",
    "auth",
];

fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|p| n.contains(p))
}

/// Where a URL's parts are in a text.
struct UrlParts {
    scheme: String,
    /// The userinfo (before the last `@` of the authority), as a range of the text.
    userinfo: Option<(usize, usize)>,
    /// The query (after `?`), as a range of the text.
    query: Option<(usize, usize)>,
    end: usize,
}

fn ends_url(c: u8) -> bool {
    c.is_ascii_whitespace() || b"\"'<>`\\".contains(&c)
}

/// The URL whose `://` is at `sep` in `text`.
fn url_at(text: &str, sep: usize) -> UrlParts {
    let b = text.as_bytes();
    let scheme_start = text[..sep]
        .rfind(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
        .map_or(0, |p| p + 1);
    let start = sep + 3;
    let mut end = start;
    while end < b.len() && !ends_url(b[end]) {
        end += 1;
    }
    let auth_end = text[start..end]
        .find(['/', '?', '#'])
        .map_or(end, |p| start + p);
    let userinfo = text[start..auth_end].rfind('@').map(|p| (start, start + p));
    let query = text[start..end].find('?').map(|p| {
        let q = start + p + 1;
        let qe = text[q..end].find('#').map_or(end, |f| q + f);
        (q, qe)
    });
    UrlParts {
        scheme: text[scheme_start..sep].to_ascii_lowercase(),
        userinfo,
        query,
        end,
    }
}

/// The ranges of a URL's text that are credentials: the password of its userinfo (the whole
/// userinfo over http(s), where a lone user name is a token: `https://<token>@github.com/…`),
/// and the values of credential-like query parameters.
fn credential_ranges(text: &str, u: &UrlParts) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    if let Some((s, e)) = u.userinfo {
        match text[s..e].find(':') {
            Some(c) => out.push((s + c + 1, e)),
            None if u.scheme.starts_with("http") => out.push((s, e)),
            None => {}
        }
    }
    if let Some((qs, qe)) = u.query {
        let mut pos = qs;
        for pair in text[qs..qe].split('&') {
            if let Some((k, v)) = pair.split_once('=') {
                if is_secret_param(k) && !v.is_empty() {
                    let vs = pos + k.len() + 1;
                    out.push((vs, vs + v.len()));
                }
            }
            pos += pair.len() + 1;
        }
    }
    out.retain(|(s, e)| e > s);
    out
}

/// `text` with the credentials of every URL in it masked.
pub fn mask_urls(text: &str) -> String {
    if !text.contains("://") {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut done = 0;
    let mut from = 0;
    while let Some(p) = text[from..].find("://") {
        let sep = from + p;
        let u = url_at(text, sep);
        for (s, e) in credential_ranges(text, &u) {
            if s >= done {
                out.push_str(&text[done..s]);
                out.push_str(MASK);
                done = e;
            }
        }
        from = u.end.max(sep + 3);
    }
    out.push_str(&text[done..]);
    out
}

/// A lone user name in an http(s) URL is masked inside URLs always, but outside them only when
/// it is long enough to be a token (`https://ghp_…@github.com`): a short one (`deploy`) is a
/// word that output is full of.
const LONE_USER_TOKEN_LEN: usize = 12;

/// The credentials inside `url`, as written and decoded, so that they are masked wherever they
/// show up, in a URL or not.
pub fn url_secrets(url: &str) -> Vec<String> {
    let Some(sep) = url.find("://") else {
        return Vec::new();
    };
    let u = url_at(url, sep);
    let lone_user = u.userinfo.filter(|(s, e)| !url[*s..*e].contains(':'));
    credential_ranges(url, &u)
        .into_iter()
        .filter(|r| Some(*r) != lone_user || r.1 - r.0 >= LONE_USER_TOKEN_LEN)
        .flat_map(|(s, e)| {
            let raw = url[s..e].to_owned();
            let decoded = percent_decode(&raw);
            [raw, decoded]
        })
        .collect()
}

/// An http(s) URL split into the URL without its userinfo and the user name and password it
/// held (decoded), so that the credentials can travel apart from the URL (git gets them from a
/// credential helper, never in its arguments). Other URLs: as they are, no credentials.
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some(sep) = url.find("://") else {
        return (url.to_owned(), None);
    };
    let u = url_at(url, sep);
    match u.userinfo {
        Some((s, e)) if u.scheme.starts_with("http") && u.end == url.len() => {
            let info = &url[s..e];
            let (user, pass) = info.split_once(':').unwrap_or((info, ""));
            let public = format!("{}{}", &url[..s], &url[e + 1..]);
            (public, Some((percent_decode(user), percent_decode(pass))))
        }
        _ => (url.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_longest_first() {
        let m = Masker::new(["abc".to_owned(), "abcdef".to_owned()]);
        assert_eq!(m.mask("x abcdef y abc"), "x **** y ****");
    }

    #[test]
    fn every_quoted_form_of_a_secret_is_masked() {
        let secret = "it's \"q\" $x\\y";
        let m = Masker::new([secret.to_owned()]);
        let quoted = crate::remote::quote(secret).into_owned();
        let json = serde_json::to_string(secret).expect("json");
        let json_of_script = serde_json::to_string(&format!("export K={quoted}")).expect("json");
        let double = r#""it's \"q\" \$x\\y""#;
        for shown in [
            secret.to_owned(),
            quoted.clone(),
            json.clone(),
            json_of_script.clone(),
            double.to_owned(),
            format!("+ export 'K={}'", secret.replace('\'', r"'\''")),
            format!("https://h/?p={}", percent_encode(secret)),
        ] {
            let masked = m.mask(&shown);
            assert!(masked.contains(MASK), "{shown} -> {masked}");
            for part in ["it'", "$x", "%24x"] {
                assert!(!masked.contains(part), "{shown} -> {masked}");
            }
        }
    }

    #[test]
    fn a_secret_that_spans_lines_is_masked_line_by_line() {
        let m =
            Masker::new(["-----BEGIN KEY-----\nMIIEowIBAAKCAQEA\n-----END KEY-----".to_owned()]);
        assert_eq!(m.mask("line: MIIEowIBAAKCAQEA"), "line: ****");
    }

    #[test]
    fn credentials_in_urls_are_masked_wherever_a_url_is_shown() {
        assert_eq!(
            mask_urls("git https://deploy:s3cr3t@git.example.com/app.git: failed"),
            "git https://deploy:****@git.example.com/app.git: failed"
        );
        assert_eq!(
            mask_urls("https://ghp_abc123@github.com/o/r.git"),
            "https://****@github.com/o/r.git"
        );
        assert_eq!(
            mask_urls("curl 'https://h/health?x=1&token=t0k&api_key=k3y#f'"),
            "curl 'https://h/health?x=1&token=****&api_key=****#f'"
        );
        assert_eq!(
            mask_urls("ssh://git@github.com/o/r.git and git@github.com:o/r.git"),
            "ssh://git@github.com/o/r.git and git@github.com:o/r.git"
        );
        assert_eq!(mask_urls("no url here"), "no url here");
    }

    #[test]
    fn url_secrets_are_known_as_written_and_decoded() {
        assert_eq!(
            url_secrets("https://u:p%40ss@h/r.git"),
            vec!["p%40ss".to_owned(), "p@ss".to_owned()]
        );
        assert_eq!(url_secrets("https://h/?token=abc"), vec!["abc", "abc"]);
        assert!(url_secrets("ssh://git@h/r.git").is_empty());
        // A lone user name is a token only when it is long enough to be one.
        assert!(url_secrets("https://deploy@h/r.git").is_empty());
        assert_eq!(
            url_secrets("https://ghp_0123456789ab@github.com/o/r.git"),
            vec!["ghp_0123456789ab", "ghp_0123456789ab"]
        );
    }

    #[test]
    fn http_credentials_are_split_from_the_url() {
        assert_eq!(
            split_credentials("https://deploy:p%40ss@git.example.com/app.git"),
            (
                "https://git.example.com/app.git".to_owned(),
                Some(("deploy".to_owned(), "p@ss".to_owned()))
            )
        );
        assert_eq!(
            split_credentials("git@github.com:o/r.git"),
            ("git@github.com:o/r.git".to_owned(), None)
        );
        assert_eq!(
            split_credentials("ssh://git@github.com/o/r.git"),
            ("ssh://git@github.com/o/r.git".to_owned(), None)
        );
    }
}
