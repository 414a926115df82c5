//! The client's keys: which ones, loaded (and unlocked) once per run, and authenticating with
//! them (or with the agent).

use super::*;

/// The keys tried when the inventory names none, in OpenSSH's order.
pub(super) fn default_identities() -> Vec<PathBuf> {
    let Some(home) = std::env::var_os("HOME") else {
        return Vec::new();
    };
    let ssh = Path::new(&home).join(".ssh");
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|n| ssh.join(n))
        .filter(|p| p.exists())
        .collect()
}

/// Keys loaded this run (read once, not once per host), and those unlocked with a passphrase
/// typed at the terminal.
pub(super) static LOADED: Mutex<Vec<(PathBuf, Arc<PrivateKey>)>> = Mutex::new(Vec::new());

pub(super) fn remember(path: &Path, key: Arc<PrivateKey>) {
    if let Ok(mut v) = LOADED.lock() {
        v.push((path.to_path_buf(), key));
    }
}

pub(super) fn load_key(path: &Path) -> Result<Arc<PrivateKey>, TransportError> {
    if let Some(k) = LOADED
        .lock()
        .ok()
        .and_then(|v| v.iter().find(|(p, _)| p == path).map(|(_, k)| k.clone()))
    {
        return Ok(k);
    }
    russh::keys::load_secret_key(path, None)
        .map(|k| {
            let k = Arc::new(k);
            remember(path, k.clone());
            k
        })
        .map_err(|e| {
            let reason = match e {
                russh::keys::Error::KeyIsEncrypted => format!(
                    "{} is encrypted, and there is no terminal to ask for its passphrase \
                     (hint: load it into ssh-agent with `ssh-add {}`, as CI jobs do, and unset \
                     identity_file)",
                    path.display(),
                    path.display()
                ),
                other => format!("cannot load {}: {other}", path.display()),
            };
            TransportError::Auth {
                user: String::new(),
                reason,
            }
        })
}

/// Before a run shows anything, ask on the terminal for the passphrase of each encrypted key
/// the hosts will use (explicit `identity_file`s; the default keys when no agent runs), three
/// tries each. Without a terminal nothing is asked: the connection then fails saying why.
pub fn unlock_keys(hosts: &[Host]) -> Result<(), String> {
    use std::io::IsTerminal;
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Ok(());
    }
    let mut paths: Vec<PathBuf> = Vec::new();
    for h in hosts
        .iter()
        .filter(|h| h.config.connection == crate::inventory::Connection::Ssh)
    {
        match &h.config.identity_file {
            Some(p) => paths.push(p.clone()),
            None if std::env::var_os("SSH_AUTH_SOCK").is_none() => {
                paths.extend(default_identities())
            }
            None => {}
        }
    }
    paths.sort();
    paths.dedup();
    for path in paths {
        if !matches!(
            russh::keys::load_secret_key(&path, None),
            Err(russh::keys::Error::KeyIsEncrypted)
        ) {
            continue;
        }
        let mut unlocked = None;
        for _ in 0..3 {
            let pass = rpassword::prompt_password(format!("Passphrase for {}: ", path.display()))
                .map_err(|e| format!("cannot read the passphrase: {e}"))?;
            match russh::keys::load_secret_key(&path, Some(&pass)) {
                Ok(k) => {
                    unlocked = Some(k);
                    break;
                }
                Err(_) => eprintln_safe("wrong passphrase, try again"),
            }
        }
        let Some(key) = unlocked else {
            return Err(format!(
                "{}: wrong passphrase three times; nothing was changed",
                path.display()
            ));
        };
        remember(&path, Arc::new(key));
    }
    Ok(())
}

/// A line on stderr from the library (the passphrase prompt's own conversation).
pub(super) fn eprintln_safe(s: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{s}");
}

pub(super) async fn authenticate(
    handle: &mut Handle<Client>,
    host: &Host,
) -> Result<(), TransportError> {
    let user = host.config.user.clone();
    let auth_err = |reason: String| TransportError::Auth {
        user: user.clone(),
        reason,
    };
    let mut tried = Vec::new();
    let explicit = host.config.identity_file.clone();
    let files = match &explicit {
        Some(p) => vec![p.clone()],
        None => default_identities(),
    };
    // The agent first when no key is named (the user's usual setup), then key files.
    if explicit.is_none() && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        if let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await {
            let identities = agent.request_identities().await.unwrap_or_default();
            for id in identities {
                let key = id.public_key().into_owned();
                let hash = rsa_hash(handle, &key).await;
                match handle
                    .authenticate_publickey_with(&user, key, hash, &mut agent)
                    .await
                {
                    Ok(r) if r.success() => return Ok(()),
                    _ => tried.push("a key from ssh-agent".to_owned()),
                }
            }
        }
    }
    for path in files {
        let key = match load_key(&path) {
            Ok(k) => k,
            Err(TransportError::Auth { reason, .. }) => return Err(auth_err(reason)),
            Err(e) => return Err(e),
        };
        let hash = rsa_hash(handle, key.public_key()).await;
        let result = handle
            .authenticate_publickey(&user, PrivateKeyWithHashAlg::new(key, hash))
            .await
            .map_err(|e| auth_err(describe_russh_error(&e)))?;
        if result.success() {
            return Ok(());
        }
        tried.push(path.display().to_string());
    }
    Err(auth_err(if tried.is_empty() {
        "no key to offer: set identity_file, or load a key into ssh-agent".into()
    } else {
        format!(
            "the server refused {}\n  hint: check that the public key is in ~{}/.ssh/authorized_keys on the host",
            tried.join(", "),
            user
        )
    }))
}

pub(super) async fn rsa_hash(handle: &Handle<Client>, key: &PublicKey) -> Option<HashAlg> {
    if !matches!(key.algorithm(), russh::keys::Algorithm::Rsa { .. }) {
        return None;
    }
    handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten()
}
