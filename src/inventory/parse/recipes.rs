//! Recipes: the defaults a `recipe:` key brings (`laravel`).

use super::*;

/// The settings a recipe supplies; anything the inventory sets wins.
pub(super) fn recipe(name: &str) -> Layer {
    let list = |v: &[&str]| Some(v.iter().map(|s| StepSpec::plain(s)).collect::<Vec<_>>());
    match name {
        "laravel" => Layer {
            shared: Some(Shared {
                files: vec![".env".into()],
                dirs: vec!["storage".into()],
            }),
            build: list(&[
                "composer install --no-dev --prefer-dist --no-interaction --optimize-autoloader",
                "php artisan config:cache",
                "php artisan route:cache",
                "php artisan view:cache",
            ]),
            run_once: list(&["php artisan migrate --force"]),
            // Workers load the code once: they must be told to restart, and Supervisor starts
            // them again in `current`, the new release (Horizon has its own terminate).
            after_switch: list(&[
                "php artisan queue:restart",
                "if [ -d vendor/laravel/horizon ]; then php artisan horizon:terminate; fi",
            ]),
            ..Layer::default()
        },
        _ => Layer::default(),
    }
}
