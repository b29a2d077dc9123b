//! The documents name only what exists: every flag they name in running text is one the
//! binary takes, and every file they name is in the repository. (Copies that drifted named
//! `src/cache.rs` and `connection.rs` long after both were gone.)

use std::path::Path;
use std::process::Command;

const DOCUMENTS: [&str; 6] = [
    "README.md",
    "docs/PROTOCOL.md",
    "docs/OPERATIONS.md",
    "docs/ARCHITECTURE.md",
    "RELIABILITY.md",
    "BENCHMARKS.md",
];

/// Where a path a document names may be, relative to: as written, or inside one of these.
/// A bare file name (`snapshot.rs`, named beside its directory) may be anywhere.
const ROOTS: [&str; 5] = ["", "src/", "tests/", "web/", "docs/"];

/// What builds and runs make, absent from a fresh clone.
const GENERATED: [&str; 2] = ["target/", "fuzz/artifacts/"];

/// The repository's files (as a fresh clone has them: untracked files do not count), and
/// every directory and file name among them.
fn tracked() -> (Vec<String>, Vec<String>) {
    let output = Command::new("git")
        .args(["ls-files"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("git lists the repository's files");
    let files: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let mut names = Vec::new();
    for file in &files {
        let parts: Vec<&str> = file.split('/').collect();
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            names.push(if last {
                (*part).to_owned()
            } else {
                format!("{part}/")
            });
        }
    }
    (files, names)
}

/// The inline code spans of `text` (between single backticks), outside fenced blocks.
fn code_spans(text: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        let parts: Vec<&str> = line.split('`').collect();
        spans.extend(parts.iter().skip(1).step_by(2).map(|s| s.to_string()));
    }
    spans
}

fn read(document: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(document);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{document}: {e}"))
}

#[test]
fn every_flag_a_document_names_is_one_the_broker_takes() {
    let help = Command::new(env!("CARGO_BIN_EXE_oddsbus"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    // The load tool's flags (RELIABILITY.md names some), as its clap fields.
    let load: String = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("load/src"))
        .unwrap()
        .flatten()
        .map(|entry| std::fs::read_to_string(entry.path()).unwrap_or_default())
        .collect();
    let mut unknown = Vec::new();
    // BENCHMARKS.md names the load tool's flags, not the broker's.
    for document in DOCUMENTS.iter().filter(|d| **d != "BENCHMARKS.md") {
        for span in code_spans(&read(document)) {
            let Some(flag) = span
                .split([' ', '=', ':', ','])
                .next()
                .filter(|f| f.starts_with("--"))
            else {
                continue;
            };
            let field = format!(" {}:", flag[2..].replace('-', "_"));
            let known = help.contains(&format!("{flag} "))
                || help.contains(&format!("{flag}\n"))
                || load.contains(&field);
            if !known && flag.len() > 2 {
                unknown.push(format!("{document}: {flag}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "flags the broker does not take: {unknown:#?}"
    );
}

#[test]
fn every_file_a_document_names_exists() {
    let (files, names) = tracked();
    let exists = |path: &str| {
        files
            .iter()
            .any(|f| f == path || f.starts_with(&format!("{path}/")))
    };
    let mut missing = Vec::new();
    for document in DOCUMENTS {
        for span in code_spans(&read(document)) {
            let path = span.trim_end_matches(['/', ',', '.']);
            let named = [
                ".rs", ".lua", ".js", ".mjs", ".md", ".sh", ".py", ".html", ".css",
            ];
            let is_file = named.iter().any(|ext| path.ends_with(ext));
            let is_dir = span.ends_with('/') && !span.contains(' ') && !span.starts_with('/');
            // `/app.js` is a route the broker serves, not a path in the repository.
            let generated = GENERATED.iter().any(|g| span.starts_with(g)) || span.starts_with('/');
            if !(is_file || is_dir) || generated || path.contains(['*', ' ', '{', '<', ':']) {
                continue;
            }
            let bare = !span.trim_end_matches('/').contains('/');
            let found = if bare {
                names.contains(&span.trim_end_matches(['.', ',']).to_owned())
            } else {
                ROOTS.iter().any(|r| exists(&format!("{r}{path}")))
            };
            if !found {
                missing.push(format!("{document}: {span}"));
            }
        }
    }
    assert!(missing.is_empty(), "files no longer there: {missing:#?}");
}
