//! The web console in a real headless Chromium: `tests/console/browser.mjs` (playwright-core,
//! Debian's `chromium`) drives the page served by the real binary: the token, a CreateUser from
//! the form seen in the live feed, a conflict's current version, the user's slider at version 1
//! showing the old name. It saves a screenshot (target/console.png, or the path in
//! `CQRS_CONSOLE_SCREENSHOT`; docs/console.png was made so).
//!
//! It needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and `npm install` run in tests/console.
//! Where they are missing the test says so and passes, unless `CI` or `CQRS_BROWSER_TEST` is
//! set: then they are required.

use std::path::Path;
use std::process::Command;

#[test]
fn the_console_works_in_a_real_browser() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let node_ok = Command::new("node").arg("--version").output().is_ok();
    let playwright = root.join("tests/console/node_modules/playwright-core");
    let missing: Vec<&str> = [
        (!node_ok).then_some("node"),
        (!Path::new(&chromium).exists()).then_some("chromium"),
        (!playwright.exists()).then_some("playwright-core (npm install in tests/console)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        let required =
            std::env::var_os("CI").is_some() || std::env::var_os("CQRS_BROWSER_TEST").is_some();
        assert!(!required, "the browser test needs: {}", missing.join(", "));
        eprintln!(
            "SKIPPED the browser test of the console: missing {}",
            missing.join(", ")
        );
        return;
    }
    let screenshot = std::env::var("CQRS_CONSOLE_SCREENSHOT")
        .unwrap_or_else(|_| root.join("target/console.png").display().to_string());
    let out = Command::new("node")
        .arg(root.join("tests/console/browser.mjs"))
        .arg(env!("CARGO_BIN_EXE_cqrs"))
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        // The console's node runs with --in-memory, which wins over the CQRS_POSTGRES_URL
        // that .ci/run exports for the PostgreSQL tests: the environment is left as it is.
        .env("CQRS_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("console: ok"),
        "exit {}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
