//! The Python client (`clients/python`) against this build's binary: its unittest suite runs
//! here, so `cargo test` covers it. Skipped, saying so, where no `python3` is installed.

use std::path::Path;
use std::process::Command;

#[test]
fn the_python_client_suite_passes_against_this_binary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../clients/python");
    let Ok(version) = Command::new("python3").arg("--version").output() else {
        eprintln!("skipped: python3 is not installed");
        return;
    };
    assert!(version.status.success());
    let out = Command::new("python3")
        .args([
            "-W",
            "error::ResourceWarning",
            "-m",
            "unittest",
            "discover",
            "-s",
            "tests",
            "-v",
        ])
        .current_dir(&root)
        .env("PYTHONPATH", root.join("src"))
        .env("FLEETLOG_BIN", env!("CARGO_BIN_EXE_fleetlog"))
        .env_remove("FLEETLOG_DB")
        .env_remove("FLEETLOG_URL")
        .env_remove("FLEETLOG_CREDENTIAL")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
