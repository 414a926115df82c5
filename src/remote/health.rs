//! The health check, run on a host after its switch.

use super::*;

/// The health check as one step run in the new release directory: up to `retries` attempts,
/// `interval` apart, each limited to `timeout`. Every failed attempt prints why. HTTP checks
/// use curl, else wget, on the host itself. `None` when the check has no probe.
pub fn health_step(plan: &ReleasePlan, check: &HealthCheck) -> Option<Step> {
    let timeout = check.timeout.as_secs().max(1);
    let attempt = match check.probe.as_ref()? {
        Probe::Command(cmd) => format!(
            "if command -v timeout >/dev/null 2>&1; then timeout {timeout} sh -c {c}; \
             else sh -c {c}; fi; rc=$?; [ $rc = 0 ] || echo \"health: attempt $i: the command \
             exited with status $rc\"; [ $rc = 0 ]",
            c = quote(cmd)
        ),
        Probe::Http {
            url,
            expect_status,
            expect_body,
        } => {
            let body_check = match expect_body {
                Some(b) => format!(
                    " && {{ grep -qF -- {b} \"$t\" || {{ echo \"health: attempt $i: status \
                     $code but the body does not contain \"{shown}; false; }}; }}",
                    b = quote(b),
                    shown = quote(&format!("'{b}'"))
                ),
                None => String::new(),
            };
            // The URL goes to curl (and, when it holds credentials, to wget) on stdin, never
            // in its arguments; messages show it with its credentials masked.
            let curl_config = format!(
                "url = \"{}\"",
                url.replace('\\', "\\\\").replace('"', "\\\"")
            );
            let wget_url = if crate::mask::url_secrets(url).is_empty() {
                format!("wget -q -S -O \"$t\" -T {timeout} {}", quote(url))
            } else {
                format!(
                    "printf '%s\\n' {} | wget -q -S -O \"$t\" -T {timeout} -i -",
                    quote(url)
                )
            };
            format!(
                "t=$(mktemp) && h=$(mktemp) || exit 1; \
                 if command -v curl >/dev/null 2>&1; then \
                 code=$(printf '%s\\n' {cfg} | curl -s -o \"$t\" -w '%{{http_code}}' --max-time {timeout} \
                 -K - 2>\"$h\"); \
                 elif command -v wget >/dev/null 2>&1; then \
                 {wget_url} 2>\"$h\"; \
                 code=$(awk '$1 ~ /^HTTP\\// {{c=$2}} END {{print c}}' \"$h\"); \
                 else echo 'health: neither curl nor wget is installed on this host'; exit 2; fi; \
                 [ -n \"$code\" ] || code=000; \
                 {{ [ \"$code\" = {expect_status} ] || {{ echo \"health: attempt $i: status $code \
                 (expected {expect_status}) from \"{shown}; false; }}; }}{body_check}; \
                 rc=$?; rm -f \"$t\" \"$h\"; [ $rc = 0 ]",
                cfg = quote(&curl_config),
                shown = quote(&crate::mask::mask_urls(url)),
            )
        }
    };
    let interval = check.interval.as_millis();
    let sleep = format!("sleep {}.{:03}", interval / 1000, interval % 1000);
    let script = format!(
        "i=0; while :; do i=$((i+1)); if {{ {attempt}; }}; then echo \"health: ok (attempt $i)\"; \
         exit 0; fi; [ $i -ge {n} ] && {{ echo \"health: failed after $i attempts\"; exit 1; }}; \
         {sleep}; done",
        n = check.retries
    );
    Some(release_script(plan, "health check".into(), &script))
}
