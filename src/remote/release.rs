//! Staging a release on a host: the code delivered (a tarball, or a git commit), the links to
//! `shared/` (never through a link the release brought), the build steps with their
//! environment, `writable` paths, and `REVISION` written last.

use super::*;

/// How a streamed tarball is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// Needs `zstd` on the host.
    Zstd,
}

/// What a release is made from, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A tarball streamed on stdin.
    Tarball { compression: Compression },
    /// A git repository mirrored in `repo/`, exported at `commit` (with its submodules).
    /// `known_hosts`: the git server's host keys, written to `.ship/git_known_hosts` and used
    /// instead of the host's own known_hosts.
    Git {
        url: String,
        commit: String,
        known_hosts: Option<String>,
        /// At most this many hosts fetch at once (`source.parallel`).
        parallel: Option<usize>,
    },
    /// A tarball each host downloads from `url` (curl, else wget) and checks against `sha256`
    /// before unpacking.
    Url {
        url: String,
        sha256: String,
        compression: Compression,
    },
}

/// Everything the commands of one release on one host are built from.
#[derive(Debug, Clone)]
pub struct ReleasePlan<'a> {
    pub deploy_to: &'a str,
    pub release_id: &'a str,
    pub revision: &'a str,
    pub delivery: &'a Delivery,
    pub shared_files: &'a [String],
    pub shared_dirs: &'a [String],
    /// Paths copied from the current release into the new one before the build steps.
    pub copy_from_previous: &'a [String],
    pub build: &'a [StepSpec],
    pub writable: Option<&'a Writable>,
    pub env: &'a [EnvVar],
    /// The tarball itself, when the upload may carry it in its command (see [`INLINE_MAX`]).
    pub inline_payload: Option<&'a [u8]>,
}

/// A tarball up to this size (as sent) travels inside the upload command, in the host's one
/// shell, instead of through a channel of its own: a channel costs a process start on the
/// host (and the login shell's rc files), which outweighs a few more bytes of command.
pub const INLINE_MAX: usize = 32 * 1024;

/// `bytes` as a single-quoted `printf` format that prints exactly them: letters and digits as
/// they are, every other byte as a three-digit octal escape (NUL included; dash, bash and
/// BusyBox's printf all take them).
pub fn printf_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 4 + 2);
    s.push('\'');
    for &b in bytes {
        if b.is_ascii_alphanumeric() {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\{b:03o}"));
        }
    }
    s.push('\'');
    s
}

/// The link target for a shared path, relative to where the link sits in the release.
pub fn shared_link_target(path: &str) -> String {
    let depth = path.split('/').count();
    format!("{}shared/{}", "../".repeat(depth + 1), path)
}

/// How long a download may go on at less than a byte a second before it is given up.
pub const DOWNLOAD_STALL_SECS: u64 = 60;

/// The step that downloads a tarball on the host into ship's scratch file, checks its SHA-256,
/// and only then makes the release directory and unpacks it. The URL reaches curl (or wget)
/// on its stdin, never in its arguments; messages show it masked.
fn download(
    plan: &ReleasePlan,
    url: &str,
    sha256: &str,
    compression: Compression,
    create: &str,
) -> Step {
    let tmp = quote(&scratch_tar(plan.release_id)).into_owned();
    let rel = quote(&format!("releases/{}", plan.release_id)).into_owned();
    let curl_config = format!(
        "url = \"{}\"",
        url.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let shown = quote(&crate::mask::mask_urls(url)).into_owned();
    let unpack = match compression {
        Compression::None => format!("tar -xf {tmp} -C {rel}"),
        Compression::Gzip => format!("tar -xzf {tmp} -C {rel}"),
        // Through a file, not a pipe: a failed decompression must fail the step.
        Compression::Zstd => {
            format!("zstd -q -d -c {tmp} > {tmp}.raw && tar -xf {tmp}.raw -C {rel}")
        }
    };
    let script = format!(
        "{cd} || exit 1; mkdir -p .ship && rm -f {tmp} {tmp}.raw || exit 1; \
         if command -v curl >/dev/null 2>&1; then \
         printf '%s\\n' {cfg} | curl -fsS --connect-timeout 15 --speed-limit 1 \
         --speed-time {stall} -o {tmp} -K -; \
         elif command -v wget >/dev/null 2>&1; then \
         printf '%s\\n' {url_q} | wget -q -T {stall} -O {tmp} -i -; \
         else echo 'neither curl nor wget is installed on this host (hint: install curl)' >&2; \
         false; fi; rc=$?; \
         if [ $rc -ne 0 ]; then echo \"download of \"{shown}\" failed (exit status $rc)\" >&2; \
         else set -- $(sha256sum {tmp}); \
         if [ \"$1\" != {sha} ]; then echo \"the download's SHA-256 is $1, not {sha} as the \
         inventory says: nothing was unpacked (hint: a changed or truncated file at \"{shown}\", \
         or a wrong sha256)\" >&2; rc=1; \
         else {create} && {unpack}; rc=$?; fi; fi; \
         rm -f {tmp} {tmp}.raw; exit $rc",
        cd = cd(plan.deploy_to),
        cfg = quote(&curl_config),
        url_q = quote(url),
        stall = DOWNLOAD_STALL_SECS,
        sha = quote(sha256),
    );
    Step {
        name: "download".into(),
        script,
        takes_payload: false,
        reaches_git: false,
        quick: false,
        parallel: None,
    }
}

/// The steps that stage a release on a host, in order. Nothing here touches `current`, and
/// nothing in `shared/` is ever overwritten or removed: a shared path is only created when it
/// does not exist yet (seeded from the release when the release has it).
pub fn prepare(plan: &ReleasePlan) -> Vec<Step> {
    let rel = format!("releases/{}", plan.release_id);
    let q_rel = quote(&rel).into_owned();
    let cd = cd(plan.deploy_to);
    // No -p: an existing release directory is never written into.
    let create = format!("{cd} && mkdir {q_rel}");
    let mut steps = Vec::new();
    let inline = plan
        .inline_payload
        .filter(|p| p.len() <= INLINE_MAX)
        .map(|p| format!("printf {} | ", printf_bytes(p)));
    match plan.delivery {
        // The release directory is made by the command the tarball goes into: inside it when
        // small (quick, in the host's shell), else streamed to it through a channel.
        Delivery::Tarball { compression } => {
            let untar = match compression {
                Compression::None => Some("tar -xf -"),
                Compression::Gzip => Some("tar -xzf -"),
                Compression::Zstd => None,
            };
            let (script, inline) = match (untar, inline) {
                (Some(untar), Some(printf)) => {
                    (format!("{create} && {printf}{untar} -C {q_rel}"), true)
                }
                (Some(untar), None) => (format!("{create} && {untar} -C {q_rel}"), false),
                // Through a file, not a pipe: a failed decompression must fail the step.
                (None, _) => {
                    let tmp = quote(&scratch_tar(plan.release_id)).into_owned();
                    let script = format!(
                        "{create} && zstd -q -d -c > {tmp} && tar -xf {tmp} -C {q_rel}; rc=$?; \
                         rm -f {tmp}; exit $rc"
                    );
                    (script, false)
                }
            };
            steps.push(Step {
                name: "upload".into(),
                script,
                takes_payload: !inline,
                reaches_git: false,
                quick: inline,
                parallel: None,
            });
        }
        Delivery::Url {
            url,
            sha256,
            compression,
        } => steps.push(download(plan, url, sha256, *compression, &create)),
        Delivery::Git {
            url,
            commit,
            known_hosts,
            parallel,
        } => {
            let mut git = git_steps(plan, url, commit, known_hosts.as_deref(), create);
            for s in git.iter_mut().filter(|s| s.name == "fetch") {
                s.parallel = *parallel;
            }
            steps.extend(git);
        }
    }
    let mut link = vec![cd.clone()];
    // The links themselves come last, one `ln -s` per directory they go in (a link takes its
    // target's name, which is the shared path's own).
    let mut links: Vec<(String, Vec<String>)> = Vec::new();
    for (path, is_dir) in plan
        .shared_files
        .iter()
        .map(|p| (p, false))
        .chain(plan.shared_dirs.iter().map(|p| (p, true)))
    {
        let shared = quote(&format!("shared/{path}")).into_owned();
        let in_release = quote(&format!("{rel}/{path}")).into_owned();
        let key = if is_dir {
            "shared.dirs"
        } else {
            "shared.files"
        };
        link.extend(refuse_links(&parents_in(&rel, path), key, path));
        if let Some(dir) = parent(path) {
            for d in [format!("shared/{dir}"), format!("{rel}/{dir}")] {
                let d = quote(&d).into_owned();
                link.push(format!("{{ [ -d {d} ] || mkdir -p {d}; }}"));
            }
        }
        let seed = if is_dir {
            format!(
                "if [ -d {in_release} ] && [ ! -L {in_release} ]; then cp -Rp {in_release} {shared}; \
                 else mkdir -p {shared}; fi"
            )
        } else {
            format!(
                "if [ -f {in_release} ] && [ ! -L {in_release} ]; then cp -p {in_release} {shared}; \
                 else : > {shared}; fi"
            )
        };
        link.push(format!(
            "{{ [ -e {shared} ] || [ -L {shared} ] || {{ {seed}; }}; }}"
        ));
        // Only what the release brought is removed (an `rm` less on most deploys).
        link.push(format!(
            "{{ {{ [ ! -e {in_release} ] && [ ! -L {in_release} ]; }} || rm -rf {in_release}; }}"
        ));
        let dir = match parent(path) {
            Some(d) => format!("{rel}/{d}/"),
            None => format!("{rel}/"),
        };
        let target = quote(&shared_link_target(path)).into_owned();
        match links.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, targets)) => targets.push(target),
            None => links.push((dir, vec![target])),
        }
    }
    for (dir, targets) in links {
        link.push(format!("ln -s {} {}", targets.join(" "), quote(&dir)));
    }
    let mut after_link = Vec::new();
    after_link.extend(copy_from_previous(plan));
    for spec in plan.build {
        after_link.push(release_step(plan, "build", spec));
    }
    if let Some(w) = plan.writable {
        let shared: Vec<String> = plan
            .shared_files
            .iter()
            .chain(plan.shared_dirs)
            .cloned()
            .collect();
        after_link.push(writable(plan.deploy_to, plan.release_id, w, &shared));
    }
    // `REVISION` is written last: a release that has it is complete (prepared to the end), and
    // only a complete release is ever switched to, rolled back to or kept by `lock release`.
    let complete = format!(
        "{{ [ ! -L {r} ] || rm -f {r}; }} && printf '%s\\n' {} > {r}",
        quote(plan.revision),
        r = quote(&format!("{rel}/REVISION"))
    );
    if after_link.is_empty() {
        link.push(complete.clone());
    }
    steps.push(Step {
        name: "link".into(),
        script: link.join(" && "),
        takes_payload: false,
        reaches_git: false,
        quick: true,
        parallel: None,
    });
    if !after_link.is_empty() {
        steps.extend(after_link);
        steps.push(Step {
            name: "complete".into(),
            script: format!("{cd} && {complete}"),
            takes_payload: false,
            reaches_git: false,
            quick: true,
            parallel: None,
        });
    }
    steps
}

/// The directories on the way to `path` inside `base`: `base/a`, `base/a/b` for `a/b/c`;
/// without the `base/` when `base` is empty.
pub(super) fn parents_in(base: &str, path: &str) -> Vec<String> {
    let mut on_the_way = components_in(base, path);
    on_the_way.pop();
    on_the_way
}

/// `path` and the directories on the way to it inside `base`: `base/a`, `base/a/b`, `base/a/b/c`
/// for `a/b/c`; without the `base/` when `base` is empty.
pub(super) fn components_in(base: &str, path: &str) -> Vec<String> {
    let parts: Vec<&str> = path.split('/').collect();
    let prefix = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    (1..=parts.len())
        .map(|n| format!("{prefix}{}", parts[..n].join("/")))
        .collect()
}

/// A check that stops the script (exit 1, saying why) when one of `paths` is a symlink: the
/// release brought a link where ship must write, and writing through it would reach outside
/// the release (`conf -> /etc` with a shared file `conf/app.ini`). `None` for no paths.
pub(super) fn refuse_links(paths: &[String], key: &str, value: &str) -> Option<String> {
    refuse_links_in("", paths, key, value)
}

/// [`refuse_links`] for paths relative to `prefix`, shell text that may expand (`$prev/`).
pub(super) fn refuse_links_in(
    prefix: &str,
    paths: &[String],
    key: &str,
    value: &str,
) -> Option<String> {
    if paths.is_empty() {
        return None;
    }
    let list: Vec<String> = paths.iter().map(|p| quote(p).into_owned()).collect();
    Some(format!(
        "{{ for p in {}; do p=\"{prefix}$p\"; if [ -L \"$p\" ]; then printf '%s is a symlink in the release \
         (%s: %s): ship does not write through links it did not make (hint: remove the link \
         from the release, or choose a path that is not under it)\\n' \"$p\" {} {}; exit 1; \
         fi; done; }}",
        list.join(" "),
        quote(key),
        quote(value)
    ))
}

/// Copy `copy_from_previous` paths from the release `current` points to into the new one, so
/// `composer install` / `npm ci` only do the incremental work. A copy, never hard links: tools
/// rewrite files in place (composer's autoload files), and through a hard link that would change
/// the live release. Where the filesystem can share blocks copy-on-write (btrfs, XFS), GNU cp's
/// `--reflink=auto` makes the copy nearly free; elsewhere it is a plain copy. Paths the new
/// release already has, or the current one lacks, are skipped; so is a first deploy.
pub fn copy_from_previous(plan: &ReleasePlan) -> Option<Step> {
    if plan.copy_from_previous.is_empty() {
        return None;
    }
    let rel = format!("releases/{}", plan.release_id);
    let mut s = format!(
        "{} || exit 1
         prev=$(readlink current 2>/dev/null) || exit 0
         [ -d \"$prev\" ] || exit 0
         cpf='cp -a'; cp --reflink=auto --version >/dev/null 2>&1 && cpf='cp -a --reflink=auto'
",
        cd(plan.deploy_to)
    );
    for path in plan.copy_from_previous {
        let dst = quote(&format!("{rel}/{path}")).into_owned();
        let src = quote(path).into_owned();
        // Neither release may lead the copy through a link it brought: reading through one
        // would copy from outside, writing through one would write outside.
        let key = "copy_from_previous";
        for guard in [
            refuse_links_in("$prev/", &parents_in("", path), key, path),
            refuse_links(&parents_in(&rel, path), key, path),
        ]
        .into_iter()
        .flatten()
        {
            s.push_str(&guard);
            s.push('\n');
        }
        let mkparent = parent(path)
            .map(|d| format!("mkdir -p {} && ", quote(&format!("{rel}/{d}"))))
            .unwrap_or_default();
        s.push_str(&format!(
            "if [ -e \"$prev\"/{src} ] && [ ! -e {dst} ] && [ ! -L {dst} ]; then \
             {mkparent}$cpf \"$prev\"/{src} {dst} || exit 1; printf 'copied %s\\n' {src}; fi\n"
        ));
    }
    Some(Step {
        name: "copy from previous".into(),
        script: s,
        takes_payload: false,
        reaches_git: false,
        quick: false,
        parallel: None,
    })
}

/// Make `writable` paths writable for the web server, after the build steps. A path that is
/// shared (`shared` lists the shared files and dirs) is changed on its target in `shared/`,
/// never through the release's link. Only files the deploy user owns are touched: files the web
/// server created there (logs, caches, uploads) belong to it and are left alone, so a second
/// deploy never fails where the first let another user write. A path missing from the release
/// is created.
///
/// Nothing is changed through a link ship did not make: a link on the way to a path, or the
/// path itself being a link, stops the step (see [`refuse_links`]); links found inside a path
/// are neither followed (`find` does not) nor changed (`! -type l`: `chmod` and `setfacl`
/// would change their targets).
pub fn writable(deploy_to: &str, release_id: &str, w: &Writable, shared: &[String]) -> Step {
    let mut s = format!("{} || exit 1\nme=$(id -u)\n", cd(deploy_to));
    if let WritableMode::Acl(_) = &w.mode {
        s.push_str(
            "command -v setfacl >/dev/null 2>&1 || { echo 'writable: setfacl is not installed on \
             this host (hint: install the acl package, or use mode: chmod)'; exit 1; }\n",
        );
    }
    for path in &w.paths {
        let root = shared
            .iter()
            .find(|r| *path == **r || path.starts_with(&format!("{r}/")));
        let (t, guarded) = match root {
            // The shared path itself is the operator's (it may be a link they made, to a
            // mounted volume): only what lies below it is checked.
            Some(r) => {
                let below: Vec<String> = components_in("shared", path)
                    .into_iter()
                    .skip(r.split('/').count())
                    .collect();
                (format!("shared/{path}/"), below)
            }
            None => {
                let rel = format!("releases/{release_id}");
                (format!("{rel}/{path}"), components_in(&rel, path))
            }
        };
        if let Some(guard) = refuse_links(&guarded, "writable", path) {
            s.push_str(&guard);
            s.push('\n');
        }
        let t = quote(&t).into_owned();
        s.push_str(&format!("[ -e {t} ] || mkdir -p {t} || exit 1\n"));
        match &w.mode {
            WritableMode::Chmod(mode) => s.push_str(&format!(
                "find {t} -user \"$me\" ! -type l -exec chmod {m} {{}} + || exit 1\n",
                m = quote(mode)
            )),
            WritableMode::Acl(user) => {
                let acl = format!("{}\"$me\":rwX", quote(&format!("u:{user}:rwX,u:")));
                s.push_str(&format!(
                    "find {t} -user \"$me\" ! -type l -exec setfacl -m {acl} {{}} + && \
                     find {t} -user \"$me\" -type d -exec setfacl -d -m {acl} {{}} + || exit 1\n"
                ));
            }
        }
    }
    Step {
        name: "writable".into(),
        script: s,
        takes_payload: false,
        reaches_git: false,
        quick: false,
        parallel: None,
    }
}

/// A command run inside the release directory with the build environment: a build step, a
/// run-once step, an after-switch step. Named `<kind>: <command>`. With `sudo`, the command is
/// prefixed with `sudo -n` (which fails at once rather than prompt), so a sudoers rule can name
/// the exact command (`NOPASSWD: /usr/bin/systemctl reload php8.3-fpm`); like any sudo, it
/// runs with root's environment.
pub fn release_step(plan: &ReleasePlan, kind: &str, spec: &StepSpec) -> Step {
    let cmd = if spec.sudo {
        format!("sudo -n {}", spec.run)
    } else {
        spec.run.clone()
    };
    let mut step = release_script(plan, format!("{kind}: {}", spec.run), &cmd);
    step.parallel = spec.parallel;
    step
}

pub(super) fn release_script(plan: &ReleasePlan, name: String, cmd: &str) -> Step {
    let exports: String = build_env(plan)
        .iter()
        .map(|(k, v)| format!("export {k}={} && ", quote(v)))
        .collect();
    Step {
        name,
        script: format!(
            "cd {} && {exports}{cmd}",
            quote(&format!("{}/releases/{}", plan.deploy_to, plan.release_id))
        ),
        takes_payload: false,
        reaches_git: false,
        quick: false,
        parallel: None,
    }
}

/// The environment of build steps: ship's own variables, then the inventory's.
pub(super) fn build_env(plan: &ReleasePlan) -> Vec<(String, String)> {
    let mut env = vec![
        ("SHIP_RELEASE_ID".to_owned(), plan.release_id.to_owned()),
        (
            "SHIP_RELEASE_PATH".to_owned(),
            format!("{}/releases/{}", plan.deploy_to, plan.release_id),
        ),
        ("SHIP_DEPLOY_TO".to_owned(), plan.deploy_to.to_owned()),
        ("SHIP_REVISION".to_owned(), plan.revision.to_owned()),
    ];
    env.extend(plan.env.iter().map(|v| (v.name.clone(), v.value.clone())));
    env
}
