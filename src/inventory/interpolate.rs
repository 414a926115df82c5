//! `${VAR}` in the inventory: any string value may take text from the controller's environment
//! when the inventory is loaded, so that a CI job can choose values without editing the file.
//!
//! - `${VAR}`: the variable's value; an unset variable is an error.
//! - `${VAR:-default}`: the value, or `default` when the variable is unset or empty.
//! - `${VAR:?message}`: the value, or an error that shows `message` when it is unset or empty.
//! - `$$` is a literal `$`; a `$` not followed by `{` or `$` stays as it is, so a command's
//!   `$HOME` or `$(date)` reaches the host's shell untouched. To hand the host's shell a
//!   `${VAR}`, write `$${VAR}`.
//!
//! Only values are read this way, never keys, and never commands (`build`, `run_once`,
//! `after_switch`, a health check's `command`, `hooks`, `from_command`): those are shell for the
//! hosts or this machine, whose own `${…}` (`${f%.tar}`, `${SHIP_RELEASE_ID}`) is the shell's; a
//! value reaches a command through `env`. The value that results is used literally (it is not
//! read again for `${…}`).

/// What became of one string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub text: String,
    /// The variables it read, in order (empty: the string had none).
    pub vars: Vec<String>,
}

/// Why a string could not be expanded: the message and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub hint: String,
}

/// Expand `text`, reading variables with `lookup`.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Expanded, Problem> {
    let mut out = String::with_capacity(text.len());
    let mut vars = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(more) = after.strip_prefix('$') {
            out.push('$');
            rest = more;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(Problem {
                message: "`${` without a closing `}`".into(),
                hint: "write `${NAME}`, or `$${` for a literal `${`".into(),
            });
        };
        let inner = &body[..end];
        rest = &body[end + 1..];
        let (name, op) = match inner.find(':') {
            Some(c) => (&inner[..c], Some(&inner[c..])),
            None => (inner, None),
        };
        if !is_name(name) {
            return Err(Problem {
                message: format!("`${{{inner}}}`: `{name}` is not a variable name"),
                hint: "names are letters, digits and `_`, not starting with a digit; forms: \
                       ${NAME}, ${NAME:-default}, ${NAME:?message}; `$$` is a literal `$`"
                    .into(),
            });
        }
        vars.push(name.to_owned());
        let value = lookup(name);
        let set = value.as_deref().is_some_and(|v| !v.is_empty());
        match op {
            None => match value {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(Problem {
                        message: format!("`${{{name}}}`: {name} is not set in the environment"),
                        hint: format!(
                            "set {name} (e.g. from the CI's secrets), or write \
                             `${{{name}:-default}}`; `$$` is a literal `$`"
                        ),
                    });
                }
            },
            Some(op) if op.starts_with(":-") => match value {
                Some(v) if set => out.push_str(&v),
                _ => out.push_str(&op[2..]),
            },
            Some(op) if op.starts_with(":?") => match value {
                Some(v) if set => out.push_str(&v),
                _ => {
                    let said = op[2..].trim();
                    return Err(Problem {
                        message: if said.is_empty() {
                            format!("`${{{name}}}`: {name} is not set or empty")
                        } else {
                            format!("`${{{name}}}`: {said}")
                        },
                        hint: format!("set {name} in the environment ship runs in"),
                    });
                }
            },
            Some(op) => {
                return Err(Problem {
                    message: format!("`${{{inner}}}`: unknown form `{op}`"),
                    hint: "forms: ${NAME}, ${NAME:-default}, ${NAME:?message}".into(),
                });
            }
        }
    }
    out.push_str(rest);
    Ok(Expanded { text: out, vars })
}

/// An environment variable name: letters, digits and `_`, not starting with a digit.
pub fn is_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("web-1".into()),
            "EMPTY" => Some(String::new()),
            "INJECT" => Some("${HOST} $(id)".into()),
            _ => None,
        }
    }

    fn ok(text: &str) -> String {
        expand(text, &env)
            .map(|e| e.text)
            .unwrap_or_else(|p| panic!("{p:?}"))
    }

    fn problem(text: &str) -> Problem {
        match expand(text, &env) {
            Ok(e) => panic!("expected an error, got {e:?}"),
            Err(p) => p,
        }
    }

    #[test]
    fn every_form() {
        assert_eq!(ok("a ${HOST} b"), "a web-1 b");
        assert_eq!(ok("${HOST}${HOST}"), "web-1web-1");
        assert_eq!(ok("${MISSING:-fallback}"), "fallback");
        assert_eq!(ok("${EMPTY:-fallback}"), "fallback");
        assert_eq!(ok("${HOST:-fallback}"), "web-1");
        assert_eq!(ok("${MISSING:-}"), "");
        assert_eq!(ok("${HOST:?must be set}"), "web-1");
        assert_eq!(ok("${EMPTY}"), "");
        assert_eq!(
            expand("x ${HOST} ${MISSING:-y}", &env).map(|e| e.vars),
            Ok(vec!["HOST".to_owned(), "MISSING".to_owned()])
        );
    }

    #[test]
    fn what_is_not_an_expansion_stays_as_written() {
        assert_eq!(ok("echo $HOME $(date) $1 $"), "echo $HOME $(date) $1 $");
        assert_eq!(
            ok("cost: $$5, $${SHIP_RELEASE_ID}"),
            "cost: $5, ${SHIP_RELEASE_ID}"
        );
        assert_eq!(ok("no dollars"), "no dollars");
        // A value is used literally: what it holds is not expanded again.
        assert_eq!(ok("${INJECT}"), "${HOST} $(id)");
        assert_eq!(expand("plain $HOME", &env).map(|e| e.vars), Ok(vec![]));
    }

    #[test]
    fn errors_say_which_variable_and_what_to_do() {
        let p = problem("postgres://${DB_HOST}/app");
        assert_eq!(
            p.message,
            "`${DB_HOST}`: DB_HOST is not set in the environment"
        );
        assert!(p.hint.contains("`${DB_HOST:-default}`"), "{}", p.hint);
        let p = problem("${DB_HOST:?the database host, from the CI's variables}");
        assert_eq!(
            p.message,
            "`${DB_HOST}`: the database host, from the CI's variables"
        );
        assert_eq!(
            problem("${EMPTY:?}").message,
            "`${EMPTY}`: EMPTY is not set or empty"
        );
        assert_eq!(
            problem("${1X}").message,
            "`${1X}`: `1X` is not a variable name"
        );
        assert_eq!(problem("${HOST").message, "`${` without a closing `}`");
        assert_eq!(
            problem("${HOST:+x}").message,
            "`${HOST:+x}`: unknown form `:+x`"
        );
    }
}
