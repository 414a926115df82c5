//! Inventory parsing and the exact text of its errors.

use std::path::Path;
use std::time::Duration;

use super::*;

const GOOD: &str = "\
defaults:
  user: deploy
  deploy_to: /var/www/app/
  keep_releases: 3
  source:
    artifact: ./build
  shared:
    files: [.env]
    dirs: [storage, ./bootstrap/cache]
  build:
    - composer install
  env:
    APP_ENV: production
    DEBUG: false
    DB_PASSWORD: { value: hunter2, secret: true }
  connect_timeout: 5s
stages:
  production:
    port: 2222
    env:
      APP_ENV: prod
    hosts:
      web-1: { address: 203.0.113.10 }
      web-2:
        address: 203.0.113.11
        port: 22
        user: other
  local:
    connection: local
    hosts:
      here:
";

fn parse(text: &str) -> Result<Inventory, InventoryError> {
    parse_inventory(Path::new("/srv/inv/inventory.yaml"), text)
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn resolves_layers_defaults_then_stage_then_host() {
    let inv = parse(GOOD).expect("valid inventory");
    let prod = inv.stage("production").expect("stage");
    let [w1, w2] = &prod.hosts[..] else {
        panic!("two hosts expected")
    };
    assert_eq!(w1.name, "web-1");
    assert_eq!(w1.address, "203.0.113.10");
    assert_eq!(w1.config.port, 2222, "stage overrides defaults");
    assert_eq!(w2.config.port, 22, "host overrides stage");
    assert_eq!(w1.config.user, "deploy");
    assert_eq!(w2.config.user, "other");
    assert_eq!(
        w1.config.deploy_to, "/var/www/app",
        "trailing slash trimmed"
    );
    assert_eq!(w1.config.keep_releases, 3);
    assert_eq!(
        w1.config.source,
        Source::Artifact {
            path: "/srv/inv/./build".into()
        }
    );
    assert_eq!(w1.config.shared.files, vec![".env"]);
    assert_eq!(w1.config.shared.dirs, vec!["storage", "bootstrap/cache"]);
    assert_eq!(w1.config.build, vec!["composer install"]);
    let env: Vec<(&str, &str, bool)> = w1
        .config
        .env
        .iter()
        .map(|v| (v.name.as_str(), v.value.as_str(), v.secret))
        .collect();
    assert_eq!(
        env,
        vec![
            ("APP_ENV", "prod", false),
            ("DB_PASSWORD", "hunter2", true),
            ("DEBUG", "false", false)
        ]
    );
    assert_eq!(w1.config.secrets().collect::<Vec<_>>(), vec!["hunter2"]);
    assert_eq!(w1.config.timeouts.connect, Duration::from_secs(5));
    assert_eq!(w1.config.host_key_checking, HostKeyChecking::Strict);
    let local = inv.stage("local").expect("stage");
    assert_eq!(local.hosts[0].config.connection, Connection::Local);
    assert_eq!(local.hosts[0].address, "localhost");
}

#[test]
fn unknown_key_names_file_line_column_path_and_nearest_key() {
    let text = GOOD.replace("        port: 22\n", "        prot: 22\n");
    assert_eq!(
        error(&text),
        "/srv/inv/inventory.yaml:26:9: stages.production.hosts.web-2.prot: unknown key
    |
 26 |         prot: 22
    |         ^
  hint: did you mean `port`? valid keys here: connection, user, port, identity_file, \
known_hosts, host_key_checking, proxy_jump, ssh_config, deploy_to, keep_releases, source, shared, build, \
copy_from_previous, writable, forward_agent, git_known_hosts, run_once, after_switch, health_check, recipe, env, env_file, connect_timeout, step_timeout, switch_timeout, \
keepalive_interval, address, roles"
    );
}

#[test]
fn wrong_type_says_what_was_expected() {
    let text = GOOD.replace("port: 2222", "port: [1]");
    let e = parse(&text).expect_err("must fail");
    assert_eq!(e.key_path, "stages.production.port");
    assert_eq!(e.message, "expected an integer, found a list");
    assert_eq!(e.pos.line, 19);
}

#[test]
fn port_out_of_range() {
    let e = parse(&GOOD.replace("port: 2222", "port: 70000")).expect_err("must fail");
    assert_eq!(e.message, "70000 is out of range (expected 1 to 65535)");
}

#[test]
fn missing_stage_lists_the_stages() {
    let inv = parse(GOOD).expect("valid");
    let e = inv.stage("prodution").expect_err("no such stage");
    assert_eq!(
        e.to_string(),
        "/srv/inv/inventory.yaml: stages: no stage named `prodution`\n  \
         hint: did you mean `production`? stages here: production, local"
    );
}

#[test]
fn deploy_to_must_be_absolute() {
    let e = parse(&GOOD.replace("/var/www/app/", "var/www/app")).expect_err("relative");
    assert_eq!(e.key_path, "defaults.deploy_to");
    assert_eq!(e.message, "`var/www/app` is not an absolute path");
    assert_eq!((e.pos.line, e.pos.column), (3, 14));
    let e = parse(&GOOD.replace("/var/www/app/", "/")).expect_err("root");
    assert_eq!(e.message, "must not be the root directory");
    let e = parse(&GOOD.replace("/var/www/app/", "/var/../etc")).expect_err("dotdot");
    assert_eq!(e.message, "must not contain `..`");
}

#[test]
fn shared_paths_must_stay_inside_the_release() {
    let e = parse(&GOOD.replace("[.env]", "[../.env]")).expect_err("dotdot");
    assert_eq!(e.key_path, "defaults.shared.files[0]");
    assert_eq!(e.message, "`../.env` leaves the release directory");
    let e = parse(&GOOD.replace("[.env]", "[/etc/passwd]")).expect_err("absolute");
    assert_eq!(e.message, "`/etc/passwd` is absolute");
    let e = parse(&GOOD.replace("[.env]", "[storage/app/.env]")).expect_err("overlap");
    assert_eq!(e.key_path, "defaults.shared.dirs[0]");
    assert_eq!(e.message, "`storage` overlaps `storage/app/.env`");
}

#[test]
fn missing_required_settings_point_at_the_host() {
    let text = GOOD.replace("  deploy_to: /var/www/app/\n", "");
    let e = parse(&text).expect_err("no deploy_to");
    assert_eq!(e.key_path, "stages.production.hosts.web-1");
    assert_eq!(e.message, "no `deploy_to` is set for this host");
    let e = parse(&GOOD.replace("web-1: { address: 203.0.113.10 }", "web-1: { port: 22 }"))
        .expect_err("no address");
    assert_eq!(e.message, "the host has no `address`");
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    let e = parse("stages:\n  production:\n    hosts: [a\n").expect_err("syntax");
    assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
    assert!(e.pos.line >= 3, "{:?}", e.pos);
}

#[test]
fn duplicate_keys_are_errors() {
    let e = parse("stages:\n  a:\n    hosts: {h: {address: x}}\n  a:\n    hosts: {}\n")
        .expect_err("duplicate");
    assert!(e.message.contains("uplicate"), "{}", e.message);
}

#[test]
fn yes_and_on_are_strings_not_booleans() {
    let inv = parse(&GOOD.replace("DEBUG: false", "DEBUG: on")).expect("valid");
    let host = &inv.stage("production").expect("stage").hosts[0];
    let debug = host
        .config
        .env
        .iter()
        .find(|v| v.name == "DEBUG")
        .expect("DEBUG");
    assert_eq!(debug.value, "on");
}

#[test]
fn a_stage_deploys_one_source() {
    let text = GOOD.replace(
        "        user: other\n",
        "        user: other\n        source: { git: https://example.com/r.git }\n",
    );
    let e = parse(&text).expect_err("two sources");
    assert_eq!(
        e.message,
        "every host of a stage must deploy the same source"
    );
}

#[test]
fn durations() {
    use super::parse::parse_duration;
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("5 minutes"), None);
    let e = parse(&GOOD.replace("connect_timeout: 5s", "connect_timeout: soon")).expect_err("bad");
    assert_eq!(e.message, "expected a duration");
}

#[test]
fn canary_hooks_health_check_and_roles() {
    let text = r#"
defaults:
  deploy_to: /var/www/app
  source: { artifact: ./build }
  observe: 30s
  hooks:
    after_deploy: ["echo done"]
stages:
  production:
    canary: web-2
    health_check:
      url: http://localhost/up
      expect_body: ok
      retries: 4
      interval: 500ms
      on_failure: warn
    after_switch: ["php artisan queue:restart"]
    run_once: ["php artisan migrate --force"]
    hosts:
      web-1: { address: 10.0.0.1 }
      web-2: { address: 10.0.0.2, roles: [web, primary] }
"#;
    let inv = parse_inventory(Path::new("/srv/inv/inventory.yaml"), text).expect("valid");
    let st = inv.stage("production").expect("stage");
    assert_eq!(st.canary, Some(Canary::Hosts(vec!["web-2".into()])));
    assert_eq!(st.observe, Duration::from_secs(30));
    assert_eq!(st.hooks.after_deploy, vec!["echo done".to_owned()]);
    assert_eq!(st.primary(), 1);
    assert_eq!(st.canary_hosts(st.canary.as_ref()), vec![1]);
    assert_eq!(
        st.canary_hosts(Some(&Canary::Count(2))),
        Vec::<usize>::new()
    );
    let hc = &st.hosts[0].config.health_check;
    assert_eq!(hc.retries, 4);
    assert_eq!(hc.interval, Duration::from_millis(500));
    assert_eq!(hc.on_failure, OnFailure::Warn);
    assert_eq!(
        hc.probe,
        Some(Probe::Http {
            url: "http://localhost/up".into(),
            expect_status: 200,
            expect_body: Some("ok".into())
        })
    );
    assert_eq!(st.hosts[1].config.roles, vec!["web", "primary"]);

    let bad = text.replace("canary: web-2", "canary: web-9");
    let e = parse_inventory(Path::new("/srv/inv/inventory.yaml"), &bad)
        .expect_err("unknown canary host")
        .to_string();
    assert!(
        e.contains("stages.production.canary: `web-9` is not a host of this stage"),
        "{e}"
    );
    assert!(e.contains("hosts here: web-1, web-2"), "{e}");

    let bad = text.replace("on_failure: warn", "on_failure: ignore");
    let e = parse_inventory(Path::new("/srv/inv/inventory.yaml"), &bad)
        .expect_err("bad policy")
        .to_string();
    assert!(
        e.contains("health_check.on_failure: unknown policy `ignore`"),
        "{e}"
    );
}

#[test]
fn laravel_recipe_gives_defaults_the_inventory_overrides() {
    let text = r#"
defaults:
  deploy_to: /var/www/app
  source: { artifact: ./build }
  recipe: laravel
stages:
  production:
    hosts:
      web-1: { address: 10.0.0.1 }
      web-2: { address: 10.0.0.2, build: ["make"] }
"#;
    let inv = parse_inventory(Path::new("/srv/inv/inventory.yaml"), text).expect("valid");
    let st = inv.stage("production").expect("stage");
    let c = &st.hosts[0].config;
    assert_eq!(c.shared.files, vec![".env"]);
    assert_eq!(c.shared.dirs, vec!["storage"]);
    assert!(c.build[0].run.starts_with("composer install"));
    assert_eq!(c.run_once, vec!["php artisan migrate --force"]);
    assert_eq!(
        c.after_switch,
        vec![
            "php artisan queue:restart",
            "if [ -d vendor/laravel/horizon ]; then php artisan horizon:terminate; fi"
        ]
    );
    assert_eq!(st.hosts[1].config.build, vec!["make"]);
    let e = parse_inventory(
        Path::new("/srv/inv/inventory.yaml"),
        &text.replace("recipe: laravel", "recipe: rails"),
    )
    .expect_err("unknown recipe")
    .to_string();
    assert!(
        e.contains("unknown recipe `rails`") && e.contains("recipes: laravel"),
        "{e}"
    );
}

#[test]
fn copy_from_previous_paths_are_checked_like_shared_paths() {
    let base = "defaults:\n  deploy_to: /var/www/app\n  source: { artifact: ./build }\n  \
                shared: { dirs: [storage] }\n  COPY\nstages:\n  p:\n    hosts:\n      \
                w: { address: 10.0.0.1 }\n";
    let parse = |copy: &str| {
        parse_inventory(
            Path::new("/srv/inv/inventory.yaml"),
            &base.replace("COPY", copy),
        )
    };
    let inv = parse("copy_from_previous: [vendor, ./node_modules]").expect("valid");
    assert_eq!(
        inv.stage("p").expect("p").hosts[0]
            .config
            .copy_from_previous,
        vec!["vendor", "node_modules"]
    );
    let e = parse("copy_from_previous: [../vendor]")
        .expect_err("leaves the release")
        .to_string();
    assert!(
        e.contains("copy_from_previous[0]: `../vendor` leaves the release directory"),
        "{e}"
    );
    let e = parse("copy_from_previous: [storage/cache]")
        .expect_err("overlaps shared")
        .to_string();
    assert!(
        e.contains("`storage/cache` overlaps the shared path `storage`"),
        "{e}"
    );
}

#[test]
fn jump_hosts_parse_as_ssh_writes_them() {
    let p = |s: &str| ProxyJump::parse(s);
    assert_eq!(
        p("jump@bastion.example.com:2222"),
        Ok(ProxyJump {
            user: Some("jump".into()),
            host: "bastion.example.com".into(),
            port: Some(2222),
            identity_file: None
        })
    );
    assert_eq!(
        p("jump@[10.0.0.1]"),
        Ok(ProxyJump {
            user: Some("jump".into()),
            host: "10.0.0.1".into(),
            port: None,
            identity_file: None
        })
    );
    assert_eq!(
        p("[::1]:22"),
        Ok(ProxyJump {
            user: None,
            host: "::1".into(),
            port: Some(22),
            identity_file: None
        })
    );
    assert!(
        p("a,b")
            .expect_err("two hops")
            .contains("where one belongs")
    );
    let chain = ProxyJump::parse_chain("outer@gate.example.com:2222, inner").expect("chain");
    assert_eq!(
        chain,
        vec![
            ProxyJump {
                user: Some("outer".into()),
                host: "gate.example.com".into(),
                port: Some(2222),
                identity_file: None
            },
            ProxyJump {
                user: None,
                host: "inner".into(),
                port: None,
                identity_file: None
            }
        ]
    );
    assert_eq!(
        ProxyJump::chain_text(&chain),
        "outer@gate.example.com:2222,inner"
    );
    assert_eq!(
        ProxyJump::parse_chain("[::1]:22").map(|c| ProxyJump::chain_text(&c)),
        Ok("[::1]:22".to_owned())
    );
    assert!(
        ProxyJump::parse_chain("a,,b")
            .expect_err("empty hop")
            .contains("an empty jump host")
    );
    assert!(
        ProxyJump::parse_chain(&["j"; MAX_JUMPS + 1].join(","))
            .expect_err("too many")
            .contains("at most 8")
    );
    assert!(p("x:notaport").expect_err("port").contains("is not a port"));
    assert!(p("-oProxyCommand=x").is_err());
}

fn schema() -> serde_json::Value {
    serde_json::from_str(SCHEMA).expect("the schema is JSON")
}

fn property_names(v: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

fn sorted(lists: &[&[&str]], except: &[&str]) -> Vec<String> {
    let mut k: Vec<String> = lists
        .iter()
        .flat_map(|l| l.iter())
        .filter(|k| !except.contains(k))
        .map(|k| k.to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn the_json_schema_takes_exactly_the_keys_the_parser_takes() {
    let s = schema();
    let defs = &s["$defs"];
    let settings = &defs["settings"];
    let cases: Vec<(&str, &serde_json::Value, Vec<String>)> = vec![
        ("top", &s["properties"], sorted(&[TOP_KEYS], &[])),
        ("settings", settings, sorted(&[LAYER_KEYS], &[])),
        (
            "defaults",
            &defs["defaults"]["properties"],
            sorted(&[LAYER_KEYS, STAGE_KEYS], &["hosts"]),
        ),
        (
            "stage",
            &defs["stage"]["properties"],
            sorted(&[LAYER_KEYS, STAGE_KEYS], &[]),
        ),
        (
            "host",
            &defs["host"]["properties"],
            sorted(&[LAYER_KEYS, HOST_KEYS], &[]),
        ),
        (
            "health_check",
            &defs["health_check"]["properties"],
            sorted(&[HEALTH_KEYS], &[]),
        ),
        (
            "hooks",
            &defs["stage_settings"]["hooks"]["properties"],
            sorted(&[HOOK_KEYS], &[]),
        ),
        (
            "source",
            &defs["source"]["properties"],
            sorted(&[parse::SOURCE_KEYS], &[]),
        ),
        (
            "shared",
            &settings["shared"]["properties"],
            sorted(&[parse::SHARED_KEYS], &[]),
        ),
        (
            "writable",
            &settings["writable"]["properties"],
            sorted(&[WRITABLE_KEYS], &[]),
        ),
        (
            "step",
            &defs["step"]["anyOf"][1]["properties"],
            sorted(&[STEP_KEYS], &[]),
        ),
        (
            "secret env value",
            &settings["env"]["additionalProperties"]["anyOf"][1]["properties"],
            sorted(&[parse::SECRET_KEYS], &[]),
        ),
    ];
    for (what, props, keys) in cases {
        assert_eq!(property_names(props), keys, "{what}");
    }
    let recipes: Vec<&str> = settings["recipe"]["enum"]
        .as_array()
        .expect("recipe enum")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(recipes, RECIPES);
}

/// A small validator for the keywords the schema uses (`pattern` and `propertyNames` are not
/// checked): the errors, each with where.
fn schema_errors(
    root: &serde_json::Value,
    s: &serde_json::Value,
    v: &serde_json::Value,
    at: &str,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    if let Some(r) = s["$ref"].as_str() {
        let target = root
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{r} resolves"));
        return schema_errors(root, target, v, at, out);
    }
    let valid = |sub: &Value| {
        let mut e = Vec::new();
        schema_errors(root, sub, v, at, &mut e);
        e.is_empty()
    };
    if let Some(types) = s.get("type") {
        let names: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
            _ => vec![],
        };
        let is = |t: &str| match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            _ => false,
        };
        if !names.iter().any(|t| is(t)) {
            out.push(format!("{at}: not {}", names.join(" or ")));
            return;
        }
    }
    if let Some(e) = s["enum"].as_array() {
        if !e.contains(v) {
            out.push(format!("{at}: {v} is not one of {}", s["enum"]));
        }
    }
    if let (Some(min), Some(n)) = (s["minimum"].as_f64(), v.as_f64()) {
        if n < min {
            out.push(format!("{at}: {n} is below {min}"));
        }
    }
    if let (Some(max), Some(n)) = (s["maximum"].as_f64(), v.as_f64()) {
        if n > max {
            out.push(format!("{at}: {n} is above {max}"));
        }
    }
    if let (Some(min), Some(t)) = (s["minLength"].as_u64(), v.as_str()) {
        if (t.chars().count() as u64) < min {
            out.push(format!("{at}: too short"));
        }
    }
    if let Some(o) = v.as_object() {
        if let Some(min) = s["minProperties"].as_u64() {
            if (o.len() as u64) < min {
                out.push(format!("{at}: needs at least {min} entries"));
            }
        }
        for r in s["required"].as_array().into_iter().flatten() {
            if let Some(k) = r.as_str().filter(|k| !o.contains_key(*k)) {
                out.push(format!("{at}: missing {k}"));
            }
        }
        for (k, val) in o {
            let here = format!("{at}.{k}");
            match s["properties"].get(k) {
                Some(sub) => schema_errors(root, sub, val, &here, out),
                None => match s.get("additionalProperties") {
                    Some(Value::Bool(false)) => out.push(format!("{here}: unknown key")),
                    Some(sub @ Value::Object(_)) => schema_errors(root, sub, val, &here, out),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(a)) = (s.get("items"), v.as_array()) {
        for (i, item) in a.iter().enumerate() {
            schema_errors(root, items, item, &format!("{at}[{i}]"), out);
        }
    }
    if let Some(any) = s["anyOf"].as_array() {
        if !any.iter().any(valid) {
            out.push(format!("{at}: matches none of the allowed forms"));
        }
    }
    if let Some(one) = s["oneOf"].as_array() {
        if one.iter().filter(|sub| valid(sub)).count() != 1 {
            out.push(format!("{at}: must match exactly one of the allowed forms"));
        }
    }
    if let Some(not) = s.get("not") {
        if valid(not) {
            out.push(format!("{at}: has a form that is not allowed"));
        }
    }
}

#[test]
fn the_example_inventory_is_valid_under_the_json_schema_and_mistakes_are_not() {
    let s = schema();
    let check = |yaml: &str| {
        let v: serde_json::Value = serde_saphyr::from_str(yaml).expect("YAML");
        let mut errors = Vec::new();
        schema_errors(&s, &s, &v, "", &mut errors);
        errors
    };
    let example = include_str!("../../inventory.example.yaml");
    assert_eq!(check(example), Vec::<String>::new());
    assert_eq!(check(GOOD), Vec::<String>::new());
    // What `ship init` writes, each way.
    let hosts = [("web-1".to_owned(), "203.0.113.10".to_owned())];
    for (source, recipe) in [
        ("./build", None),
        ("git@github.com:acme/app.git", None),
        ("https://git.example.com/app.git", Some("laravel")),
    ] {
        let text = crate::cli::init::render(
            "production",
            &hosts,
            "/var/www/app",
            "deploy",
            source,
            recipe,
        );
        assert_eq!(check(&text), Vec::<String>::new(), "{text}");
    }
    // Each mistake, as the parser also refuses it.
    for (from, to, error) in [
        (
            "  keep_releases: 5 ",
            "  keep_releases: 0 ",
            ".defaults.keep_releases: 0 is below 1",
        ),
        (
            "  port: 22\n",
            "  prot: 22\n",
            ".defaults.prot: unknown key",
        ),
        (
            "  host_key_checking: strict ",
            "  host_key_checking: loose ",
            ".defaults.host_key_checking: \"loose\" is not one of",
        ),
        (
            "    artifact: ./build ",
            "    artifact: ./build\n    git: git@example.com:app.git\n ",
            ".defaults.source: must match exactly one",
        ),
        (
            "    interval: 2s",
            "    interval: [2]",
            ".defaults.health_check.interval: matches none",
        ),
    ] {
        assert!(example.contains(from), "{from}");
        let errors = check(&example.replacen(from, to, 1));
        assert!(
            errors.iter().any(|e| e.starts_with(error)),
            "{error}: {errors:?}"
        );
        assert!(parse(&example.replacen(from, to, 1)).is_err(), "{to}");
    }
}

#[test]
fn ship_config_shows_every_key_of_the_key_table_and_of_a_host() {
    let inv = parse(GOOD).expect("valid inventory");
    let view = super::show::stage_config(inv.stage("production").expect("stage"), |s| s.to_owned());
    let json = serde_json::to_value(&view).expect("json");
    let host = json["hosts"][0].as_object().expect("a host object");
    let shown: Vec<&str> = host.keys().map(String::as_str).collect();
    for key in LAYER_KEYS.iter().chain(HOST_KEYS) {
        assert!(
            shown.contains(key),
            "`ship config` does not show `{key}`: {shown:?}"
        );
    }
    // And nothing under a name the inventory does not use (besides the host's own name).
    for key in &shown {
        assert!(
            *key == "host" || LAYER_KEYS.contains(key) || HOST_KEYS.contains(key),
            "`ship config` shows `{key}`, which is not an inventory key"
        );
    }
}

#[test]
fn variables_fill_values_but_never_commands_which_keep_their_shell_expansions() {
    let text = "\
defaults:
  deploy_to: /srv/${APP:-shop}
  source: { artifact: ./build }
  build:
    - tar -xf \"${f%.tar}\" && echo ${SHIP_RELEASE_ID}
  after_switch: [\"echo ${x##*/}\"]
  health_check: { command: \"test -n ${HOME}\" }
  hooks: { before_deploy: [\"echo ${USER}\"] }
  env:
    REGION: ${REGION}
stages:
  production:
    hosts:
      web-1: { address: \"${WEB1:-203.0.113.10}\" }
";
    let env = |k: &str| (k == "REGION").then(|| "eu-west-1".to_owned());
    let inv = parse_inventory_with(Path::new("/srv/inv/inventory.yaml"), text, &env)
        .unwrap_or_else(|e| panic!("{e}"));
    let stage = inv.stage("production").expect("stage");
    let h = &stage.hosts[0];
    assert_eq!(h.config.deploy_to, "/srv/shop");
    assert_eq!(h.address, "203.0.113.10");
    assert_eq!(
        h.config.build[0].run,
        "tar -xf \"${f%.tar}\" && echo ${SHIP_RELEASE_ID}"
    );
    assert_eq!(h.config.after_switch[0].run, "echo ${x##*/}");
    assert_eq!(stage.hooks.before_deploy, ["echo ${USER}"]);
    assert_eq!(h.config.env[0].value, "eu-west-1");
    let mut read: Vec<&str> = stage
        .from_environment
        .iter()
        .map(|(p, _)| p.as_str())
        .collect();
    read.sort();
    assert_eq!(
        read,
        [
            "defaults.deploy_to",
            "defaults.env.REGION",
            "stages.production.hosts.web-1.address"
        ]
    );
    // Outside commands, a `${…}` that is not one of the forms is an error, not shell.
    let bad = text.replace("/srv/${APP:-shop}", "/srv/${APP%x}");
    let e = parse_inventory_with(Path::new("/srv/inv/inventory.yaml"), &bad, &env)
        .map(|_| ())
        .expect_err("refused");
    assert!(
        e.to_string()
            .contains("defaults.deploy_to: `${APP%x}`: `APP%x` is not a variable name"),
        "{e}"
    );
}

#[test]
fn ship_config_shows_no_health_check_block_when_none_is_configured() {
    let inv = parse(GOOD).expect("valid inventory");
    let stage = inv.stage("production").expect("stage");
    let view = super::show::stage_config(stage, |s| s.to_owned());
    let json = serde_json::to_value(&view).expect("json");
    assert!(
        json["hosts"][0]["health_check"].is_null(),
        "{}",
        json["hosts"][0]
    );
    let with = GOOD.replace(
        "  connect_timeout: 5s\n",
        "  connect_timeout: 5s\n  health_check: { url: \"http://localhost/up\" }\n",
    );
    let inv = parse(&with).expect("valid inventory");
    let view = super::show::stage_config(inv.stage("production").expect("stage"), |s| s.to_owned());
    let json = serde_json::to_value(&view).expect("json");
    assert_eq!(
        json["hosts"][0]["health_check"]["url"],
        "http://localhost/up"
    );
    assert_eq!(json["hosts"][0]["health_check"]["retries"], 3);
}

#[test]
fn waves_are_cumulative_sizes_by_host_name_and_the_last_is_the_rest() {
    let text = (1..=10)
        .map(|i| format!("      web-{i:02}: {{ address: 10.0.0.{i} }}\n"))
        .collect::<String>();
    let inv = parse(&format!(
        "defaults:\n  deploy_to: /srv/app\n  source: {{ artifact: . }}\nstages:\n  production:\n    \
         waves: [1, \"30%\", \"100%\"]\n    hosts:\n{text}"
    ))
    .expect("valid");
    let st = inv.stage("production").expect("stage");
    let sizes = st.waves.clone().expect("waves");
    assert_eq!(
        sizes,
        [
            WaveSize::Count(1),
            WaveSize::Percent(30),
            WaveSize::Percent(100)
        ]
    );
    assert_eq!(st.wave_hosts(&sizes), [vec![0], vec![1, 2]]);
    assert_eq!(
        parse_waves("2,50%").expect("ok"),
        [WaveSize::Count(2), WaveSize::Percent(50)]
    );
    assert_eq!(
        st.wave_hosts(&parse_waves("100%").expect("ok")),
        Vec::<Vec<usize>>::new()
    );
    // Sizes that add no host are skipped.
    assert_eq!(
        st.wave_hosts(&parse_waves("1,1,5%,2").expect("ok")),
        [vec![0], vec![1]]
    );
    assert_eq!(
        parse_waves("1,0").expect_err("zero"),
        "a wave needs at least one host"
    );
    assert_eq!(
        parse_waves("150%").expect_err("over"),
        "`150%`: a share is between 1% and 100%"
    );
    let e = error(&format!(
        "defaults:\n  deploy_to: /srv/app\n  source: {{ artifact: . }}\nstages:\n  production:\n    \
         waves: [1, tenth]\n    hosts:\n{text}"
    ));
    assert!(
        e.contains("stages.production.waves[1]: `tenth` is neither a number of hosts nor a share"),
        "{e}"
    );
}

#[test]
fn waves_that_do_not_take_the_fleet_further_or_to_the_end_are_refused() {
    let text = (1..=10)
        .map(|i| format!("      web-{i:02}: {{ address: 10.0.0.{i} }}\n"))
        .collect::<String>();
    let with = |line: &str| {
        format!(
            "defaults:\n  deploy_to: /srv/app\n  source: {{ artifact: . }}\nstages:\n  production:\n    \
             {line}\n    hosts:\n{text}"
        )
    };
    let e = error(&with("waves: [5, \"30%\", \"100%\"]"));
    assert!(
        e.contains("stages.production.waves: the wave `30%` adds no host to the 5 of 10 before it"),
        "{e}"
    );
    let e = error(&with("waves: [1, \"50%\"]"));
    assert!(
        e.contains("the waves end with 5 of the stage's 10 host(s) switched"),
        "{e}"
    );
    assert!(e.contains("hint: end with \"100%\""), "{e}");
    let e = error(&with("max_unreachable: 10"));
    assert!(
        e.contains("stages.production.max_unreachable: 10 unreachable host(s) of 10 would leave out the whole fleet"),
        "{e}"
    );
    assert!(parse(&with("max_unreachable: \"20%\"")).is_ok());
    assert!(parse(&with("waves: [1, 3, \"100%\"]")).is_ok());
}

#[test]
fn connect_concurrency_is_a_positive_number_of_handshakes_and_defaults_to_32() {
    let with = |line: &str| {
        format!(
            "defaults:\n  deploy_to: /srv/app\n  source: {{ artifact: . }}\n{line}stages:\n  \
             production:\n    hosts:\n      web-1: {{ address: 10.0.0.1 }}\n"
        )
    };
    let e = error(&with("  connect_concurrency: 0\n"));
    assert!(
        e.contains("defaults.connect_concurrency: 0 handshakes at once would connect to no host"),
        "{e}"
    );
    assert!(e.contains("hint: leave it out for 32"), "{e}");
    let e = error(&with("  connect_concurrency: many\n"));
    assert!(e.contains("defaults.connect_concurrency"), "{e}");
    let stage = |text: &str| {
        parse(text)
            .expect("inventory")
            .stage("production")
            .expect("stage")
            .connect_concurrency
    };
    assert_eq!(stage(&with("")), 32);
    assert_eq!(stage(&with("  connect_concurrency: 8\n")), 8);
}
