//! The hostile-value corpus: every inventory key that holds text, given values built to break
//! out of a shell (`$( )`, backticks, quotes, `\`, newline, tab, a leading `-`, spaces, `*`, `~`,
//! `..`), run through every command that reaches the hosts. Each value must be refused when the
//! inventory is read (naming the key) or used literally; no marker file may ever appear.
//!
//! The keys come from the inventory's JSON Schema: a key added later that holds text is covered
//! here, or this test names it as missing.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use crate::support::{Fleet, Run};

/// How a case puts the hostile value `v` (already a YAML double-quoted scalar: `q`) into the
/// inventory of `fleet`, and what "used literally" means for it.
struct Case {
    /// The key as the schema names it (`shared.files`, `env.*.value`, `hosts.*`).
    key: &'static str,
    /// Edit the inventory (written fresh for each case) to carry the value.
    put: fn(&Fleet, &str, &str),
    /// After a deploy that succeeded with the value: check that it was used as written.
    literal: Option<fn(&Fleet, &str)>,
}

/// Keys that hold text but are not data for a shell, and why they are not in the corpus.
const NOT_DATA: &[(&str, &str)] = &[
    ("build", "a command: it runs as written, by design"),
    ("build.run", "a command: it runs as written, by design"),
    ("run_once", "a command: it runs as written, by design"),
    ("run_once.run", "a command: it runs as written, by design"),
    ("after_switch", "a command: it runs as written, by design"),
    (
        "after_switch.run",
        "a command: it runs as written, by design",
    ),
    (
        "health_check.command",
        "a command: it runs as written, by design",
    ),
    (
        "hooks.before_deploy",
        "a command run on this machine, by design",
    ),
    (
        "hooks.after_deploy",
        "a command run on this machine, by design",
    ),
    (
        "hooks.on_failure",
        "a command run on this machine, by design",
    ),
    (
        "env.*.from_command",
        "a command run on this machine to print a secret, by design",
    ),
];

fn stage(fleet: &Fleet, line: &str) {
    fleet.edit_inventory(|t| t.replace("    hosts:\n", &format!("    {line}\n    hosts:\n")));
}

fn host(fleet: &Fleet, entries: &str) {
    fleet.host_settings(0, entries);
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            key: "deploy_to",
            put: |f, _, v| stage(f, &format!("deploy_to: {}", yaml(&format!("/var/www/{v}")))),
            literal: Some(|f, v| {
                // The host's /var/www, seen from here (its `app` is not made in this case).
                let d = f.dir().join(&f.host(0).name).join("www").join(v);
                assert!(d.join("current").is_symlink(), "{}", d.display());
            }),
        },
        Case {
            key: "shared.files",
            put: |f, _, v| {
                stage(
                    f,
                    &format!("shared: {{ files: [.env, {}], dirs: [storage] }}", yaml(v)),
                )
            },
            literal: Some(|f, v| assert!(f.host(0).path(&format!("shared/{v}")).is_file())),
        },
        Case {
            key: "shared.dirs",
            put: |f, _, v| {
                stage(
                    f,
                    &format!("shared: {{ files: [.env], dirs: [storage, {}] }}", yaml(v)),
                )
            },
            literal: Some(|f, v| assert!(f.host(0).path(&format!("shared/{v}")).is_dir())),
        },
        Case {
            key: "copy_from_previous",
            put: |f, _, v| stage(f, &format!("copy_from_previous: [{}]", yaml(v))),
            literal: None,
        },
        Case {
            key: "writable.paths",
            put: |f, _, v| stage(f, &format!("writable: {{ paths: [{}] }}", yaml(v))),
            literal: Some(|f, v| assert!(f.host(0).path(&format!("current/{v}")).is_dir())),
        },
        Case {
            key: "writable.user",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "writable: {{ paths: [storage], mode: acl, user: {} }}",
                        yaml(v)
                    ),
                )
            },
            literal: None,
        },
        Case {
            key: "writable.chmod",
            put: |f, _, v| {
                stage(
                    f,
                    &format!("writable: {{ paths: [storage], chmod: {} }}", yaml(v)),
                )
            },
            literal: None,
        },
        Case {
            key: "env.*",
            put: |f, _, v| stage(f, &format!("env: {{ {}: x }}", yaml(v))),
            literal: None,
        },
        Case {
            key: "env.*.value",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "env: {{ HOSTILE: {{ value: {}, secret: false }} }}",
                        yaml(v)
                    ),
                );
                stage(
                    f,
                    "build: [\"sh build.sh\", \"printf %s \\\"$HOSTILE\\\" > hostile.txt\"]",
                );
            },
            literal: Some(|f, v| {
                assert_eq!(
                    fs::read_to_string(f.host(0).path("current/hostile.txt")).expect("hostile.txt"),
                    v
                )
            }),
        },
        Case {
            key: "source.git",
            put: |f, _, v| stage(f, &format!("source: {{ git: {}, ref: main }}", yaml(v))),
            literal: None,
        },
        Case {
            key: "source.ref",
            put: |f, _, v| {
                stage(
                    f,
                    &format!("source: {{ git: /nonexistent/repo.git, ref: {} }}", yaml(v)),
                )
            },
            literal: None,
        },
        Case {
            key: "source.url",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "source: {{ url: {}, sha256: {} }}",
                        yaml(&format!("http://127.0.0.1:9/{v}.tar.gz")),
                        "0".repeat(64)
                    ),
                )
            },
            literal: None,
        },
        Case {
            key: "source.sha256",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "source: {{ url: \"http://127.0.0.1:9/app.tar.gz\", sha256: {} }}",
                        yaml(v)
                    ),
                )
            },
            literal: None,
        },
        Case {
            key: "source.artifact",
            put: |f, _, v| stage(f, &format!("source: {{ artifact: {} }}", yaml(v))),
            literal: None,
        },
        Case {
            key: "health_check.url",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "health_check: {{ url: {}, retries: 1 }}",
                        yaml(&format!("http://127.0.0.1:9/{v}"))
                    ),
                )
            },
            literal: None,
        },
        Case {
            key: "health_check.expect_body",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "health_check: {{ url: \"http://127.0.0.1:9/\", expect_body: {}, retries: 1 }}",
                        yaml(v)
                    ),
                )
            },
            literal: None,
        },
        Case {
            key: "health_check.interval",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "health_check: {{ command: \"true\", interval: {} }}",
                        yaml(v)
                    ),
                )
            },
            literal: None,
        },
        Case {
            key: "health_check.timeout",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "health_check: {{ command: \"true\", timeout: {} }}",
                        yaml(v)
                    ),
                )
            },
            literal: None,
        },
        Case {
            key: "connect_timeout",
            put: |f, _, v| stage(f, &format!("connect_timeout: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "step_timeout",
            put: |f, _, v| stage(f, &format!("step_timeout: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "switch_timeout",
            put: |f, _, v| stage(f, &format!("switch_timeout: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "keepalive_interval",
            put: |f, _, v| stage(f, &format!("keepalive_interval: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "observe",
            put: |f, _, v| stage(f, &format!("observe: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "canary",
            put: |f, _, v| stage(f, &format!("canary: [{}]", yaml(v))),
            literal: None,
        },
        Case {
            key: "user",
            put: |f, _, v| stage(f, &format!("user: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "identity_file",
            put: |f, _, v| stage(f, &format!("identity_file: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "known_hosts",
            put: |f, _, v| stage(f, &format!("known_hosts: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "max_unreachable",
            put: |f, _, v| stage(f, &format!("max_unreachable: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "waves",
            put: |f, _, v| stage(f, &format!("waves: [{}]", yaml(v))),
            literal: None,
        },
        Case {
            key: "env_file",
            put: |f, _, v| stage(f, &format!("env_file: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "env.*.from_env",
            put: |f, _, v| {
                stage(
                    f,
                    &format!(
                        "env: {{ HOSTILE: {{ from_env: {}, secret: true }} }}",
                        yaml(v)
                    ),
                )
            },
            literal: None,
        },
        Case {
            key: "git_known_hosts",
            put: |f, _, v| stage(f, &format!("git_known_hosts: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "ssh_config",
            put: |f, _, v| stage(f, &format!("ssh_config: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "proxy_jump",
            put: |f, _, v| stage(f, &format!("proxy_jump: {}", yaml(v))),
            literal: None,
        },
        Case {
            key: "address",
            put: |f, _, v| {
                let h = f.host(0);
                let (from, to) = (
                    format!("address: {}", h.address),
                    format!("address: {}", yaml(v)),
                );
                f.edit_inventory(|t| t.replace(&from, &to));
            },
            literal: None,
        },
        Case {
            key: "roles",
            put: |f, _, v| host(f, &format!("roles: [{}]", yaml(v))),
            literal: None,
        },
        Case {
            key: "build.roles",
            put: |f, _, v| {
                stage(
                    f,
                    &format!("build: [{{ run: \"true\", roles: [{}] }}]", yaml(v)),
                )
            },
            literal: None,
        },
        Case {
            key: "run_once.roles",
            put: |f, _, v| {
                stage(
                    f,
                    &format!("run_once: [{{ run: \"true\", roles: [{}] }}]", yaml(v)),
                )
            },
            literal: None,
        },
        Case {
            key: "after_switch.roles",
            put: |f, _, v| {
                stage(
                    f,
                    &format!("after_switch: [{{ run: \"true\", roles: [{}] }}]", yaml(v)),
                )
            },
            literal: None,
        },
        Case {
            key: "hosts.*",
            put: |f, _, v| {
                let from = format!("{}: {{", f.host(0).name);
                let to = format!("{}: {{", yaml(v));
                f.edit_inventory(|t| t.replace(&from, &to));
            },
            literal: None,
        },
        Case {
            key: "stages.*",
            put: |f, _, v| {
                f.edit_inventory(|t| t.replace("  production:\n", &format!("  {}:\n", yaml(v))))
            },
            literal: None,
        },
    ]
}

/// `s` as a YAML double-quoted scalar (JSON's string syntax is YAML's).
fn yaml(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// The keys of the schema that hold text a user writes: every string in it that is not one of
/// a fixed set of values, named by its path (`shared.files`, `env.*.value`).
fn text_keys(schema: &serde_json::Value) -> BTreeSet<String> {
    fn resolve<'a>(schema: &'a serde_json::Value, r: &str) -> &'a serde_json::Value {
        r.trim_start_matches("#/")
            .split('/')
            .fold(schema, |node, part| &node[part])
    }
    fn walk(
        schema: &serde_json::Value,
        node: &serde_json::Value,
        path: &str,
        depth: usize,
        out: &mut BTreeSet<String>,
    ) {
        if depth > 12 || node.get("enum").is_some() || node.get("const").is_some() {
            return;
        }
        if let Some(r) = node.get("$ref").and_then(|r| r.as_str()) {
            return walk(schema, resolve(schema, r), path, depth + 1, out);
        }
        let is_string = match node.get("type") {
            Some(serde_json::Value::String(t)) => t == "string",
            Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "string"),
            _ => false,
        };
        if is_string {
            out.insert(path.to_owned());
        }
        for k in ["anyOf", "oneOf"] {
            for v in node.get(k).and_then(|v| v.as_array()).into_iter().flatten() {
                walk(schema, v, path, depth + 1, out);
            }
        }
        if let Some(props) = node.get("properties").and_then(|p| p.as_object()) {
            for (k, v) in props {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(schema, v, &p, depth + 1, out);
            }
        }
        if let Some(ap) = node.get("additionalProperties").filter(|a| a.is_object()) {
            walk(schema, ap, &format!("{path}.*"), depth + 1, out);
        }
        if let Some(items) = node.get("items").filter(|i| i.is_object()) {
            walk(schema, items, path, depth + 1, out);
        }
    }
    let mut out = BTreeSet::new();
    for def in ["defaults", "host"] {
        let props = schema["$defs"][def]["properties"]
            .as_object()
            .expect("properties");
        for (k, v) in props {
            walk(schema, v, k, 0, &mut out);
        }
    }
    // The names of stages, hosts and env variables are text too.
    for k in ["stages.*", "hosts.*", "env.*"] {
        out.insert(k.to_owned());
    }
    out
}

#[test]
fn every_key_that_holds_text_is_in_the_hostile_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let schema: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(root.join("docs/inventory.schema.json")).expect("schema"),
    )
    .expect("json");
    let covered: BTreeSet<String> = cases()
        .iter()
        .map(|c| c.key.to_owned())
        .chain(NOT_DATA.iter().map(|(k, _)| (*k).to_owned()))
        .collect();
    let keys = text_keys(&schema);
    let missing: Vec<&String> = keys.iter().filter(|k| !covered.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "keys holding text with no case in the hostile corpus (add one to cases(), or to \
         NOT_DATA with why): {missing:?}"
    );
    let stale: Vec<&String> = covered.iter().filter(|k| !keys.contains(*k)).collect();
    assert!(
        stale.is_empty(),
        "cases for keys the schema does not have: {stale:?}"
    );
    assert!(keys.len() >= 30, "{keys:?}");
}

/// The commands that reach the hosts, in the order an operator would run them.
const COMMANDS: &[&[&str]] = &[
    &["config", "production"],
    &["check", "production"],
    &["plan", "production"],
    &["deploy", "production"],
    &["status", "production"],
    &["releases", "production"],
    &["exec", "production", "--", "true"],
    &["rollback", "production"],
    &["lock", "release", "production", "--yes"],
];

#[test]
fn hostile_values_in_every_key_are_refused_or_used_literally() {
    let fleet = Fleet::start(1);
    let marker = fleet.dir().join("pwned");
    let m = marker.display().to_string();
    let values = [
        // Every shell metacharacter a path may hold, and no control character.
        format!("-x $(touch {m}1) `touch {m}2` ';touch {m}3;' \";touch {m}4;\" \\ * ~ a..b"),
        // A newline and a tab.
        format!("a\n$(touch {m}5)\tb;touch {m}6"),
    ];
    let pwned = || {
        fs::read_dir(fleet.dir())
            .expect("fleet dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("pwned"))
            .collect::<Vec<_>>()
    };
    let mut refused = 0;
    let mut literal = 0;
    for (n, case) in cases().into_iter().enumerate() {
        // Each case's values are its own (the host keeps what earlier cases left in shared/).
        for value in values.iter().map(|v| format!("c{n}{v}")) {
            let value = &value;
            fleet.inventory("", "");
            (case.put)(&fleet, case.key, value);
            let mut runs: Vec<(String, Run)> = Vec::new();
            for args in COMMANDS {
                // The stage is named by the case itself for `stages.*`.
                let args: Vec<&str> = args
                    .iter()
                    .map(|a| {
                        if *a == "production" && case.key == "stages.*" {
                            value.as_str()
                        } else {
                            a
                        }
                    })
                    .collect();
                let run = fleet.ship(&args);
                assert!(
                    pwned().is_empty(),
                    "{}: `ship {}` ran the value as shell: {:?}\n{}",
                    case.key,
                    args.join(" "),
                    pwned(),
                    run.all()
                );
                assert!(
                    run.code != 101 && !run.stderr.contains("panicked"),
                    "{}: `ship {}` crashed\n{}",
                    case.key,
                    args.join(" "),
                    run.all()
                );
                // Used literally: checked right after the deploy (a rollback comes later).
                if args[0] == "deploy" && runs[0].1.code != 2 {
                    if let Some(check) = case.literal {
                        assert_eq!(run.code, 0, "{}: {value:?}\n{}", case.key, run.all());
                        literal += 1;
                        check(&fleet, value);
                    }
                }
                runs.push((args.join(" "), run));
            }
            let (_, config) = &runs[0];
            if config.code == 2 {
                // Refused when the inventory is read: every command says where and what.
                refused += 1;
                let leaf = case
                    .key
                    .trim_end_matches(".*")
                    .rsplit('.')
                    .next()
                    .unwrap_or(case.key);
                for (args, run) in &runs {
                    assert_eq!(run.code, 2, "{}: `ship {args}`\n{}", case.key, run.all());
                    assert!(
                        run.stderr.contains("inventory.yaml:") && run.stderr.contains(leaf),
                        "{}: `ship {args}` names the key\n{}",
                        case.key,
                        run.all()
                    );
                }
            }
            let h = fleet.host(0);
            assert!(!h.locked(), "{}: no lock left", case.key);
        }
    }
    assert!(
        refused >= 20 && literal >= 5,
        "refused {refused}, used literally {literal}"
    );
}
