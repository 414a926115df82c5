//! Getting the release's code ready on the controller, once per deploy.
//!
//! An artifact is packed (a directory) or read (a tarball) once, and the same bytes are streamed
//! to every host; its SHA-256 is the revision. A git ref is resolved to one full commit id before
//! anything starts, so every host exports the same commit even if someone pushes mid-deploy.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::inventory::Source;
use crate::remote::{Compression, Delivery};

/// What could go wrong getting the source ready.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("artifact {path}: {reason}")]
    Artifact { path: PathBuf, reason: String },
    #[error("url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("git {url}: cannot resolve `{reference}`: {reason}")]
    Git {
        url: String,
        reference: String,
        reason: String,
    },
}

/// The release payload, ready to go to every host.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub delivery: Delivery,
    /// The commit id or `sha256:<hex>` of the artifact; written to `REVISION`.
    pub revision: String,
    /// Bytes streamed to each host's `upload` step (empty for git).
    pub payload: std::sync::Arc<Vec<u8>>,
    /// Tools each host needs for this source.
    pub tools: Vec<&'static str>,
}

/// Prepare the stage's source.
pub fn prepare(source: &Source) -> Result<Prepared, SourceError> {
    match source {
        Source::Artifact { path } => artifact(path),
        Source::Url { url, sha256 } => {
            let compression = check_tarball_url(url).map_err(|(why, hint)| SourceError::Url {
                url: crate::mask::mask_urls(url),
                reason: format!("{why} (hint: {hint})"),
            })?;
            Ok(Prepared {
                delivery: Delivery::Url {
                    url: url.clone(),
                    sha256: sha256.clone(),
                    compression,
                },
                revision: format!("sha256:{sha256}"),
                payload: Default::default(),
                tools: url_tools(compression),
            })
        }
        Source::Git {
            url,
            reference,
            known_hosts,
            parallel,
        } => {
            let kh_text = match known_hosts {
                Some(path) => {
                    Some(std::fs::read_to_string(path).map_err(|e| SourceError::Git {
                        url: crate::mask::mask_urls(url),
                        reference: reference.clone(),
                        reason: format!(
                            "cannot read git_known_hosts {}: {e} (hint: ssh-keyscan the git server \
                         into it, and check the fingerprints)",
                            path.display()
                        ),
                    })?)
                }
                None => None,
            };
            let commit = resolve_git(url, reference, known_hosts.as_deref())?;
            Ok(Prepared {
                delivery: Delivery::Git {
                    url: url.clone(),
                    commit: commit.clone(),
                    known_hosts: kh_text,
                    parallel: *parallel,
                },
                revision: commit,
                payload: Default::default(),
                tools: vec!["git", "tar"],
            })
        }
    }
}

fn artifact(path: &Path) -> Result<Prepared, SourceError> {
    let err = |reason: String| SourceError::Artifact {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    let packing = crate::util::packing_of(&path.to_string_lossy());
    let (bytes, compression) = if meta.is_dir() {
        let packed = pack_dir(path).map_err(|e| err(format!("cannot pack the directory: {e}")))?;
        (packed, Compression::Gzip)
    } else if let Some(p) = packing {
        (
            std::fs::read(path).map_err(|e| err(e.to_string()))?,
            compression(p),
        )
    } else {
        return Err(err(
            "not a directory, .tar.gz, .tgz, .tar.zst, .tzst or .tar \
             (hint: pack it with `tar -czf build.tar.gz -C build .`)"
                .into(),
        ));
    };
    let digest = hex::encode(Sha256::digest(&bytes));
    Ok(Prepared {
        delivery: Delivery::Tarball { compression },
        revision: format!("sha256:{digest}"),
        payload: std::sync::Arc::new(bytes),
        tools: unpack_tools(compression),
    })
}

fn unpack_tools(compression: Compression) -> Vec<&'static str> {
    match compression {
        Compression::None => vec!["tar"],
        Compression::Gzip => vec!["tar", "gzip"],
        Compression::Zstd => vec!["tar", "zstd"],
    }
}

/// What a host needs to download, check and unpack a tarball: curl or wget is looked for by
/// the download step itself (either will do).
fn url_tools(compression: Compression) -> Vec<&'static str> {
    let mut t = unpack_tools(compression);
    t.push("sha256sum");
    t
}

/// The compression of the tarball an http(s) URL names (by its path's ending), or why ship
/// will not download it, with a hint (see [`crate::util::check_tarball_url`]).
pub fn check_tarball_url(url: &str) -> Result<Compression, (String, String)> {
    crate::util::check_tarball_url(url).map(compression)
}

/// How a host unpacks a tarball packed so.
fn compression(p: crate::util::Packing) -> Compression {
    match p {
        crate::util::Packing::Tar => Compression::None,
        crate::util::Packing::Gzip => Compression::Gzip,
        crate::util::Packing::Zstd => Compression::Zstd,
    }
}

/// The tools a host needs for this source, without packing or resolving anything.
pub fn tools_for(source: &Source) -> Vec<&'static str> {
    match source {
        Source::Git { .. } => vec!["git", "tar"],
        Source::Url { url, .. } => url_tools(check_tarball_url(url).unwrap_or(Compression::Gzip)),
        // A directory is packed with gzip.
        Source::Artifact { path } => unpack_tools(
            crate::util::packing_of(&path.to_string_lossy()).map_or(Compression::Gzip, compression),
        ),
    }
}

/// Pack a directory as a gzip-compressed tar of its contents. Symlinks are kept as symlinks;
/// entries are sorted so the same tree gives the same bytes.
pub fn pack_dir(dir: &Path) -> std::io::Result<Vec<u8>> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(enc);
    tar.follow_symlinks(false);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir.join(&rel))?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            let rel_path = rel.join(e.file_name());
            let full = e.path();
            let ft = e.file_type()?;
            if ft.is_dir() {
                tar.append_dir(&rel_path, &full)?;
                stack.push(rel_path);
            } else {
                tar.append_path_with_name(&full, &rel_path)?;
            }
        }
    }
    tar.into_inner()?.finish()
}

/// Resolve `reference` in the repository at `url` to one full commit id, on the controller.
pub fn resolve_git(
    url: &str,
    reference: &str,
    known_hosts: Option<&Path>,
) -> Result<String, SourceError> {
    let err = |reason: String| SourceError::Git {
        url: crate::mask::mask_urls(url),
        reference: reference.to_owned(),
        reason: crate::mask::Masker::new(crate::mask::url_secrets(url)).mask(&reason),
    };
    if reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(reference.to_lowercase());
    }
    // As on the hosts: credentials go to git through its credential helper, not its arguments.
    let (public_url, credentials) = crate::mask::split_credentials(url);
    let mut git = std::process::Command::new("git");
    if let Some((user, password)) = credentials {
        git.args(["-c", "credential.helper="])
            .arg("-c")
            .arg(format!(
                "credential.helper={}",
                crate::remote::GIT_CREDENTIAL_HELPER
            ))
            .env("SHIP_GIT_USER", user)
            .env("SHIP_GIT_PASSWORD", password);
    }
    let out = git
        .args(["ls-remote", "--", &public_url])
        .stdin(std::process::Stdio::null())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env(
            "GIT_SSH_COMMAND",
            crate::remote::git_ssh_command(
                known_hosts
                    .map(|p| p.to_string_lossy().into_owned())
                    .as_deref(),
            ),
        )
        .output()
        .map_err(|e| err(format!("cannot run git on this machine: {e}")))?;
    if !out.status.success() {
        let mut msg = String::new();
        let _ = out.stderr.as_slice().read_to_string(&mut msg);
        return Err(err(msg.trim().to_owned()));
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    pick_ref(&listing, reference)
        .or_else(|| commit_id(reference))
        .ok_or_else(|| {
            err(
                "no branch, tag or ref of that name, and not a commit id this machine can \
                 resolve (hint: check `ref:` in the inventory or --ref; a short commit id is \
                 resolved in the git checkout ship runs in, else give the full id)"
                    .into(),
            )
        })
}

/// A commit id that no ref names: a full id as it is (each host checks that its mirror has
/// it before anything is built), a short one expanded by the git checkout ship runs in, when
/// that is a clone of the repository (a CI job's workspace).
fn commit_id(reference: &str) -> Option<String> {
    let hex = reference.len() >= 7
        && reference.len() <= 40
        && reference.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex {
        return None;
    }
    let reference = reference.to_ascii_lowercase();
    let wanted = format!("{reference}^{{commit}}");
    let local = crate::util::git_output(&[
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        &wanted,
    ])
    .filter(|full| full.len() == 40 && full.starts_with(&reference));
    match local {
        Some(full) => Some(full),
        None if reference.len() == 40 => Some(reference),
        None => None,
    }
}

/// Choose the commit for `reference` from `git ls-remote` output: a branch, then a tag (peeled,
/// so an annotated tag gives the commit it points at), then a full ref name such as `HEAD`.
pub fn pick_ref(listing: &str, reference: &str) -> Option<String> {
    let refs: Vec<(&str, &str)> = listing.lines().filter_map(|l| l.split_once('\t')).collect();
    let find = |name: &str| {
        refs.iter()
            .find(|(_, r)| *r == name)
            .map(|(sha, _)| sha.to_string())
    };
    find(&format!("refs/heads/{reference}"))
        .or_else(|| find(&format!("refs/tags/{reference}^{{}}")))
        .or_else(|| find(&format!("refs/tags/{reference}")))
        .or_else(|| find(reference))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_branches_then_peeled_tags() {
        let listing = "aaa\tHEAD\nbbb\trefs/heads/main\nccc\trefs/tags/v1\nddd\trefs/tags/v1^{}\n\
                       eee\trefs/tags/light\n";
        assert_eq!(pick_ref(listing, "main").as_deref(), Some("bbb"));
        assert_eq!(pick_ref(listing, "v1").as_deref(), Some("ddd"));
        assert_eq!(pick_ref(listing, "light").as_deref(), Some("eee"));
        assert_eq!(pick_ref(listing, "HEAD").as_deref(), Some("aaa"));
        assert_eq!(pick_ref(listing, "nope"), None);
    }

    #[test]
    fn packs_a_directory_deterministically_and_unpacks_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("public/css")).expect("mkdir");
        std::fs::write(dir.path().join("public/index.html"), "hi\n").expect("write");
        std::fs::write(dir.path().join("public/css/a.css"), "a{}\n").expect("write");
        std::os::unix::fs::symlink("index.html", dir.path().join("public/home.html")).expect("ln");
        let a = prepare(&Source::Artifact {
            path: dir.path().to_path_buf(),
        })
        .expect("artifact");
        let b = pack_dir(dir.path()).expect("pack");
        assert_eq!(*a.payload, b, "same tree, same bytes");
        assert!(a.revision.starts_with("sha256:") && a.revision.len() == 71);
        let out = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("tar")
            .args(["-xzf", "-", "-C"])
            .arg(out.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("tar");
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&b)
            .expect("write");
        assert!(child.wait().expect("wait").success());
        assert_eq!(
            std::fs::read_to_string(out.path().join("public/css/a.css")).expect("read"),
            "a{}\n"
        );
        assert_eq!(
            std::fs::read_link(out.path().join("public/home.html")).expect("link"),
            Path::new("index.html")
        );
    }

    #[test]
    fn unsupported_artifact_is_explained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("app.zip");
        std::fs::write(&f, "x").expect("write");
        let e = prepare(&Source::Artifact { path: f }).expect_err("zip");
        assert!(
            e.to_string()
                .contains("not a directory, .tar.gz, .tgz, .tar.zst, .tzst or .tar"),
            "{e}"
        );
    }
}
