//! Releases a failed deploy left prepared: a deploy that failed at the barrier keeps, on each
//! host where it built completely, the release it built, marked with the build's key (what went
//! into it: the revision, the build steps, the environment (secrets by a digest), the shared,
//! copy and writable settings). A later deploy of the same build takes that release's id: those
//! hosts reuse it, the others build it — so the retry after fixing one host builds on that host
//! alone.

use sha2::{Digest, Sha256};

use crate::inventory::HostConfig;

use super::*;

/// The key of what a host's release is built from: equal keys, equal releases.
pub(super) fn build_key(c: &HostConfig, source: &Prepared) -> String {
    let mut text = format!(
        "revision={}\ndelivery={}\n",
        source.revision,
        match &source.delivery {
            remote::Delivery::Tarball { .. } => "tarball",
            remote::Delivery::Git { .. } => "git",
            remote::Delivery::Url { .. } => "url",
        }
    );
    for s in &c.build {
        text.push_str(&format!(
            "build={} sudo={} roles={:?}\n",
            s.run, s.sudo, s.roles
        ));
    }
    for v in c.env.iter().filter(|v| !v.secret) {
        text.push_str(&format!("env={}={}\n", v.name, v.value));
    }
    // Secrets: a build may bake them in (`artisan config:cache`), so a rotated secret is
    // another build. Only a digest of them all goes into the text, and the key written on the
    // host is a digest of the text (readable by the deploy user alone, who has the secrets).
    let mut secrets = Sha256::new();
    secrets.update(b"ship build key secrets\0");
    for v in c.env.iter().filter(|v| v.secret) {
        text.push_str(&format!("secret={}\n", v.name));
        secrets.update(v.name.as_bytes());
        secrets.update(b"=");
        secrets.update(v.value.as_bytes());
        secrets.update(b"\0");
    }
    text.push_str(&format!("secrets={}\n", hex::encode(secrets.finalize())));
    text.push_str(&format!(
        "shared={:?} {:?}\ncopy={:?}\nwritable={:?}\n",
        c.shared.files, c.shared.dirs, c.copy_from_previous, c.writable
    ));
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    format!("build-{}", &digest[..24])
}

/// Whether `h` holds release `id` whole and marked prepared with the build key `key`.
fn holds(h: &HostRun, id: &str, key: &str) -> bool {
    h.preflight
        .prepared
        .iter()
        .any(|(p, k)| p == id && k == key)
        && h.preflight.has_complete(id)
}

/// Whether this deploy can take up releases a failed deploy of the same build left prepared:
/// the newest id that some hosts have prepared with this build's key, that is newer than every
/// host's current release, and that every other host can build (it has no release of that
/// name). Marks the hosts that reuse it.
pub(super) fn reusable(hosts: &mut [HostRun], d: &Deploy) -> Option<String> {
    let Job::Deploy(source) = &d.job else {
        return None;
    };
    if d.rebuild {
        return None;
    }
    let keys: Vec<String> = hosts
        .iter()
        .map(|h| build_key(&h.host.config, source))
        .collect();
    let mut candidates: Vec<&str> = hosts
        .iter()
        .zip(&keys)
        .flat_map(|(h, k)| {
            h.preflight
                .prepared
                .iter()
                .map(|(id, _)| id.as_str())
                .filter(move |id| holds(h, id, k))
        })
        .collect();
    candidates.sort();
    candidates.dedup();
    // Release ids are timestamps and order the releases: a prepared release older than a
    // host's current one is not taken up (it would go live behind the current release).
    let chosen = candidates.into_iter().rev().find(|id| {
        hosts.iter().zip(&keys).all(|(h, k)| {
            if h.preflight.current_release().is_some_and(|c| c >= *id) {
                return false;
            }
            // It reuses the release, or builds it under a name it does not have yet.
            holds(h, id, k) || !h.preflight.releases.iter().any(|r| r == id)
        })
    })?;
    let chosen = chosen.to_owned();
    for (h, k) in hosts.iter_mut().zip(&keys) {
        h.reuse = holds(h, &chosen, k);
    }
    Some(chosen)
}
