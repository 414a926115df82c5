//! Host-key verification against an OpenSSH `known_hosts` file.
//!
//! Written here rather than taken from russh because russh's reader splits on single spaces and
//! knows neither wildcards, negation, markers (`@cert-authority`, `@revoked`) nor tabs, and a
//! deploy tool must read the files operators actually have.
//!
//! A run connects to every host of a fleet, often with a known_hosts file that names each of
//! them: the file is read once per run into a [`Table`] (plain names in a map, only the lines
//! with wildcards, negations or hashed names matched one by one), and read again only when it
//! changes on disk. Reading and scanning the whole file for each host cost a 1,000-host deploy
//! a second of the controller's CPU.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::SystemTime;

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

/// One line that records a host key: its patterns and key, the key parsed only when a host
/// matches it.
#[derive(Debug)]
struct Line {
    number: usize,
    revoked: bool,
    patterns: String,
    b64: String,
}

impl Line {
    fn entry(&self) -> Option<Entry> {
        // Lines with keys this build cannot parse are skipped, as OpenSSH does.
        let key = russh::keys::parse_public_key_base64(&self.b64).ok()?;
        Some(Entry {
            line: self.number,
            revoked: self.revoked,
            key,
        })
    }
}

/// A known_hosts file, read into its lines once.
#[derive(Debug, Default)]
struct Table {
    lines: Vec<Line>,
    /// Lines whose patterns are all plain names, by each name in lower case.
    by_name: HashMap<String, Vec<usize>>,
    /// Lines matched against each name in turn: wildcards, negations, hashed names, and
    /// `@revoked` lines (they apply to every host, whatever their patterns).
    scanned: Vec<usize>,
    /// Lines in the file, recorded or not (the number the next appended line gets, less one).
    count: usize,
}

impl Table {
    fn parse(text: &str) -> Table {
        let mut t = Table::default();
        for (i, raw) in text.lines().enumerate() {
            t.count = i + 1;
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
            t.push(Line {
                number: i + 1,
                revoked,
                patterns: first.to_owned(),
                b64: b64.to_owned(),
            });
        }
        t
    }

    fn push(&mut self, line: Line) {
        let index = self.lines.len();
        let plain = |p: &str| !p.starts_with(['!', '|']) && !p.contains(['*', '?']);
        if !line.revoked && line.patterns.split(',').all(plain) {
            for name in line.patterns.split(',') {
                let list = self.by_name.entry(name.to_lowercase()).or_default();
                if !list.contains(&index) {
                    list.push(index);
                }
            }
        } else {
            self.scanned.push(index);
        }
        self.lines.push(line);
    }

    /// The entries that apply to `host:port`, in the file's order.
    fn entries(&self, host: &str, port: u16) -> Vec<Entry> {
        let name = lookup_name(host, port);
        let mut found: Vec<usize> = self
            .by_name
            .get(&name.to_lowercase())
            .cloned()
            .unwrap_or_default();
        found.extend(self.scanned.iter().copied().filter(|&i| {
            let l = &self.lines[i];
            l.revoked || patterns_match(&l.patterns, &name)
        }));
        found.sort_unstable();
        found
            .into_iter()
            .filter_map(|i| self.lines[i].entry())
            .collect()
    }
}

/// Which file it was (device, inode), when it was last changed and how long it was (`None`: it
/// did not exist): an edit in place or a file put in its place both change it.
type Stamp = Option<(u64, u64, SystemTime, i64, i64, u64)>;

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some((
            m.dev(),
            m.ino(),
            m.modified()?,
            m.ctime(),
            m.ctime_nsec(),
            m.len(),
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The files read so far in this process, each with its stamp when it was read.
static TABLES: LazyLock<Mutex<HashMap<PathBuf, (Stamp, Table)>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// The entries of the file at `path` that apply to `host:port` (a missing file knows no one).
/// The file is read again only when its modification time or length changed.
fn lookup(path: &Path, host: &str, port: u16) -> std::io::Result<Vec<Entry>> {
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let now = stamp(path)?;
    if let Some((seen, table)) = tables.get(path)
        && *seen == now
    {
        return Ok(table.entries(host, port));
    }
    let table = match now {
        None => Table::default(),
        Some(_) => Table::parse(&std::fs::read_to_string(path)?),
    };
    let entries = table.entries(host, port);
    tables.insert(path.to_owned(), (now, table));
    Ok(entries)
}

#[cfg(test)]
fn entries(text: &str, host: &str, port: u16) -> Vec<Entry> {
    Table::parse(text).entries(host, port)
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
    Ok(verdict(&lookup(path, host, port)?, key))
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
    let Ok(entries) = lookup(path, host, port) else {
        return Vec::new();
    };
    let mut algs: Vec<Algorithm> = Vec::new();
    for e in entries {
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

/// Record a newly accepted host key (accept-new), creating the file if needed. The file's table,
/// when it is read already and nobody else changed the file meanwhile, gets the line too (a
/// first deploy to a fleet records every host: reading the file again for each would cost
/// as much as reading it for each host).
pub fn append(path: &Path, host: &str, port: u16, key: &PublicKey) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let encoded = key
        .to_openssh()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let name = lookup_name(host, port);
    let mut tables = TABLES.lock().unwrap_or_else(|e| e.into_inner());
    let before = stamp(path)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let line = format!("{name} {}\n", encoded.trim());
    f.write_all(line.as_bytes())?;
    drop(f);
    let after = stamp(path)?;
    // The file is the table's plus this line, and nothing else (another process appending
    // at the same moment would make it longer): the table takes the line; otherwise it is
    // read again at the next lookup.
    let only_ours = match (before, after) {
        (Some(b), Some(a)) => (a.0, a.1, a.5) == (b.0, b.1, b.5 + line.len() as u64),
        _ => false,
    };
    match tables.get_mut(path) {
        Some((seen, table)) if *seen == before && only_ours => {
            // `<type> <base64> [comment]`, as written above.
            let b64 = encoded.split_whitespace().nth(1).unwrap_or_default();
            table.count += 1;
            let number = table.count;
            table.push(Line {
                number,
                revoked: false,
                patterns: name,
                b64: b64.to_owned(),
            });
            *seen = after;
        }
        _ => {
            tables.remove(path);
        }
    }
    Ok(())
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
    fn a_file_read_once_follows_appends_and_edits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let text = format!("# fleet\nWEB-1,10.0.0.1 ssh-ed25519 {ED}\n*.db ssh-ed25519 {ED2}\n");
        std::fs::write(&path, text).expect("write");
        let check = |host: &str, b64: &str| check(&path, host, 22, &key(b64)).expect("check");
        // Plain names are found whatever their case; wildcards still match.
        assert_eq!(check("web-1", ED), Verdict::Known);
        assert_eq!(check("10.0.0.1", ED), Verdict::Known);
        assert_eq!(check("x.db", ED2), Verdict::Known);
        assert_eq!(check("web-2", ED), Verdict::Unknown);
        // An appended host is known at once, on the line it was written to.
        append(&path, "web-2", 22, &key(ED2)).expect("append");
        assert_eq!(check("web-2", ED2), Verdict::Known);
        assert!(matches!(
            check("web-2", ED),
            Verdict::Changed { line: 4, .. }
        ));
        // A file put in its place (as editors and ssh-keygen -R do) is read again.
        let edited = dir.path().join("edited");
        std::fs::write(&edited, format!("web-1 ssh-ed25519 {ED2}\n")).expect("write");
        std::fs::rename(&edited, &path).expect("rename");
        assert!(matches!(
            check("web-1", ED),
            Verdict::Changed { line: 1, .. }
        ));
        assert_eq!(check("web-2", ED2), Verdict::Unknown);
        // A line that a plain name and a wildcard both match counts once, in the file's order.
        std::fs::write(
            &path,
            format!(
                "@revoked * ssh-ed25519 {ED2}\nweb-1 ssh-ed25519 {ED}\nweb-* ssh-ed25519 {ED}\n"
            ),
        )
        .expect("write");
        let lines: Vec<usize> =
            entries(&std::fs::read_to_string(&path).expect("read"), "web-1", 22)
                .iter()
                .map(|e| e.line)
                .collect();
        assert_eq!(lines, vec![1, 2, 3]);
        assert_eq!(check("web-1", ED2), Verdict::Revoked { line: 1 });
        // A file removed knows no one.
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(check("web-1", ED), Verdict::Unknown);
    }

    #[test]
    fn globs() {
        assert!(glob("*", "anything"));
        assert!(glob("web-?", "WEB-1"));
        assert!(!glob("web-?", "web-10"));
        assert!(glob("10.0.*.1", "10.0.200.1"));
    }
}
