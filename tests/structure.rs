//! The crate's structure, read from its own source: the top-level modules
//! import each other without a cycle, and the layering rules of
//! ARCHITECTURE.md hold (only the command layer reaches the daemon; the
//! lab is never imported by product code). It reads `crate::` paths as
//! text, so it needs no build of its own and fails with the offending
//! file and line.
// A test: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/engine/copy.rs` →
/// `engine`, `src/status.rs` → `status`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The top-level modules named by `crate::` paths in one line of code,
/// the grouped form (`use crate::{a::X, b}`) included.
fn crate_refs(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group: split at commas outside braces.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(first_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(first_ident(&item));
        } else {
            out.push(first_ident(after));
        }
        rest = after;
    }
    out.retain(|m| !m.is_empty());
    out
}

fn first_ident(s: &str) -> String {
    s.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// module → (imported module → first place seen).
type Graph = BTreeMap<String, BTreeMap<String, String>>;

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: Graph = BTreeMap::new();
    for file in files {
        let from = module_of(&src, &file);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_tests = false;
        for (n, line) in text.lines().enumerate() {
            // Unit tests may reach anywhere (a test store, a corpus).
            if line.trim_start().starts_with("#[cfg(test)]") {
                in_tests = true;
            }
            if in_tests {
                continue;
            }
            for to in crate_refs(line) {
                if to != from {
                    let place = format!("{}:{}", file.display(), n + 1);
                    graph
                        .entry(from.clone())
                        .or_default()
                        .entry(to)
                        .or_insert(place);
                }
            }
        }
    }
    graph
}

/// A cycle through `node`, if any, as a list of modules.
fn cycle_from(
    graph: &Graph,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| p == node) {
        let mut cycle = path[at..].to_vec();
        cycle.push(node.to_owned());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_owned());
    for next in graph.get(node).into_iter().flat_map(|m| m.keys()) {
        if let Some(c) = cycle_from(graph, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_owned());
    None
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let graph = graph();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = cycle_from(&graph, node, &mut Vec::new(), &mut done) {
            let steps: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{} -> {} ({})", w[0], w[1], graph[&w[0]][&w[1]]))
                .collect();
            panic!("import cycle:\n  {}", steps.join("\n  "));
        }
    }
}

#[test]
fn only_the_command_layer_reaches_the_daemon_and_the_lab() {
    let graph = graph();
    let rules: [(&str, &[&str]); 2] = [("daemon", &["commands"]), ("lab", &["cli", "commands"])];
    for (module, allowed) in rules {
        for (from, imports) in &graph {
            if let Some(place) = imports.get(module) {
                assert!(
                    allowed.contains(&from.as_str()),
                    "{from} imports {module} ({place}); only {allowed:?} may"
                );
            }
        }
    }
}

#[test]
fn the_reader_sees_grouped_and_plain_paths() {
    assert_eq!(
        crate_refs("use crate::{engine::Engine, store::{Store, now}, lock};"),
        ["engine", "store", "lock"]
    );
    assert_eq!(
        crate_refs("    let x = crate::units::human_bytes(1); // crate::lab"),
        ["units"]
    );
}
