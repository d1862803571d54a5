//! Guards the architecture's invariants by reading the code, so a change that breaks one fails
//! here rather than in review: only the ledger touches redb; projections read no clock and know
//! nothing of tokio or HTTP (HTTP statuses are chosen in the daemon); the daemon answers reads
//! only through the wire module, never by serialising projection views itself.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }
    assert!(!found.is_empty(), "no sources under {}", dir.display());
    found
}

/// Lines of code (comments dropped) in `dir` containing any of `needles`, as `file:line: text`.
fn uses(dir: &str, needles: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for file in sources(&root().join(dir)) {
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (number, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if needles.iter().any(|needle| code.contains(needle)) {
                hits.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    hits
}

/// The names in a crate's `[dependencies]` table.
fn dependencies(krate: &str) -> Vec<String> {
    let manifest =
        std::fs::read_to_string(root().join(krate).join("Cargo.toml")).expect("a manifest");
    manifest
        .split("\n[")
        .find(|table| table.starts_with("dependencies]"))
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter_map(|line| line.split(['=', '.', ' ']).next())
                .filter(|name| !name.is_empty() && !name.starts_with('#'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn only_the_ledger_touches_redb() {
    assert!(dependencies("ledger").contains(&"redb".to_owned()));
    for krate in ["projections", "cli"] {
        assert!(
            !dependencies(krate).contains(&"redb".to_owned()),
            "{krate} depends on redb"
        );
        let hits = uses(&format!("{krate}/src"), &["redb::", "use redb"]);
        assert!(
            hits.is_empty(),
            "redb outside the ledger:\n{}",
            hits.join("\n")
        );
    }
}

#[test]
fn projections_read_no_clock_and_know_no_runtime_or_http() {
    let clock = uses(
        "projections/src",
        &[
            "Timestamp::now(",
            "SystemTime::now",
            "Instant::now",
            "Utc::now",
            "Local::now",
        ],
    );
    assert!(
        clock.is_empty(),
        "projections must take time from the ledger:\n{}",
        clock.join("\n")
    );
    let deps = dependencies("projections");
    assert!(deps.contains(&"fleetlog-ledger".to_owned()), "{deps:?}");
    for forbidden in ["tokio", "axum", "hyper", "http", "libc"] {
        assert!(
            !deps.contains(&forbidden.to_owned()),
            "projections depends on {forbidden}"
        );
    }
    let http = uses(
        "projections/src",
        &["tokio::", "axum::", "hyper::", "http_status", "StatusCode"],
    );
    assert!(
        http.is_empty(),
        "HTTP or a runtime in projections:\n{}",
        http.join("\n")
    );
}

#[test]
fn the_daemon_answers_reads_only_through_the_wire_types() {
    let views = uses(
        "cli/src/daemon",
        &[
            "fleetlog_projections::agents",
            "fleetlog_projections::queue",
            "fleetlog_projections::locks",
            "fleetlog_projections::signals",
            "fleetlog_projections::approvals",
            "fleetlog_projections::board",
            "fleetlog_projections::decisions",
            "fleetlog_projections::workflows",
            "fleetlog_projections::analytics",
            "fleetlog_projections::State",
        ],
    );
    assert!(
        views.is_empty(),
        "the daemon reaches into projection views instead of crate::wire:\n{}",
        views.join("\n")
    );
}
