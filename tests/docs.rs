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

/// Every file name in the repository's own directories.
fn file_names(dir: &Path, names: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() && !["target", "node_modules", ".git"].contains(&name.as_str()) {
            names.push(format!("{name}/"));
            file_names(&path, names);
        } else {
            names.push(name);
        }
    }
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
                .split([' ', '='])
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names = Vec::new();
    file_names(root, &mut names);
    let mut missing = Vec::new();
    for document in DOCUMENTS {
        for span in code_spans(&read(document)) {
            let path = span.trim_end_matches(['/', ',', '.']);
            let named = [
                ".rs", ".lua", ".js", ".mjs", ".md", ".sh", ".py", ".html", ".css",
            ];
            let is_file = named.iter().any(|ext| path.ends_with(ext));
            let is_dir = span.ends_with('/') && !span.contains(' ') && !span.starts_with('/');
            if !(is_file || is_dir) || path.contains(['*', ' ', '{', '<', ':']) {
                continue;
            }
            let bare = !span.trim_end_matches('/').contains('/');
            let found = if bare {
                names.contains(&span.trim_end_matches(['.', ',']).to_owned())
            } else {
                ROOTS
                    .iter()
                    .any(|r| root.join(format!("{r}{path}")).exists())
            };
            if !found {
                missing.push(format!("{document}: {span}"));
            }
        }
    }
    assert!(missing.is_empty(), "files no longer there: {missing:#?}");
}
